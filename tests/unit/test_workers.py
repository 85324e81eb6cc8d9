"""Reader, hasher and writer workers as real spawned processes over a real ring.

The tests play the connection process: they receive and release slots, feed
chunks and check what a user would see: the digests, the files on disk, and
that nothing is left behind or written where it must not be.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.shm_ring import PAYLOAD_OFFSET, SlotRing
from workers.channel import framed, recv, send, send_framed
from workers.hasher import run_receiver_hasher, run_sender_hasher
from workers.messages import (
    READER_BATCH,
    Discard,
    Discarded,
    FileDigest,
    FileRead,
    Finalize,
    Finalized,
    HashChunk,
    HashEnd,
    Message,
    PlanFile,
    ReadChunk,
    ReleaseSlot,
    Stop,
    WorkerError,
    WriteChunk,
    decode,
    encode,
    iter_reader_files,
    pack_reader_files,
)
from workers.partials import partial_path, sweep_partials
from workers.reader import run_reader
from workers.writer import run_writer

CTX = multiprocessing.get_context("spawn")
TIMEOUT = 20.0
TOKEN = "t0k3n"

# -- messages -------------------------------------------------------------------

ALL_MESSAGES: list[Message] = [
    ReadChunk(1, 2, 3, 4, True),
    FileRead(2, 0),
    PlanFile(0, "a/b.txt", 10),
    WriteChunk(3, 0, 65536, 100),
    HashChunk(3, 0, 100),
    HashEnd(0),
    Finalize(0),
    Finalized(0, "a/b (1).txt"),
    Discard(7),
    Discarded(7),
    ReleaseSlot(0),
    FileDigest(0, 0, hashlib.sha256(b"").hexdigest()),
    WorkerError("writer", "no_space", "a/b.txt: No space left on device", 0),
    WorkerError("reader", "internal", "boom", None),
    Stop(),
]


def test_the_reader_s_file_list_is_decoded_a_batch_at_a_time_and_let_go() -> None:
    files = [(i, f"/src/DCIM/IMG_{i:06d}.JPG", i * 7, f"DCIM/IMG_{i:06d}.JPG") for i in range(2 * READER_BATCH + 3)]
    batches = pack_reader_files(files)
    assert len(batches) == 3
    it = iter_reader_files(batches)
    assert next(it) == files[0]
    assert len(batches) == 2  # the first batch is out of the list once decoded
    assert [files[0], *it] == files
    assert batches == []
    assert list(iter_reader_files(pack_reader_files([]))) == []


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def test_messages_are_tagged_arrays() -> None:
    assert msgspec.msgpack.decode(encode(ReleaseSlot(3))) == ["ReleaseSlot", 3]


@given(st.binary(max_size=40))
def test_junk_is_rejected_or_round_trips(data: bytes) -> None:
    try:
        msg = decode(data)
    except msgspec.DecodeError:
        return
    assert decode(encode(msg)) == msg


def test_invalid_utf8_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode(b"\x91\xaa\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80")


def test_negative_numbers_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.msgpack.encode(["ReleaseSlot", -1]))
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.msgpack.encode(["FileDigest", 0, 0, "XYZ"]))


# -- partial names ----------------------------------------------------------------


def test_batched_frames_read_back_one_by_one_in_order() -> None:
    """send_framed puts exactly what send_bytes would on the pipe, in fewer writes."""
    r, w = multiprocessing.Pipe(duplex=False)
    msgs: list[Message] = [ReleaseSlot(i) for i in range(600)]  # about 6 KiB: more than one write
    msgs.insert(300, PlanFile(7, "a/" + "é" * 3000, 5))  # one frame longer than PIPE_BUF
    msgs.append(Stop())
    try:
        send_framed(w, [framed(m) for m in msgs])
        got = [recv(r) for _ in msgs]
        assert got == msgs
        assert not r.poll()
    finally:
        r.close()
        w.close()


def test_batched_writes_never_exceed_pipe_buf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Atomic writes only: two writers of one pipe may never interleave inside a frame."""
    import select

    sizes: list[int] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    r, w = multiprocessing.Pipe(duplex=False)
    try:
        send_framed(w, [framed(ReleaseSlot(i)) for i in range(2000)])
        for _ in range(2000):
            recv(r)
    finally:
        r.close()
        w.close()
    assert len(sizes) > 1
    assert max(sizes) <= select.PIPE_BUF


