"""The web app as a real peer: headless Debian chromium against the real CLIs.

Every pair: browser→CLI, CLI→browser, browser→browser (two pages), each moving
a tree with a Unicode name, an empty file and a 64 MiB file, compared byte for
byte (SHA-256 computed here, outside the browser).  Then what must fail: a
file that changes while the page reads it, a sender whose digest is wrong, a
cancel from the page; and the page's memory while it receives 256 MiB.

The receiving page uses ``?sink=download`` so every verified file arrives as a
browser download that this test saves and hashes.  Sizes: a 64 MiB file takes
a few seconds at the ≈13–19 MB/s chromium and aiortc reach on this machine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline.signaling import Signal
from pipeline.signaling.client import SignalingClient, SignalingError
from tests.browser.conftest import ARTIFACTS, Browser
from tests.browser.pages import (
    TRANSFER_TIMEOUT_MS,
    Downloads,
    MiB,
    assert_same_files,
    finished,
    http_origin,
    make_tree,
    pick,
    receive_url,
    sha256_file,
    tree_digests,
    wait_for_bytes,
    write_random,
)
from tests.cli_harness import Launcher, free_port, new_code, receiver_args, sender_args
from tests.integration.conftest import SignalServer

pytestmark = pytest.mark.slow

CLI_DEADLINE = TRANSFER_TIMEOUT_MS / 1000
EXIT_CANCELLED = 130


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tree = make_tree(tmp_path_factory.mktemp("source"))
    return tree, tree_digests(tree)


def received_digests(out: Path) -> dict[str, str]:
    return {
        str(path.relative_to(out)): sha256_file(path) for path in sorted(out.rglob("*")) if path.is_file()
    }


def files_in(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def assert_page_completed(summary: dict[str, Any], sources: dict[str, str], role: str, console: str) -> None:
    """``window.xfer.finished`` of a page that moved ``sources`` (path: sha256) completely."""
    assert summary["outcome"] == "completed", (summary, console)
    assert summary["role"] == role
    assert summary["error_code"] is None
    statuses = {entry["path"]: entry["status"] for entry in summary["files"]}
    assert sorted(statuses) == sorted(sources)
    if role == "receiver":
        assert statuses == dict.fromkeys(sources, "verified"), statuses
        digests = {entry["path"]: entry["sha256"] for entry in summary["files"]}
        assert digests == sources  # the page's own hashes agree with ours


# -- every pair, a real tree ----------------------------------------------------------------


def test_a_browser_sends_a_tree_to_the_cli(
    chromium: Browser, launcher: Launcher, signal_server: SignalServer, source_tree: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    tree, sources = source_tree
    page = chromium.new_page()
    code = pick(page, http_origin(signal_server.url), tree)
    chromium.screenshot(page, "send-page")
    out = tmp_path / "out"
    receiver = launcher.start("receiver", "pipeline.cli.receive", receiver_args(code, signal_server.url, out, "--yes"))
    done = receiver.wait(CLI_DEADLINE)
    summary = finished(page)
    assert done.returncode == 0, receiver.text() + chromium.console(page)
    assert received_digests(out) == sources
    assert done.summary is not None and done.summary["outcome"] == "completed"
    assert done.summary["files_verified"] == len(sources)
    assert done.summary["bytes"] == sum((tree.parent / p).stat().st_size for p in sources)
    assert_page_completed(summary, sources, "sender", chromium.console(page))
    assert summary["bytes"] == done.summary["bytes"]


def test_the_cli_sends_a_tree_to_a_browser_through_the_printed_link(
    chromium: Browser, launcher: Launcher, source_tree: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    tree, sources = source_tree
    code = new_code()
    sender = launcher.start(
        "sender", "pipeline.cli.send", sender_args([tree], code, "--signal-port", str(free_port()))
    )
    sender.wait_for_output(r"joined the room", 30)
    link = sender.wait_for_output(r"(http://\S+)/#(\S+)", 5, stream="stdout")
    assert link.group(2) == code
    page = chromium.new_page()
    downloads = Downloads(tmp_path / "downloads").watch(page)
    page.goto(receive_url(link.group(1), code))
    wait_for_bytes(page, 8 * MiB)
    chromium.screenshot(page, "receive-page-mid-transfer")
    summary = finished(page)
    done = sender.wait(CLI_DEADLINE)
    assert done.returncode == 0, sender.text() + chromium.console(page)
    assert done.summary is not None and done.summary["outcome"] == "completed"
    assert done.summary["files_verified"] == len(sources)
    assert_page_completed(summary, sources, "receiver", chromium.console(page))
    assert_same_files(downloads.save(), sources)


def test_a_browser_sends_a_tree_to_another_browser(
    chromium: Browser, signal_server: SignalServer, source_tree: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    tree, sources = source_tree
    origin = http_origin(signal_server.url)
    sending = chromium.new_page()
    code = pick(sending, origin, tree)
    receiving = chromium.new_page()
    downloads = Downloads(tmp_path / "downloads").watch(receiving)
    receiving.goto(receive_url(origin, code))
    received = finished(receiving)
    sent = finished(sending)
    console = chromium.console(sending) + chromium.console(receiving)
    assert_page_completed(received, sources, "receiver", console)
    assert_page_completed(sent, sources, "sender", console)
    assert sent["bytes"] == received["bytes"] == sum((tree.parent / p).stat().st_size for p in sources)
    assert_same_files(downloads.save(), sources)


# -- what must fail, and leave nothing that looks good -------------------------------------


OPFS_NAMES = """async () => {
  const names = [];
  async function walk(dir, prefix) {
    for await (const [name, handle] of dir.entries()) {
      names.push(prefix + name);
      if (handle.kind === "directory") await walk(handle, prefix + name + "/");
    }
  }
  await walk(await navigator.storage.getDirectory(), "");
  return names;
}"""


def test_a_file_changing_while_the_page_reads_it_fails_both_sides_and_the_cli_keeps_nothing(
    chromium: Browser, launcher: Launcher, signal_server: SignalServer, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "src", {"tree/a.txt": 1000, "tree/changing.bin": 48 * MiB})
    page = chromium.new_page()
    code = pick(page, http_origin(signal_server.url), tree)
    out = tmp_path / "out"
    receiver = launcher.start("receiver", "pipeline.cli.receive", receiver_args(code, signal_server.url, out, "--yes"))
    wait_for_bytes(page, 4 * MiB)
    # A real change on disk under the page, as an editor saving the file would make.
    with open(tree / "changing.bin", "r+b") as f:
        f.seek(40 * MiB)
        f.write(b"changed while being read" * 1000)
    summary = finished(page)
    done = receiver.wait(CLI_DEADLINE)
    console = chromium.console(page)
    assert summary["outcome"] == "failed", (summary, console)
    assert summary["error_code"] in ("io_error", "hash_mismatch"), summary
    assert summary["message"]
    assert done.summary is not None and done.summary["outcome"] == "failed", receiver.text()
    assert done.returncode != 0
    # Nothing unverified is kept: not the changed file, nor a partial of it.
    kept = [str(p.relative_to(out)) for p in files_in(out)]
    assert "tree/changing.bin" not in kept and not any("changing" in name for name in kept), kept


def test_a_wrong_digest_from_a_cli_sender_is_a_hash_mismatch_with_no_download(
    chromium: Browser, launcher: Launcher, signal_server: SignalServer, tmp_path: Path
) -> None:
    code = new_code()
    launcher.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # tests.rogue_peer
    rogue = launcher.start(
        "rogue",
        "tests.rogue_peer",
        ["--role", "sender", "--act", "corrupt", "--signal", signal_server.url, "--code", code],
        json_out=False,
    )
    rogue.wait_for_output(r"joined the room", 30, stream="stdout")  # the rogue sender makes the room
    page = chromium.new_page()
    downloads = Downloads(tmp_path / "downloads").watch(page)
    page.goto(receive_url(http_origin(signal_server.url), code, sink="download"))
    summary = finished(page, 60_000)
    console = chromium.console(page)
    assert summary["outcome"] == "failed", (summary, console, rogue.text())
    assert summary["error_code"] == "hash_mismatch", (summary["message"], summary, rogue.text())
    statuses = {entry["path"]: entry["status"] for entry in summary["files"]}
    assert statuses["bad.bin"] == "mismatch", statuses
    assert "bad.bin" not in downloads.save()  # never offered as if it were good
    assert not [name for name in page.evaluate(OPFS_NAMES) if "bad.bin" in name]  # partial deleted
    assert "hash" in page.inner_text("#outcome").lower() or "match" in page.inner_text("#outcome").lower()


class SilentReceiver(threading.Thread):
    """Joins a room as receiver over the real signaling server and never answers the offer."""

    def __init__(self, url: str, code: str) -> None:
        super().__init__(daemon=True)
        self.url, self.code = url, code
        self.joined = threading.Event()
        self.offers = 0
        self._done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._hold())

    async def _hold(self) -> None:
        async with SignalingClient() as client:
            await client.connect(self.url)
            await client.join(self.code, "receiver")
            self.joined.set()
            while not self._done.is_set():
                try:
                    event = await client.receive(timeout=0.1)
                except TimeoutError:
                    continue
                except SignalingError:
                    return  # the page left: nothing more to hold
                if isinstance(event, Signal) and event.data.get("type") == "offer":
                    self.offers += 1

    def close(self) -> None:
        self._done.set()
        self.join(10)


def test_a_page_whose_peer_never_answers_ends_no_route_and_says_why(
    chromium: Browser, signal_server: SignalServer, tmp_path: Path
) -> None:
    (tmp_path / "one.bin").write_bytes(b"x" * 1000)
    page = chromium.new_page()
    code = pick(page, http_origin(signal_server.url), tmp_path / "one.bin", query="ice_timeout=2")
    silent = SilentReceiver(signal_server.url, code)
    silent.start()
    try:
        assert silent.joined.wait(30)
        summary = finished(page, 30_000)
    finally:
        silent.close()
    assert silent.offers == 1
    assert summary["outcome"] == "no_route" and summary["error_code"] == "no_route", summary
    diagnosis = summary["connection"]["no_route"]
    # The page offered its own addresses; nothing at all came back from the peer.
    assert diagnosis["cause"] == "peer_no_address", diagnosis
    assert diagnosis["advice"] and diagnosis["summary"] in summary["message"]
    assert "No route" in page.inner_text("#outcome")
    details = page.text_content("#details-text") or ""
    assert "What you can do:" in details and "(cause: peer_no_address)" in details, details


def test_cancel_from_the_page_ends_both_sides_cancelled(
    chromium: Browser, launcher: Launcher, tmp_path: Path
) -> None:
    write_random(tmp_path / "src" / "big.bin", 64 * MiB)
    code = new_code()
    sender = launcher.start(
        "sender", "pipeline.cli.send", sender_args([tmp_path / "src" / "big.bin"], code, "--signal-port", str(free_port()))
    )
    sender.wait_for_output(r"joined the room", 30)
    origin = sender.wait_for_output(r"(http://\S+)/#", 5, stream="stdout").group(1)
    page = chromium.new_page()
    downloads = Downloads(tmp_path / "downloads").watch(page)
    page.goto(receive_url(origin, code))
    wait_for_bytes(page, 2 * MiB)
    page.click("#cancel")
    summary = finished(page, 30_000)
    done = sender.wait(CLI_DEADLINE)
    assert summary["outcome"] == "cancelled", (summary, chromium.console(page))
    assert done.returncode == EXIT_CANCELLED, sender.text()
    assert done.summary is not None and done.summary["outcome"] == "cancelled"
    assert downloads.save() == {}
    assert "cancel" in page.inner_text("#outcome").lower()


# -- memory ----------------------------------------------------------------------------------


class RendererMemory(threading.Thread):
    """Samples the summed USS and PSS of chromium's renderer processes every 0.2 s."""

    def __init__(self, browser: Browser) -> None:
        super().__init__(daemon=True)
        self.browser = browser
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []

    def sample(self) -> tuple[int, int]:
        uss = pss = 0
        for proc in self.browser.renderer_processes():
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            uss += info.uss
            pss += info.pss
        return uss, pss

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.wait(0.2):
            self.samples.append((time.monotonic() - start, *self.sample()))


