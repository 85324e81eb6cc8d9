"""``pipeline-demo``: a complete local transfer on an embedded default.

Generates a sample media directory (nested folders, Unicode names, empty
files, a few hundred small files and one large file), runs ``pipeline-send``
and ``pipeline-receive`` as two separate processes over the embedded signaling
server, then compares both trees file by file (size and SHA-256) and prints a
summary.  Everything lives in a temporary directory that is removed afterwards
unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _wait_for(path: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"pipeline-demo: the sender did not start:\n{path.read_text(errors='replace')}")


def main(argv: list[str] | None = None) -> None:
    from pipeline.mediagen import generate_media_tree, tree_digest
    from pipeline.units import format_bytes, format_rate, parse_size

    parser = argparse.ArgumentParser(prog="pipeline-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-size", default="64MiB", help="size of the large file (default 64MiB)")
    parser.add_argument("--small-files", type=int, default=300, help="number of small files (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--workdir", help="use this (empty) directory instead of a temporary one")
    args = parser.parse_args(argv)
    large = parse_size(args.large_size)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    source, out = work / "media", work / "received"
    print(f"pipeline-demo: generating a sample media directory in {source} ...", flush=True)
    generate_media_tree(source, small_files=args.small_files, large_files=1, large_size=large)
    expected = tree_digest(source)
    total = sum(size for size, _ in expected.values())
    print(f"pipeline-demo: {len(expected)} files, {format_bytes(total)}; starting sender and receiver", flush=True)

    python = sys.executable
    send_out, send_err = work / "sender.out", work / "sender.err"
    with open(send_out, "w") as so, open(send_err, "w") as se:
        sender = subprocess.Popen(
            [python, "-m", "pipeline.cli.send", str(source), "--progress", "none", "--json", str(work / "sender.json")],
            stdout=so,
            stderr=se,
            stdin=subprocess.DEVNULL,
        )
    try:
        command = _wait_for(send_out, r"pipeline-receive (\S+) --signal (\S+)", sender, 60)
        code, url = command.group(1), command.group(2)
        receiver = subprocess.run(
            [python, "-m", "pipeline.cli.receive", code, "--signal", url, "--out", str(out), "--yes",
             "--json", str(work / "receiver.json")],
            stdin=subprocess.DEVNULL,
            check=False,
        )
        sender.wait(60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    received = tree_digest(out / source.name) if (out / source.name).exists() else {}
    identical = received == expected
    print(send_err.read_text(errors="replace"), end="", file=sys.stderr)
    summary = json.loads((work / "receiver.json").read_text()) if (work / "receiver.json").exists() else {}
    memory = summary.get("memory", {}).get("peak_sum_pss") or 0
    print("pipeline-demo summary")
    print(f"  files sent / received identical: {len(expected)} / {len(received)} -> {'yes' if identical else 'NO'}")
    print(f"  sender exit {sender.returncode}, receiver exit {receiver.returncode}")
    if summary:
        print(f"  throughput {format_rate(summary.get('throughput_bytes_per_s', 0))}, "
              f"receiver peak memory (sum of PSS) {format_bytes(int(memory))}")
    ok = identical and sender.returncode == 0 and receiver.returncode == 0
    if args.keep or not ok:
        print(f"  kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
