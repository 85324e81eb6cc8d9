"""The receiver's look at an offer before anything moves (A.2 rule 3, C.4).

Pure checks against the output directory: free space for ``total_bytes``,
names that already exist (never overwritten unless asked), a file standing
where the manifest needs a directory.  Plus the few lines that show the user
what is offered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.protocol.frames import FileEntry
from pipeline.units import format_bytes


@dataclass
class OfferCheck:
    free_bytes: int
    conflicts: list[str] = field(default_factory=list)  # final names that exist
    blocked: list[str] = field(default_factory=list)  # a non-directory where a directory must go
    new_dirs: list[str] = field(default_factory=list)  # directories we would create (deepest first)

    def fits(self, total_bytes: int) -> bool:
        return total_bytes <= self.free_bytes


def check_offer(out_dir: str, files: Iterable[FileEntry]) -> OfferCheck:
    check = OfferCheck(free_bytes=shutil.disk_usage(out_dir).free)
    dirs: set[str] = set()
    for entry in files:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            dirs.add("/".join(parts[:depth]))
        final = os.path.join(out_dir, *parts)
        if os.path.lexists(final):
            check.conflicts.append(entry.path)
    for rel in sorted(dirs, key=lambda d: (-d.count("/"), d)):
        path = os.path.join(out_dir, *rel.split("/"))
        if not os.path.lexists(path):
            check.new_dirs.append(rel)
        elif os.path.islink(path) or not os.path.isdir(path):
            check.blocked.append(rel)
    return check


def describe_offer(files: Sequence[FileEntry], total_bytes: int, limit: int = 8) -> str:
    tops = Counter(f.path.split("/", 1)[0] + ("/" if "/" in f.path else "") for f in files)
    names = [f"  {name}  ({count} files)" if name.endswith("/") else f"  {name}" for name, count in sorted(tops.items())]
    if len(names) > limit:
        names = [*names[:limit], f"  ... and {len(names) - limit} more"]
    head = f"Offered: {len(files)} files, {format_bytes(total_bytes)}"
    return "\n".join([head, *names])


def remove_new_dirs(out_dir: str, new_dirs: list[str]) -> None:
    """Remove directories this session created and left empty (deepest first)."""
    for rel in new_dirs:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(out_dir, *rel.split("/")))
