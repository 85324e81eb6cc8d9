"""Human-readable sizes, rates and durations, and the size parser used by configs and flags.

Sizes are shown in binary units (KiB, MiB, GiB: what file managers and ``du -h``
show), rates in decimal units (kB/s, MB/s: what network tools show). ``parse_size``
follows ``dd`` and ``head -c``: a bare ``K``/``M``/``G``/``T`` and the ``KiB``
forms are powers of 1024, ``KB``/``MB``/... are powers of 1000.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

_BINARY_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_DECIMAL_RATE_UNITS: Final = ("B/s", "kB/s", "MB/s", "GB/s", "TB/s", "PB/s")

_SIZE_MULTIPLIERS: Final[dict[str, int]] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def _scaled(value: float, base: int, units: tuple[str, ...]) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < base:
        return f"{sign}{value:.0f} {units[0]}"
    index = 0
    while index < len(units) - 1 and value >= base:
        value /= base
        index += 1
    # 1023.96 KiB would print as "1024.0 KiB": move up one unit instead.
    if round(value, 1) >= base and index < len(units) - 1:
        value /= base
        index += 1
    return f"{sign}{value:.1f} {units[index]}"


def format_bytes(n: int | float) -> str:
    """``1536 -> "1.5 KiB"``, ``1610612736 -> "1.5 GiB"``, ``100 -> "100 B"``."""
    return _scaled(float(n), 1024, _BINARY_UNITS)


def format_rate(bytes_per_s: float) -> str:
    """``12_300_000 -> "12.3 MB/s"``. Not-a-number or infinite rates show as ``"-- B/s"``."""
    if not math.isfinite(bytes_per_s):
        return "-- B/s"
    return _scaled(bytes_per_s, 1000, _DECIMAL_RATE_UNITS)


def format_duration(seconds: float) -> str:
    """``3723 -> "1:02:03"``, ``245 -> "4:05"``, ``5 -> "0:05"``.

    Rounded to the nearest second. An unknown duration (negative, NaN, infinite), as an
    ETA is before any progress, shows as ``"--:--"``.
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    total = int(seconds + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def parse_size(text: str) -> int:
    """``"512" -> 512``, ``"64KiB"``/``"64K"`` -> 65536, ``"64KB"`` -> 64000, ``"1.5G"``.

    Units are case-insensitive; spaces between number and unit are allowed. Raises
    ``ValueError`` (message suitable for a user) for anything else, including a
    fraction that is not a whole number of bytes (``"0.1K"``).
    """
    match = _SIZE_RE.fullmatch(text)
    multiplier = _SIZE_MULTIPLIERS.get(match.group(2).lower()) if match else None
    if match is None or multiplier is None:
        raise ValueError(f"not a size: {text!r} (examples: 512, 64KiB, 1.5G, 10MB)")
    value = Fraction(match.group(1)) * multiplier
    if value.denominator != 1:
        raise ValueError(f"not a whole number of bytes: {text!r} = {float(value)} bytes")
    return int(value)
