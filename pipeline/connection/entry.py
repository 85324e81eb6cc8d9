"""Process target for the connection process, importable without aiortc.

The supervisor only needs a picklable reference to start the process; keeping
aiortc out of the supervisor's imports saves it ~40 MiB of memory.
"""

from __future__ import annotations

from typing import Any


def run_connection(packed_params: list[bytes], ctl: Any, pipes: dict[str, Any], log_level: int) -> None:
    """``packed_params``: :func:`pipeline.control.pack_params` of the ConnParams."""
    from pipeline.connection.process import run_connection as run
    from pipeline.control import unpack_params

    run(unpack_params(packed_params), ctl, pipes, log_level)