def test_the_receiving_page_memory_stays_flat_for_256_mib(
    chromium: Browser, launcher: Launcher, tmp_path: Path
) -> None:
    size = 256 * MiB
    write_random(tmp_path / "src" / "huge.bin", size)
    code = new_code()
    sender = launcher.start(
        "sender", "pipeline.cli.send", sender_args([tmp_path / "src" / "huge.bin"], code, "--signal-port", str(free_port()))
    )
    sender.wait_for_output(r"joined the room", 30)
    origin = sender.wait_for_output(r"(http://\S+)/#", 5, stream="stdout").group(1)
    page = chromium.new_page()
    downloads = Downloads(tmp_path / "downloads").watch(page)
    page.goto(f"{origin}/")
    meter = RendererMemory(chromium)
    baseline_uss, baseline_pss = meter.sample()
    meter.start()
    try:
        page.goto(receive_url(origin, code))
        summary = finished(page)
    finally:
        meter.stop.set()
        meter.join()
    done = sender.wait(CLI_DEADLINE)
    assert summary["outcome"] == "completed", (summary, chromium.console(page))
    assert done.returncode == 0, sender.text()
    peak_uss = max(s[1] for s in meter.samples)
    peak_pss = max(s[2] for s in meter.samples)
    record = {
        "bytes": size,
        "baseline_renderer_uss": baseline_uss,
        "baseline_renderer_pss": baseline_pss,
        "peak_renderer_uss": peak_uss,
        "peak_renderer_pss": peak_pss,
        "growth_uss": peak_uss - baseline_uss,
        "samples": len(meter.samples),
        "load_average": list(psutil.getloadavg()),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "renderer-memory-256mib.json").write_text(json.dumps(record, indent=2))
    print(f"renderer memory receiving 256 MiB: {json.dumps(record)}")
    # Generous: holding the file in the page would grow by its whole size.
    assert peak_uss - baseline_uss < size, record
    saved = downloads.save()
    assert sha256_file(saved["huge.bin"]) == sha256_file(tmp_path / "src" / "huge.bin")
