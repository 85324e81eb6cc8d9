"""What the sender and receiver machines share: outbox, frame intake, terminal rule.

Terminal rule (Appendix A.2, rule 1): a machine reaches exactly one terminal
outcome, exactly once.  ``_terminate`` is the only place that sets it; every
public input method starts with ``if self.terminal: return`` (through
``_live``), so after the outcome nothing changes, whatever arrives.

Fault handling follows h11: a frame the peer should not have sent raises
:class:`RemoteProtocolError` inside the machine; the intake methods turn it into
an ``error`` frame with the appendix's code plus a ``failed`` outcome.  It never
escapes to the I/O loop.
"""

from __future__ import annotations

from .errors import ErrorCode, RemoteProtocolError
from .events import Output, SendControl, Terminated
from .filetable import FileTable
from .frames import (
    MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
    Cancel,
    ControlFrame,
    DataFrame,
    Error,
    Hello,
    decode_control,
    decode_data,
)
from .outcome import Outcome
from .verdicts import Verdicts


class MachineBase:
    role: str = ""

    files: FileTable
    verdicts: Verdicts

    def __init__(self, session: str, max_message_size: int) -> None:
        self.session = session
        self.link_up = True
        self.max_message_size = max_message_size
        self.peer_max_message_size: int | None = None
        self.outcome: Outcome | None = None
        self.error_code: str | None = None
        self.message = ""
        self.agent: str | None = None
        self._outbox: list[Output] = []

    # -- shell interface ---------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.outcome is not None

    @property
    def introduced(self) -> bool:
        """The peer said ``hello`` (and, for a receiver, the whole manifest came):
        from here on, waiting is the peer's user deciding or data flowing."""
        return self.peer_max_message_size is not None

    def drain(self) -> list[Output]:
        """Take every output produced since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    def start(self, now: float) -> None:
        """The channel opened for the first time: say hello (B.1)."""
        if self.terminal:
            return
        self._send(self._hello(resume=False))

    def receive_text(self, text: str | bytes, now: float) -> None:
        """A text message (control frame) arrived on the channel."""
        if self.terminal:
            return
        try:
            frame = decode_control(text)
            self._on_control(frame, now)
        except RemoteProtocolError as exc:
            self._protocol_failure(exc.code, exc.message)

    def receive_binary(self, message: bytes | memoryview, now: float) -> None:
        """A binary message (DATA frame) arrived on the channel."""
        if self.terminal:
            return
        try:
            frame = decode_data(message)
            self._on_data(frame, now)
        except RemoteProtocolError as exc:
            self._protocol_failure(exc.code, exc.message)

    def cancel(self, message: str = "stopped by user", code: str = "user_cancelled") -> None:
        """Local orderly stop (SIGINT/SIGTERM): tell the peer, end ``cancelled``."""
        if self.terminal:
            return
        self._send(Cancel(code=code, message=message))
        self._terminate(Outcome.CANCELLED, code, message, by_peer=False)

    def fail(self, code: ErrorCode, message: str, *, peer_message: str | None = None) -> None:
        """A local fault (I/O error, worker crash, ...): tell the peer, end ``failed``.

        ``peer_message`` replaces ``message`` in the ``error`` frame when the local
        text says more than the peer should learn (where files live here)."""
        if self.terminal:
            return
        self._send(Error(code=code, message=peer_message or message))
        self._terminate(Outcome.FAILED, code, message, by_peer=False)

    def abort(self, outcome: Outcome, code: str | None, message: str) -> None:
        """End without telling the peer: the link is gone (``no_route``, ``timeout``)."""
        if self.terminal:
            return
        self._terminate(outcome, code, message, by_peer=False)

    def peer_gone(self, now: float) -> None:
        """The link is down and the peer has left the signaling room: it has ended.

        A peer that only lost its link keeps its place in the room and reconnects;
        one that left is finished.  If every file already has a ``verified``
        ``file_result`` and only the session's last frame is outstanding (the
        sender's ``done_ack``, the receiver's ``done``), that frame was lost with
        the link: end ``completed``.  Anything else concludes nothing; the shell's
        reconnect deadline ends the session (docs/protocol.md, "The link drops at
        the very end").
        """
        if self.terminal or self.link_up or not self._awaiting_summary():
            return
        if self.verdicts.count("verified") == len(self.files):
            peer = "receiver" if self.role == "sender" else "sender"
            self._terminate(
                Outcome.COMPLETED,
                None,
                f"{len(self.files)} files verified (the {peer} left before the session's last frame arrived)",
                by_peer=True,
            )

    def _awaiting_summary(self) -> bool:
        """Hook: every file is out and only the closing exchange (done/done_ack) remains."""
        return False

    def next_timer(self) -> float | None:
        """Absolute time at which ``handle_timer`` wants to run, if any."""
        return None

    def handle_timer(self, now: float) -> None:
        """Run time-driven work due at ``now``."""

    # -- shared internals --------------------------------------------------------

    def _hello(self, *, resume: bool) -> Hello:
        return Hello(
            v=PROTOCOL_VERSION,
            role=self.role,  # type: ignore[arg-type]
            session=self.session,
            max_message_size=self.max_message_size,
            agent=self.agent,
            resume=resume,
        )

    def _send(self, frame: ControlFrame) -> None:
        self._outbox.append(SendControl(frame))

    def _terminate(self, outcome: Outcome, code: str | None, message: str, *, by_peer: bool) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.error_code = code
        self.message = message
        self._on_terminal()
        self._outbox.append(Terminated(outcome, code, message, by_peer))

    def _on_terminal(self) -> None:
        """Hook: drop per-session state once terminal."""

    def _protocol_failure(self, code: ErrorCode, message: str) -> None:
        self._send(Error(code=code, message=message[: MAX_CONTROL_FRAME // 2]))
        self._terminate(Outcome.FAILED, code, message, by_peer=False)

    def _check_hello(self, frame: Hello, expected_role: str) -> None:
        if frame.role != expected_role:
            raise RemoteProtocolError("protocol", f"peer says it is a {frame.role}, expected a {expected_role}")
        if frame.session != self.session:
            raise RemoteProtocolError(
                "protocol", f"peer's session {frame.session!r} does not match ours {self.session!r}"
            )
        self.peer_max_message_size = frame.max_message_size

    def _on_peer_stop(self, frame: ControlFrame) -> bool:
        """Handle ``cancel``/``error`` from the peer; True when it was one."""
        if isinstance(frame, Cancel):
            self._terminate(Outcome.CANCELLED, frame.code, f"peer cancelled: {frame.message}", by_peer=True)
            return True
        if isinstance(frame, Error):
            self._terminate(Outcome.FAILED, frame.code, f"peer reported {frame.code}: {frame.message}", by_peer=True)
            return True
        return False

    @property
    def frame_limit(self) -> int:
        """Largest message either side accepts (B.1: the smaller advertised size)."""
        peer = self.peer_max_message_size
        return self.max_message_size if peer is None else min(self.max_message_size, peer)

    def _on_control(self, frame: ControlFrame, now: float) -> None:
        raise NotImplementedError

    def _on_data(self, frame: DataFrame, now: float) -> None:
        raise NotImplementedError