def test_partial_path_is_hidden_in_the_same_directory() -> None:
    assert partial_path("a.txt", "tok") == ".a.txt.tok.part"
    assert partial_path("d/e/f.bin", "tok") == "d/e/.f.bin.tok.part"
    long = partial_path("é" * 200, "tok")  # 400 bytes of UTF-8
    assert len(long.encode()) <= 255
    assert long.endswith(".tok.part")
    with pytest.raises(ValueError):
        partial_path("a", "bad/token")


def test_sweep_removes_only_partials_and_never_follows_symlinks(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "d").mkdir()
    (out / partial_path("a.txt", TOKEN)).write_bytes(b"x")
    (out / partial_path("d/b.txt", TOKEN)).write_bytes(b"x")
    (out / "a.txt").write_bytes(b"keep")
    (out / partial_path("c.txt", "othertoken")).write_bytes(b"keep")
    (outside / partial_path("x.txt", TOKEN)).write_bytes(b"keep")
    (out / "link").symlink_to(outside)
    removed = sweep_partials(
        str(out), ["a.txt", "d/b.txt", "c.txt", "link/x.txt", "missing/y.txt"], TOKEN
    )
    assert removed == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.txt", "d", "link", partial_path("c.txt", "othertoken")]
    )
    assert (outside / partial_path("x.txt", TOKEN)).exists()


# -- harness ----------------------------------------------------------------------


def _pipe() -> tuple[Connection[Any, Any], Connection[Any, Any]]:
    """(receive end, send end)"""
    return CTX.Pipe(duplex=False)


@contextlib.contextmanager
def _processes(
    procs: list[multiprocessing.process.BaseProcess], inputs: list[Connection[Any, Any]]
) -> Iterator[None]:
    """Start ``procs``; on the way out (a failed assertion too) close their
    ``inputs`` so that they see EOF and exit, and make sure they are reaped."""
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for end in inputs:
            end.close()
        for proc in procs:
            proc.join(TIMEOUT)
            if proc.exitcode is None:
                proc.kill()
                proc.join(TIMEOUT)


def _recv_any(conns: list[Connection[Any, Any]], timeout: float = TIMEOUT) -> list[Message]:
    ready = wait(conns, timeout)
    assert ready, "no message from the workers in time"
    return [recv(conn) for conn in ready]  # type: ignore[arg-type]


class SenderRun:
    def __init__(self) -> None:
        self.chunks: list[ReadChunk] = []
        self.digests: dict[int, FileDigest] = {}
        self.errors: list[WorkerError] = []


