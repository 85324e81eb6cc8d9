"""Progress display (driven with explicit `now`), the final summary's transfer time and
rate, and the unit formatters they use."""

from __future__ import annotations

import io
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import control
from pipeline.cli.common import (
    REPORT_LIMIT,
    ConsoleReporter,
    FileOutcome,
    file_report,
    report_result,
    summarize,
)
from pipeline.config import Config
from pipeline.progress import CURRENT_WIDTH, ProgressView, shorten
from pipeline.protocol.frames import Verdict
from pipeline.protocol.verdicts import Verdicts
from pipeline.supervisor import SessionResult, TransferClock
from pipeline.units import format_bytes, format_duration, format_rate

MiB = 1024 * 1024


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(view: ProgressView, seconds: float, step: float, rate: float, start: float = 0.0) -> None:
    now = start
    while now <= start + seconds + 1e-9:
        view.update(now, int(rate * now), files_done=0)
        now += step


def test_auto_is_bar_on_a_terminal_and_lines_otherwise() -> None:
    assert ProgressView("auto", FakeTerminal(), 10, 1).mode == "bar"
    assert ProgressView("auto", io.StringIO(), 10, 1).mode == "lines"


def test_bar_redraws_in_place_at_most_ten_times_a_second() -> None:
    out = FakeTerminal()
    view = ProgressView("bar", out, total_bytes=100 * MiB, total_files=3, label="photos")
    drive(view, seconds=2.0, step=0.01, rate=1 * MiB)
    text = out.getvalue()
    assert "\n" not in text
    assert 15 <= text.count("\r") <= 21
    last = text.rsplit("\r", 1)[1]
    # The last draw is from t=1.9x or 2.0 (throttled), about 2 MiB in.
    assert re.match(r"photos   [12]\.[09]% \[\.{20}\] [12]\.[09] MiB / 100\.0 MiB  ", last), last
    assert "1.0 MB/s" in last  # 1 MiB/s = 1.05 MB/s
    assert "files 0/3" in last
    # ETA from the recent rate: 98 MiB left at 1 MiB/s.
    assert "ETA 1:38" in last


def test_bar_blanks_leftovers_of_a_longer_previous_line() -> None:
    out = FakeTerminal()
    view = ProgressView("bar", out, total_bytes=10 * 1024**3, total_files=1)
    view.update(0.0, 0, 0)
    view.update(1.0, 5 * 1024**3, 0)  # "5.0 GiB ... 5.4 GB/s" is long
    view.update(2.0, 5 * 1024**3, 0)  # rate gone: shorter figures
    frames = out.getvalue().split("\r")[1:]
    assert len(frames[2]) >= len(frames[1].rstrip())


def test_bar_finish_draws_final_state_then_outcome() -> None:
    out = FakeTerminal()
    view = ProgressView("bar", out, total_bytes=1000, total_files=2)
    view.update(0.0, 0, 0)
    view.update(0.05, 1000, 2)  # complete: drawn despite the 10/s limit
    view.finish("completed: 2 files")
    text = out.getvalue()
    assert text.endswith("\ncompleted: 2 files\n")
    final = text.split("\n")[0].rsplit("\r", 1)[1]
    assert "100.0%" in final and "files 2/2" in final
    view.update(1.0, 0, 0)
    assert out.getvalue() == text  # nothing after finish


def test_lines_mode_every_five_seconds_and_at_completion() -> None:
    out = io.StringIO()
    view = ProgressView("lines", out, total_bytes=13 * MiB, total_files=1, label="send")
    now = 0.0
    while now < 14.0:
        done = min(13 * MiB, int(now * MiB))
        view.update(now, done, 1 if done == 13 * MiB else 0)
        now += 0.1
    view.finish("completed")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # t=0, 5, 10, then 100 % at t=13, then the outcome.
    assert len(lines) == 5, lines
    assert lines[0].startswith("send: 0.0%, 0 B / 13.0 MiB")
    assert lines[3].startswith("send: 100.0%, 13.0 MiB / 13.0 MiB") and "files 1/1" in lines[3]
    assert lines[4] == "completed"


def test_lines_finish_reports_where_an_unfinished_transfer_stopped() -> None:
    out = io.StringIO()
    view = ProgressView("lines", out, total_bytes=100, total_files=1)
    view.update(0.0, 0, 0)
    view.update(2.0, 40, 0)
    view.finish("failed: connection lost")
    assert out.getvalue().splitlines()[1:] == [
        "40.0%, 40 B / 100 B, 20 B/s, ETA 0:03, files 0/1",
        "failed: connection lost",
    ]


def test_none_prints_nothing() -> None:
    out = io.StringIO()
    view = ProgressView("none", out, total_bytes=100, total_files=1)
    drive(view, seconds=20, step=0.5, rate=5)
    view.finish("completed")
    assert out.getvalue() == ""


