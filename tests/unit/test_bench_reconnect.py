"""The reconnect bench's recovery figures, from a synthetic stored-bytes series."""

from __future__ import annotations

from pathlib import Path

from bench.scenarios.reconnect import CutWhenQuarterStored, stored_bytes

MB = 1_000_000


def series(cut: float, back: float, resume_rate: float) -> list[tuple[float, int]]:
    """10 MB/s until ``cut``, nothing until ``back`` + 0.3 s, then ``resume_rate``."""
    samples, stored, t = [], 0.0, 0.0
    while t < back + 5:
        rate = 10 * MB if t < cut else (0 if t < back + 0.3 else resume_rate)
        stored += rate * 0.02
        samples.append((round(t, 2), int(stored)))
        t += 0.02
    return samples


def sampler(samples: list[tuple[float, int]], cut: float | None, back: float | None) -> CutWhenQuarterStored:
    s = CutWhenQuarterStored(None, Path("/nonexistent"), 10**12, 3.0)
    s.samples, s.cut_at, s.restored_at = samples, cut, back
    return s


def test_full_rate_is_found_once_the_window_runs_at_90_percent_of_before() -> None:
    found = sampler(series(2.0, 5.0, 10 * MB), 2.0, 5.0).figures()
    assert abs(found["rate_before_cut"] - 10 * MB) < 0.05 * 10 * MB
    assert 0.3 <= found["first_byte_s"] <= 0.36
    # The first 0.5 s window at 90 % starts up to 0.05 s before the data is back at 0.3 s.
    assert 0.24 <= found["full_rate_s"] <= 0.32, found


def test_a_transfer_that_comes_back_slower_never_reaches_full_rate() -> None:
    found = sampler(series(2.0, 5.0, 5 * MB), 2.0, 5.0).figures()
    assert found["first_byte_s"] is not None
    assert found["full_rate_s"] is None


def test_no_cut_no_figures() -> None:
    assert sampler(series(2.0, 5.0, 10 * MB), None, None).figures() == {
        "rate_before_cut": None, "first_byte_s": None, "full_rate_s": None,
    }  # fmt: skip


def test_stored_bytes_counts_hidden_partials_in_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".x.partial").write_bytes(b"a" * 10)
    (tmp_path / "y").write_bytes(b"b" * 5)
    assert stored_bytes(tmp_path) == 15
    assert stored_bytes(tmp_path / "missing") == 0
