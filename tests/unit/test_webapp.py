"""What the signaling server may serve of the browser app (pipeline.signaling.webapp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.signaling.webapp import mime_type, page_link, resolve_asset


@pytest.fixture
def root(tmp_path: Path) -> Path:
    web = tmp_path / "web"
    (web / "vendor").mkdir(parents=True)
    for name in ("index.html", "app.mjs", "vendor/hash.wasm", ".hidden.js"):
        (web / name).write_text(name)
    (tmp_path / "outside.js").write_text("secret")
    (web / "link.js").symlink_to(tmp_path / "outside.js")
    return web


def test_root_is_index_and_files_resolve_by_path(root: Path) -> None:
    assert resolve_asset(root, "/") == (root / "index.html").resolve()
    assert resolve_asset(root, "") == (root / "index.html").resolve()
    wasm = resolve_asset(root, "/vendor/hash.wasm")
    assert wasm == (root / "vendor" / "hash.wasm").resolve()
    assert mime_type(wasm) == "application/wasm"
    module = resolve_asset(root, "app.mjs")
    assert module is not None and mime_type(module).startswith("text/javascript")


@pytest.mark.parametrize(
    "path",
    [
        "../outside.js",
        "/vendor/../../outside.js",
        "vendor/./hash.wasm",
        "link.js",  # symbolic link out of the root
        "/vendor",  # a directory
        "vendor/",
        ".hidden.js",
        "vendor\\..\\..\\outside.js",
        "index.html\x00.js",
        "missing.js",
        "README",  # no type the app uses
    ],
)
def test_nothing_else_resolves(root: Path, path: str) -> None:
    assert resolve_asset(root, path) is None


def test_an_absolute_path_stays_inside(root: Path, tmp_path: Path) -> None:
    # "//outside.js" must not become an absolute path that replaces the root.
    assert resolve_asset(root, "//" + str(tmp_path / "outside.js")) is None


def test_page_link_names_the_http_origin_and_the_code() -> None:
    assert page_link("ws://127.0.0.1:5000/ws", "7-a-b-c") == "http://127.0.0.1:5000/#7-a-b-c"
    assert page_link("ws://[::1]:5/ws", "7-a-b-c") == "http://[::1]:5/#7-a-b-c"
    assert page_link("wss://example.org/ws", "7-a-b-c") == "https://example.org/#7-a-b-c"
