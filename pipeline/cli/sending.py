"""``pipeline-send PATH... [options]``: offer files and directories to one receiver."""

from __future__ import annotations

import argparse
import asyncio
import sys

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
    usage_error,
)
from pipeline.config import Config
from pipeline.signaling.codes import is_valid_code, new_code, normalize_code
from pipeline.signaling.server import SignalingServer
from pipeline.sources import SourceError, Sources, collect_sources
from pipeline.supervisor import Supervisor
from pipeline.units import format_bytes

PROG = "pipeline-send"
FLAGS = {**COMMON_FLAGS, "signal_host": "signal.host", "signal_port": "signal.port"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Send files and directories directly to a peer over WebRTC.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files and directories to send")
    parser.add_argument("--code", help="room code to use (default: a new random code)")
    parser.add_argument("--signal-host", metavar="ADDR", help="bind address of the embedded signaling server")
    parser.add_argument("--signal-port", metavar="PORT", help="port of the embedded signaling server (0: any)")
    add_common_arguments(parser)
    return parser.parse_args(argv)


async def run(cfg: Config, args: argparse.Namespace, sources: Sources, code: str) -> int:
    server: SignalingServer | None = None
    url = cfg.signal.url
    if url is None:
        server = SignalingServer(host=cfg.signal.host, port=cfg.signal.port)
        await server.start()
        url = server.url
    reporter = ConsoleReporter(cfg, sources.total_bytes, len(sources.entries), label="sending")
    telemetry = new_telemetry(cfg)
    try:
        if not cfg.output.quiet:
            print(f"Sending {len(sources.entries)} files ({format_bytes(sources.total_bytes)}) with code {code}", flush=True)
            print(f"On the receiving side run:\n  pipeline-receive {code} --signal {url}", flush=True)
        for path in sources.skipped:
            reporter.say(f"skipped (symbolic link or special file): {path}")
        supervisor = Supervisor(
            conn_params(cfg, "sender", code, url, sources.entries),
            ring_slots=cfg.transfer.ring_slots,
            reporter=reporter,
            telemetry=telemetry,
            sender_files=sources.files,
            log_level=log_level(args.verbose),
        )
        result = await supervisor.run()
    finally:
        telemetry.stop()
        if server is not None:
            await server.close()
    summary = summarize("sender", result, telemetry.summary(), len(sources.entries), sources.total_bytes)
    if server is not None:
        summary["signaling_relayed"] = server.stats
    return report_result(PROG, cfg, reporter, summary)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = build_config(PROG, args, FLAGS)
    code = normalize_code(args.code) if args.code else new_code()
    if not is_valid_code(code):
        usage_error(PROG, f"--code {args.code!r}: a code looks like 7-orbit-lantern-velvet")
    try:
        sources = collect_sources(args.paths)
    except SourceError as exc:
        usage_error(PROG, str(exc))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(run(cfg, args, sources, code)))


if __name__ == "__main__":
    main()
