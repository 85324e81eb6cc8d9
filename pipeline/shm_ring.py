"""A ring of fixed-size chunk slots in one POSIX shared-memory segment.

The connection process and the reader, hasher and writer workers pass file
chunks through this segment so that chunk bytes are never pickled or piped:
only slot numbers travel, as small messages over OS pipes (``workers.channel``).

Memory layout of a segment named ``pxfer-<owner pid>-<random hex>`` under
``/dev/shm`` (``slots × slot_size`` bytes)::

    byte 0         slot_size      2·slot_size                  slots·slot_size
    +--------------+--------------+---------- ... -+--------------+
    |    slot 0    |    slot 1    |                | slot slots-1 |
    +--------------+--------------+---------- ... -+--------------+

    one slot (slot i starts at byte i × slot_size):
    0                24                          24 + length      slot_size
    +----------------+-----------------------------+---------------+
    |  DATA header   |  payload: the chunk's bytes |    unused     |
    | (B.2, 24 bytes)|                             |               |
    +----------------+-----------------------------+---------------+
      PAYLOAD_OFFSET   payload(i, length)
      slot(i) is the whole slot; payload_capacity = slot_size - 24.

Workers only ever touch the payload.  The connection process writes the 24-byte
DATA header (Appendix B.2) in front of it, so that one ``bytes(slot[:24 + n])``
copy yields the complete frame handed to aiortc.

The segment holds no flag bytes: who may touch a slot is decided only by the
messages that hand it out and give it back (``ReadChunk``/``WriteChunk`` …
``ReleaseSlot``).  Shared flag bytes without memory barriers are how other
projects' rings got torn reads; a pipe write/read is a full synchronisation
point.

Ownership (STYLE.md, "one owner per resource"): exactly one process calls
:meth:`SlotRing.create`; it is the only one that unlinks.  Creation goes
through :class:`multiprocessing.shared_memory.SharedMemory`, so the resource
tracker unlinks the segment even if the owner is SIGKILLed.  Every other
process calls :meth:`SlotRing.attach`, which maps ``/dev/shm/<name>`` with
``os.open`` + ``mmap`` directly.  ``SharedMemory(name=...)`` cannot be used for
that on Python 3.11: every attach registers the segment with the attaching
process's resource tracker (CPython gh-82300), which then unlinks it when that
process exits, under the owner's feet.  Mapping through ``/dev/shm`` is
Linux-only, and so is this module.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import secrets
import signal
import stat
import time
from multiprocessing import resource_tracker, shared_memory
from types import TracebackType
from typing import Final, Self

import msgspec

PAYLOAD_OFFSET: Final = 24  # == Appendix B.2 DATA header length
SHM_DIR: Final = "/dev/shm"
NAME_PREFIX: Final = "pxfer-"

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class RingSpec(msgspec.Struct, frozen=True):
    """What another process needs to attach: picklable, msgspec-encodable."""

    name: str
    slots: int
    slot_size: int


def _check_geometry(slots: int, slot_size: int) -> None:
    if slots < 1:
        raise ValueError(f"a ring needs at least 1 slot, got {slots}")
    if slot_size <= PAYLOAD_OFFSET:
        raise ValueError(f"slot_size must exceed the {PAYLOAD_OFFSET}-byte header, got {slot_size}")


def _map_segment(name: str, size: int) -> mmap.mmap:
    """Map ``/dev/shm/<name>`` read-write without any resource-tracker bookkeeping."""
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise ValueError(f"invalid shared-memory segment name {name!r}")
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{SHM_DIR}/{name} is not a shared-memory segment")
        if st.st_size < size:
            raise ValueError(f"segment {name!r} holds {st.st_size} bytes, the ring needs {size}")
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)  # the mapping keeps the segment alive on its own


class SlotRing:
    """``slots`` slots of ``slot_size`` bytes in one shared-memory segment.

    Views returned by :meth:`slot` and :meth:`payload` must be released by the
    caller (``with ring.payload(i, n) as view: ...``) before :meth:`close`;
    while one is alive the mapping cannot be unmapped.  ``close`` never raises
    because of that: it drops its own references and the kernel mapping goes
    away when the last outstanding view is released or collected.
    """

    def __init__(
        self, spec: RingSpec, mapping: mmap.mmap, owner: shared_memory.SharedMemory | None
    ) -> None:
        self._spec = spec
        self._mmap: mmap.mmap | None = mapping
        self._buf: memoryview | None = memoryview(mapping)
        self._owner = owner
        self._unlinked = False

    # -- construction -------------------------------------------------------

    @classmethod
    def create(cls, slots: int, slot_size: int) -> SlotRing:
        """Create a new segment; the caller becomes its only owner."""
        _check_geometry(slots, slot_size)
        size = slots * slot_size
        name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        # SharedMemory creates the segment and registers it with the resource
        # tracker (the SIGKILL safety net).  Its own mapping is dropped at once
        # (no view exists yet, so this cannot fail) and the segment re-mapped the
        # same way attach does: one code path, and no SharedMemory.__del__ that
        # could raise BufferError at interpreter exit.
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        try:
            shm.close()
            mapping = _map_segment(shm.name, size)
        except BaseException:
            shm.unlink()
            raise
        return cls(RingSpec(shm.name, slots, slot_size), mapping, shm)

    @classmethod
    def attach(cls, spec: RingSpec) -> SlotRing:
        """Map an existing segment (Linux only); never registers, never unlinks."""
        _check_geometry(spec.slots, spec.slot_size)
        return cls(spec, _map_segment(spec.name, spec.slots * spec.slot_size), None)

    # -- access -------------------------------------------------------------

    @property
    def spec(self) -> RingSpec:
        return self._spec

    @property
    def is_owner(self) -> bool:
        return self._owner is not None

    @property
    def payload_capacity(self) -> int:
        return self._spec.slot_size - PAYLOAD_OFFSET

    def slot(self, index: int) -> memoryview:
        """The whole of slot ``index`` (header area included), writable."""
        start = self._slot_start(index)
        return self._view()[start : start + self._spec.slot_size]

    def payload(self, index: int, length: int) -> memoryview:
        """Bytes ``[24, 24 + length)`` of slot ``index``, writable."""
        if not 0 <= length <= self.payload_capacity:
            raise ValueError(f"payload length {length} outside 0..{self.payload_capacity}")
        start = self._slot_start(index) + PAYLOAD_OFFSET
        return self._view()[start : start + length]

    def _slot_start(self, index: int) -> int:
        if not 0 <= index < self._spec.slots:
            raise IndexError(f"slot {index} outside 0..{self._spec.slots - 1}")
        return index * self._spec.slot_size

    def _view(self) -> memoryview:
        if self._buf is None:
            raise ValueError(f"ring {self._spec.name!r} is closed")
        return self._buf

    # -- release ------------------------------------------------------------

    def close(self) -> None:
        """Unmap this process's mapping.  Idempotent; never raises."""
        buf, self._buf = self._buf, None
        mapping, self._mmap = self._mmap, None
        if buf is not None:
            buf.release()  # our own whole-segment view exports nothing itself
        if mapping is not None:
            # BufferError: a caller still holds a slot view.  Dropping our
            # reference is enough: the views keep the mmap object alive and it
            # unmaps itself when the last of them goes.
            with contextlib.suppress(BufferError):
                mapping.close()

    def unlink(self) -> None:
        """Remove the segment's name (owner only).  Idempotent.

        Processes that still map the segment keep their mapping until they close.
        """
        if self._owner is None:
            raise PermissionError(f"only the owner may unlink ring {self._spec.name!r}")
        if self._unlinked:
            return
        self._unlinked = True
        try:
            self._owner.unlink()  # shm_unlink, then unregister from the resource tracker
        except FileNotFoundError:
            # Someone removed it already; still unregister, or the tracker warns
            # about a "leaked" segment when it shuts down.
            resource_tracker.unregister("/" + self._spec.name, "shared_memory")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if self._owner is not None:
            self.unlink()

    def __repr__(self) -> str:
        role = "owner" if self._owner is not None else "attached"
        state = "closed" if self._buf is None else "open"
        return (
            f"SlotRing({self._spec.name!r}, slots={self._spec.slots}, "
            f"slot_size={self._spec.slot_size}, {role}, {state})"
        )


