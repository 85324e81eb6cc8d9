"""One end of a headless Chromium ↔ Chromium DataChannel, for the network lab.

The browser baseline of the impairment scenario: the same exchange as
``bench/lab_raw_peer.py`` (offer and answer as files in a directory both namespaces
see, so no signaling hop crosses loopback), the same label, message size and
``bufferedAmount`` rule, but both ends are Debian's Chromium, whose SCTP stack
(dcSCTP) is what a browser user gets. Run it under ``ip netns exec`` so the browser
lives in that peer's namespace. Playwright drives ``/usr/bin/chromium`` with the
flags of ``../shared/notes/browser.md`` and a fresh profile; the page is about:blank
with inline script, nothing from the product's web app.

The receiver prints one JSON line: bytes, first byte → last byte rate (page clock).

    python -m bench.lab_chromium_peer --role send --exchange DIR --bytes 8MiB --stun stun:198.51.100.10:3478
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.series import second_half_rate
from pipeline.units import parse_size

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]  # fmt: skip

# Page side: gather fully (no trickle: one description each way), then move bytes.
_SETUP = """async ({stun}) => {
  window.pc = new RTCPeerConnection({iceServers: stun ? [{urls: stun}] : []});
  window.gathered = new Promise(r => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); };
  });
}"""
_OFFER = """async () => {
  window.dc = pc.createDataChannel('xfer', {ordered: true});
  dc.binaryType = 'arraybuffer';
  await pc.setLocalDescription(await pc.createOffer());
  await gathered;
  return pc.localDescription.sdp;
}"""
_ANSWER = """async ({sdp}) => {
  await pc.setRemoteDescription({type: 'offer', sdp});
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered;
  return pc.localDescription.sdp;
}"""
_SEND = """async ({sdp, total, size, high, low}) => {
  await pc.setRemoteDescription({type: 'answer', sdp});
  if (dc.readyState !== 'open') await new Promise(r => dc.onopen = r);
  const done = new Promise(r => dc.onmessage = r);
  const payload = new Uint8Array(size);
  dc.bufferedAmountLowThreshold = low;
  for (let sent = 0; sent < total; sent += size) {
    while (dc.bufferedAmount > high) await new Promise(r => dc.onbufferedamountlow = r);
    dc.send(sent + size <= total ? payload : payload.subarray(0, total - sent));
  }
  await done;
  dc.close();  // tells the receiver it may go: its 'done' has arrived
  return {outcome: 'completed'};
}"""
_RECEIVE = """async ({total}) => {
  return await new Promise(resolve => {
    pc.ondatachannel = (e) => {
      const ch = e.channel; ch.binaryType = 'arraybuffer';
      let got = 0, first = null, half = null;
      window.ch = ch;
      ch.onmessage = (m) => {
        const now = performance.now();
        if (first === null) first = now;
        got += m.data.byteLength;
        if (half === null && got >= total / 2) half = [now, got];
        if (got >= total) {
          ch.send('done');
          resolve({bytes: got, first_ms: first, last_ms: now, half_ms: half[0], half_bytes: half[1]});
        }
      };
    };
  });
}"""


# The receiver stays until the sender closes the channel (its 'done' arrived): closing
# the browser at once would abort the association with 'done' still unacknowledged,
# and under loss it can be (the sender then never finishes).
_LINGER = """async () => {
  if (window.ch.readyState !== 'closed')
    await Promise.race([new Promise(r => window.ch.onclose = r), new Promise(r => setTimeout(r, 15000))]);
}"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lab_chromium_peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("send", "receive"), required=True)
    parser.add_argument("--exchange", type=Path, required=True, help="directory shared by both sides")
    parser.add_argument("--bytes", type=parse_size, required=True)
    parser.add_argument("--stun", default="", help="stun:HOST:PORT (empty: host candidates only)")
    parser.add_argument("--message-size", type=parse_size, default=64 * 1024)
    parser.add_argument("--buffered-high", type=parse_size, default=1024 * 1024)
    parser.add_argument("--buffered-low", type=parse_size, default=256 * 1024)
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args(argv)


def _wait_file(path: Path, deadline: float) -> str:
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} from the other side")
        time.sleep(0.05)
    return path.read_text()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)  # the other side never reads half a description


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    deadline = time.monotonic() + args.timeout
    report: dict[str, Any] = {"role": args.role, "bytes": args.bytes}
    with tempfile.TemporaryDirectory(prefix="pxfer-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(args.timeout * 1000)
            page.evaluate(_SETUP, {"stun": args.stun})
            started = time.monotonic()
            if args.role == "send":
                _write(args.exchange / "offer.sdp", page.evaluate(_OFFER))
                answer = _wait_file(args.exchange / "answer.sdp", deadline)
                report.update(page.evaluate(_SEND, {
                    "sdp": answer, "total": args.bytes, "size": args.message_size,
                    "high": args.buffered_high, "low": args.buffered_low,
                }))  # fmt: skip
            else:
                offer = _wait_file(args.exchange / "offer.sdp", deadline)
                _write(args.exchange / "answer.sdp", page.evaluate(_ANSWER, {"sdp": offer}))
                got = page.evaluate(_RECEIVE, {"total": args.bytes})
                page.evaluate(_LINGER)
                seconds = (got["last_ms"] - got["first_ms"]) / 1000
                report.update(
                    outcome="completed" if got["bytes"] == args.bytes else "short",
                    received=got["bytes"],
                    first_to_last_s=round(seconds, 3),
                    first_to_last_bytes_per_s=got["bytes"] / seconds if seconds > 0 else None,
                    second_half_bytes_per_s=second_half_rate(
                        [(got["half_ms"] / 1000, got["half_bytes"]), (got["last_ms"] / 1000, got["bytes"])], args.bytes
                    ),
                )
            report["wall_s"] = round(time.monotonic() - started, 3)
        finally:
            context.close()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except Exception as exc:  # one JSON line either way: the scenario reads it
        report = {"role": args.role, "outcome": "failed", "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report), flush=True)
    return 0 if report.get("outcome") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
