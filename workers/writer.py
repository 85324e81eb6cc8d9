"""Writer worker: assembles received files under the output directory.

Per file (messages from the connection process, answers to it)::

    PlanFile ─► planned ──first WriteChunk──► partial created (O_EXCL) ─┐
                  │                               WriteChunk: pwrite ◄──┘ + ReleaseSlot
                  │ Finalize (empty file:                 │
                  │ partial created here)                 │ Finalize: size check ─► pending
                  └───────────────────────────────────────┴──────────────────────────┘
    group commit (inbox idle, or GROUP_MAX_FILES pending):
        one syncfs per filesystem (data of every pending partial), close,
        move each to its final name, one syncfs again (the new directory
        entries) ─► Finalized for each file of the group
    Discard (any time, pending too): close, unlink partial ─► Discarded
    Stop, EOF, crash:   close, unlink every partial not finalized (pending ones too:
                        they were never reported Finalized)

Group commit is why many small files cost one fsync between them instead of
two each: ``syncfs(2)`` makes every dirty page and inode of the filesystem
durable, so a file is on disk, data and directory entry, before its
``Finalized`` leaves, exactly as with per-file ``fsync``.  The data is durable
before the final name appears, so a crash never leaves a final name on
unwritten bytes.  Without ``syncfs`` (not Linux) each file is ``fsync``-ed,
and so is each directory.

Safety rules (Appendix A.2 rule 2):

* Everything is opened beneath an fd of the output directory, directory by
  directory with ``O_NOFOLLOW`` (:func:`workers.partials.open_parent_dir`): a
  symlink planted there cannot redirect a write outside it.
* Partial files are created with ``O_CREAT | O_EXCL`` and only files this
  process created are ever unlinked, so a file that existed before is never
  touched.  The final move never clobbers unless the policy is ``overwrite``:
  ``link(2)`` fails with EEXIST where ``rename(2)`` would silently replace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, get_args

from pipeline.shm_ring import RingSpec, SlotRing

from .channel import PipeEnd, enter_worker_process, report, send, serve
from .messages import (
    Discard,
    Discarded,
    Finalize,
    Finalized,
    Message,
    PlanFile,
    ReleaseSlot,
    WorkerError,
    WriteChunk,
)
from .partials import open_parent_dir, partial_name, split_relpath

WORKER = "writer"
OnExists = Literal["fail", "overwrite", "rename"]
MAX_RENAME_ATTEMPTS = 10_000
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# link(2) refused by the filesystem itself (vfat, some FUSE and network mounts).
_LINK_UNSUPPORTED = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK)
# Files whose Finalize waits for one group commit at most: bounds the latency a
# steady stream of messages (the inbox never idle) adds, and the open fds.
GROUP_MAX_FILES = 256


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(2)`` from libc (Python has no ``os.syncfs``), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if func(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


def fsync_all(fds: Iterable[int], syncfs: Callable[[int], None] | None) -> None:
    """Make everything written through ``fds`` durable: one ``syncfs`` per
    filesystem among them, or one ``fsync`` per fd without it."""
    if syncfs is None:
        for fd in fds:
            os.fsync(fd)
        return
    per_device: dict[int, int] = {}
    for fd in fds:
        per_device.setdefault(os.fstat(fd).st_dev, fd)
    for fd in per_device.values():
        syncfs(fd)


class _FileFault(Exception):
    """Reported as ``WorkerError(code, message)``; the file is failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _File:
    __slots__ = ("dir_fd", "failed", "fd", "partial", "relpath", "size")

    def __init__(self, relpath: str, size: int, token: str) -> None:
        self.relpath = relpath
        self.size = size
        self.partial = partial_name(posixpath.basename(relpath), token)
        self.dir_fd = -1  # parent directory, beneath out_dir
        self.fd = -1  # the partial file while open
        self.failed = False

    @property
    def created(self) -> bool:
        return self.dir_fd >= 0


def _rename_candidates(basename: str) -> Iterator[str]:
    """``a.txt``, ``a (1).txt``, ``a (2).txt``…"""
    yield basename
    stem, ext = posixpath.splitext(basename)
    for n in range(1, MAX_RENAME_ATTEMPTS):
        yield f"{stem} ({n}){ext}"


