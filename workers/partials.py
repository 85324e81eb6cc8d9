"""Where the receiver keeps a file while it is incomplete, and how to get there safely.

A file ``dir/name.ext`` is written as ``dir/.name.ext.<token>.part`` (hidden,
same directory, so the final move is a same-filesystem rename/link) and moved
to ``dir/name.ext`` only after its digest matched (Appendix B.6).  ``token``
is unique per session, so partials of different sessions never collide and
:func:`sweep_partials` removes only this session's leftovers.

Directories are always walked beneath an open directory fd, one component at
a time, with ``O_NOFOLLOW``: a symlink planted in the output directory (say
``out/docs -> /etc``) makes the walk fail instead of redirecting a write
outside the output directory (Appendix A.2 rule 2).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterable
from typing import Final

NAME_MAX: Final = 255  # bytes, Linux
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_relpath(relpath: str) -> list[str]:
    """Components of a relative POSIX path; ``ValueError`` if it could escape."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"not a safe relative path: {relpath!r}")
    if any("\0" in p for p in parts):
        raise ValueError(f"path contains NUL: {relpath!r}")
    return parts


def partial_name(basename: str, token: str) -> str:
    """``.<basename>.<token>.part``, with ``basename`` cut (at a UTF-8 character
    boundary) so that the result fits in NAME_MAX bytes."""
    if not token or "/" in token or "\0" in token:
        raise ValueError(f"invalid partial-file token {token!r}")
    suffix = f".{token}.part"
    budget = NAME_MAX - 1 - len(suffix.encode())
    if budget < 1:
        raise ValueError(f"partial-file token too long: {token!r}")
    encoded = basename.encode()
    if len(encoded) > budget:
        basename = encoded[:budget].decode(errors="ignore")
    return f".{basename}{suffix}"


def partial_path(relpath: str, token: str) -> str:
    """Relative path of ``relpath``'s partial file: same directory, hidden name."""
    head, base = posixpath.split(relpath)
    return posixpath.join(head, partial_name(base, token))


def open_parent_dir(root_fd: int, relpath: str, *, create: bool) -> int:
    """Open the directory that holds ``relpath``, beneath ``root_fd``.

    Missing directories are created (mode 0o755 less umask) when ``create``.
    A component that is a symlink fails with ``ELOOP`` (or ``ENOTDIR``), one
    that is missing without ``create`` with ``FileNotFoundError``.  The caller
    closes the returned fd.
    """
    parts = split_relpath(relpath)[:-1]
    fd = os.open(".", _DIR_FLAGS, dir_fd=root_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # lost a race: fine
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep_partials(out_dir: str, relpaths: Iterable[str], token: str) -> int:
    """Remove this session's partial files under ``out_dir``; return how many.

    Used by the supervisor after a writer died without cleaning up (SIGKILL).
    Never follows a symlink, never creates anything, and removes only regular
    files carrying the session's token; a path that cannot be reached is skipped.
    Any other failure (``EACCES``…) is raised after every path was tried.
    """
    removed = 0
    first_error: OSError | None = None
    root_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for relpath in relpaths:
            try:
                dir_fd = open_parent_dir(root_fd, relpath, create=False)
            except (OSError, ValueError):
                continue
            try:
                name = partial_name(posixpath.basename(relpath), token)
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
            except OSError as exc:
                # Keep sweeping the others; report the first real failure after.
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and first_error is None:
                    first_error = exc
            finally:
                os.close(dir_fd)
    finally:
        os.close(root_fd)
    if first_error is not None:
        raise first_error
    return removed