def run_sender_pipeline(
    files: list[tuple[int, str, int, str]], chunk_size: int, slots: int, seed: int = 1
) -> SenderRun:
    """Reader + hasher; the test plays the connection process.

    It holds slots for a while and releases them in random order, and checks
    each chunk's bytes both on arrival and at release (a slot reused while held
    would show up as changed bytes).
    """
    rng = random.Random(seed)
    run = SenderRun()
    contents = {fid: Path(p).read_bytes() if Path(p).is_file() else b"" for fid, p, _, _ in files}
    with SlotRing.create(slots, chunk_size + PAYLOAD_OFFSET) as ring:
        conn_in, reader_to_conn = _pipe()
        hasher_in, reader_to_hasher = _pipe()
        conn_release_in, conn_release_out = _pipe()
        hasher_release_in, hasher_release_out = _pipe()
        digest_in, hasher_to_conn = _pipe()
        reader = CTX.Process(
            target=run_reader,
            args=(
                ring.spec,
                pack_reader_files(files),
                chunk_size,
                reader_to_conn,
                reader_to_hasher,
                [conn_release_in, hasher_release_in],
            ),
        )
        hasher = CTX.Process(
            target=run_sender_hasher,
            args=(ring.spec, hasher_in, hasher_release_out, hasher_to_conn),
        )
        with _processes([reader, hasher], [conn_release_out]):
            for end in (reader_to_conn, reader_to_hasher, conn_release_in, hasher_release_in):
                end.close()
            for end in (hasher_in, hasher_release_out, hasher_to_conn):
                end.close()
            held: dict[int, tuple[ReadChunk, bytes]] = {}

            def release_one() -> None:
                slot = rng.choice(sorted(held))
                chunk, expected = held.pop(slot)
                with ring.payload(slot, chunk.length) as view:
                    assert bytes(view) == expected, f"slot {slot} changed while held"
                send(conn_release_out, ReleaseSlot(slot))

            want = {fid for fid, _, _, _ in files}

            def finished() -> bool:
                if not run.errors:
                    return set(run.digests) == want
                # After a reader error, still collect the digests of the files before
                # the bad one: Stop would end the reader, and a hasher that cannot
                # hand a slot back to it stops too (as at a session's end).
                failed = run.errors[0].file_id
                return failed is None or {f for f in want if f < failed} <= set(run.digests)

            while not finished():
                if held and (len(held) == slots or not wait([conn_in, digest_in], 0.002)):
                    release_one()
                    continue
                for msg in _recv_any([conn_in, digest_in]):
                    if isinstance(msg, ReadChunk):
                        assert msg.slot not in held, "slot handed out twice"
                        start = msg.chunk_index * chunk_size
                        expected = contents[msg.file_id][start : start + msg.length]
                        with ring.payload(msg.slot, msg.length) as view:
                            assert bytes(view) == expected
                        held[msg.slot] = (msg, expected)
                        run.chunks.append(msg)
                    elif isinstance(msg, FileDigest):
                        run.digests[msg.file_id] = msg
                    elif isinstance(msg, WorkerError):
                        run.errors.append(msg)
                    else:
                        pytest.fail(f"unexpected {msg!r}")
            while held:
                release_one()
            send(conn_release_out, Stop())
            # The reader forwards Stop to the hasher, which first finishes what
            # it was sent: collect everything up to both pipes' EOF.
            for end in (conn_in, digest_in):
                with contextlib.suppress(EOFError):
                    while end.poll(TIMEOUT):
                        msg = recv(end)
                        if isinstance(msg, ReadChunk):
                            run.chunks.append(msg)
                        elif isinstance(msg, FileDigest):
                            run.digests[msg.file_id] = msg
                        elif isinstance(msg, WorkerError):
                            run.errors.append(msg)
            reader.join(TIMEOUT)
            hasher.join(TIMEOUT)
            assert reader.exitcode == 0
            assert hasher.exitcode == 0
        conn_in.close()
        digest_in.close()
    return run


def _write_files(root: Path, sizes: list[int], seed: int = 7) -> list[tuple[int, str, int, str]]:
    rng = random.Random(seed)
    files = []
    for fid, size in enumerate(sizes):
        path = root / f"f{fid}.bin"
        path.write_bytes(rng.randbytes(size))
        files.append((fid, str(path), size, f"media/f{fid}.bin"))
    return files


# -- sender pipeline ------------------------------------------------------------------


