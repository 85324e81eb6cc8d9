"""The bench's pure pieces: argument parsing, ratios and tables, telemetry parsing.

No transfers and no timing assertions (speed is measured by ``python -m bench``,
never asserted in tests).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from bench.cli import parse_args
from bench.context import Settings
from bench.report import (
    fmt_rate,
    fmt_ratio,
    fmt_size,
    fmt_spread,
    markdown_table,
    median,
    ratio,
    render_markdown,
    verdicts,
)
from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS
from bench.scenarios.media import _order
from bench.scenarios.profile import module_group, summarize_collapsed
from bench.scenarios.sweep import default_positions, plan, sweep_points
from bench.series import (
    ProgressPoint,
    clock_offset,
    parse_telemetry,
    rate_series,
    steady_cpu_per_gb,
    steady_rate,
)
from bench.transfer import ProgressWatch
from pipeline.config import Config, apply_overrides

MiB = 1 << 20


# -- argument parsing ---------------------------------------------------------------


def test_no_names_runs_the_default_scenarios_in_canonical_order() -> None:
    order, settings, _ = parse_args([])
    assert order == list(DEFAULT_SCENARIOS)
    assert settings == Settings()


def test_names_are_put_in_canonical_order_and_quick_sets_small_sizes() -> None:
    order, settings, _ = parse_args(["sweep", "ceiling", "--quick"])
    assert order == ["ceiling", "sweep"]
    assert settings.quick and settings.large_size == 256 * MiB
    assert settings.memory_sizes == [64 * MiB, 256 * MiB]


def test_flags_override_the_mode_defaults() -> None:
    _, settings, _ = parse_args(["--quick", "--large-size", "1GiB", "--memory-sizes", "64MiB,256MiB,1GiB", "--no-plots"])
    assert settings.large_size == 1 << 30
    assert settings.memory_sizes == [64 * MiB, 256 * MiB, 1 << 30]
    assert settings.plots is False
    assert settings.sweep_mode == "quick"


def test_all_means_the_defaults_and_profile_is_only_by_name() -> None:
    assert parse_args(["all"])[0] == list(DEFAULT_SCENARIOS)
    assert "profile" in SCENARIOS and "profile" not in DEFAULT_SCENARIOS
    assert parse_args(["profile"])[0] == ["profile"]
    assert parse_args(["profile", "all"])[0] == [*DEFAULT_SCENARIOS, "profile"]


def test_impairment_conditions_are_chosen_by_name() -> None:
    _, settings, _ = parse_args(["impairment", "--impairment-conditions", "rtt40, rtt-rise"])
    assert settings.impairment_conditions == ["rtt40", "rtt-rise"]
    assert parse_args(["impairment"])[1].impairment_conditions == []


def test_sweep_factors_are_checked() -> None:
    _, settings, _ = parse_args(["sweep", "--sweep-factors", "window,chunk_size", "--sweep-repeat", "2"])
    assert settings.sweep_factors == ["window", "chunk_size"] and settings.sweep_repeat == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["nonsense"],
        ["--large-size", "lots"],
        ["--media-repeat", "0"],
        ["--sweep-factors", "colour"],
        ["impairment", "--impairment-conditions", "rtt40,fog"],
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


# -- ratios and tables ------------------------------------------------------------------


def test_median_and_ratio_ignore_missing_values() -> None:
    assert median([3, None, 1, 2]) == 2
    assert median([None]) is None
    assert ratio(9, 10) == 0.9
    assert ratio(None, 10) is None and ratio(1, 0) is None


def test_formatting() -> None:
    assert fmt_ratio(0.9012) == "0.90×"
    assert fmt_ratio(None) == "–"
    assert fmt_rate(12_345_678) == "12.3 MB/s"
    assert fmt_rate(1_234_000_000) == "1234 MB/s"
    assert fmt_size(65536) == "64 KiB" and fmt_size(1 << 30) == "1 GiB"
    assert fmt_size(262120) == "255.98 KiB"
    assert fmt_spread([12e6, 10e6, 11e6]) == "11.0 MB/s (10.0–12.0, n=3)"
    assert fmt_spread([12e6]) == "12.0 MB/s"


def test_markdown_table_aligns_numbers_and_escapes_pipes() -> None:
    table = markdown_table(["case", "rate"], [["a|b", "1.0 MB/s"], ["c", "–"]])
    lines = table.splitlines()
    assert lines[0] == "| case | rate |"
    assert lines[1] == "|---|---:|"
    assert lines[2] == "| a\\|b | 1.0 MB/s |"
    with pytest.raises(ValueError):
        markdown_table(["one"], [["a", "b"]])


def test_verdicts_name_the_targets_and_the_miss() -> None:
    results = {
        "scenarios": {
            "large-file": {
                "result": {
                    "ratio_steady": 0.8,
                    "target_ratio": 0.9,
                    "steady_bytes_per_s": 8e6,
                    "ceiling_steady_bytes_per_s": 10e6,
                    "ratio_end_to_end": 0.7,
                }
            },
            "memory": {"result": {"flat": True, "sender_largest_over_smallest": 1.01, "receiver_largest_over_smallest": 1.0}},
            "media": {"result": {"ratio_steady": 0.75, "target_ratio": 0.7, "files_per_s": 150.0}},
            "sweep": {"error": "RuntimeError: boom"},
        }
    }
    lines = verdicts(results)
    assert "0.80× of the ceiling" in lines[0] and "missed by 10 points" in lines[0]
    assert "flat" in lines[1]
    assert "0.75×" in lines[2] and "reached" in lines[2]
    assert lines[3] == "sweep: FAILED: RuntimeError: boom"
    text = render_markdown({**results, "run_id": "x", "machine": {"cores": 2}, "settings": {"quick": True}})
    assert text.startswith("Run x (quick)")


# -- telemetry ------------------------------------------------------------------------


def _telemetry_lines() -> list[str]:
    """Recorder clock starts 2.0 s before the first progress report; 10 MB/s for 10 s."""
    lines = []
    for i in range(25):  # samples every 0.5 s on the recorder clock
        t_sample = i * 0.5
        cpu = max(0.0, t_sample - 2.0) * 0.6  # 0.6 CPU-s per s = 60 s/GB at 10 MB/s
        processes = {
            "connection": {"pid": 2, "gone": False, "pss": 60 * MiB, "cpu_user": cpu, "cpu_system": 0.0},
            "supervisor": {"pid": 1, "gone": False, "pss": 30 * MiB, "cpu_user": 0.1, "cpu_system": 0.0},
        }
        lines.append(json.dumps({"type": "sample", "t": t_sample, "sum_pss": 90 * MiB, "processes": processes}))
        # progress reports between this sample and the next (progress clock = recorder - 2.0)
        for k in range(2):
            t_progress = t_sample + 0.1 + 0.25 * k - 2.0
            if 0 <= t_progress <= 10:
                done = int(10e6 * t_progress)
                lines.append(json.dumps({"type": "progress", "t": round(t_progress, 3), "bytes_done": done}))
    lines.append("{not json")
    lines.append(json.dumps({"type": "stall", "start": 0.0, "duration": 1.2, "bytes_done": 0}))
    lines.append(json.dumps({"type": "summary", "peak_sum_pss": 90 * MiB}))
    return lines


def test_parse_telemetry_aligns_memory_on_the_progress_clock() -> None:
    tel = parse_telemetry(_telemetry_lines())
    assert tel.offset == pytest.approx(2.0, abs=0.15)
    assert tel.memory[0].t == pytest.approx(-2.0, abs=0.15)
    assert tel.roles == ["connection", "supervisor"]
    assert tel.stalls == [{"start": 0.0, "duration": 1.2, "bytes_done": 0}]
    assert tel.summary == {"peak_sum_pss": 90 * MiB}
    assert len(tel.progress) > 30


def test_clock_offset_without_progress_is_zero() -> None:
    assert clock_offset([{"type": "sample", "t": 1.0}]) == 0.0


def test_steady_rate_and_series_of_a_constant_rate() -> None:
    tel = parse_telemetry(_telemetry_lines())
    total = tel.progress[-1].bytes_done
    assert steady_rate(tel.progress, total) == pytest.approx(10e6, rel=1e-6)
    series = rate_series(tel.progress, window=1.0)
    assert all(rate == pytest.approx(10e6, rel=1e-6) for _, rate in series)
    assert steady_rate([ProgressPoint(0.0, 0)], 100) is None


def test_steady_cpu_per_gb() -> None:
    tel = parse_telemetry(_telemetry_lines())
    cpu = steady_cpu_per_gb(tel, tel.progress[-1].bytes_done)
    assert cpu is not None
    assert cpu["connection"] == pytest.approx(60.0, rel=0.05)
    assert cpu["supervisor"] == pytest.approx(0.0, abs=0.01)


# -- scenario plans -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["quick", "ofat", "grid"])
def test_every_sweep_point_is_a_valid_config_and_not_the_defaults(mode: str) -> None:
    defaults = Config()
    points = sweep_points(mode, defaults)
    assert points
    for _, _, config in points:
        cfg = apply_overrides(defaults, config)  # raises ConfigError if invalid
        assert cfg != defaults


def test_default_runs_are_spread_from_first_to_last() -> None:
    assert default_positions(3, 2) == [0, 4]
    assert default_positions(11, 3) == [0, 6, 13]  # 14 slots: first, middle, last
    assert default_positions(5, 1) == [0]


def test_sweep_plan_repeats_points_round_by_round_between_defaults() -> None:
    a, b = ("window", "32", {}), ("window", "64", {})
    assert plan([a, b], repeat=2, default_repeat=2) == [None, a, b, a, b, None]
    assert plan([a], repeat=1, default_repeat=3) == [None, a, None, None]


def test_media_order_is_abba() -> None:
    assert _order(1) == ["file", "dir"]
    assert _order(2) == ["file", "dir", "dir", "file"]


def test_profile_summary_of_collapsed_stacks() -> None:
    lines = [
        "_run_once (asyncio/base_events.py);_send (aiortc/rtcsctptransport.py) 60",
        "_run_once (asyncio/base_events.py);flush (pipeline/connection/dataplane.py) 30",
        "garbage",
        "",
        "_run_once (asyncio/base_events.py) 10",
    ]
    summary = summarize_collapsed(lines, seconds=2.0, rate=100)
    assert summary["samples"] == 100
    assert summary["busy_share"] == 0.5
    assert summary["self_by_function"][0] == ("_send (aiortc/rtcsctptransport.py)", 0.6)
    assert dict(summary["self_by_module"])["pipeline/connection"] == 0.3
    assert dict(summary["inclusive_by_module"])["asyncio"] == 1.0
    assert module_group("/x/site-packages/aioice/ice.py") == "aioice/ice.py"


def test_progress_watch_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "receiver.telemetry.jsonl"
    watch = ProgressWatch(path, now=0.0)
    watch.poll(1.0)  # no file yet
    assert watch.idle(5.0) == 5.0
    with open(path, "w") as f:
        f.write('{"type":"sample","t":0.1}\n{"type":"progress","t":0.0,"bytes_done":0}\n{"type":"progress","t":0.2,')
    watch.poll(6.0)
    assert watch.bytes_done == 0 and watch.idle(7.0) == 1.0
    with open(path, "a") as f:
        f.write('"bytes_done":65536}\n')
    watch.poll(8.0)
    assert watch.bytes_done == 65536 and watch.idle(8.5) == 0.5


def test_failed_attempts_are_reported() -> None:
    results = {
        "transfers_started": 7,
        "failed_attempts": [{"label": "media-dir-2", "error": "hung: no progress for 45 s", "hung": True}],
    }
    (line,) = verdicts(results)
    assert line.startswith("Failures: 1 of 7 transfers failed, 1 of them hung")


def test_impairment_conditions_and_the_chromium_baseline_in_a_condition_result() -> None:
    from bench.scenarios import impairment

    names = [c.name for c in impairment.CONDITIONS]
    assert {"40ms+1%", "100ms+2%", "rtt-rise"} <= set(names)
    rise = next(c for c in impairment.CONDITIONS if c.name == "rtt-rise")
    assert rise.describe()["rise_ms_each_way"] == 20 and rise.delay_ms == 0
    run = {"ok": True, "bytes_per_s": 4e6, "steady_bytes_per_s": 4e6, "open_to_last_bytes_per_s": 4e6, "rtt_ms": 41.0}
    pipe = {**run, "verified": True, "retransmitted_frames": 0, "stalls": [0, 0], "end_to_end_bytes_per_s": 3e6}
    chromium = [{"ok": True, "bytes_per_s": 0.3e6}, {"ok": False, "bytes_per_s": None}, {"ok": True, "bytes_per_s": 0.5e6}]
    result = impairment._condition_result(impairment.CONDITIONS[0], 1, [run], [pipe], chromium)
    assert result["chromium_bytes_per_s"] == 0.4e6
    assert result["ratio_chromium"] == 10.0


def test_second_half_rate_starts_at_the_first_point_past_half() -> None:
    from bench.series import second_half_rate

    # 10 bytes/s until 50 (t = 5), then 2 bytes/s: the second half's rate is the slow one.
    points = [(t, 10 * t) for t in range(6)] + [(5 + t, 50 + 2 * t) for t in range(1, 26)]
    assert second_half_rate(points, 100) == 2.0
    assert second_half_rate([(0.0, 10), (1.0, 60), (3.0, 100)], 100) == 20.0  # 60 -> 100 in 2 s
    assert second_half_rate([(0.0, 10), (1.0, 40)], 100) is None  # never past half
    assert second_half_rate([(0.0, 10), (1.0, 90)], 100) is None  # never complete
    assert second_half_rate([(1.0, 100)], 100) is None  # half and end coincide


def test_rise_result_sets_each_side_after_the_rise_against_itself_at_40_ms() -> None:
    from bench.scenarios import impairment

    def condition(name: str, raw: float, pipeline: float) -> dict[str, object]:
        described = next(c for c in impairment.CONDITIONS if c.name == name).describe()
        return {
            "name": name,
            "impairment": described,
            "second_half_bytes_per_s": {"raw": raw, "pipeline": pipeline, "chromium": None},
        }

    assert impairment.rise_result([condition("rtt40", 12e6, 11e6)]) is None
    rise = impairment.rise_result([condition("rtt40", 12e6, 11e6), condition("rtt-rise", 6e6, 11e6)])
    assert rise is not None
    assert rise["ratio"] == {"raw": 0.5, "pipeline": 1.0, "chromium": None}
    assert round(rise["connect_time_cap_bound_bytes_per_s"]) == 6553600
    line = [v for v in verdicts({"scenarios": {"impairment": {"result": {"rtt_rise": rise}}}}) if "RTT rise" in v]
    assert line and "pipeline 11.0 MB/s = 1.00×" in line[0] and "raw 6.0 MB/s = 0.50×" in line[0]


class _FakeLab:
    """Records the impairment calls a condition makes, and from which thread."""

    def __init__(self) -> None:
        self.delays: list[tuple[str, float, threading.Thread]] = []

    def delay(self, side: str, ms: float) -> None:
        self.delays.append((side, ms, threading.current_thread()))

    def loss(self, side: str, probability: float) -> None:
        pass

    def rate(self, side: str, rate: str | None) -> None:
        pass


def test_rtt_rise_raises_the_delay_from_a_thread_that_outlives_the_transfer() -> None:
    # The lab's delayer dies with the thread that started it (PR_SET_PDEATHSIG): a
    # rise from a thread that ends at once is a rise that never happened.
    from bench.scenarios import impairment

    rise = dataclasses.replace(next(c for c in impairment.CONDITIONS if c.name == "rtt-rise"), rise_after_s=0.01)
    lab = _FakeLab()
    with rise.during_run(lab):  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while len(lab.delays) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [(side, ms) for side, ms, _ in lab.delays] == [("a", 0.0), ("a", 20)]
        riser = lab.delays[1][2]
        assert riser is not threading.main_thread()
        time.sleep(0.05)
        assert riser.is_alive(), "the thread that started the delayer ended during the transfer"
    assert not riser.is_alive()


def test_rtt_rise_does_not_rise_after_a_transfer_that_ended_first() -> None:
    from bench.scenarios import impairment

    rise = dataclasses.replace(next(c for c in impairment.CONDITIONS if c.name == "rtt-rise"), rise_after_s=30)
    lab = _FakeLab()
    started = time.monotonic()
    with rise.during_run(lab):  # type: ignore[arg-type]
        pass
    assert [(side, ms) for side, ms, _ in lab.delays] == [("a", 0.0)]
    assert time.monotonic() - started < 5  # the context does not wait out the rise