def test_rate_follows_the_last_seconds_so_a_stall_shows() -> None:
    view = ProgressView("none", io.StringIO(), total_bytes=1000 * MiB, total_files=1)
    drive(view, seconds=10, step=0.1, rate=10 * MiB)
    assert view.rate() == pytest.approx(10 * MiB, rel=0.02)
    for i in range(1, 41):  # 4 s without progress
        view.update(10 + i * 0.1, 100 * MiB, 0)
    assert view.rate() == 0.0
    assert view.eta() is None


def test_empty_transfer_and_unknown_rate() -> None:
    out = io.StringIO()
    view = ProgressView("lines", out, total_bytes=0, total_files=3)
    view.update(0.0, 0, 1)
    assert "33.3%" in out.getvalue() and "-- B/s" in out.getvalue()
    view.update(0.1, 0, 3)
    assert out.getvalue().splitlines()[-1].startswith("100.0%")


def test_ascii_bar_when_stream_cannot_encode_blocks() -> None:
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    view = ProgressView("bar", ascii_out, total_bytes=100, total_files=1)
    view.update(0.0, 50, 0)  # would raise UnicodeEncodeError with block characters
    ascii_out.flush()
    assert re.search(r"\[#{10}\.{10}\]", ascii_out.buffer.getvalue().decode())


# -- the transfer's time and rate in the summary ---------------------------------------


def test_the_receivers_transfer_runs_from_its_accept_to_the_outcome() -> None:
    clock = TransferClock(now=0.0)
    clock.accepted(25.0)  # the user took 25 s to answer
    clock.finished(29.0)
    clock.finished(31.0)  # a second report changes nothing
    assert clock.seconds(now=40.0) == 4.0


def test_the_senders_transfer_starts_at_the_last_idle_progress_report() -> None:
    clock = TransferClock(now=0.0)
    for now in (0.25, 0.5, 12.0):  # waiting for the receiver and its user
        clock.progress(now, active=False)
    clock.progress(12.25, active=True)  # the accept came in between
    clock.progress(13.0, active=True)
    clock.progress(13.5, active=False)  # nothing new in flight: still the same transfer
    clock.finished(14.0)
    assert clock.seconds(now=15.0) == 2.0


def test_a_transfer_that_never_started_takes_no_time() -> None:
    clock = TransferClock(now=0.0)
    clock.progress(1.0, active=False)
    clock.finished(2.0)
    assert clock.seconds(now=3.0) == 0.0
    running = TransferClock(now=5.0)
    running.progress(5.1, active=True)  # active from the first report: since the start
    assert running.seconds(now=7.0) == 2.0  # not finished yet: until now


def session(duration: float, transfer: float, bytes_done: int) -> SessionResult:
    return SessionResult(
        outcome="completed",
        code=None,
        message="",
        by_peer=False,
        diagnostics={},
        counters={"bytes": bytes_done, "files_verified": 3},
        duration=duration,
        exitcodes={},
        transfer=transfer,
    )


def test_summary_rate_is_over_the_transfer_not_the_session(capsys: pytest.CaptureFixture[str]) -> None:
    summary = summarize("sender", session(duration=10.0, transfer=2.0, bytes_done=4_000_000), {}, 3, 4_000_000)
    assert (summary["duration_s"], summary["transfer_s"]) == (10.0, 2.0)
    assert summary["throughput_bytes_per_s"] == 2_000_000.0

    assert report_result("pipeline-send", Config(), ConsoleReporter(Config()), summary) == 0
    line = capsys.readouterr().out.strip()
    assert line == "completed: 3 files, 3.8 MiB verified (SHA-256) in 0:02 (2.0 MB/s; 0:10 with connecting and waiting)"


def test_no_transfer_time_gives_no_rate() -> None:
    summary = summarize("sender", session(duration=5.0, transfer=0.0, bytes_done=0), {}, 1, 10)
    assert (summary["transfer_s"], summary["throughput_bytes_per_s"]) == (0.0, 0.0)


def test_many_files_show_the_current_file_by_its_name_end() -> None:
    out = io.StringIO()
    view = ProgressView("lines", out, total_bytes=10, total_files=3, label="send")
    long_name = "media/DCIM/" + "x" * 60 + "/IMG_0042.JPG"
    view.update(0.0, 0, 0, current=long_name)
    line = out.getvalue().splitlines()[0]
    assert line.endswith("files 0/3, now " + shorten(long_name)), line
    assert shorten(long_name).endswith("/IMG_0042.JPG") and len(shorten(long_name)) == CURRENT_WIDTH
    assert shorten("a/b.txt") == "a/b.txt"


