"""``pipeline-receive CODE [options]``: receive what a sender offers under CODE."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

from pipeline import control
from pipeline.cli.common import (
    COMMON_FLAGS,
    ConsoleReporter,
    add_common_arguments,
    build_config,
    conn_params,
    log_level,
    new_telemetry,
    report_result,
    summarize,
)
from pipeline.cli.usage import OneLineErrorParser, usage_error
from pipeline.config import Config
from pipeline.offer import OfferCheck, check_offer, describe_offer
from pipeline.protocol.filetable import FileTable
from pipeline.shm_ring import stop_resource_tracker
from pipeline.signaling.codes import is_valid_code, normalize_code
from pipeline.supervisor import ReceiverPlan, Supervisor
from pipeline.units import format_bytes

PROG = "pipeline-receive"
FLAGS = {**COMMON_FLAGS, "out": "receive.out", "yes": "receive.yes", "on_exists": "receive.on_exists"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG, description="Receive files sent with pipeline-send.")
    parser.add_argument("code", help="the code the sender printed")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: current directory)")
    parser.add_argument("--yes", "-y", action="store_true", default=None, help="accept the offer without asking")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", dest="on_exists", action="store_const", const="overwrite", help="replace existing files")
    group.add_argument("--rename", dest="on_exists", action="store_const", const="rename", help="keep both: save as 'name (1).ext'")
    add_common_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _listing(paths: list[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


class Decider:
    def __init__(self, cfg: Config, out_dir: str, reporter: ConsoleReporter) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.reporter = reporter
        self.offered_bytes: int | None = None  # None: no offer arrived

    async def __call__(self, offer: control.Offer, files: FileTable) -> tuple[bool, str, str, OfferCheck | None]:
        cfg = self.cfg
        self.offered_bytes = offer.total_bytes
        check = check_offer(self.out_dir, files)
        # --quiet hides the offer only when nobody is asked about it (--yes).
        if not cfg.output.quiet or not cfg.receive.yes:
            print(describe_offer(files, offer.total_bytes), file=sys.stderr, flush=True)
        if check.blocked:
            return False, "rejected", f"a file stands where a folder is needed in {self.out_dir}: {_listing(check.blocked)}", check
        if not check.fits(offer.total_bytes):
            message = (
                f"not enough space in {self.out_dir}: the offer needs {format_bytes(offer.total_bytes)}, "
                f"{format_bytes(check.free_bytes)} is free"
            )
            return False, "no_space", message, check
        if check.conflicts and cfg.receive.on_exists == "fail":
            message = (
                f"{len(check.conflicts)} files already exist in {self.out_dir} ({_listing(check.conflicts)}); "
                "nothing was overwritten. Use --overwrite or --rename"
            )
            return False, "rejected", message, check
        if not cfg.receive.yes:
            if not sys.stdin.isatty():
                return False, "rejected", "not accepted: no terminal to ask on; run with --yes to accept", check
            answer = await _ask("Accept? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                return False, "rejected", "declined by the user", check
        self.reporter.start_progress(offer.total_bytes, len(files), files.paths)
        self.reporter.status(f"accepted; receiving into {self.out_dir}")
        return True, "", "", check


async def _ask(prompt: str) -> str:
    """Ask on the terminal without a thread: the event loop watches fd 0 and reads it
    with ``os.read``. A session that ends while the question is open just stops
    watching; nothing is left blocked in ``input()`` holding stdin's lock (which made
    interpreter shutdown abort with ``_enter_buffered_busy``)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    line = bytearray()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        line.extend(data)
        if (not data or b"\n" in data) and not answer.done():
            answer.set_result(line.split(b"\n", 1)[0].decode(errors="replace"))

    print(prompt, end="", flush=True)
    loop.add_reader(fd, readable)
    try:
        return await answer
    finally:
        loop.remove_reader(fd)


async def run(cfg: Config, code: str, url: str, out_dir: str) -> int:
    reporter = ConsoleReporter(cfg, label="receiving")
    telemetry = new_telemetry(cfg)
    decider = Decider(cfg, out_dir, reporter)
    try:
        supervisor = Supervisor(
            conn_params(cfg, "receiver", code, url, None),
            ring_slots=cfg.transfer.ring_slots,
            reporter=reporter,
            telemetry=telemetry,
            receiver=ReceiverPlan(out_dir=out_dir, on_exists=cfg.receive.on_exists, decide=decider),
            log_level=log_level(cfg.output.verbose),
        )
        result = await supervisor.run()
    finally:
        telemetry.stop()
    plan = supervisor.receiver
    assert plan is not None
    summary = summarize("receiver", result, telemetry.summary(), len(plan.relpaths), 0, plan.relpaths)
    summary["bytes"] = summary["bytes_transferred"]
    summary["offered_bytes"] = decider.offered_bytes
    summary["out_dir"] = out_dir
    return report_result(PROG, cfg, reporter, summary)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = build_config(PROG, args, FLAGS)
    code = normalize_code(args.code)
    if not is_valid_code(code):
        usage_error(PROG, f"{args.code!r} is not a transfer code (they look like 7-orbit-lantern-velvet)")
    url = cfg.signal.url
    if url is None:
        usage_error(PROG, "the signaling URL is needed: pass --signal URL as printed by pipeline-send")
    out_dir = os.path.abspath(cfg.receive.out)
    created = not os.path.exists(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        usage_error(PROG, f"--out {cfg.receive.out}: {exc.strerror}")
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        usage_error(PROG, f"--out {cfg.receive.out}: not a writable directory")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        status = asyncio.run(run(cfg, code, url, out_dir))
    finally:
        stop_resource_tracker()  # no process of ours outlives us
    if created and status != 0:
        with contextlib.suppress(OSError):
            os.rmdir(out_dir)  # we made it and it stayed empty
    sys.exit(status)


if __name__ == "__main__":
    main()
