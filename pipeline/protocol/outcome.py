"""Terminal outcomes of a session (Appendix A.2) and the CLI exit codes."""

from __future__ import annotations

import enum
from typing import Final


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    NO_ROUTE = "no_route"


EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_ROUTE: Final = 3
EXIT_HASH_MISMATCH: Final = 4
EXIT_REJECTED: Final = 5
EXIT_CANCELLED: Final = 130


def exit_code(outcome: Outcome, code: str | None) -> int:
    """Map a terminal outcome (and its error code) to the CLI exit code of A.2."""
    if outcome is Outcome.COMPLETED:
        return EXIT_OK
    if outcome is Outcome.REJECTED:
        return EXIT_REJECTED
    if outcome is Outcome.CANCELLED:
        return EXIT_CANCELLED
    if outcome is Outcome.NO_ROUTE:
        return EXIT_NO_ROUTE
    return EXIT_HASH_MISMATCH if code == "hash_mismatch" else EXIT_FAILED
