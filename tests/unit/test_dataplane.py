"""The connection process's hand-off to its workers (DataPlane), with real pipes
and no peer: messages queued in one event-loop pass leave in one write per pipe,
in order, and a worker that is gone fails the session."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.connection.dataplane import DataPlane
from pipeline.protocol import events as ev
from pipeline.protocol.outcome import Outcome
from pipeline.protocol.receiver import ReceiverMachine
from workers.channel import PipeEnd, recv
from workers.messages import HashEnd, Message, PlanFile, WriteChunk


@pytest.fixture
def pipes() -> Iterator[dict[str, tuple[PipeEnd, PipeEnd]]]:
    made = {name: multiprocessing.Pipe(duplex=False) for name in ("ctl", "to_writer", "to_hasher")}
    yield made
    for r, w in made.values():
        r.close()
        w.close()


def _plane(pipes: dict[str, tuple[PipeEnd, PipeEnd]], ended: list[ev.Terminated]) -> DataPlane:
    machine = ReceiverMachine("s", max_message_size=65536, window=4)
    return DataPlane(
        machine,
        pipes["ctl"][1],
        {name: w for name, (_r, w) in pipes.items() if name != "ctl"},
        buffered_high=1 << 20,
        buffered_low=1 << 18,
        on_terminated=ended.append,
    )


def test_one_write_per_pipe_per_loop_pass_in_order(
    pipes: dict[str, tuple[PipeEnd, PipeEnd]], monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = _plane(pipes, [])
    writes: list[int] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    to_writer: list[Message] = [PlanFile(0, "a.bin", 3), WriteChunk(5, 0, 0, 3)]

    async def one_pass() -> None:
        for msg in to_writer:
            plane._to_worker("to_writer", msg)
        plane._to_worker("to_hasher", HashEnd(0))
        assert not pipes["to_writer"][0].poll()  # nothing leaves within the pass
        await asyncio.sleep(0)

    asyncio.run(one_pass())
    assert sorted(writes) == sorted(
        [pipes["to_writer"][1].fileno(), pipes["to_hasher"][1].fileno()]
    )
    assert [recv(pipes["to_writer"][0]) for _ in to_writer] == to_writer
    assert recv(pipes["to_hasher"][0]) == HashEnd(0)


def test_a_worker_that_is_gone_fails_the_session(pipes: dict[str, tuple[PipeEnd, PipeEnd]]) -> None:
    ended: list[ev.Terminated] = []
    plane = _plane(pipes, ended)
    pipes["to_writer"][0].close()  # the writer process exited

    async def one_pass() -> None:
        plane._to_worker("to_writer", PlanFile(0, "a.bin", 3))
        await asyncio.sleep(0)

    asyncio.run(one_pass())
    assert [(t.outcome, t.code) for t in ended] == [(Outcome.FAILED, "internal")]
    assert "writer process exited unexpectedly" in ended[0].message
