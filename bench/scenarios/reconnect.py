"""reconnect: a link cut and restored mid-transfer, time back to full rate (root only).

Issue 11, item 4. The same lab as ``impairment`` (peer-a and peer-b behind cone
NATs, coturn and ``pipeline-signal`` in the ``stun`` namespace). Each case runs
one file from peer-a to peer-b twice, in the same run: first uncut (the
baseline), then with peer-a's router dropping everything it forwards
(``NetLab.cut``) once a quarter of the file is stored, for ``cut_s`` seconds,
then restored. A sampler thread reads the bytes stored in the receiver's output
directory (partial files included) every 20 ms, so every figure is on one clock:

- rate before the cut: bytes stored over the last second before it;
- restore → first byte: until the stored count grows again;
- restore → full rate: until the start of the first 0.5 s window after the
  restore over which the stored count grows at ≥ 90 % of the rate before the cut;
- resent frames: the sender's retransmitted frames, against one window
  (``transfer.window`` frames);
- the whole cut transfer's rate over the uncut one's (first → last byte).

Cases: a 3 s cut (within ``ice.progress_timeout``, 10 s: SCTP's own
retransmission timer has to bring it back) and, in a full run, a 15 s cut
(past it: the pipeline's reconnect path).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import Bench, log
from bench.report import fmt_rate, fmt_ratio, fmt_size, ratio
from bench.scenarios.impairment import (
    LabPair,
    _start_signaling,
    first_to_last_rate,
    lab_unavailable,
)
from bench.transfer import TransferRun, run_transfer
from tests.cli_harness import Proc
from tests.netlab import NetLab

MiB = 1 << 20
SAMPLE_S = 0.02
FULL_RATE = 0.9  # "full rate again": this share of the rate before the cut
WINDOW_S = 0.5  # the window that rate is measured over after the restore


@dataclass(frozen=True)
class Cut:
    name: str
    cut_s: float
    quick: bool  # also in a --quick run


CUTS = (Cut("cut3", 3.0, True), Cut("cut15", 15.0, False))


def stored_bytes(out: Path) -> int:
    """Bytes in every file under ``out`` (the writer's hidden partials included)."""
    total = 0
    for root, _, names in os.walk(out):
        for name in names:
            # A partial renamed between the listing and the stat is counted next time.
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


class CutWhenQuarterStored(threading.Thread):
    """Samples the stored bytes; cuts side a at a quarter of ``size``, restores after ``cut_s``."""

    def __init__(self, lab: NetLab | None, out: Path, size: int, cut_s: float) -> None:
        super().__init__(daemon=True)
        self.lab, self.out, self.size, self.cut_s = lab, out, size, cut_s
        self.samples: list[tuple[float, int]] = []
        self.cut_at: float | None = None
        self.restored_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                now, stored = time.monotonic(), stored_bytes(self.out)
                self.samples.append((now, stored))
                if stored >= self.size:
                    return
                if self.lab is not None and self.cut_at is None and stored >= self.size // 4:
                    self.cut_at = time.monotonic()
                    self.lab.cut("a")
                    time.sleep(max(0.0, self.cut_at + self.cut_s - time.monotonic()))
                    self.lab.restore("a")
                    self.restored_at = time.monotonic()
                time.sleep(SAMPLE_S)
        finally:
            if self.cut_at is not None and self.restored_at is None and self.lab is not None:
                self.lab.restore("a")

    def figures(self) -> dict[str, Any]:
        """The recovery figures (module docstring), None where a moment never came."""
        s = self.samples
        found: dict[str, Any] = {"rate_before_cut": None, "first_byte_s": None, "full_rate_s": None}
        if self.cut_at is None or self.restored_at is None:
            return found
        cut, back = self.cut_at, self.restored_at
        before = [(t, b) for t, b in s if cut - 1.0 <= t <= cut]
        if len(before) >= 2 and before[-1][0] > before[0][0]:
            found["rate_before_cut"] = (before[-1][1] - before[0][1]) / (before[-1][0] - before[0][0])
        at_restore = max((b for t, b in s if t <= back), default=0)
        after = [(t, b) for t, b in s if t > back]
        found["first_byte_s"] = next((t - back for t, b in after if b > at_restore), None)
        target = found["rate_before_cut"]
        if target:
            for i, (t, b) in enumerate(after):
                earlier = [(t0, b0) for t0, b0 in after[: i + 1] if t - t0 >= WINDOW_S]
                if earlier and b < self.size:
                    t0, b0 = earlier[-1]
                    if (b - b0) / (t - t0) >= FULL_RATE * target:
                        found["full_rate_s"] = t0 - back  # where that window starts
                        found["full_rate_window_s"] = round(t - t0, 3)
                        break
        return found


def one_transfer(
    bench: Bench, lab: NetLab, pair: LabPair, label: str, path: Path, size: int, run_dir: Path, cut_s: float | None
) -> dict[str, Any]:
    sampler: list[CutWhenQuarterStored] = []

    def watch(run: TransferRun, sender: Proc, receiver: Proc) -> None:
        thread = CutWhenQuarterStored(lab if cut_s else None, bench.scratch / f"received-{label}", size, cut_s or 0.0)
        sampler.append(thread)
        thread.start()

    log(f"{label}: {fmt_size(size)}" + (f", link cut for {cut_s:g} s at 25 %" if cut_s else ", uncut"))
    run = run_transfer(label, [path], size, 1, run_dir, bench.scratch, timeout=300 + (cut_s or 0), start=pair, while_running=watch)
    figures: dict[str, Any] = {}
    if sampler:
        sampler[0].done.set()
        sampler[0].join(30)
        figures = sampler[0].figures()
    sender = run.summaries.get("sender") or {}
    receiver = run.summaries.get("receiver") or {}
    tel = run.telemetry.get("receiver")
    result = {
        "label": label,
        "ok": run.ok,
        "error": run.error,
        "verified": run.ok and receiver.get("files_verified") == 1,
        "bytes_per_s": first_to_last_rate(tel.progress) if tel is not None else None,
        "retransmitted_frames": sender.get("retransmitted_frames"),
        "reconnects": (sender.get("connection") or {}).get("reconnects"),
        "load": run.load,
        **figures,
    }
    if run.ok:
        log(
            f"  -> {fmt_rate(result['bytes_per_s'])}"
            + (
                f"; before the cut {fmt_rate(figures.get('rate_before_cut'))}, restore → first byte "
                f"{_s(figures.get('first_byte_s'))}, → full rate {_s(figures.get('full_rate_s'))}, "
                f"resent {result['retransmitted_frames']} frames"
                if cut_s
                else ""
            )
        )
    else:
        log(f"  -> FAILED: {run.error}")
    return result


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def run(bench: Bench) -> dict[str, Any]:
    title = "Reconnect: a link cut and restored mid-transfer, time back to full rate"
    skipped = lab_unavailable("reconnect", title)
    if skipped is not None:
        return skipped
    size = (64 if bench.settings.quick else 128) * MiB
    window = bench.defaults.transfer.window
    cuts = [c for c in CUTS if c.quick or not bench.settings.quick]
    runs_dir = bench.out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    lab = NetLab(f"br{os.getpid() % 100000}", nat_a="cone", nat_b="cone")
    cases: list[dict[str, Any]] = []
    pids: list[int] = []
    try:
        lab.start()
        pair = LabPair(lab, _start_signaling(lab, runs_dir), pids)
        with bench.one_file(size) as path:
            for cut in cuts:
                base = one_transfer(bench, lab, pair, f"reconnect-{cut.name}-uncut", path, size, runs_dir / f"reconnect-{cut.name}-uncut", None)
                cutrun = one_transfer(bench, lab, pair, f"reconnect-{cut.name}", path, size, runs_dir / f"reconnect-{cut.name}", cut.cut_s)
                cases.append({"cut": cut.name, "cut_s": cut.cut_s, "uncut": base, "cut_run": cutrun,
                              "ratio": ratio(cutrun["bytes_per_s"], base["bytes_per_s"])})
    finally:
        lab.close()
    rows = [
        [
            f"{c['cut_s']:g} s",
            fmt_rate(c["uncut"]["bytes_per_s"]),
            fmt_rate(c["cut_run"]["bytes_per_s"]),
            fmt_ratio(c["ratio"]),
            fmt_rate(c["cut_run"].get("rate_before_cut")),
            _s(c["cut_run"].get("first_byte_s")),
            _s(c["cut_run"].get("full_rate_s")),
            f"{c['cut_run']['retransmitted_frames']} (window {window})",
            f"{int(c['uncut']['verified']) + int(c['cut_run']['verified'])}/2",
        ]
        for c in cases
    ]
    result: dict[str, Any] = {
        "title": title,
        "baseline": "the same file through the same lab uncut, just before; rates first → last byte on the receiver",
        "params": {"bytes": size, "window": window, "full_rate": FULL_RATE, "window_s": WINDOW_S, "nat": "cone <-> cone"},
        "cases": cases,
        "lab_leftovers": lab.leftovers(),
        "result": {c["cut"]: {"ratio": c["ratio"], "full_rate_s": c["cut_run"].get("full_rate_s")} for c in cases},
        "table": {
            "columns": ["cut", "uncut", "cut", "cut / uncut", "rate before the cut", "restore → first byte",
                        f"restore → {FULL_RATE:.0%} rate", "resent frames", "verified"],
            "rows": rows,
        },
    }
    failed = [c["cut"] for c in cases if not (c["uncut"]["ok"] and c["cut_run"]["ok"])]
    if failed or result["lab_leftovers"]:
        result["error"] = f"failed: {failed}; left behind: {result['lab_leftovers']}"
    return result
