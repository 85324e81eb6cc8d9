"""Error codes of Appendix B.3 and the exceptions that carry them.

Following h11, faults are split by who caused them:

* :class:`RemoteProtocolError` - the peer sent something the spec forbids.  The
  machines never let it escape; they turn it into an ``error`` frame with its
  code and a terminal ``failed`` outcome.
* :class:`LocalProtocolError` - our own code misused a machine (a bug).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

ErrorCode = Literal[
    "protocol",
    "version",
    "bad_manifest",
    "bad_path",
    "no_space",
    "io_error",
    "hash_mismatch",
    "timeout",
    "user_cancelled",
    "rejected",
    "internal",
]

ERROR_CODES: Final[frozenset[str]] = frozenset(get_args(ErrorCode))


class ProtocolError(Exception):
    """Base class: an error with an Appendix B.3 code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol (or sent a bad manifest/path)."""


class LocalProtocolError(ProtocolError):
    """Our side called a machine in a way its state does not allow."""

    def __init__(self, message: str) -> None:
        super().__init__("internal", message)
