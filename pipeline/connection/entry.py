"""Process target for the connection process, importable without aiortc.

The supervisor only needs a picklable reference to start the process; keeping
aiortc out of the supervisor's imports saves it ~40 MiB of memory.
"""

from __future__ import annotations

from typing import Any


def run_connection(params: Any, ctl: Any, pipes: dict[str, Any], log_level: int) -> None:
    from pipeline.connection.process import run_connection as run

    run(params, ctl, pipes, log_level)
