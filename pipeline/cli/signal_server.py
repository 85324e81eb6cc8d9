"""``pipeline-signal``: run the signaling server (Appendix C) until SIGINT/SIGTERM.

Prints ``signaling server listening on ws://HOST:PORT/ws`` once the socket is
bound (``--port 0`` picks a free port; the line says which), then, when the
install ships the browser app, ``web app at http://HOST:PORT/``; logs
room closures to stderr, and exits 0 on SIGINT or SIGTERM after disconnecting
every client.  Usage errors exit 2, a port that cannot be bound exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from pipeline.cli.usage import OneLineErrorParser
from pipeline.signaling.server import MAX_ROOMS_PER_ADDRESS, SignalingServer
from pipeline.signaling.webapp import packaged_web_root


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return seconds


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {count}")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="pipeline-signal", description="Run the WebRTC signaling server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8787, help="port; 0 picks a free one")
    parser.add_argument(
        "--room-ttl",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="forget a room this long after it was created (default 3600)",
    )
    parser.add_argument(
        "--join-deadline",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="close a connection that has not joined a room this long after connecting (default 10)",
    )
    parser.add_argument(
        "--max-rooms-per-address",
        type=_count,
        default=MAX_ROOMS_PER_ADDRESS,
        metavar="N",
        help=f"rooms one address (IPv6: one /64) may have open at once (default {MAX_ROOMS_PER_ADDRESS})",
    )
    return parser


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for signum in stop_signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        server = SignalingServer(
            host=args.host,
            port=args.port,
            room_ttl=args.room_ttl,
            join_deadline=args.join_deadline,
            max_rooms_per_address=args.max_rooms_per_address,
            web_root=packaged_web_root(),
        )
        try:
            await server.start()
        except OSError as exc:
            print(f"pipeline-signal: cannot listen: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"signaling server listening on {server.url}", flush=True)
            if server.serves_page:
                page = server.url.replace("ws://", "http://", 1).removesuffix("ws")
                print(f"web app at {page}", flush=True)
            await stop.wait()
        finally:
            await server.close()
    finally:
        for signum in stop_signals:
            loop.remove_signal_handler(signum)
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on a usage error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
