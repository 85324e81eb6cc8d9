"""What the browser tests need beside bench.browser_peer's page driver: a tree of
files to move, their digests, and the downloads a receiving page starts.

The page's contract (DOM ids, ``window.xfer``, query options) is in
/work/helpers/BROWSER-CONTRACT.md; only what it promises is used here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Download, Page

from bench.browser_peer import (
    TRANSFER_TIMEOUT_MS,
    finished,
    http_origin,
    pick,
    receive_url,
    wait_for_bytes,
)

__all__ = ["TRANSFER_TIMEOUT_MS", "finished", "http_origin", "pick", "receive_url", "wait_for_bytes"]

KiB = 1024
MiB = 1024 * KiB

# Unique base names: a download keeps only the base name of the file's path.
TREE_FILES = {
    "tree/ünïcødé — naïve 文件.txt": 3 * KiB + 7,
    "tree/empty.bin": 0,
    "tree/sub/big.bin": 64 * MiB + 12345,
    "tree/sub/deeper/notes.md": 200 * KiB,
}


def write_random(path: Path, size: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            left -= len(block)


def make_tree(root: Path, files: dict[str, int] = TREE_FILES) -> Path:
    """The files (path relative to ``root``: size) written with random bytes; returns root/tree."""
    for relative, size in files.items():
        write_random(root / relative, size)
    return root / "tree"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tree_digests(tree: Path) -> dict[str, str]:
    """``{path relative to tree's parent: sha256}`` of every file, as the receiver names them."""
    return {
        str(path.relative_to(tree.parent)): sha256_file(path)
        for path in sorted(tree.rglob("*"))
        if path.is_file()
    }


@dataclass
class Downloads:
    """Every download a page starts, saved under ``into`` by its suggested name."""

    into: Path
    started: list[Download] = field(default_factory=list)

    def watch(self, page: Page) -> Downloads:
        self.into.mkdir(parents=True, exist_ok=True)
        page.on("download", lambda download: self.started.append(download))
        return self

    def save(self) -> dict[str, Path]:
        saved: dict[str, Path] = {}
        for download in self.started:
            assert download.failure() is None, download.failure()
            name = download.suggested_filename
            assert name not in saved, f"downloaded twice: {name}"
            saved[name] = self.into / name
            download.save_as(str(saved[name]))
        return saved


def assert_same_files(downloaded: dict[str, Path], sources: dict[str, str]) -> None:
    """Each source file (by base name) came down once with the same SHA-256, nothing else."""
    by_name = {Path(relative).name: digest for relative, digest in sources.items()}
    assert sorted(downloaded) == sorted(by_name)
    for name, path in downloaded.items():
        assert sha256_file(path) == by_name[name], name
