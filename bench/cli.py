"""``python -m bench [SCENARIO ...] [--quick] [options]``: run, record, plot, tabulate.

Results go to ``bench/results/<timestamp>/`` (git-ignored): ``results.json`` (written
after every scenario, so an interrupted run keeps what it measured), ``summary.md``
(the tables), PNG plots, and ``runs/`` with each transfer's logs, JSON summaries and
telemetry. ``bench/results/latest`` points at the newest run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.context import Bench, Settings, log
from bench.machine import describe_machine
from bench.report import describe_machine_line, render_markdown
from bench.scenarios import DEFAULT_SCENARIOS, DESCRIPTIONS, SCENARIOS, ceiling
from bench.scenarios.impairment import CONDITIONS
from bench.scenarios.sweep import FACTORS
from pipeline.units import parse_size

RESULTS = Path(__file__).resolve().parent / "results"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sizes(text: str) -> list[int]:
    return [_size(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    names = "\n".join(f"  {name:11} {text}" for name, text in DESCRIPTIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark pipeline-send/pipeline-receive against baselines measured in the same run.",
        epilog=f"scenarios (default: {' '.join(DEFAULT_SCENARIOS)}):\n{names}\n\nSizes: 64MiB, 1GiB, 256M ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenarios to run, or 'all'")
    parser.add_argument("--quick", action="store_true", help="small sizes, about two minutes on 2 cores")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/<timestamp>)")
    parser.add_argument("--scratch", type=Path, help="where generated and received files go (default: system temp)")
    parser.add_argument("--ceiling-size", type=_size, help="bytes per raw aiortc run (default: --large-size)")
    parser.add_argument("--ceiling-repeat", type=int, help="at least this many raw aiortc runs")
    parser.add_argument("--large-size", type=_size, help="large-file size (default 4GiB, quick 256MiB)")
    parser.add_argument("--large-repeat", type=int, help="large-file transfers (each followed by a ceiling run)")
    parser.add_argument("--memory-sizes", type=_sizes, help="comma-separated sizes, e.g. 64MiB,256MiB,1GiB")
    parser.add_argument("--media-files", type=int, help="small files in the media directory (default 2000)")
    parser.add_argument("--media-file-size", type=_size, help="size of each small file (default 64KiB)")
    parser.add_argument("--media-large", type=int, help="large files added to the media directory (default 0)")
    parser.add_argument("--media-large-size", type=_size, help="size of each large media file (default 64MiB)")
    parser.add_argument("--media-repeat", type=int, help="repetitions of each media case (A B B A order)")
    parser.add_argument("--sweep", dest="sweep_mode", choices=["ofat", "grid", "quick"], help="sweep design")
    parser.add_argument("--sweep-size", type=_size, help="file size per sweep point")
    parser.add_argument("--sweep-default-repeat", type=int, help="runs of the defaults within the sweep")
    parser.add_argument("--sweep-repeat", type=int, help="runs of each other sweep point (default 1)")
    parser.add_argument(
        "--sweep-factors",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        help="only these factors: chunk_size,window,ring_slots,buffered",
    )
    parser.add_argument(
        "--impairment-conditions",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        help="only these impairment conditions, e.g. rtt40,rtt-rise (default: all; see --list)",
    )
    parser.add_argument("--profile-size", type=_size, help="file size of the profiled transfer")
    parser.add_argument("--profile-seconds", type=float, help="seconds py-spy samples")
    parser.add_argument("--soak-sessions", type=int, help="sessions in the soak (default 208, quick 26)")
    parser.add_argument("--soak-concurrency", type=int, help="soak sessions at a time (default 3)")
    parser.add_argument("--retries", type=int, help="runs again after a hung transfer (default 2)")
    parser.add_argument("--no-plots", dest="plots", action="store_false", default=None, help="skip the PNGs")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--replot", type=Path, metavar="DIR", help="redraw the plots and tables of a results directory")
    return parser


def parse_args(argv: list[str] | None) -> tuple[list[str], Settings, argparse.Namespace]:
    """Scenario names in run order, the settings, and the raw namespace."""
    parser = build_parser()
    args = parser.parse_args(argv)
    wanted = args.scenarios or list(DEFAULT_SCENARIOS)
    if "all" in wanted:  # the defaults, plus any other scenario named beside it
        wanted = [*DEFAULT_SCENARIOS, *(name for name in wanted if name != "all")]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})")
    order = [name for name in SCENARIOS if name in wanted]  # canonical order: ceiling first
    settings = Settings.quick_defaults() if args.quick else Settings()
    for name in asdict(settings):
        value = getattr(args, name, None)
        if value is not None:
            setattr(settings, name, value)
    unknown_factors = set(settings.sweep_factors) - set(FACTORS)
    if unknown_factors:
        parser.error(f"--sweep-factors: unknown {', '.join(sorted(unknown_factors))} (choose from {', '.join(FACTORS)})")
    unknown_conditions = set(settings.impairment_conditions) - {c.name for c in CONDITIONS}
    if unknown_conditions:
        parser.error(
            f"--impairment-conditions: unknown {', '.join(sorted(unknown_conditions))} "
            f"(choose from {', '.join(c.name for c in CONDITIONS)})"
        )
    for name in ("ceiling_repeat", "large_repeat", "media_repeat", "media_files", "sweep_repeat", "soak_sessions", "soak_concurrency"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return order, settings, args


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _finish_outputs(results: dict[str, Any], out_dir: Path, plots: bool) -> None:
    markdown = render_markdown(results)
    (out_dir / "summary.md").write_text(markdown)
    if plots:
        try:
            from bench.plots import plot_all

            results["plots"] = [p.name for p in plot_all(results, out_dir)]
        except ImportError:
            log("matplotlib is not installed (pip install -r requirements-bench.lock): no PNGs")
    _write_json(out_dir / "results.json", results)
    print()
    print(markdown)
    for name in results.get("plots", []):
        print(f"plot: {out_dir / name}")


def replot(directory: Path) -> None:
    results = json.loads((directory / "results.json").read_text())
    _finish_outputs(results, directory, plots=True)


def run(order: list[str], settings: Settings, out_dir: Path, scratch_parent: Path | None, argv: list[str]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=False)
    scratch = Path(tempfile.mkdtemp(prefix="pxfer-bench-", dir=scratch_parent))
    started = time.monotonic()
    machine = describe_machine()
    results: dict[str, Any] = {
        "run_id": out_dir.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": argv,
        "scenarios_requested": order,
        "settings": asdict(settings),
        "machine": machine,
        "defaults": None,
        "scenarios": {},
    }
    log(f"bench {' '.join(order)} ({'quick' if settings.quick else 'full'}) on {describe_machine_line(machine)}")
    log(f"results: {out_dir}")
    bench = Bench(settings, out_dir, scratch)
    results["defaults"] = {
        "transfer.chunk_size": bench.defaults.transfer.chunk_size,
        "transfer.window": bench.defaults.transfer.window,
        "transfer.ring_slots": bench.defaults.transfer.ring_slots,
        "channel.buffered_high": bench.defaults.channel.buffered_high,
        "channel.buffered_low": bench.defaults.channel.buffered_low,
    }
    try:
        for name in order:
            log(f"=== {name}")
            scenario_started = time.monotonic()
            try:
                results["scenarios"][name] = SCENARIOS[name](bench)
            except Exception as exc:  # one broken scenario must not lose the others' results
                traceback.print_exc()
                results["scenarios"][name] = {"title": name, "error": f"{type(exc).__name__}: {exc}"}
            results["scenarios"][name]["elapsed_s"] = round(time.monotonic() - scenario_started, 1)
            _write_json(out_dir / "results.json", results)
        if "ceiling" in order and "error" not in results["scenarios"]["ceiling"]:
            elapsed = results["scenarios"]["ceiling"]["elapsed_s"]
            try:
                results["scenarios"]["ceiling"] = ceiling.finish(bench, results["scenarios"]["ceiling"])
            except Exception as exc:
                traceback.print_exc()
                results["scenarios"]["ceiling"] = {"title": "ceiling", "error": f"{type(exc).__name__}: {exc}"}
            results["scenarios"]["ceiling"]["elapsed_s"] = elapsed
            # The ceiling scenario's table comes first, as it is every other scenario's reference.
            results["scenarios"] = {"ceiling": results["scenarios"].pop("ceiling"), **results["scenarios"]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        with contextlib.suppress(OSError):
            results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        results["failed_attempts"] = bench.failed_attempts
        results["transfers_started"] = bench.transfers_started
        _write_json(out_dir / "results.json", results)
    _finish_outputs(results, out_dir, settings.plots)
    latest = RESULTS / "latest"
    if out_dir.parent == RESULTS:
        with contextlib.suppress(OSError):
            if latest.is_symlink():
                latest.unlink()
            latest.symlink_to(out_dir.name)
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    order, settings, args = parse_args(argv)
    if args.list:
        for name, text in DESCRIPTIONS.items():
            print(f"{name:11} {text}")
        return
    if args.replot is not None:
        replot(args.replot)
        return
    # Absolute: the CLIs run with their run directory as the working directory.
    out_dir = (args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S")).resolve()
    scratch = args.scratch.resolve() if args.scratch else None
    results = run(order, settings, out_dir, scratch, argv)
    failed = [name for name, s in results["scenarios"].items() if "error" in s]
    sys.exit(1 if failed else 0)
