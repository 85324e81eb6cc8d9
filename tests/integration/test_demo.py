"""The README's first command: pipeline-demo runs a complete local transfer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_transfers_and_verifies_a_media_tree(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.demo", "--large-size", "4MiB", "--small-files", "40", "--workdir", str(work), "--keep"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical: 41 / 41 -> yes" in result.stdout
    received = work / "received" / "media"
    assert sum(1 for p in received.rglob("*") if p.is_file()) == 41
    assert not list(work.rglob("*.part"))