def test_sender_digests_match_hashlib_with_slot_reuse(tmp_path: Path) -> None:
    chunk = 1000
    sizes = [0, chunk, 3 * chunk, 2500, 1, 0, 7 * chunk + 1]
    files = _write_files(tmp_path, sizes)
    run = run_sender_pipeline(files, chunk_size=chunk, slots=3)
    assert not run.errors
    for fid, path, size, _ in files:
        digest = run.digests[fid]
        assert digest.size == size
        assert digest.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        mine = [c for c in run.chunks if c.file_id == fid]
        assert [c.chunk_index for c in mine] == list(range(-(-size // chunk)))
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True] * bool(mine)
        assert all(c.length == chunk for c in mine[:-1])
    assert len(run.chunks) > 3  # more chunks than slots: slots were reused


def test_sender_many_small_files(tmp_path: Path) -> None:
    rng = random.Random(3)
    files = _write_files(tmp_path, [rng.randrange(0, 300) for _ in range(200)])
    run = run_sender_pipeline(files, chunk_size=128, slots=4, seed=5)
    assert not run.errors
    assert {fid: d.sha256 for fid, d in run.digests.items()} == {
        fid: hashlib.sha256(Path(p).read_bytes()).hexdigest() for fid, p, _, _ in files
    }


@pytest.mark.parametrize(
    ("actual", "announced", "what"),
    [(5000, 4000, "grew"), (3000, 4000, "shrank"), (4000, 4001, "shrank"), (1, 0, "grew")],
)
def test_sender_reports_a_file_that_changed(
    tmp_path: Path, actual: int, announced: int, what: str
) -> None:
    files = _write_files(tmp_path, [1500, actual, 700])
    files[1] = (1, files[1][1], announced, files[1][3])
    run = run_sender_pipeline(files, chunk_size=1000, slots=2)
    assert len(run.errors) == 1
    error = run.errors[0]
    assert (error.worker, error.code, error.file_id) == ("reader", "io_error", 1)
    assert files[1][1] in error.message
    assert what in error.message
    # The peer is told the manifest name and what happened, not where the file lives here.
    assert error.peer_message == error.message.replace(files[1][1], "media/f1.bin")
    assert str(tmp_path) not in error.peer_message
    assert 0 in run.digests and 1 not in run.digests and 2 not in run.digests
    assert not any(c.file_id == 1 and c.last for c in run.chunks)
    assert not any(c.file_id == 2 for c in run.chunks)  # stopped reading


@pytest.mark.parametrize("kind", ["missing", "fifo"])
def test_sender_reports_an_unreadable_file(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / "gone.bin")
    if kind == "fifo":
        os.mkfifo(path)  # opening it must not hang the reader
    run = run_sender_pipeline([(0, path, 10, "gone.bin")], chunk_size=64, slots=2)
    assert [(e.code, e.file_id) for e in run.errors] == [("io_error", 0)]
    assert path in run.errors[0].message
    peer_message = run.errors[0].peer_message
    assert "gone.bin" in peer_message and str(tmp_path) not in peer_message, peer_message


def test_sender_hasher_refuses_interleaved_files() -> None:
    with SlotRing.create(2, 64) as ring:
        hasher_in, to_hasher = _pipe()
        releases, hasher_release_out = _pipe()
        errors, hasher_to_conn = _pipe()
        hasher = CTX.Process(
            target=run_sender_hasher,
            args=(ring.spec, hasher_in, hasher_release_out, hasher_to_conn),
        )
        with _processes([hasher], [to_hasher]):
            for end in (hasher_in, hasher_release_out, hasher_to_conn):
                end.close()
            send(to_hasher, ReadChunk(0, 0, 0, 10, False))
            send(to_hasher, ReadChunk(1, 1, 0, 10, True))
            error = recv(errors)
            assert isinstance(error, WorkerError)
            assert (error.worker, error.code, error.file_id) == ("hasher", "internal", 1)
            assert {recv(releases), recv(releases)} == {ReleaseSlot(0), ReleaseSlot(1)}
            send(to_hasher, Stop())
            hasher.join(TIMEOUT)
            assert hasher.exitcode == 0
        for end in (releases, errors):
            end.close()


# -- receiver pipeline ----------------------------------------------------------------


class Receiver:
    """Writer + receiver-side hasher; the test plays the connection process."""

    def __init__(self, out_dir: Path, on_exists: str = "fail", slots: int = 2, chunk: int = 1024):
        self.ring = SlotRing.create(slots, chunk + PAYLOAD_OFFSET)
        self.free = list(range(slots))
        self.owed = [0] * slots
        self.events: list[Message] = []
        writer_in, self.to_writer = _pipe()
        self.from_writer, writer_out = _pipe()
        hasher_in, self.to_hasher = _pipe()
        self.from_hasher, hasher_out = _pipe()
        self.writer = CTX.Process(
            target=run_writer,
            args=(self.ring.spec, str(out_dir), TOKEN, on_exists, writer_in, writer_out),
        )
        self.hasher = CTX.Process(
            target=run_receiver_hasher, args=(self.ring.spec, hasher_in, hasher_out)
        )
        self._procs = _processes([self.writer, self.hasher], [self.to_writer, self.to_hasher])
        self._procs.__enter__()
        for end in (writer_in, writer_out, hasher_in, hasher_out):
            end.close()

    def _pump(self, timeout: float = TIMEOUT) -> None:
        for msg in _recv_any([self.from_writer, self.from_hasher], timeout):
            if isinstance(msg, ReleaseSlot):
                self.owed[msg.slot] -= 1
                if self.owed[msg.slot] == 0:
                    self.free.append(msg.slot)
            else:
                self.events.append(msg)

    def put(self, file_id: int, offset: int, data: bytes, *, write: bool, hash: bool) -> None:
        while not self.free:
            self._pump()
        slot = self.free.pop()
        with self.ring.payload(slot, len(data)) as view:
            view[:] = data
        if write:
            self.owed[slot] += 1
            send(self.to_writer, WriteChunk(slot, file_id, offset, len(data)))
        if hash:
            self.owed[slot] += 1
            send(self.to_hasher, HashChunk(slot, file_id, len(data)))

    def expect(self, kind: type[Message]) -> Message:
        while True:
            for i, event in enumerate(self.events):
                if isinstance(event, kind | WorkerError):
                    return self.events.pop(i)
            self._pump()

    def settle(self) -> None:
        """Wait until every slot came back."""
        while any(self.owed):
            self._pump()

    def stop(self, *, eof: bool = False) -> None:
        self.settle()
        if eof:
            self.to_writer.close()
            self.to_hasher.close()
        else:
            send(self.to_writer, Stop())
            send(self.to_hasher, Stop())
        self.writer.join(TIMEOUT)
        self.hasher.join(TIMEOUT)
        assert self.writer.exitcode == 0
        assert self.hasher.exitcode == 0

    def close(self) -> None:
        self._procs.__exit__(None, None, None)
        for end in (self.to_writer, self.to_hasher, self.from_writer, self.from_hasher):
            end.close()
        self.ring.__exit__(None, None, None)


@contextlib.contextmanager
def receiver(out_dir: Path, on_exists: str = "fail", **kwargs: int) -> Iterator[Receiver]:
    rx = Receiver(out_dir, on_exists, **kwargs)
    try:
        yield rx
    finally:
        rx.close()


def _send_file(rx: Receiver, file_id: int, relpath: str, data: bytes, chunk: int = 1024) -> None:
    send(rx.to_writer, PlanFile(file_id, relpath, len(data)))
    for offset in range(0, len(data), chunk):
        rx.put(file_id, offset, data[offset : offset + chunk], write=True, hash=True)


def _finalize(rx: Receiver, file_id: int) -> Message:
    send(rx.to_writer, Finalize(file_id))
    return rx.expect(Finalized)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_out_of_order_writes_make_the_right_file(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(10 * 1024 + 17)
    chunks = [(off, data[off : off + 1024]) for off in range(0, len(data), 1024)]
    with receiver(tmp_path, slots=2) as rx:
        send(rx.to_writer, PlanFile(0, "sub/dir/a.bin", len(data)))
        send(rx.to_writer, PlanFile(1, "empty.txt", 0))
        for off, piece in random.Random(2).sample(chunks, len(chunks)):
            rx.put(0, off, piece, write=True, hash=False)
        for off, piece in chunks:  # the hasher always gets file order
            rx.put(0, off, piece, write=False, hash=True)
        send(rx.to_hasher, HashEnd(0))
        send(rx.to_hasher, HashEnd(1))
        digests = {}
        for _ in range(2):
            got = rx.expect(FileDigest)
            assert isinstance(got, FileDigest)
            digests[got.file_id] = got
        assert digests[0] == FileDigest(0, len(data), hashlib.sha256(data).hexdigest())
        assert digests[1] == FileDigest(1, 0, hashlib.sha256(b"").hexdigest())
        assert _finalize(rx, 0) == Finalized(0, "sub/dir/a.bin")
        assert _finalize(rx, 1) == Finalized(1, "empty.txt")
        rx.stop()
    assert (tmp_path / "sub/dir/a.bin").read_bytes() == data
    assert (tmp_path / "empty.txt").read_bytes() == b""
    assert (tmp_path / "empty.txt").stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert _listing(tmp_path) == ["empty.txt", "sub", "sub/dir", "sub/dir/a.bin"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_existing_file_with_on_exists_fail_is_untouched(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"old")
    with receiver(tmp_path, "fail") as rx:
        _send_file(rx, 0, "a.txt", b"new contents")
        error = _finalize(rx, 0)
        assert isinstance(error, WorkerError)
        assert (error.code, error.file_id) == ("io_error", 0)
        assert "a.txt" in error.message and "already exists" in error.message
        rx.stop()
    assert _listing(tmp_path) == ["a.txt"]  # and no partial left
    assert (tmp_path / "a.txt").read_bytes() == b"old"


def test_on_exists_overwrite_replaces(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"old")
    with receiver(tmp_path, "overwrite") as rx:
        _send_file(rx, 0, "a.txt", b"new contents")
        assert _finalize(rx, 0) == Finalized(0, "a.txt")
        rx.stop()
    assert _listing(tmp_path) == ["a.txt"]
    assert (tmp_path / "a.txt").read_bytes() == b"new contents"


def test_on_exists_rename_picks_a_free_name(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"old")
    with receiver(tmp_path, "rename") as rx:
        _send_file(rx, 0, "a.txt", b"first")
        assert _finalize(rx, 0) == Finalized(0, "a (1).txt")
        _send_file(rx, 1, "d/a.txt", b"second")
        assert _finalize(rx, 1) == Finalized(1, "d/a.txt")
        rx.stop()
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert (tmp_path / "a (1).txt").read_bytes() == b"first"
    assert (tmp_path / "d/a.txt").read_bytes() == b"second"
    assert _listing(tmp_path) == ["a (1).txt", "a.txt", "d", "d/a.txt"]


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    with receiver(tmp_path) as rx:
        _send_file(rx, 0, "a.txt", b"x" * 3000)
        rx.settle()
        assert _listing(tmp_path) == [partial_path("a.txt", TOKEN)]
        send(rx.to_writer, Discard(0))
        assert rx.expect(Discarded) == Discarded(0)
        assert _listing(tmp_path) == []
        rx.stop()
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("eof", [False, True], ids=["stop", "eof"])
def test_unfinished_files_leave_no_partial(tmp_path: Path, eof: bool) -> None:
    (tmp_path / "keep.txt").write_bytes(b"mine")
    with receiver(tmp_path) as rx:
        _send_file(rx, 0, "a.txt", b"x" * 5000)
        _send_file(rx, 1, "b/c.txt", b"y" * 10)
        send(rx.to_writer, PlanFile(2, "never-started.txt", 10))
        rx.settle()
        assert len(_listing(tmp_path)) == 4
        rx.stop(eof=eof)
    assert _listing(tmp_path) == ["b", "keep.txt"]
    assert (tmp_path / "keep.txt").read_bytes() == b"mine"


def test_symlink_in_out_dir_is_never_followed(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "target.txt").write_bytes(b"precious")
    (out / "evil").symlink_to(outside)
    (out / "trap.txt").symlink_to(outside / "target.txt")
    with receiver(out, "overwrite") as rx:
        _send_file(rx, 0, "evil/x.txt", b"payload")
        error = rx.expect(Finalized)
        assert isinstance(error, WorkerError)
        assert (error.code, error.file_id) == ("io_error", 0)
        assert "evil/x.txt" in error.message and "symlink" in error.message
        # Overwriting a symlink replaces the link, never the file it points to.
        _send_file(rx, 1, "trap.txt", b"payload")
        assert _finalize(rx, 1) == Finalized(1, "trap.txt")
        rx.stop()
    assert _listing(outside) == ["target.txt"]
    assert (outside / "target.txt").read_bytes() == b"precious"
    assert not (out / "trap.txt").is_symlink()
    assert (out / "trap.txt").read_bytes() == b"payload"


@contextlib.contextmanager
def _tiny_tmpfs() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as mnt:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip() or result.returncode}")
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def test_full_disk_is_reported_as_no_space(tmp_path: Path) -> None:
    with _tiny_tmpfs() as out:
        with receiver(out, chunk=64 * 1024, slots=2) as rx:
            data = b"z" * (2 * 1024 * 1024)
            _send_file(rx, 0, "big.bin", data, chunk=64 * 1024)
            error = rx.expect(Finalized)
            assert isinstance(error, WorkerError)
            assert (error.worker, error.code, error.file_id) == ("writer", "no_space", 0)
            assert "big.bin" in error.message
            rx.stop()
        assert _listing(out) == []


# -- group commit (in process: the syscalls are what is under test) -------------------


def test_group_commit_syncs_data_before_names_and_names_before_finalized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many files cost two syncfs between them, never a per-file fsync, and the
    durability order holds: data synced while only partials exist, the final
    names synced before any ``Finalized`` is sent."""
    from workers import writer as writer_mod

    files = [f"d{i % 3}/f{i}.jpg" for i in range(40)]
    sent: list[Message] = []
    syncs: list[tuple[list[str], int]] = []  # (final names on disk, Finalized sent so far)

    def finals() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jpg") if p.is_file())

    real_fsync = os.fsync

    def fake_syncfs(fd: int) -> None:
        real_fsync(fd)  # still really durable
        syncs.append((finals(), len(sent)))

    def no_fsync(fd: int) -> None:
        raise AssertionError("per-file fsync in a group commit")

    monkeypatch.setattr(writer_mod, "send", lambda _conn, msg: sent.append(msg))
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        w = writer_mod._Writer(None, root_fd, TOKEN, "fail", None)  # type: ignore[arg-type]
        w.syncfs = fake_syncfs
        for i, path in enumerate(files):
            w.handle(PlanFile(i, path, 0))
        monkeypatch.setattr(writer_mod.os, "fsync", no_fsync)
        for i in range(len(files)):
            w.handle(Finalize(i))
        assert sent == [] and finals() == []  # nothing reported before the commit
        w.idle()
    finally:
        os.close(root_fd)
    assert sent == [Finalized(i, path) for i, path in enumerate(files)]
    assert syncs == [([], 0), (sorted(files), 0)]  # one filesystem: one syncfs each step
    assert not [p for p in tmp_path.rglob("*") if TOKEN in p.name]  # no partial left


def test_discard_of_a_pending_file_leaves_it_out_of_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import writer as writer_mod

    sent: list[Message] = []
    monkeypatch.setattr(writer_mod, "send", lambda _conn, msg: sent.append(msg))
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        w = writer_mod._Writer(None, root_fd, TOKEN, "fail", None)  # type: ignore[arg-type]
        for i in range(2):
            w.handle(PlanFile(i, f"f{i}", 0))
            w.handle(Finalize(i))
        w.handle(Discard(0))
        w.idle()
    finally:
        os.close(root_fd)
    assert sent == [Discarded(0), Finalized(1, "f1")]
    assert _listing(tmp_path) == ["f1"]


def test_a_full_group_commits_without_waiting_for_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import writer as writer_mod

    sent: list[Message] = []
    monkeypatch.setattr(writer_mod, "send", lambda _conn, msg: sent.append(msg))
    monkeypatch.setattr(writer_mod, "GROUP_MAX_FILES", 3)
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        w = writer_mod._Writer(None, root_fd, TOKEN, "fail", None)  # type: ignore[arg-type]
        for i in range(4):
            w.handle(PlanFile(i, f"f{i}", 0))
            w.handle(Finalize(i))
        assert sent == [Finalized(i, f"f{i}") for i in range(3)]
        w.remove_all_partials()  # a stop now: the fourth was never reported
    finally:
        os.close(root_fd)
    assert _listing(tmp_path) == ["f0", "f1", "f2"]


def test_syncfs_is_found_on_linux() -> None:
    from workers import writer as writer_mod

    syncfs = writer_mod._load_syncfs()
    assert syncfs is not None
    fd = os.open(tempfile.gettempdir(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs(fd)
        with pytest.raises(OSError):
            syncfs(-1)
    finally:
        os.close(fd)