class _Writer:
    def __init__(
        self, ring: SlotRing, root_fd: int, token: str, on_exists: OnExists, to_conn: PipeEnd
    ) -> None:
        self._ring = ring
        self._root_fd = root_fd
        self._token = token
        self._on_exists = on_exists
        self._to_conn = to_conn
        self._files: dict[int, _File] = {}
        self._pending: dict[int, _File] = {}  # Finalize seen, group commit due
        self.syncfs = _load_syncfs()

    def idle(self) -> None:
        """The inbox is empty: commit what is pending rather than wait."""
        self.commit()

    def handle(self, msg: Message) -> None:
        if isinstance(msg, WriteChunk):
            try:
                self._write(msg)
            finally:
                send(self._to_conn, ReleaseSlot(msg.slot))
        elif isinstance(msg, PlanFile):
            self._plan(msg)
        elif isinstance(msg, Finalize):
            self._finalize(msg.file_id)
        elif isinstance(msg, Discard):
            self._discard(msg.file_id)
        else:
            self._report("internal", f"unexpected message {msg!r}", None)

    # -- messages -----------------------------------------------------------

    def _plan(self, msg: PlanFile) -> None:
        if msg.file_id in self._files:
            self._report("internal", f"file {msg.file_id} planned twice", msg.file_id)
            return
        try:
            split_relpath(msg.path)
            file = _File(msg.path, msg.size, self._token)
        except ValueError as exc:
            self._report("bad_path", str(exc), msg.file_id)
            return
        self._files[msg.file_id] = file

    def _write(self, msg: WriteChunk) -> None:
        file = self._files.get(msg.file_id)
        if file is None:
            self._report("internal", f"chunk for unplanned file {msg.file_id}", msg.file_id)
            return
        if file.failed:
            return  # already reported; the connection will Discard it
        if msg.offset + msg.length > file.size:
            self._fail(
                msg.file_id,
                _FileFault(
                    "internal",
                    f"{file.relpath}: chunk at {msg.offset}+{msg.length} is beyond "
                    f"the planned size {file.size}",
                ),
            )
            return
        try:
            if not file.created:
                self._create(file)
            with self._ring.payload(msg.slot, msg.length) as view:
                done = 0
                while done < msg.length:  # pwrite may write less than asked
                    with view[done:] as rest:
                        done += os.pwrite(file.fd, rest, msg.offset + done)
        except OSError as exc:
            self._fail(msg.file_id, self._os_fault(file, "cannot write", exc))
        except _FileFault as fault:
            self._fail(msg.file_id, fault)
        except (IndexError, ValueError) as exc:  # slot or length outside the ring
            self._fail(msg.file_id, _FileFault("internal", f"bad chunk {msg!r}: {exc}"))

    def _finalize(self, file_id: int) -> None:
        file = self._files.get(file_id)
        if file is None or file_id in self._pending:
            self._report("internal", f"Finalize for unplanned file {file_id}", file_id)
            return
        if file.failed:
            self._report(
                "io_error", f"{file.relpath}: cannot finalize after an earlier error", file_id
            )
            return
        try:
            if not file.created:
                self._create(file)  # an empty file has no chunk
            written = os.fstat(file.fd).st_size
            if written != file.size:
                raise _FileFault(
                    "internal",
                    f"{file.relpath}: {written} bytes written, {file.size} planned",
                )
        except OSError as exc:
            self._fail(file_id, self._os_fault(file, "cannot finalize", exc))
            return
        except _FileFault as fault:
            self._fail(file_id, fault)
            return
        self._pending[file_id] = file
        if len(self._pending) >= GROUP_MAX_FILES:
            self.commit()

    def commit(self) -> None:
        """Group commit of every pending file (see the module docstring)."""
        if not self._pending:
            return
        group, self._pending = self._pending, {}
        try:
            fsync_all((f.fd for f in group.values()), self.syncfs)
        except OSError:
            # Which file's data failed is unknown: ask each one.
            for file_id, file in list(group.items()):
                try:
                    os.fsync(file.fd)
                except OSError as exc:
                    del group[file_id]
                    self._fail(file_id, self._os_fault(file, "cannot finalize", exc))
        moved: dict[int, str] = {}
        for file_id, file in group.items():
            try:
                os.close(file.fd)
                file.fd = -1
                moved[file_id] = self._move(file)
            except OSError as exc:
                self._fail(file_id, self._os_fault(file, "cannot finalize", exc))
            except _FileFault as fault:
                self._fail(file_id, fault)
        # The new directory entries; a directory that cannot be synced (some
        # filesystems refuse fsync on a directory) is not the file's fault.
        with contextlib.suppress(OSError):
            fsync_all((group[i].dir_fd for i in moved), self.syncfs)
        for file_id, final in moved.items():
            file = group[file_id]
            os.close(file.dir_fd)
            file.dir_fd = -1
            del self._files[file_id]  # finalized: no longer ours to clean up
            send(
                self._to_conn,
                Finalized(file_id, posixpath.join(posixpath.dirname(file.relpath), final)),
            )

    def _discard(self, file_id: int) -> None:
        self._pending.pop(file_id, None)
        file = self._files.pop(file_id, None)
        if file is not None:
            self._remove_partial(file)
        send(self._to_conn, Discarded(file_id))

    # -- filesystem ---------------------------------------------------------

    def _create(self, file: _File) -> None:
        try:
            dir_fd = open_parent_dir(self._root_fd, file.relpath, create=True)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise _FileFault(
                "io_error",
                f"{file.relpath}: a directory on its path is a symlink or not a "
                f"directory ({exc.strerror}); refusing to follow it",
            ) from exc
        try:
            # 0o644, less the umask (the kernel applies it).
            file.fd = os.open(
                file.partial,
                os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=dir_fd,
            )
        except BaseException:
            os.close(dir_fd)
            raise
        file.dir_fd = dir_fd  # from here on the partial is ours to delete

    def _move(self, file: _File) -> str:
        """Move the closed partial to its final name; return the name used."""
        basename = posixpath.basename(file.relpath)
        if self._on_exists == "overwrite":
            os.replace(file.partial, basename, src_dir_fd=file.dir_fd, dst_dir_fd=file.dir_fd)
            return basename
        if self._on_exists == "fail":
            candidates: Iterator[str] = iter([basename])
        else:
            candidates = _rename_candidates(basename)
        for name in candidates:
            if self._place_no_clobber(file, name):
                return name
        if self._on_exists == "fail":
            raise _FileFault("io_error", f"{file.relpath}: already exists (on_exists=fail)")
        raise _FileFault("io_error", f"{file.relpath}: no free name to rename it to")

    def _place_no_clobber(self, file: _File, name: str) -> bool:
        """Give the partial the name ``name`` unless something has it already."""
        try:
            os.link(
                file.partial,
                name,
                src_dir_fd=file.dir_fd,
                dst_dir_fd=file.dir_fd,
                follow_symlinks=False,
            )
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _LINK_UNSUPPORTED:
                raise
            # No hard links here: check, then rename.  A file created in between
            # would be replaced; such filesystems offer nothing better.
            try:
                os.stat(name, dir_fd=file.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                os.rename(file.partial, name, src_dir_fd=file.dir_fd, dst_dir_fd=file.dir_fd)
                return True
            return False
        os.unlink(file.partial, dir_fd=file.dir_fd)
        return True

    def _remove_partial(self, file: _File) -> None:
        if file.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(file.fd)
            file.fd = -1
        if file.dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(file.partial, dir_fd=file.dir_fd)
            with contextlib.suppress(OSError):
                os.close(file.dir_fd)
            file.dir_fd = -1

    def remove_all_partials(self) -> None:
        for file in self._files.values():
            self._remove_partial(file)
        self._files.clear()
        self._pending.clear()

    # -- faults -------------------------------------------------------------

    def _os_fault(self, file: _File, what: str, exc: OSError) -> _FileFault:
        code = "no_space" if exc.errno in _NO_SPACE else "io_error"
        return _FileFault(code, f"{file.relpath}: {what}: {exc.strerror or exc}")

    def _fail(self, file_id: int, fault: _FileFault) -> None:
        file = self._files.get(file_id)
        if file is not None:
            file.failed = True
        self._report(fault.code, str(fault), file_id)

    def _report(self, code: str, message: str, file_id: int | None) -> None:
        report(self._to_conn, WorkerError(WORKER, code, message, file_id))


def run_writer(
    spec: RingSpec,
    out_dir: str,
    token: str,
    on_exists: OnExists,
    from_conn: PipeEnd,
    to_conn: PipeEnd,
) -> None:
    """Entry point (``multiprocessing.Process`` target).

    ``out_dir`` must exist; ``token`` names this session's partial files;
    ``on_exists`` says what happens when a final name is taken.
    """
    enter_worker_process("pxfer-writer")
    if on_exists not in get_args(OnExists):
        report(to_conn, WorkerError(WORKER, "internal", f"unknown on_exists {on_exists!r}"))
        sys.exit(1)
    try:
        root_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        report(
            to_conn,
            WorkerError(
                WORKER, "io_error", f"cannot open output directory {out_dir}: {exc.strerror}"
            ),
        )
        sys.exit(1)
    try:
        with SlotRing.attach(spec) as ring:
            writer = _Writer(ring, root_fd, token, on_exists, to_conn)
            try:
                serve(from_conn, to_conn, WORKER, writer.handle, idle=writer.idle)
            finally:
                writer.remove_all_partials()
    except Exception as exc:
        report(to_conn, WorkerError(WORKER, "internal", f"writer crashed: {exc!r}"))
        raise
    finally:
        os.close(root_fd)