def stop_resource_tracker(timeout: float = 2.0) -> None:
    """End and reap the resource tracker this process started, if any.

    :meth:`SlotRing.create` starts multiprocessing's resource tracker (the safety
    net that unlinks a ring whose owner was SIGKILLed).  It is a child of this
    process and would otherwise exit only after this process has: for a moment
    a process of the session outlives the CLI.  Call this at the very end, when
    every ring is unlinked and every child reaped.  Closing the tracker's pipe
    ends it (it unlinks whatever is still registered, which should be nothing);
    it is reaped within ``timeout`` or killed.  Uses ``ResourceTracker``'s
    private ``_lock``/``_fd``/``_pid`` (CPython 3.8-3.13); absent, nothing happens.
    """
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    lock = getattr(tracker, "_lock", None)
    if tracker is None or lock is None or not hasattr(tracker, "_fd") or not hasattr(tracker, "_pid"):
        return
    with lock:
        fd, pid = tracker._fd, tracker._pid
        if fd is None or pid is None:
            return  # never started here (or inherited from a parent: not ours to stop)
        tracker._fd = tracker._pid = None
        with contextlib.suppress(OSError):
            os.close(fd)
        deadline = time.monotonic() + timeout
        try:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return
                time.sleep(0.005)
        except ChildProcessError:
            pass  # already reaped
