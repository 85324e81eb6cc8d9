"""Settings of one bench run and the context every scenario runs in.

:class:`Bench` owns the run's result directory and scratch directory, runs the
ceiling (raw aiortc) whenever a scenario asks for its baseline, so ceiling runs
end up interleaved with the subject runs, and keeps finished transfers so a later
scenario can reuse an identical earlier run (same bytes, same config) instead of
repeating it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.raw_channel import RawResult, run_raw_channel
from bench.report import fmt_rate, fmt_size
from bench.transfer import TransferRun, run_transfer, transfer_metrics
from pipeline.config import Config, apply_overrides
from pipeline.connection import sctp_flight
from pipeline.mediagen import generate_media_tree

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass
class Settings:
    quick: bool = False
    # None: the large file's size. aiortc slows down over a long transfer (its SCTP
    # congestion window keeps growing), so the ceiling is measured at the same size.
    ceiling_size: int | None = None
    ceiling_repeat: int = 2
    large_size: int = 4 * GiB
    large_repeat: int = 1
    memory_sizes: list[int] = field(default_factory=lambda: [256 * MiB, 1 * GiB, 4 * GiB])
    media_files: int = 2000
    media_file_size: int = 64 * KiB
    media_large: int = 0
    media_large_size: int = 64 * MiB
    media_repeat: int = 2
    sweep_size: int = 128 * MiB
    sweep_mode: str = "ofat"  # "ofat" (one factor at a time), "grid" or "quick"
    sweep_default_repeat: int = 3
    sweep_repeat: int = 1  # runs of each non-default point
    sweep_factors: list[str] = field(default_factory=list)  # only these factors ([] = all)
    impairment_conditions: list[str] = field(default_factory=list)  # only these ([] = all)
    profile_size: int = 512 * MiB
    profile_seconds: float = 20.0
    plots: bool = True
    retries: int = 2  # a hung transfer is recorded, then run again up to this many times
    soak_sessions: int = 208  # 16 of each of the 13 cases on average
    soak_concurrency: int = 3

    @classmethod
    def quick_defaults(cls) -> Settings:
        return cls(
            quick=True,
            ceiling_repeat=2,
            large_size=256 * MiB,
            memory_sizes=[64 * MiB, 256 * MiB],
            media_repeat=1,
            sweep_size=32 * MiB,
            sweep_mode="quick",
            sweep_default_repeat=2,
            profile_size=128 * MiB,
            profile_seconds=6.0,
            soak_sessions=26,
        )


def _settle() -> None:
    """Write generated input to disk now: otherwise the kernel flushes gigabytes of dirty
    pages during the measured transfer, on the same two cores."""
    os.sync()


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Bench:
    def __init__(self, settings: Settings, out_dir: Path, scratch: Path) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.scratch = scratch
        self.defaults = Config()
        self.ceiling_runs: list[RawResult] = []
        self._finished: dict[tuple[int, int, str], TransferRun] = {}
        self.failed_attempts: list[dict[str, Any]] = []  # every failed run, retried or not
        self._counter = 0

    # -- baselines ---------------------------------------------------------------

    @property
    def flight_cap(self) -> int | None:
        """The SCTP flight cap the pipeline's sender uses here with the defaults: on
        loopback (RTT well under a millisecond) "auto" is the minimum cap."""
        return sctp_flight.resolve(self.defaults.channel.flight_cap, 0.0)

    def measure_ceiling(self, why: str, *, as_shipped: bool = False, size: int | None = None) -> RawResult:
        """One raw aiortc run with the defaults' message size, thresholds and flight
        cap (the stack as the pipeline runs it); ``as_shipped``: without the cap.
        ``size``: another size than the ceiling's (such a run is not one of
        :attr:`ceiling_runs`, whose medians are all at one size)."""
        d = self.defaults
        usual = self.settings.ceiling_size or self.settings.large_size
        own_size = size is not None and size != usual
        size = size or usual
        cap = None if as_shipped else self.flight_cap
        shown = "no flight cap (aiortc as shipped)" if cap is None else f"flight cap {fmt_size(cap)}"
        log(f"ceiling ({why}): raw aiortc DataChannel, {fmt_size(size)}, {shown}")
        result = run_raw_channel(
            size,
            message_size=d.transfer.chunk_size,
            buffered_high=d.channel.buffered_high,
            buffered_low=d.channel.buffered_low,
            cwnd_cap=cap,
        )
        if not as_shipped and not own_size:
            self.ceiling_runs.append(result)
        log(f"  -> {fmt_rate(result.steady_bytes_per_s)} steady, {fmt_rate(result.bytes_per_s)} open→last byte")
        return result

    # -- subjects ------------------------------------------------------------------

    @property
    def transfers_started(self) -> int:
        return self._counter

    def transfer(
        self,
        label: str,
        paths: list[Path],
        total_bytes: int,
        files: int,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TransferRun:
        config = dict(config or {})
        apply_overrides(self.defaults, config)  # a bad sweep point fails here, not in the CLIs
        for attempt in range(1 + self.settings.retries):
            self._counter += 1
            suffix = f"-retry{attempt}" if attempt else ""
            run_dir = self.out_dir / "runs" / f"{self._counter:02d}-{label}{suffix}"
            log(f"{label}{suffix}: {files} files, {fmt_size(total_bytes)}" + (f", {config}" if config else ""))
            run = run_transfer(label, paths, total_bytes, files, run_dir, self.scratch, config=config, **kwargs)
            m = transfer_metrics(run)
            if run.ok:
                log(
                    f"  -> {fmt_rate(m.get('steady_bytes_per_s'))} steady, "
                    f"{fmt_rate(m.get('end_to_end_bytes_per_s'))} end to end, wall {run.wall_s:.1f} s"
                )
                break
            log(f"  -> FAILED: {run.error}")
            self.failed_attempts.append({"label": label, "run_dir": run_dir.name, "error": run.error, "hung": run.hung})
            if not run.hung:
                break  # a crash or a refusal says something; running it again would hide it
        if files == 1 and run.ok:
            self._finished[(total_bytes, files, repr(sorted(config.items())))] = run
        return run

    def earlier_single_file(self, total_bytes: int, config: dict[str, Any] | None = None) -> TransferRun | None:
        """A successful one-file transfer of this size and config done earlier in this run."""
        return self._finished.get((total_bytes, 1, repr(sorted((config or {}).items()))))

    # -- inputs --------------------------------------------------------------------

    @contextlib.contextmanager
    def one_file(self, size: int) -> Iterator[Path]:
        """A generated file of ``size`` bytes in the scratch directory, deleted afterwards."""
        root = self.scratch / f"file-{size}"
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        (rel,) = generate_media_tree(root, small_files=0, large_files=1, large_size=size, unicode=False)
        _settle()
        log(f"generated one {fmt_size(size)} file in {time.monotonic() - started:.1f} s (synced)")
        try:
            yield root / rel
        finally:
            shutil.rmtree(root, ignore_errors=True)

    @contextlib.contextmanager
    def media_tree(self, small: int, small_size: int, large: int, large_size: int) -> Iterator[tuple[Path, int, int]]:
        """A generated media directory: (path, total bytes, files); deleted afterwards."""
        root = self.scratch / "media" / "DCIM-dump"
        shutil.rmtree(root.parent, ignore_errors=True)
        started = time.monotonic()
        rels = generate_media_tree(
            root,
            small_files=small,
            small_size_range=(small_size, small_size),
            large_files=large,
            large_size=large_size,
        )
        total = sum((root / rel).stat().st_size for rel in rels)
        _settle()
        log(f"generated {len(rels)} files ({fmt_size(total)}) in {time.monotonic() - started:.1f} s (synced)")
        try:
            yield root, total, len(rels)
        finally:
            shutil.rmtree(root.parent, ignore_errors=True)
