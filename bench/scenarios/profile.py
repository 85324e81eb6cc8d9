"""profile: where the connection processes spend their CPU, sampled with py-spy.

During a one-file transfer (defaults), once data flows, ``py-spy record
--nonblocking --format raw`` samples the sender's and the receiver's connection
process for a fixed time (found through their telemetry files, which name every
process's pid). The collapsed stacks are kept in the run directory and reduced to
self time per function and per module. Baseline: the raw aiortc peers, sampled the
same way during a ceiling run, so "Python around aiortc" can be told from aiortc.
Needs py-spy (requirements-bench.lock) and ptrace permission.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.context import Bench, log
from bench.raw_channel import run_raw_channel
from bench.report import fmt_size
from bench.transfer import TransferRun, transfer_metrics
from tests.cli_harness import Proc

RATE = 100  # samples per second
TOP = 15


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _frame_parts(frame: str) -> tuple[str, str]:
    """'send (aiortc/rtcsctptransport.py)' -> ('send', 'aiortc/rtcsctptransport.py')."""
    name, _, rest = frame.partition(" (")
    return name.strip(), rest.rstrip(")").split(":")[0]


def module_group(path: str) -> str:
    """A file as the component it belongs to: 'aiortc/rtcsctptransport.py', 'pipeline/protocol',
    'asyncio', 'cryptography', ..."""
    parts = path.replace("\\", "/").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    head = parts[0] if parts else path
    if head == "aiortc" or head == "aioice":
        return "/".join(parts[:2])
    if head in ("pipeline", "workers"):
        return "/".join(parts[:2]).removesuffix(".py")
    if "asyncio" in parts:
        return "asyncio"
    return head.removesuffix(".py")


def summarize_collapsed(lines: Iterable[str], seconds: float, rate: int = RATE) -> dict[str, Any]:
    """Reduce py-spy raw output ('frame;frame;... count' per line) to shares of samples."""
    by_function: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    inclusive_module: Counter[str] = Counter()
    total = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        name, path = _frame_parts(frames[-1])
        by_function[f"{name} ({path})"] += count
        by_module[module_group(path)] += count
        for group in {module_group(_frame_parts(f)[1]) for f in frames}:
            inclusive_module[group] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(key, round(n / total, 4)) for key, n in counter.most_common(TOP)] if total else []

    return {
        "samples": total,
        "seconds": seconds,
        # Idle samples are not recorded, so samples / (rate × seconds) is the busy share.
        "busy_share": round(total / (rate * seconds), 3) if seconds > 0 else None,
        "self_by_function": shares(by_function),
        "self_by_module": shares(by_module),
        "inclusive_by_module": shares(inclusive_module),
    }


def _find_pid(path: Path, role: str, deadline: float) -> int:
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                proc = record.get("processes", {}).get(role) if record.get("type") == "sample" else None
                if proc and not proc.get("gone"):
                    return int(proc["pid"])
        time.sleep(0.1)
    raise TimeoutError(f"no {role} pid in {path}")


def _wait_for_bytes(path: Path, deadline: float) -> None:
    """Until the receiver's telemetry shows a progress record with bytes in it."""
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith('{"type":"progress"') and '"bytes_done":0,' not in line:
                    return
        time.sleep(0.1)


def _record(pids: dict[str, int], out_dir: Path, seconds: float) -> dict[str, Path]:
    tool = py_spy()
    assert tool is not None
    procs, outputs = {}, {}
    for name, pid in pids.items():
        outputs[name] = out_dir / f"{name}.pyspy.txt"
        argv = [tool, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE)]
        argv += ["--format", "raw", "--nolineno", "--nonblocking", "--output", str(outputs[name])]
        procs[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(out_dir / f"{name}.pyspy.err", "w"))  # noqa: SIM115
    for proc in procs.values():
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return outputs


def _load(path: Path, seconds: float) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return summarize_collapsed(path.read_text().splitlines(), seconds)


def run(bench: Bench) -> dict[str, Any]:
    if py_spy() is None:
        log("profile: py-spy is not installed (pip install -r requirements-bench.lock); skipped")
        return {"title": "Profile", "skipped": "py-spy not installed"}
    s = bench.settings
    seconds = s.profile_seconds
    profiles: dict[str, Any] = {}

    def attach(run: TransferRun, sender: Proc, receiver: Proc) -> None:
        deadline = time.monotonic() + 60
        pids = {
            "pipeline-sender-connection": _find_pid(run.telemetry_path("sender"), "connection", deadline),
            "pipeline-receiver-connection": _find_pid(run.telemetry_path("receiver"), "connection", deadline),
        }
        _wait_for_bytes(run.telemetry_path("receiver"), deadline)
        log(f"profile: py-spy on {pids} for {seconds:.0f} s")
        for name, path in _record(pids, run.run_dir, seconds).items():
            profiles[name] = _load(path, seconds)

    with bench.one_file(s.profile_size) as path:
        run = bench.transfer(f"profile-{fmt_size(s.profile_size).replace(' ', '')}", [path], s.profile_size, 1, while_running=attach)
    raw_dir = bench.out_dir / "runs" / "profile-raw-aiortc"
    raw_dir.mkdir(parents=True, exist_ok=True)

    def attach_raw(pids: dict[str, int]) -> None:
        names = {f"raw-{role}": pid for role, pid in pids.items()}
        log(f"profile: py-spy on raw aiortc {names} for {seconds:.0f} s")
        for name, out in _record(names, raw_dir, seconds).items():
            profiles[name] = _load(out, seconds)

    d = bench.defaults
    raw = run_raw_channel(
        s.profile_size,
        message_size=d.transfer.chunk_size,
        buffered_high=d.channel.buffered_high,
        buffered_low=d.channel.buffered_low,
        cwnd_cap=bench.flight_cap,
        on_open=attach_raw,
    )
    return {
        "title": f"Profile: connection processes during a {fmt_size(s.profile_size)} transfer (py-spy, {seconds:.0f} s)",
        "baseline": "raw aiortc peers sampled the same way (same run)",
        "params": {"bytes": s.profile_size, "seconds": seconds, "rate": RATE},
        "transfer": transfer_metrics(run),
        "raw": raw.as_dict(),
        "profiles": profiles,
        "table": profile_table(profiles),
    }


def profile_table(profiles: dict[str, Any]) -> dict[str, Any]:
    """Self share by module, one column per sampled process."""
    names = [n for n, p in profiles.items() if p]
    modules: dict[str, None] = {}
    for n in names:
        for module, _ in profiles[n]["self_by_module"][:8]:
            modules.setdefault(module, None)
    rows = [["busy (samples / rate × s)", *(f"{profiles[n]['busy_share'] * 100:.0f} %" for n in names)]]
    for module in modules:
        row = [f"self: {module}"]
        for n in names:
            share = dict(profiles[n]["self_by_module"]).get(module)
            row.append(f"{share * 100:.1f} %" if share is not None else "–")
        rows.append(row)
    functions: dict[str, None] = {}
    for n in names:
        for function, _ in profiles[n]["self_by_function"][:5]:
            functions.setdefault(function, None)
    for function in functions:
        row = [f"self: {function}"]
        for n in names:
            share = dict(profiles[n]["self_by_function"]).get(function)
            row.append(f"{share * 100:.1f} %" if share is not None else "–")
        rows.append(row)
    return {"columns": ["", *names], "rows": rows}
