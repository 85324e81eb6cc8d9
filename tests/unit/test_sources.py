"""``collect_sources``: a file that disappears while the tree is walked is left
out of the offer and listed as unreadable; the rest is offered (issue 13).

Root opens mode-000 files, so the permission case is in
tests/integration/test_batch.py (a sender without CAP_DAC_OVERRIDE); here the
race is forced by removing a file between the directory listing and its lstat.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import sources as sources_mod
from pipeline.sources import SourceError, collect_sources


def test_a_file_that_vanishes_during_the_walk_is_listed_not_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.jpg", "sub/gone.jpg"):
        (tree / name).write_bytes(b"x" * 10)
    gone = str(tree / "sub" / "gone.jpg")
    real_lstat = os.lstat

    def lstat_after_unlink(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if path == gone and os.path.exists(gone):
            os.unlink(gone)  # removed after os.walk listed it
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sources_mod.os, "lstat", lstat_after_unlink)
    found = collect_sources([str(tree)])
    assert [e.path for e in found.entries] == ["tree/a.jpg", "tree/sub/b.jpg"]
    assert found.unreadable == [(gone, "No such file or directory")]


def test_a_missing_command_line_path_is_still_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="No such file or directory"):
        collect_sources([str(tmp_path / "nope")])
