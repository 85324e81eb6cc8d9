"""Which file of the browser app (``pipeline/web/``) a request path names, if any.

The signaling server may serve the page at ``/`` (C.1).  Only regular files
under the app's directory are reachable: no listing, no ``..``, no symbolic
link or absolute path leading out of it, no hidden files, and only the types
in :data:`MIME_TYPES`, so whatever else sits in the directory (lock files,
``node_modules``, JS tests' fixtures of unknown type) stays private.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Final

# ES modules and WebAssembly must carry these exact types or the browser
# refuses them (strict MIME checks for module scripts and instantiateStreaming).
MIME_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

PACKAGED_WEB_ROOT: Final = Path(__file__).resolve().parent.parent / "web"


def packaged_web_root() -> Path | None:
    """The app shipped with the package, or None when this install has none."""
    return PACKAGED_WEB_ROOT if (PACKAGED_WEB_ROOT / "index.html").is_file() else None


def resolve_asset(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that the (already percent-decoded) ``url_path`` names.

    ``/`` is ``index.html``.  None for anything not servable; the caller answers 404.
    """
    relative = url_path.lstrip("/") or "index.html"
    if "\\" in relative or "\x00" in relative:
        return None
    # Split by hand: PurePosixPath would fold "." and "//" away before the check.
    if any(not part or part.startswith(".") for part in relative.split("/")):
        return None
    if PurePosixPath(relative).suffix.lower() not in MIME_TYPES:
        return None
    base = root.resolve()
    candidate = (base / relative).resolve()
    # resolve() follows symbolic links, so a link pointing outside fails here.
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def mime_type(path: Path) -> str:
    return MIME_TYPES[path.suffix.lower()]


def page_link(signal_url: str, code: str) -> str:
    """The browser link that opens the receive page for ``code`` on the server at
    ``signal_url`` (``ws://HOST:PORT/ws`` -> ``http://HOST:PORT/#CODE``)."""
    scheme, rest = signal_url.split("://", 1)
    origin = rest.removesuffix("/ws")
    return f"{'https' if scheme == 'wss' else 'http'}://{origin}/#{code}"
