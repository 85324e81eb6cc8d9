"""Progress display for the CLIs: a live bar on a terminal, plain lines in a log.

Modes:

* ``bar``   one line redrawn in place with ``\\r``, at most 10 times a second:
  ``label  42.0% [########............] 1.2 GiB / 2.9 GiB  12.3 MB/s  ETA 2:21  files 12/300``
* ``lines`` the same figures as a plain line at most every 5 s, plus one at 100 %:
  what a log file or CI job wants (no control characters, bounded volume).
* ``none``  nothing.
* ``auto``  ``bar`` if the stream is a terminal, else ``lines``.

Time enters as ``now`` (any monotonic clock), so tests run without sleeping. The
rate is averaged over the last few seconds, so a stall shows within seconds and an
early burst does not make the ETA lie for the rest of the transfer.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal, TextIO

from pipeline.units import format_bytes, format_duration, format_rate

__all__ = ["ProgressMode", "ProgressView"]

ProgressMode = Literal["auto", "bar", "lines", "none"]

BAR_INTERVAL: Final = 0.1  # s between redraws of the bar (10 per second at most)
LINES_INTERVAL: Final = 5.0  # s between lines in "lines" mode
RATE_WINDOW: Final = 3.0  # s of history the displayed rate is averaged over
MIN_RATE_SPAN: Final = 0.5  # s of history needed before a rate is shown
BAR_WIDTH: Final = 20


CURRENT_WIDTH = 40


def shorten(path: str, width: int = CURRENT_WIDTH) -> str:
    """``path`` in at most ``width`` characters, keeping its end (the file's name)."""
    return path if len(path) <= width else "…" + path[-(width - 1) :]


class ProgressView:
    def __init__(
        self,
        mode: ProgressMode,
        stream: TextIO,
        total_bytes: int,
        total_files: int,
        label: str = "",
    ) -> None:
        if mode == "auto":
            isatty = getattr(stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        if mode not in ("bar", "lines", "none"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode: ProgressMode = mode
        self._stream = stream
        self._total_bytes = max(0, total_bytes)
        self._total_files = max(0, total_files)
        self._label = label
        encoding = (getattr(stream, "encoding", None) or "").lower()
        # Block characters only where the stream can encode them (not LANG=C).
        self._fill, self._empty = ("█", "░") if "utf" in encoding else ("#", ".")
        self._history: deque[tuple[float, int]] = deque()
        self._bytes_done = 0
        self._files_done = 0
        self._current: str | None = None
        self._last_now: float | None = None
        self._last_draw: float | None = None
        self._drawn_complete = False
        self._bar_len = 0  # length of the bar line on screen, to blank leftovers
        self._finished = False

    # -- input -------------------------------------------------------------

    def update(self, now: float, bytes_done: int, files_done: int, current: str | None = None) -> None:
        """``current`` names the file in progress (shown when there is more than one)."""
        if self._finished:
            return
        if self._last_now is not None and now < self._last_now:
            now = self._last_now  # a clock must not run backwards; never divide by < 0
        self._last_now = now
        self._bytes_done = bytes_done
        self._files_done = files_done
        self._current = current
        self._history.append((now, bytes_done))
        # Keep one point at or beyond the window's start as the base of the average.
        while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW:
            self._history.popleft()

        if self.mode == "none":
            return
        complete = self._complete()
        if complete and self._drawn_complete:
            return
        interval = BAR_INTERVAL if self.mode == "bar" else LINES_INTERVAL
        due = self._last_draw is None or now - self._last_draw >= interval
        if due or complete:
            self._draw(now)
            self._drawn_complete = complete

    def finish(self, outcome_text: str) -> None:
        """Show the final state and ``outcome_text`` (e.g. ``"completed: 300 files ..."``)."""
        if self._finished:
            return
        self._finished = True
        if self.mode == "none":
            return
        if self.mode == "bar":
            if self._last_now is not None:
                self._draw(self._last_now)  # the last update may have been throttled
                self._stream.write("\n")
        elif self._last_now is not None and not self._drawn_complete:
            self._draw(self._last_now)
        if outcome_text:
            self._stream.write(outcome_text + "\n")
        self._stream.flush()

    # -- figures -----------------------------------------------------------

    def rate(self) -> float | None:
        """Bytes per second over the last few seconds; ``None`` until there is enough history."""
        if len(self._history) < 2:
            return None
        (t0, b0), (t1, b1) = self._history[0], self._history[-1]
        if t1 - t0 < MIN_RATE_SPAN:
            return None
        return max(0.0, (b1 - b0) / (t1 - t0))

    def fraction(self) -> float:
        if self._total_bytes > 0:
            return min(1.0, self._bytes_done / self._total_bytes)
        if self._total_files > 0:  # only empty files
            return min(1.0, self._files_done / self._total_files)
        return 1.0

    def eta(self) -> float | None:
        rate = self.rate()
        remaining = max(0, self._total_bytes - self._bytes_done)
        if remaining == 0:
            return 0.0
        if not rate:
            return None
        return remaining / rate

    def _complete(self) -> bool:
        return self._bytes_done >= self._total_bytes and self._files_done >= self._total_files

    # -- output ------------------------------------------------------------

    def _figures(self) -> list[str]:
        rate, eta = self.rate(), self.eta()
        return [
            f"{format_bytes(self._bytes_done)} / {format_bytes(self._total_bytes)}",
            format_rate(rate) if rate is not None else "-- B/s",
            f"ETA {format_duration(eta) if eta is not None else '--:--'}",
            f"files {self._files_done}/{self._total_files}",
        ] + ([f"now {shorten(self._current)}"] if self._current and self._total_files > 1 else [])

    def _draw(self, now: float) -> None:
        self._last_draw = now
        fraction = self.fraction()
        percent = f"{fraction * 100:5.1f}%"
        prefix = f"{self._label} " if self._label else ""
        if self.mode == "bar":
            filled = int(fraction * BAR_WIDTH)
            bar = self._fill * filled + self._empty * (BAR_WIDTH - filled)
            line = f"{prefix}{percent} [{bar}] " + "  ".join(self._figures())
            padding = " " * max(0, self._bar_len - len(line))
            self._bar_len = len(line)
            self._stream.write("\r" + line + padding)
        else:
            label = f"{self._label}: " if self._label else ""
            self._stream.write(f"{label}{percent.strip()}, " + ", ".join(self._figures()) + "\n")
        self._stream.flush()
