"""``pipeline-send PATH... [options]``: offer files and directories to one receiver."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pipeline.cli.common import (
    COMMON_FLAGS,
    ConsoleReporter,
    FileOutcome,
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
from pipeline.shm_ring import stop_resource_tracker
from pipeline.signaling.codes import new_code, normalize_code
from pipeline.signaling.server import SignalingServer
from pipeline.signaling.webapp import packaged_web_root, page_link
from pipeline.sources import SourceError, Sources, collect_sources
from pipeline.supervisor import Supervisor
from pipeline.units import format_bytes

PROG = "pipeline-send"
FLAGS = {**COMMON_FLAGS, "code": "signal.code", "signal_host": "signal.host", "signal_port": "signal.port"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG, description="Send files and directories directly to a peer over WebRTC.")
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files and directories to send (default: the config's send.sources)"
    )
    parser.add_argument("--code", help="room code to use (default: a new random code)")
    parser.add_argument("--signal-host", metavar="ADDR", help="bind address of the embedded signaling server")
    parser.add_argument("--signal-port", metavar="PORT", help="port of the embedded signaling server (0: any)")
    add_common_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def receive_commands(code: str, urls: list[str], page: bool = False) -> str:
    """What to run on the receiving side; printed whatever --quiet says, since nobody
    could learn a random code otherwise.  With ``page`` (the embedded server serves
    the web app) also the browser link for each URL."""
    if len(urls) == 1:
        text = f"On the receiving side run:\n  pipeline-receive {code} --signal {urls[0]}"
    else:
        lines = [f"  pipeline-receive {code} --signal {url}" for url in urls]
        text = "\n".join(["On the receiving side run one of these (the address the other machine reaches):", *lines])
    if page:
        links = [f"  {page_link(url, code)}" for url in urls]
        text = "\n".join([text, "or open in a browser:", *links])
    return text


async def run(cfg: Config, sources: Sources, code: str) -> int:
    server: SignalingServer | None = None
    url = cfg.signal.url
    peer_urls = [url] if url is not None else []
    if url is None:
        server = SignalingServer(
            host=cfg.signal.host, port=cfg.signal.port, web_root=packaged_web_root()
        )
        await server.start()
        url = server.url
        peer_urls = server.reachable_urls
    names = sources.entries.paths  # a view of the table: no str per file held
    count, total = len(sources.entries), sources.total_bytes
    reporter = ConsoleReporter(cfg, total, count, label="sending", names=names)
    telemetry = new_telemetry(cfg)
    try:
        print(f"Sending {count} files ({format_bytes(total)}) with code {code}", flush=True)
        print(receive_commands(code, peer_urls, page=server is not None and server.serves_page), flush=True)
        for path in sources.skipped:
            reporter.say(f"skipped (symbolic link or special file): {path}")
        for path, reason in sources.unreadable:
            reporter.say(f"not sent, cannot read: {path}: {reason}")
        supervisor = Supervisor(
            conn_params(cfg, "sender", code, url, sources.entries),
            ring_slots=cfg.transfer.ring_slots,
            reporter=reporter,
            telemetry=telemetry,
            sender_files=sources.files,
            log_level=log_level(cfg.output.verbose),
        )
        # The supervisor holds it packed; the list costs ~300 B per file more. The
        # entries stay: a FileTable is ~70 B per file, and gives the summary its names.
        sources.files = []
        result = await supervisor.run()
    finally:
        telemetry.stop()
        if server is not None:
            await server.close()
    summary = summarize("sender", result, telemetry.summary(), count, total, names)
    if server is not None:
        summary["signaling_relayed"] = server.stats
    account_unreadable(summary, sources)
    return report_result(PROG, cfg, reporter, summary)


def account_unreadable(summary: dict[str, object], sources: Sources) -> None:
    """Files that could not be read were never offered: the session with the peer
    may have ``completed``, but this batch did not send everything it was asked to,
    so the sender ends ``failed`` with ``io_error`` (exit 1, Appendix A.2 "an I/O
    error"), its message naming how many, and ``unreadable`` listing each one."""
    summary["unreadable"] = [{"path": path, "reason": reason} for path, reason in sources.unreadable]
    outcomes = summary["file_outcomes"]
    assert isinstance(outcomes, list)
    outcomes.extend(FileOutcome(path, "unreadable", reason) for path, reason in sources.unreadable)
    if not sources.unreadable or summary["outcome"] != "completed":
        return
    count = len(sources.unreadable)
    summary["outcome"] = "failed"
    summary["error_code"] = "io_error"
    summary["exit_code"] = 1
    summary["message"] = (
        f"every file offered was verified, but {count} file{'s' if count != 1 else ''} could not be read "
        f"and {'were' if count != 1 else 'was'} not sent (listed below and in the JSON summary's "
        "'unreadable'); fix the permissions and send them again"
    )


def source_paths(args: argparse.Namespace, cfg: Config) -> list[str]:
    """PATH arguments, else the config's ``send.sources`` (a batch job's list)."""
    paths = list(args.paths) or list(cfg.send.sources)
    if not paths:
        usage_error(PROG, f"no PATH given and send.sources is empty (see {PROG} --help)")
    return paths


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = build_config(PROG, args, FLAGS)  # checks signal.code (--code)
    code = normalize_code(cfg.signal.code) if cfg.signal.code is not None else new_code()
    try:
        sources = collect_sources(source_paths(args, cfg))
    except SourceError as exc:
        usage_error(PROG, str(exc))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        status = asyncio.run(run(cfg, sources, code))
    finally:
        stop_resource_tracker()  # no process of ours outlives us
    sys.exit(status)


if __name__ == "__main__":
    main()
