"""The soak's short form (``python -m bench soak`` runs 200+ sessions): every case of
``bench.soak.CASES`` once, three sessions at a time through one signaling server.

Each session is judged as the bench judges it: the outcome and exit code Appendix A
gives for that fault on each side, no file left that is not a verified copy, no
pre-existing file changed, no ``/dev/shm`` segment and no process of either CLI
left once both exited.  Root only (the full-disk case mounts a tmpfs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.slow


def test_every_fault_once_concurrently_leaves_nothing_and_gets_its_verdict(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the full-disk case mounts a tmpfs (root only)")
    small, slow = soak.make_sources(tmp_path / "src")
    records = soak.run_soak(tmp_path / "runs", len(soak.CASES), 3, small, slow)

    assert sorted(r.case for r in records) == sorted(c.name for c in soak.CASES)
    problems = [r for r in records if not r.clean]
    assert not problems, "\n".join(
        f"{r.case}: verdict {r.wrong_verdict}, exits {r.exit_codes}, bad files {r.bad_files}, "
        f"changed {r.preexisting_changed}, shm {r.shm_left}, processes {r.processes_left} "
        f"(logs in {tmp_path / 'runs'})"
        for r in problems
    )
    # The faults landed mid-transfer (else this proved little): at most one missed.
    assert sum(r.fault_missed for r in records) <= 1, [r.case for r in records if r.fault_missed]
    normal = next(r for r in records if r.case == "none")
    assert normal.files_left == 7 and normal.exit_codes == {"sender": 0, "receiver": 0}, normal
