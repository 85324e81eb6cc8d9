"""What the receiver shows of an offer, and what it checks against ``--out`` (C.4)."""

from __future__ import annotations

from pathlib import Path

from pipeline.offer import check_offer, describe_offer
from pipeline.protocol.frames import FileEntry

MiB = 1024 * 1024


def entries(*paths: str, size: int = 10) -> list[FileEntry]:
    return [FileEntry(id=i, path=path, size=size) for i, path in enumerate(paths)]


def test_the_first_line_gives_count_and_total_size() -> None:
    text = describe_offer(entries("a.txt", "b.txt"), 3 * MiB // 2)
    assert text.splitlines()[0] == "Offered: 2 files, 1.5 MiB"


def test_top_level_names_are_listed_folders_with_their_file_count() -> None:
    files = entries("Été 2024/a.jpg", "Été 2024/sub/b.jpg", "notes.txt", "Été 2024/c.mov")
    assert describe_offer(files, 40).splitlines() == [
        "Offered: 4 files, 40 B",
        "  notes.txt",
        "  Été 2024/  (3 files)",
    ]


def test_a_file_and_a_folder_of_the_same_name_stay_apart() -> None:
    lines = describe_offer(entries("clips", "clips/x.mp4"), 20).splitlines()[1:]
    assert lines == ["  clips", "  clips/  (1 files)"]


def test_a_long_list_is_cut_after_the_limit() -> None:
    files = entries(*(f"file{i:02}.bin" for i in range(12)))
    lines = describe_offer(files, 120, limit=8).splitlines()
    assert lines[1:9] == [f"  file{i:02}.bin" for i in range(8)]
    assert lines[9:] == ["  ... and 4 more"]


def test_exactly_the_limit_shows_everything() -> None:
    lines = describe_offer(entries(*(f"f{i}" for i in range(8))), 80, limit=8).splitlines()
    assert len(lines) == 9 and not any("more" in line for line in lines)


def test_an_empty_offer_is_one_line() -> None:
    assert describe_offer([], 0) == "Offered: 0 files, 0 B"


def test_check_offer_finds_conflicts_blocked_and_new_folders(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("old")
    (tmp_path / "photos").write_text("a file where a folder must go")
    files = entries("keep.txt", "photos/a.jpg", "new/deep/b.jpg", "fresh.txt")

    check = check_offer(str(tmp_path), files)

    assert check.conflicts == ["keep.txt"]
    assert check.blocked == ["photos"]
    assert check.new_dirs == ["new/deep", "new"]  # deepest first, as they are removed
    assert check.fits(0) and check.fits(check.free_bytes) and not check.fits(check.free_bytes + 1)
