"""Sample media trees: realistic, deterministic, and comparable with tree_digest."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest

from pipeline.mediagen import generate_media_tree, tree_digest

KiB = 1024
MiB = 1024 * KiB
LARGE = 3 * MiB + 5  # not a multiple of the block or page size


def small_tree(root: Path, seed: int = 0, **kwargs: object) -> list[str]:
    options: dict[str, object] = {"small_files": 60, "large_files": 2, "large_size": LARGE}
    options.update(kwargs)
    return generate_media_tree(root, seed=seed, **options)  # type: ignore[arg-type]


def test_same_seed_same_tree_other_seed_other_bytes(tmp_path: Path) -> None:
    a = small_tree(tmp_path / "a", seed=7)
    b = small_tree(tmp_path / "b", seed=7)
    small_tree(tmp_path / "c", seed=8)
    assert a == b
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    digest_c = tree_digest(tmp_path / "c")
    video = next(p for p in a if p.endswith(".mp4"))
    assert digest_c[video][1] != tree_digest(tmp_path / "a")[video][1]


def test_tree_looks_like_a_media_dump(tmp_path: Path) -> None:
    paths = generate_media_tree(
        tmp_path, seed=1, small_files=300, large_files=1, large_size=2 * MiB
    )
    digest = tree_digest(tmp_path)
    assert sorted(digest) == paths == sorted(paths)
    assert len(paths) == 301
    assert "DCIM/100CANON/IMG_0001.JPG" in paths
    assert any(p.startswith("Música/Álbum 1/") and " – " in p for p in paths)
    assert any("/." in p for p in paths)  # hidden files (.nomedia, .thumbnails)
    assert max(p.count("/") for p in paths) >= 3  # nested folders
    sizes = [size for size, _ in digest.values()]
    assert sizes.count(0) >= 3  # empty files
    assert all(
        0 <= size <= 64 * KiB for path, (size, _) in digest.items() if not path.endswith(".mp4")
    )
    assert len({size for size in sizes}) > 100  # varied sizes
    assert digest["Vidéos/2024/clip_001.mp4"][0] == 2 * MiB


def test_names_are_nfc_with_decomposable_characters_and_unique_ignoring_case(
    tmp_path: Path,
) -> None:
    paths = small_tree(tmp_path, small_files=300)
    assert all(unicodedata.is_normalized("NFC", p) for p in paths)
    # Names whose NFD form differs: a receiver that normalises would break them.
    assert any(unicodedata.normalize("NFD", p) != p for p in paths)
    # On disk exactly as returned.
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(paths)
    assert len({p.casefold() for p in paths}) == len(paths)
    forbidden = set('<>:"\\|?*')
    assert not any(forbidden & set(p) or p.endswith((" ", ".")) for p in paths)


def test_ascii_tree(tmp_path: Path) -> None:
    paths = small_tree(tmp_path, unicode=False)
    assert all(p.isascii() for p in paths)


def test_no_two_pages_of_large_files_are_equal(tmp_path: Path) -> None:
    paths = small_tree(tmp_path)
    pages: set[bytes] = set()
    count = 0
    for rel in (p for p in paths if p.endswith(".mp4")):
        data = (tmp_path / rel).read_bytes()
        assert len(data) == LARGE
        for offset in range(0, len(data), 4 * KiB):
            pages.add(hashlib.sha256(data[offset : offset + 4 * KiB]).digest())
            count += 1
    # A chunk written at the wrong offset, or into the wrong file, changes the digest.
    assert len(pages) == count == 2 * (LARGE // (4 * KiB) + 1)


def test_size_range_and_counts(tmp_path: Path) -> None:
    paths = generate_media_tree(
        tmp_path, small_files=50, small_size_range=(100, 200), large_files=0
    )
    sizes = [size for size, _ in tree_digest(tmp_path).values()]
    assert len(paths) == 50
    assert all(100 <= s <= 200 for s in sizes)  # no empty files when 0 is out of range


def test_refuses_a_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_media_tree(tmp_path, small_files=1, large_files=0)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_tree_digest_sees_every_change_and_follows_no_symlink(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    paths = small_tree(root, large_files=1)
    before = tree_digest(root)

    victim = root / next(p for p in paths if p.endswith(".mp4"))
    with open(victim, "r+b") as f:
        f.seek(LARGE // 2)
        byte = f.read(1)
        f.seek(LARGE // 2)
        f.write(bytes([byte[0] ^ 1]))
    changed = tree_digest(root)
    assert {k for k in before if before[k] != changed[k]} == {victim.relative_to(root).as_posix()}

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"x" * 10)
    os.symlink(outside, root / "link-dir")
    os.symlink("DCIM/.nomedia", root / "link-file")
    (root / ".hidden").write_bytes(b"")
    after = tree_digest(root)
    assert after["link-dir"] == (-1, f"symlink -> {outside}")
    assert after["link-file"] == (-1, "symlink -> DCIM/.nomedia")
    assert not any(k.startswith("link-dir/") for k in after)
    assert after[".hidden"] == (0, hashlib.sha256(b"").hexdigest())


def test_tree_digest_distinguishes_unicode_normalisation(tmp_path: Path) -> None:
    nfc, nfd = tmp_path / "nfc", tmp_path / "nfd"
    nfc.mkdir()
    nfd.mkdir()
    (nfc / unicodedata.normalize("NFC", "Été.txt")).write_bytes(b"1")
    (nfd / unicodedata.normalize("NFD", "Été.txt")).write_bytes(b"1")
    assert tree_digest(nfc) != tree_digest(nfd)
