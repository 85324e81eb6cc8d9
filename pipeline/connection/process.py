"""The connection process: signaling, the peer connection, and the protocol machine.

It runs on uvloop (the summary's ``connection.event_loop`` says which loop it got;
without uvloop it warns and runs about a third slower) and does nothing but
networking (aiortc-facts.md: anything that blocks this loop stalls SACKs and
consent checks).  Lifecycle::

    join room ─► establish link ─► open ─► [lost ─► re-establish (same room) ─► open]* ─► terminal ─► close ─► Finished
                     │                         │ reconnect deadline passed
                     └─ connect deadline ─► no_route     └─► failed (timeout)

One task group: the lifecycle task and the ticker are owned by ``run`` and
cancelled when the machine reaches its terminal outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from typing import Any

from pipeline import control
from pipeline.connection import host_addresses, sctp_acks, sctp_flight, sctp_path, sctp_sacks
from pipeline.connection.dataplane import DataPlane, read_pipe
from pipeline.connection.peer import (
    LOCAL_MAX_MESSAGE_SIZE,
    SUBPROTOCOL,
    NoRoute,
    PeerLink,
    RoomChannel,
    Superseded,
)
from pipeline.protocol import events as ev
from pipeline.protocol.filetable import FileTable
from pipeline.protocol.frames import PROTOCOL_VERSION
from pipeline.protocol.outcome import Outcome
from pipeline.protocol.receiver import ReceiverMachine
from pipeline.protocol.sender import SenderMachine
from pipeline.shm_ring import SlotRing
from pipeline.signaling.client import SignalingClient, SignalingError
from workers import messages as wm
from workers.channel import PipeEnd, send, watch_readable

log = logging.getLogger(__name__)

AGENT = "webrtc-pipeline/0.1 (aiortc)"
TICK = 0.25
# A reconnect attempt begun while the path is still down gathers no srflx
# candidate and cannot succeed; give it this long (doubling per attempt, at
# most connect_timeout) rather than the whole connect_timeout.
RECONNECT_ATTEMPT = 5.0
# The receiver's join retries while the room is unknown wait this long first, then
# twice as long each time (see join_retry_delays).
JOIN_FIRST_RETRY = 0.5


def join_retry_delays(join_wait: float, first: float = JOIN_FIRST_RETRY) -> list[float]:
    """The waits between the receiver's joins while the server answers ``unknown_room``.

    Every such answer counts toward the server's 20 per address per minute (C.3),
    so the waits double from ``first``; when the wait after the next one would run
    past ``join_wait``, the next one runs to ``join_wait`` instead (the last join is
    at the deadline).  For 10 s: 0.5, 1, 2, 6.5, so five joins in all.
    """
    delays: list[float] = []
    at, delay = 0.0, first
    while at < join_wait:
        if at + 3 * delay > join_wait:  # this wait and the doubled next one overrun
            delays.append(join_wait - at)
            break
        delays.append(delay)
        at += delay
        delay *= 2
    return delays


def event_loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: the implementation running ``loop``."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"


class LinkLost(Exception):
    pass


class ConnectionProcess:
    def __init__(self, params: control.ConnParams, ctl: PipeEnd, pipes: dict[str, PipeEnd]) -> None:
        self.params = params
        self.ctl = ctl
        self.pipes = pipes
        self.terminated: ev.Terminated | None = None
        self.finished = asyncio.Event()
        self.diagnostics: dict[str, Any] = {"connections": 0}
        self.link: PeerLink | None = None
        self.room: RoomChannel | None = None
        self._next_offer: dict[str, Any] | None = None
        self.ring: SlotRing | None = None
        self.machine: SenderMachine | ReceiverMachine
        p = params
        if p.role == "sender":
            self.machine = SenderMachine(
                p.code,
                FileTable.unpack(p.files) if p.files is not None else FileTable(),
                chunk_size=p.chunk_size,
                window=p.window,
                max_message_size=LOCAL_MAX_MESSAGE_SIZE,
                rto_initial=p.rto_initial,
                rto_max=p.rto_max,
                agent=AGENT,
            )
        else:
            self.machine = ReceiverMachine(
                p.code,
                max_message_size=LOCAL_MAX_MESSAGE_SIZE,
                window=p.window,
                ack_interval=p.ack_interval,
                agent=AGENT,
            )
        self.plane = DataPlane(
            self.machine,
            ctl,
            pipes,
            buffered_high=p.buffered_high,
            buffered_low=p.buffered_low,
            on_terminated=self._on_terminated,
        )

    # -- entry ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.diagnostics["event_loop"] = event_loop_kind(loop)
        watch_readable(loop, self.ctl, self._read_ctl)
        for name, pipe in self.pipes.items():
            if name.startswith("from_"):
                watch_readable(loop, pipe, read_pipe, pipe, name[5:], self.plane.on_worker_message, self._worker_eof)
        lifecycle = loop.create_task(self._lifecycle())
        ticker = loop.create_task(self._ticker())
        try:
            await self.finished.wait()
        finally:
            lifecycle.cancel()
            ticker.cancel()
            for task in (lifecycle, ticker):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.plane.flush_workers()  # a Discard queued by the last frames
            await self._close()
            loop.remove_reader(self.ctl.fileno())
            for pipe in self.pipes.values():
                with contextlib.suppress(Exception):
                    loop.remove_reader(pipe.fileno())
        self._report_finished()

    def _on_terminated(self, terminated: ev.Terminated) -> None:
        if self.terminated is None:
            self.terminated = terminated
            # Let queued frames (error/cancel/done_ack) go out before closing.
            asyncio.get_running_loop().call_soon(self.finished.set)

    def _fail_now(self, outcome: Outcome, code: str | None, message: str) -> None:
        self.machine.abort(outcome, code, message)
        self.plane.process()

    # -- lifecycle ---------------------------------------------------------------------

    async def _lifecycle(self) -> None:
        try:
            await self._join()
            first = True
            while True:
                link = await self._establish(first)
                self.link = link
                assert link.channel is not None
                self.machine.max_message_size = link.max_message_size()
                now = time.monotonic()
                if first:
                    self.machine.start(now)
                else:
                    self.machine.reconnected(now)
                # After start/reconnected: frames the peer sent early (held since the
                # channel appeared, see _hold_messages) must follow our own hello.
                self.plane.attach_channel(link.channel)
                self.plane.process()
                facts = await link.describe()
                if link.pc.sctp is not None:
                    # Either side receives DATA (data or acks): per-packet work in O(gaps).
                    sctp_acks.enable(link.pc.sctp)
                if self.params.role == "sender":
                    facts["flight_cap"] = self._cap_flight(link, facts)
                self.diagnostics.update(facts)
                self.diagnostics["connections"] += 1
                control.send(self.ctl, control.Connected(pair=facts.get("selected_pair"), reconnect=not first))
                await self._watch(link)
                if self.terminated is not None:
                    # Not lost: the session ended (error, cancel, done_ack) and run()
                    # has yet to cancel us.  Tearing the link down here (pc.close) would
                    # drop the last frames still queued, e.g. the error frame that tells
                    # the peer; run()'s _close delivers them and closes gracefully.
                    return
                # Lost: keep the protocol state, drop the link, go round again (A.1).
                self.machine.link_lost(time.monotonic())
                if self.room is not None and not self.room.peer_present.is_set():
                    self.machine.peer_gone(time.monotonic())  # it left before we saw the loss
                self.plane.detach_channel()
                self.plane.process()
                self.link = None
                await link.close(graceful=False)
                if self.machine.terminal:
                    return
                first = False
        except NoRoute as exc:
            self.diagnostics["no_route"] = exc.diagnosis.to_dict()
            self.diagnostics["no_route_text"] = exc.diagnosis.to_text()
            self.diagnostics["observation"] = exc.observation
            self._fail_now(Outcome.NO_ROUTE, "no_route", exc.diagnosis.summary)
        except SignalingError as exc:
            self._fail_now(Outcome.FAILED, "signaling", f"signaling server: {exc.message} ({exc.code})")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an aiortc failure: one outcome, with the reason
            log.exception("connection lifecycle failed")
            self.machine.fail("internal", f"connection process error: {exc!r}")
            self.plane.process()

    async def _join(self) -> None:
        p = self.params
        client = SignalingClient()
        await client.connect(p.signal_url)
        started = time.monotonic()
        # When to join again, counted from the first join: backing off, since each
        # unknown_room counts toward the server's rate limit (C.3).
        retries = itertools.accumulate(join_retry_delays(p.join_wait))
        while True:
            try:
                joined = await client.join(p.code, p.role)
                break
            except SignalingError as exc:
                await client.close()
                # The receiver may be faster than the sender's join; retry for join_wait.
                retry_at = next(retries, None) if exc.code == "unknown_room" and p.role == "receiver" else None
                if retry_at is None:
                    if exc.code == "unknown_room":
                        raise SignalingError(
                            exc.code, f"no sender is waiting under code {p.code!r}: check the code and the URL"
                        ) from None
                    raise
                await asyncio.sleep(max(0.0, started + retry_at - time.monotonic()))
                client = SignalingClient()
                await client.connect(p.signal_url)
        self.room = RoomChannel(client, self._peer_left)
        self.room.start(joined.peer_present)
        control.send(self.ctl, control.Status(text="joined the room; waiting for the peer"))

    async def _establish(self, first: bool) -> PeerLink:
        """Build a new peer connection; on a reconnect retry until the deadline."""
        p = self.params
        assert self.room is not None
        deadline = time.monotonic() + p.reconnect_timeout
        attempts = 0
        while True:
            if not first and time.monotonic() > deadline:
                self._fail_now(Outcome.FAILED, "timeout", f"the connection was lost and not restored within {p.reconnect_timeout:g} s")
                raise asyncio.CancelledError
            # A reconnect attempt never outlives the reconnect deadline (A.1): gathering
            # (5 s when STUN is unreachable) and the ICE wait both count.
            remaining = None if first else max(0.0, deadline - time.monotonic())
            if remaining is None:
                attempt = p.connect_timeout
            else:
                attempt = max(0.1, min(p.connect_timeout, RECONNECT_ATTEMPT * 2**attempts, remaining))
            attempts += 1
            link = PeerLink(p.stun_servers)
            self.diagnostics["ice_servers"] = link.ice_server_urls()  # [] by default: no outside address
            self._hold_messages(link)
            try:
                control.send(self.ctl, control.Status(text="connecting" if first else "reconnecting"))
                async with asyncio.timeout(remaining):
                    if self.room.closed is not None:
                        await self._rejoin()
                    if p.role == "sender":
                        await self._wait_peer(deadline if not first else None)
                        self.room.drain()  # answers and markers from earlier attempts
                        await link.offer(
                            self.room,
                            ordered=p.ordered,
                            max_retransmits=p.max_retransmits,
                            max_packet_life_time=p.max_packet_life_time,
                            timeout=attempt,
                        )
                    else:
                        offer = await self._wait_offer(deadline if not first else None)
                        await link.answer(self.room, offer, timeout=attempt)
                return link
            except Superseded as exc:
                await link.close(graceful=False)
                if exc.offer.get("type") == "offer":
                    self._next_offer = exc.offer
                log.info("starting over: %s", exc.offer.get("type"))
            except (NoRoute, TimeoutError, SignalingError) as exc:
                await link.close(graceful=False)
                if first:
                    raise
                log.info("reconnect attempt failed: %s", exc)
                await asyncio.sleep(0.5)
            except BaseException:
                await link.close(graceful=False)
                raise

    async def _rejoin(self) -> None:
        """The signaling socket died (a NAT rebinding, a long cut): rejoin the room (C.5).

        ``role_taken``/``room_full``: the server has not yet noticed that our old
        socket is dead (its heartbeat); retry until the caller's deadline cancels us.
        """
        p = self.params
        assert self.room is not None
        with contextlib.suppress(Exception):
            await self.room.close()
        while True:
            client = SignalingClient()
            try:
                await client.connect(p.signal_url)
                joined = await client.join(p.code, p.role)
            except SignalingError as exc:
                await client.close()
                if exc.code == "unknown_room":
                    self._peer_left()  # the sender left and the server forgot the room
                if exc.code not in ("role_taken", "room_full", "connect_failed", "closed"):
                    raise
                log.info("rejoining the room: %s", exc)
                await asyncio.sleep(1.0)
                continue
            except BaseException:
                await client.close()
                raise
            self.room = RoomChannel(client, self._peer_left)
            self.room.start(joined.peer_present)
            log.info("rejoined the room")
            if not joined.peer_present:
                self._peer_left()
            return

    def _peer_left(self) -> None:
        """The room says the peer left (or is gone after our rejoin).  With our own
        link down too, the peer has ended rather than lost its link: the machine
        may conclude (``peer_gone``, docs/protocol.md "The link drops at the very end")."""
        if self.link is None and not self.machine.terminal:
            self.machine.peer_gone(time.monotonic())
            self.plane.process()

    def _hold_messages(self, link: PeerLink) -> None:
        """Have the data plane keep the channel's messages from the moment it exists
        (see ``DataPlane.hold``), not only once ``_establish`` has returned.

        Receiver: the sender's channel is announced by ``datachannel`` (this
        listener runs before PeerLink's own, registered later).  Sender: our channel
        exists once ``offer`` has begun, and no message can arrive before SCTP
        starts, which aiortc does only after the connection state became
        ``connected`` (DTLS up).
        """
        link.pc.on("datachannel", self.plane.hold)

        @link.pc.on("connectionstatechange")
        def on_state() -> None:
            if link.channel is not None:
                self.plane.hold(link.channel)

    async def _wait_peer(self, deadline: float | None) -> None:
        assert self.room is not None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        await asyncio.wait_for(self.room.peer_present.wait(), timeout)

    async def _wait_offer(self, deadline: float | None) -> dict[str, Any]:
        assert self.room is not None
        if self._next_offer is not None:
            offer, self._next_offer = self._next_offer, None
            return offer
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            data = await asyncio.wait_for(self.room.signals.get(), timeout)
            if data.get("type") == "offer":
                return data
            if data.get("type") == "closed":
                raise SignalingError("closed", "the signaling connection closed")

    async def _watch(self, link: PeerLink) -> None:
        """Return when the link is lost: closed, silent too long, or replaced by a new offer."""
        assert self.room is not None
        p = self.params
        while not self.machine.terminal:
            if link.closed.is_set():
                return
            now = time.monotonic()
            if self._mute_peer(now):
                self.plane.process()
                return
            if self._stalled(now):
                log.info("progress watchdog: no progress for %.1f s", p.progress_timeout)
                return
            if self.params.role == "receiver":
                while not self.room.signals.empty():
                    data = self.room.signals.get_nowait()
                    if data.get("type") == "offer":  # the sender already started over
                        self._next_offer = data
                        return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.closed.wait(), TICK)

    def _cap_flight(self, link: PeerLink, facts: dict[str, Any]) -> int | None:
        """Bound aiortc's SCTP flight on this connection (see sctp_flight)."""
        rtt_ms = (facts.get("selected_pair") or {}).get("rtt_ms")
        cap = sctp_flight.resolve(self.params.flight_cap, None if rtt_ms is None else rtt_ms / 1000.0)
        if link.pc.sctp is not None:
            sctp_sacks.enable(link.pc.sctp)  # SACKs handled per gap block, not per chunk
            sctp_path.enable(link.pc.sctp)  # RTT, RTO floor, loss response (docs/performance.md)
        return sctp_flight.set_cap(link.pc, cap, follow=self.params.flight_cap == "auto")

    def _mute_peer(self, now: float) -> bool:
        """The handshake watchdog: the channel is open (so the link works: ICE consent
        keeps it alive) but the peer has not introduced itself in time. It is not
        this protocol's peer, or it is stuck; waiting longer would wait forever."""
        m = self.machine
        timeout = self.params.progress_timeout
        # Silence, not duration: a large manifest on a slow path takes as long as it
        # takes. attach_channel starts the silence clock at the channel's attachment.
        if m.introduced or m.terminal or now - self.plane.last_message_at <= timeout:
            return False
        peer = "receiver" if isinstance(m, SenderMachine) else "sender"
        if m.peer_max_message_size is None:
            what = f"opened the connection but sent no hello within {timeout:g} s"
        else:
            what = f"said hello but then sent nothing of its manifest for {timeout:g} s"
        m.fail(
            "timeout",
            f"the {peer} {what}: it may be another program or protocol version "
            f"(this one speaks {SUBPROTOCOL} v{PROTOCOL_VERSION}), or it is stuck",
        )
        return True

    def _stalled(self, now: float) -> bool:
        """The application watchdog (aiortc alone may report a dead path late or never)."""
        timeout = self.params.progress_timeout
        if not self.plane.awaiting_peer():
            return False
        if isinstance(self.machine, SenderMachine):
            return now - self.plane.last_progress_at > timeout
        return now - self.plane.last_message_at > timeout

    async def _ticker(self) -> None:
        while True:
            now = time.monotonic()
            deadline = self.machine.next_timer()
            if deadline is not None and now >= deadline:
                self.machine.handle_timer(now)
                self.plane.process()
            control.send(self.ctl, self.plane.progress())
            wait = TICK if deadline is None else min(TICK, max(0.005, deadline - now))
            await asyncio.sleep(wait)

    # -- supervisor and workers ------------------------------------------------------

    def _read_ctl(self) -> None:
        try:
            while self.ctl.poll():
                self._on_ctl(control.recv(self.ctl))
        except (EOFError, OSError):
            # The supervisor is gone: nobody owns us any more.
            asyncio.get_running_loop().remove_reader(self.ctl.fileno())
            self.machine.cancel("the sending program stopped" if self.params.role == "sender" else "the receiving program stopped")
        self.plane.process()

    def _on_ctl(self, msg: control.ControlMessage) -> None:
        now = time.monotonic()
        match msg:
            case control.RingReady(spec=spec):
                self._attach_ring(spec)
            case control.Decision(accept=True, spec=spec) if isinstance(self.machine, ReceiverMachine):
                assert spec is not None
                self._attach_ring(spec)
                self.machine.accept(now)
            case control.Decision(accept=False, code=code, message=message) if isinstance(self.machine, ReceiverMachine):
                if code == "no_space":
                    self.machine.fail("no_space", message)
                else:
                    self.machine.reject(code, message)
            case control.Cancel(message=message):
                self.machine.cancel(message)
            case control.WorkerDied(role=role, exitcode=exitcode):
                self.machine.fail("internal", f"the {role} process died unexpectedly (exit status {exitcode})")
            case _:
                log.warning("unexpected control message %r", msg)

    def _attach_ring(self, spec: Any) -> None:
        self.ring = SlotRing.attach(spec)
        self.plane.attach_ring(self.ring)

    def _worker_eof(self, role: str) -> None:
        pipe = self.pipes.get("from_" + role)
        if pipe is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(pipe.fileno())
        if not self.machine.terminal:
            self.machine.fail("internal", f"the {role} process exited unexpectedly")
            self.plane.process()

    # -- ending ---------------------------------------------------------------------------

    async def _close(self) -> None:
        link = self.link
        graceful = link is not None and link.channel is not None and link.channel.readyState == "open"
        if link is not None and graceful:
            # Let the last frames (done_ack, error, cancel) leave before closing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    while self.plane.queued or self.plane.buffered_amount() > 0:
                        self.plane.flush()
                        await asyncio.sleep(0.02)
            completed_receiver = (
                self.terminated is not None
                and self.terminated.outcome is Outcome.COMPLETED
                and self.params.role == "receiver"
            )
            if completed_receiver:
                # The sender closes after done_ack; waiting for that keeps done_ack from being dropped.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.closed.wait(), 5.0)
            await link.close(graceful=True)
        elif link is not None:
            await link.close(graceful=False)
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.room.close()
        for pipe in self.pipes.values():
            if pipe.writable:
                with contextlib.suppress(Exception):
                    send(pipe, wm.Stop())
        if self.ring is not None:
            self.ring.close()

    def _report_finished(self) -> None:
        t = self.terminated
        if t is None:
            t = ev.Terminated(Outcome.FAILED, "internal", "the connection ended without an outcome", False)
        self.diagnostics["final_paths"] = {str(k): v for k, v in self.plane.final_paths.items()}
        # Each file's verdict by id, for the summary's file_outcomes (summarize takes it out).
        # One letter per file (Verdicts.letters), not a dict of 100,000 string keys.
        self.diagnostics["verdicts"] = self.machine.verdicts.letters(len(self.machine.files))
        with contextlib.suppress(Exception):
            control.send(self.ctl, self.plane.progress())
        with contextlib.suppress(Exception):
            control.send(
                self.ctl,
                control.Finished(
                    outcome=t.outcome.value,
                    code=t.code,
                    message=t.message,
                    by_peer=t.by_peer,
                    diagnostics=self.diagnostics,
                    counters=self.plane.counters(),
                ),
            )


def run_connection(params: control.ConnParams, ctl: PipeEnd, pipes: dict[str, PipeEnd], log_level: int) -> None:
    """``multiprocessing.Process`` target."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    host_addresses.install()  # a host with only lo still reaches a peer on itself
    try:
        import uvloop
    except ImportError:
        # Recorded in the summary too (diagnostics["event_loop"]).
        log.warning("uvloop is not available: the connection runs on asyncio's own event loop, about a third slower")
        asyncio.run(ConnectionProcess(params, ctl, pipes).run())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(ConnectionProcess(params, ctl, pipes).run())