def test_one_file_is_not_named_again_on_its_progress_line() -> None:
    out = io.StringIO()
    view = ProgressView("lines", out, total_bytes=10, total_files=1, label="send")
    view.update(0.0, 0, 0, current="big.mkv")
    assert "now" not in out.getvalue()


def test_the_reporter_names_the_current_file_from_the_connections_id() -> None:
    reporter = ConsoleReporter(Config(), 30, 3, label="send", names=["a.jpg", "b.jpg", "c.jpg"])
    out = io.StringIO()
    assert reporter.view is not None and reporter.view.mode == "lines"  # stderr is no terminal here
    reporter.view._stream = out
    fields = dict(frames_sent=0, retransmitted=0, buffered_amount=0, window_in_use=0, duplicates=0)
    reporter.progress(control.Progress(bytes_done=10, files_done=1, current_file=1, **fields))
    assert out.getvalue().rstrip().endswith("files 1/3, now b.jpg")
    reporter.view._last_draw = None
    reporter.progress(control.Progress(bytes_done=30, files_done=3, current_file=-1, **fields))
    assert out.getvalue().rstrip().endswith("files 3/3")


def finished_with(verdicts: dict[int, Verdict], outcome: str = "failed", code: str | None = "hash_mismatch") -> SessionResult:
    letters = Verdicts()
    letters.update(verdicts)
    return SessionResult(
        outcome=outcome,
        code=code,
        message="receiver verified 1, failed 1 files",
        by_peer=True,
        diagnostics={"verdicts": letters.letters(3), "final_paths": {"0": "a (1).jpg"}},
        counters={"bytes": 3, "files_verified": sum(v == "verified" for v in verdicts.values())},
        duration=1.0,
        exitcodes={},
        transfer=1.0,
    )


def test_the_summary_lists_every_file_with_its_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    summary = summarize("sender", finished_with({0: "verified", 1: "mismatch"}), {}, 3, 3, paths)
    assert msgspec.to_builtins(summary["file_outcomes"]) == [
        {"path": "a (1).jpg", "outcome": "verified"},  # the receiver's final name
        {"path": "b.jpg", "outcome": "hash_mismatch"},
        {"path": "c.jpg", "outcome": "not_transferred"},
    ]
    assert "verdicts" not in summary["connection"]  # moved, not repeated
    assert report_result("pipeline-send", Config(), ConsoleReporter(Config()), summary) == 4
    err = capsys.readouterr().err
    assert "2 of 3 files not verified: 1 hash mismatch, 1 not transferred" in err
    assert "  hash mismatch: b.jpg\n" in err
    assert "c.jpg" not in err  # not transferred: counted, not named one by one


def test_a_completed_session_reports_no_file_list(capsys: pytest.CaptureFixture[str]) -> None:
    summary = summarize("sender", finished_with({0: "verified"}, "completed", None), {}, 1, 3, ["a.jpg"])
    assert report_result("pipeline-send", Config(), ConsoleReporter(Config()), summary) == 0
    assert "not verified" not in capsys.readouterr().err


def test_the_file_report_names_at_most_the_limit() -> None:
    outcomes = [FileOutcome(f"f{i}", "io_error") for i in range(REPORT_LIMIT + 5)]
    outcomes.append(FileOutcome("gone.mov", "unreadable", "Permission denied"))
    lines = file_report(outcomes)
    assert lines[0] == f"{REPORT_LIMIT + 6} of {REPORT_LIMIT + 6} files not verified: {REPORT_LIMIT + 5} io error, 1 unreadable"
    assert len(lines) == 1 + REPORT_LIMIT + 2
    assert lines[-2] == "  ... and 6 more"


# -- units ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3 << 29, "1.5 GiB"),
        (1024 * 1024 - 1, "1.0 MiB"),
        (-2048, "-2.0 KiB"),
        (5 << 40, "5.0 TiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (0, "0 B/s"),
        (999, "999 B/s"),
        (12_300_000, "12.3 MB/s"),
        (1_500, "1.5 kB/s"),
        (2.5e9, "2.5 GB/s"),
        (float("nan"), "-- B/s"),
    ],
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00"),
        (5, "0:05"),
        (245, "4:05"),
        (3723, "1:02:03"),
        (59.6, "1:00"),
        (90000, "25:00:00"),
        (-1, "--:--"),
        (float("inf"), "--:--"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(0, 2**62))
def test_format_bytes_is_within_rounding_of_the_value(n: int) -> None:
    number, unit = format_bytes(n).split(" ")
    scale = {
        "B": 1,
        "KiB": 2**10,
        "MiB": 2**20,
        "GiB": 2**30,
        "TiB": 2**40,
        "PiB": 2**50,
        "EiB": 2**60,
    }
    assert float(number) * scale[unit] == pytest.approx(n, rel=0.05, abs=1)
    assert unit == "B" or 1.0 <= float(number) < 1024
