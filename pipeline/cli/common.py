"""What ``pipeline-send`` and ``pipeline-receive`` share: flags, config, output, exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec

from pipeline import __version__, control
from pipeline.cli.usage import usage_error
from pipeline.config import Config, ConfigError, apply_overrides, load_config
from pipeline.progress import ProgressView
from pipeline.protocol.filetable import FileTable
from pipeline.protocol.outcome import Outcome, exit_code
from pipeline.protocol.verdicts import verdict_in
from pipeline.supervisor import SessionResult
from pipeline.telemetry import ProcessSampler, TelemetryRecorder
from pipeline.units import format_bytes, format_duration, format_rate

# flag dest -> config key: every CLI option has a config key (tests/unit/test_cli_surface.py
# walks both parsers), except these, which are about the command line itself.
NOT_CONFIG: frozenset[str] = frozenset({"help", "version", "config"})
COMMON_FLAGS: dict[str, str] = {
    "signal": "signal.url",
    "stun": "ice.stun_servers",
    "json": "output.json",
    "telemetry": "output.telemetry",
    "quiet": "output.quiet",
    "progress": "output.progress",
    "window": "transfer.window",
    "chunk_size": "transfer.chunk_size",
    "ring_slots": "transfer.ring_slots",
    "connect_timeout": "ice.connect_timeout",
    "reconnect_timeout": "ice.reconnect_timeout",
    "progress_timeout": "ice.progress_timeout",
    "verbose": "output.verbose",
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/default.yaml)")
    parser.add_argument("--signal", metavar="URL", help="signaling server, ws://HOST:PORT/ws")
    parser.add_argument(
        "--stun",
        metavar="URL",
        action="append",
        help="STUN server stun:HOST[:PORT] (repeatable; two at different addresses also measure this side's NAT type)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the final summary as JSON")
    parser.add_argument("--telemetry", metavar="FILE", help="write memory/throughput samples as JSON lines")
    parser.add_argument(
        "--quiet",
        action="store_true",
        default=None,
        help="no progress or status lines (the sender's code and command, the offer and errors are still shown)",
    )
    parser.add_argument("--progress", choices=["auto", "bar", "lines", "none"], help="progress display")
    parser.add_argument("--window", type=str, metavar="FRAMES", help="max unacknowledged DATA frames")
    parser.add_argument("--chunk-size", type=str, metavar="BYTES", help="DATA payload size, e.g. 64KiB")
    parser.add_argument("--ring-slots", type=str, metavar="N", help="shared-memory ring slots")
    parser.add_argument("--connect-timeout", type=str, metavar="S", help="ICE connect deadline")
    parser.add_argument("--reconnect-timeout", type=str, metavar="S", help="reconnect deadline after a loss")
    parser.add_argument(
        "--progress-timeout",
        type=str,
        metavar="S",
        help="seconds a working link may stay silent (data outstanding, or before the peer introduced itself)",
    )
    parser.add_argument("--verbose", "-v", action="count", default=None, help="log more (repeatable)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def build_config(prog: str, args: argparse.Namespace, flags: dict[str, str]) -> Config:
    try:
        cfg = load_config(args.config)
        overrides = {key: getattr(args, dest) for dest, key in flags.items() if getattr(args, dest, None) is not None}
        labels = {key: "--" + dest.replace("_", "-") for dest, key in flags.items()}
        return apply_overrides(cfg, overrides, flags=labels)
    except ConfigError as exc:
        usage_error(prog, str(exc))


def conn_params(cfg: Config, role: str, code: str, url: str, files: FileTable | None) -> control.ConnParams:
    return control.ConnParams(
        role=role,  # type: ignore[arg-type]
        code=code,
        signal_url=url,
        stun_servers=list(cfg.ice.stun_servers),
        connect_timeout=cfg.ice.connect_timeout,
        reconnect_timeout=cfg.ice.reconnect_timeout,
        progress_timeout=cfg.ice.progress_timeout,
        ordered=cfg.channel.ordered,
        max_retransmits=cfg.channel.max_retransmits,
        max_packet_life_time=cfg.channel.max_packet_life_time,
        buffered_high=cfg.channel.buffered_high,
        buffered_low=cfg.channel.buffered_low,
        flight_cap=cfg.channel.flight_cap,
        chunk_size=cfg.transfer.chunk_size,
        window=cfg.transfer.window,
        rto_initial=cfg.transfer.rto_initial,
        rto_max=cfg.transfer.rto_max,
        ack_interval=cfg.transfer.ack_interval,
        files=None if files is None else files.pack(),
    )


def log_level(verbose: int) -> int:
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


class ConsoleReporter:
    """Status lines and the progress display, on stderr; silent with --quiet (what the
    user must see to go on, the sender's code and the offer, is printed by the CLIs)."""

    def __init__(
        self, cfg: Config, total_bytes: int = 0, total_files: int = 0, label: str = "", names: Sequence[str] = ()
    ) -> None:
        self.quiet = cfg.output.quiet
        self.stream: TextIO = sys.stderr
        mode = "none" if self.quiet else cfg.output.progress
        self.mode = mode
        self.label = label
        self.view: ProgressView | None = None
        self.names: Sequence[str] = ()
        if total_files or total_bytes:
            self.start_progress(total_bytes, total_files, names)
        self.last: control.Progress | None = None

    def start_progress(self, total_bytes: int, total_files: int, names: Sequence[str] = ()) -> None:
        """``names``: each file's path by id, for the progress line's current file."""
        self.names = names
        self.view = ProgressView(self.mode, self.stream, total_bytes, total_files, self.label)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def status(self, text: str) -> None:
        self.say(f"[{time.strftime('%H:%M:%S')}] {text}")

    def connected(self, pair: dict[str, Any] | None, reconnect: bool) -> None:
        self.status(("reconnected: " if reconnect else "connected directly: ") + describe_pair(pair))

    def progress(self, progress: control.Progress) -> None:
        self.last = progress
        if self.view is not None:
            i = progress.current_file
            current = self.names[i] if 0 <= i < len(self.names) else None
            self.view.update(time.monotonic(), progress.bytes_done, progress.files_done, current)

    def finish(self, text: str) -> None:
        if self.view is not None:
            self.view.finish(text)


def describe_pair(pair: dict[str, Any] | None) -> str:
    if not pair:
        return "(pair unknown)"
    local, remote = pair.get("local", {}), pair.get("remote", {})
    rtt = pair.get("rtt_ms")
    rtt_text = f", RTT {rtt:.1f} ms" if isinstance(rtt, int | float) else ""
    return (
        f"{local.get('type')} {local.get('address')}:{local.get('port')} <-> "
        f"{remote.get('type')} {remote.get('address')}:{remote.get('port')}{rtt_text}"
    )


def new_telemetry(cfg: Config) -> TelemetryRecorder:
    recorder = TelemetryRecorder(ProcessSampler({"supervisor": os.getpid()}), interval=0.5, path=cfg.output.telemetry)
    recorder.start()
    return recorder


# A file's outcome in the summary, from its B.6 verdict; a file without one was not transferred.
_FILE_OUTCOMES = {"verified": "verified", "mismatch": "hash_mismatch", "io_error": "io_error"}
# Files the human report names one by one; the JSON summary lists them all.
REPORT_LIMIT = 20


class FileOutcome(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One entry of the summary's ``file_outcomes`` (in the JSON: ``{"path", "outcome"}``,
    plus ``"reason"`` for a file that could not be read). A struct, not a dict: ~70
    instead of ~230 B of the supervisor's memory per file of a 100,000-file batch."""

    path: str
    outcome: str
    reason: str | None = None


def file_outcomes(paths: Sequence[str], verdicts: str, final_paths: dict[str, str]) -> list[FileOutcome]:
    """Every file by id: its path (the final one where the receiver renamed it) and outcome.

    ``verdicts`` is :meth:`pipeline.protocol.verdicts.Verdicts.letters`' one letter per file;
    ``final_paths`` names only the files stored under another name.
    """
    return [
        FileOutcome(
            final_paths.get(str(i), path),
            _FILE_OUTCOMES.get(verdict_in(verdicts, i) or "", "not_transferred"),
        )
        for i, path in enumerate(paths)
    ]


def file_report(outcomes: Sequence[FileOutcome]) -> list[str]:
    """Lines for the files that did not arrive verified: counts by outcome, then each
    failed or unreadable one (up to REPORT_LIMIT); nothing when all were verified."""
    missing = [f for f in outcomes if f.outcome != "verified"]
    if not missing:
        return []
    counts = Counter(f.outcome for f in missing)
    lines = [
        f"{len(missing)} of {len(outcomes)} files not verified: "
        + ", ".join(f"{n} {outcome.replace('_', ' ')}" for outcome, n in counts.most_common())
    ]
    named = [f for f in missing if f.outcome != "not_transferred"]
    for f in named[:REPORT_LIMIT]:
        reason = f": {f.reason}" if f.reason else ""
        lines.append(f"  {f.outcome.replace('_', ' ')}: {f.path}{reason}")
    if len(named) > REPORT_LIMIT:
        lines.append(f"  ... and {len(named) - REPORT_LIMIT} more")
    lines.append("  (every file's outcome: the --json summary's file_outcomes)")
    return lines


def summarize(
    role: str,
    result: SessionResult,
    telemetry: dict[str, Any],
    total_files: int,
    total_bytes: int,
    paths: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON summary; ``paths`` (each file's path by id) gives ``file_outcomes``."""
    outcome = Outcome(result.outcome)
    diagnostics = dict(result.diagnostics)
    verdicts = diagnostics.pop("verdicts", "")
    bytes_done = result.counters.get("bytes", 0)
    # The rate is over the transfer alone (see Supervisor's TransferClock), not over
    # the whole session with its wait for the receiver and for the user's answer.
    transfer = result.transfer
    return {
        "role": role,
        "outcome": result.outcome,
        "exit_code": exit_code(outcome, result.code),
        "error_code": result.code,
        "message": result.message,
        "by_peer": result.by_peer,
        "files": total_files,
        "files_verified": result.counters.get("files_verified", 0),
        "bytes": total_bytes,
        "bytes_transferred": bytes_done,
        "duration_s": round(result.duration, 3),
        "transfer_s": round(transfer, 3),
        "throughput_bytes_per_s": round(bytes_done / transfer, 1) if transfer > 0 else 0.0,
        "retransmitted_frames": result.counters.get("retransmitted_frames", 0),
        "duplicate_frames": result.counters.get("duplicate_frames", 0),
        "stalls": telemetry.get("stalls", []),
        "stall_count": telemetry.get("stall_count", 0),
        "memory": {
            "peak_sum_pss": telemetry.get("peak_sum_pss"),
            "processes": telemetry.get("processes", {}),
        },
        "connection": diagnostics,
        "file_outcomes": file_outcomes(paths, verdicts, diagnostics.get("final_paths", {})),
        "process_exit_codes": result.exitcodes,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()},
    }


def report_result(prog: str, cfg: Config, reporter: ConsoleReporter, summary: dict[str, Any]) -> int:
    code: int = summary["exit_code"]
    outcome = summary["outcome"]
    if outcome == "completed":
        line = (
            f"completed: {summary['files_verified']} files, {format_bytes(summary['bytes'])} verified (SHA-256) in "
            f"{format_duration(summary['transfer_s'])} ({format_rate(summary['throughput_bytes_per_s'])}; "
            f"{format_duration(summary['duration_s'])} with connecting and waiting)"
        )
        reporter.finish("")
        if not cfg.output.quiet:
            print(line, flush=True)
    else:
        reporter.finish("")
        text = summary["connection"].get("no_route_text") if outcome == "no_route" else None
        print(f"{prog}: {outcome}" + (f" ({summary['error_code']})" if summary["error_code"] else "") + f": {summary['message']}", file=sys.stderr)
        if text:
            print(text, file=sys.stderr)
        for report_line in file_report(summary["file_outcomes"]):
            print(report_line, file=sys.stderr)
    if cfg.output.json:
        write_json(cfg.output.json, summary)
    return code


def write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(data), indent=2))
    os.replace(tmp, path)
