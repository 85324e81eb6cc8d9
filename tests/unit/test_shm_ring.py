"""SlotRing: layout, ownership, cross-process sharing and cleanup after a crash."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import resource_tracker
from pathlib import Path

import msgspec
import pytest

from pipeline.shm_ring import PAYLOAD_OFFSET, SHM_DIR, RingSpec, SlotRing

REPO = Path(__file__).resolve().parents[2]


def _pattern(slot: int, length: int) -> bytes:
    return bytes((slot * 31 + i) % 251 for i in range(length))


def _child_write_pattern(spec: RingSpec) -> None:
    """Spawned child: attach, fill every payload with its pattern, close."""
    ring = SlotRing.attach(spec)
    try:
        for i in range(spec.slots):
            with ring.payload(i, ring.payload_capacity) as view:
                view[:] = _pattern(i, ring.payload_capacity)
    finally:
        ring.close()


def _segment_exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


def _run_python(code: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        text=True,
        **kwargs,
    )


def test_spawned_child_writes_what_owner_reads() -> None:
    with SlotRing.create(slots=3, slot_size=PAYLOAD_OFFSET + 1000) as ring:
        child = multiprocessing.get_context("spawn").Process(
            target=_child_write_pattern, args=(ring.spec,)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
        for i in range(3):
            with ring.payload(i, 1000) as view:
                assert bytes(view) == _pattern(i, 1000)
        # The child's attach neither unlinked the segment nor left anything new.
        assert _segment_exists(ring.spec.name)
        name = ring.spec.name
    assert not _segment_exists(name)


def test_attach_in_unrelated_process_does_not_unlink_at_its_exit() -> None:
    """gh-82300: with SharedMemory(name=...) the attaching process's own resource
    tracker would unlink the segment when that process exits."""
    with SlotRing.create(slots=2, slot_size=PAYLOAD_OFFSET + 16) as ring:
        proc = _run_python(
            f"""
            from pipeline.shm_ring import RingSpec, SlotRing
            with SlotRing.attach(RingSpec({ring.spec.name!r}, 2, {PAYLOAD_OFFSET + 16})) as r:
                with r.payload(1, 5) as v:
                    v[:] = b"hello"
            """,
            stderr=subprocess.PIPE,
        )
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "leaked" not in err
        assert _segment_exists(ring.spec.name)
        with ring.payload(1, 5) as view:
            assert bytes(view) == b"hello"


def test_attach_never_registers_with_the_resource_tracker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SlotRing.create(slots=1, slot_size=64) as ring:

        def refuse(name: str, rtype: str) -> None:
            raise AssertionError(f"attach registered {name} ({rtype})")

        monkeypatch.setattr(resource_tracker, "register", refuse)
        with SlotRing.attach(ring.spec) as attached, attached.payload(0, 3) as view:
            view[:] = b"abc"
        assert _segment_exists(ring.spec.name)


def test_payload_sits_after_the_header_in_its_slot() -> None:
    with SlotRing.create(slots=4, slot_size=100) as ring:
        assert ring.payload_capacity == 100 - PAYLOAD_OFFSET
        with ring.payload(2, 10) as view:
            view[:] = b"0123456789"
        with ring.slot(2) as whole:
            assert len(whole) == 100
            assert bytes(whole[PAYLOAD_OFFSET : PAYLOAD_OFFSET + 10]) == b"0123456789"
            assert bytes(whole[:PAYLOAD_OFFSET]) == bytes(PAYLOAD_OFFSET)
        for other in (1, 3):
            with ring.slot(other) as whole:
                assert bytes(whole) == bytes(100)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 slot"):
        SlotRing.create(0, 100)
    with pytest.raises(ValueError, match="slot_size"):
        SlotRing.create(1, PAYLOAD_OFFSET)
    with SlotRing.create(2, 64) as ring:
        with pytest.raises(IndexError):
            ring.slot(2)
        with pytest.raises(IndexError):
            ring.payload(-1, 1)
        with pytest.raises(ValueError):
            ring.payload(0, 64 - PAYLOAD_OFFSET + 1)
        with pytest.raises(PermissionError):
            SlotRing.attach(ring.spec).unlink()
        with pytest.raises(ValueError, match="needs"):
            SlotRing.attach(RingSpec(ring.spec.name, 3, 64))
    with pytest.raises(ValueError, match="invalid"):
        SlotRing.attach(RingSpec("../etc/passwd", 1, 64))
    with pytest.raises(FileNotFoundError):
        SlotRing.attach(RingSpec("pxfer-0-doesnotexist", 1, 64))


def test_spec_travels_by_pickle_and_msgspec() -> None:
    spec = RingSpec("pxfer-1-ab", 4, 1024)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(spec), type=RingSpec) == spec


def test_close_tolerates_outstanding_view_and_unlink_removes_segment() -> None:
    ring = SlotRing.create(2, 64)
    name = ring.spec.name
    assert _segment_exists(name)
    held = ring.payload(0, 8)
    ring.close()  # a view is still alive: must not raise
    ring.close()  # idempotent
    held[:] = b"stillok!"  # the mapping lives as long as the view
    held.release()
    with pytest.raises(ValueError, match="closed"):
        ring.slot(0)
    ring.unlink()
    ring.unlink()  # idempotent
    assert not _segment_exists(name)


def test_exit_with_views_still_held_is_quiet() -> None:
    proc = _run_python(
        """
        from pipeline.shm_ring import SlotRing
        ring = SlotRing.create(2, 64)
        other = SlotRing.attach(ring.spec)
        held = [ring.payload(0, 4), other.slot(1)]
        ring.unlink()
        other.close()  # with a view alive: must not raise either
        """,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err == ""


def test_resource_tracker_unlinks_after_owner_is_killed() -> None:
    # A plain subprocess, so that the owner runs its own resource tracker
    # (a multiprocessing child would share this test process's tracker).
    proc = _run_python(
        """
        import sys, time
        from pipeline.shm_ring import SlotRing
        ring = SlotRing.create(2, 4096)
        print(ring.spec.name, flush=True)
        time.sleep(60)
        """,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the tracker warns about the "leaked" segment
    )
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name.startswith("pxfer-")
        assert _segment_exists(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while _segment_exists(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _segment_exists(name)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_stop_resource_tracker_reaps_it_before_the_owner_exits() -> None:
    """The CLIs call this last: the tracker a ring started is gone (reaped, not a
    zombie) while the owner still runs, and nothing is reported leaked."""
    proc = _run_python(
        """
        import os
        from multiprocessing import resource_tracker
        from pipeline.shm_ring import SlotRing, stop_resource_tracker
        with SlotRing.create(slots=1, slot_size=64):
            pass
        pid = resource_tracker._resource_tracker._pid
        assert pid is not None, "creating a ring started no tracker"
        stop_resource_tracker()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("gone", pid)
        else:
            print("alive", pid)
        stop_resource_tracker()  # idempotent
        with SlotRing.create(slots=1, slot_size=64):  # and a later ring starts a new one
            pass
        print("restarted", resource_tracker._resource_tracker._pid != pid)
        """,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "leaked" not in err, err
    lines = out.split()
    assert lines[0] == "gone" and lines[-1] == "True", out
