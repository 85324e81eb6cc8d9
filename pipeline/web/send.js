// The send page's shell: pick files or a directory (or drop them), make a room
// code, offer the channel `xfer` (xfer/1), read each file slice by slice with
// bufferedAmount backpressure, hash it while reading. Protocol decisions: sender.js.
import { SenderCore } from "./sender.js";
import { HEADER_LEN, packHeader } from "./frames.js";
import { validateManifestPaths } from "./paths.js";
import { Room, gathered, startOnOpen } from "./rtc.js";
import { $, params, xfer, ui, human, render, refreshDetails, finish, finishNoRoute, ICE_DEADLINE_MS } from "./ui.js";
import { WORDS } from "./words.js";

const MAX_MESSAGE_SIZE = 262144;
const HIGH_WATER = 4 * 1024 * 1024; // Chromium's send queue fails above 16 MiB
let pc = null, channel = null, room = null, core = null, pumping = false, picked = [];

function randomBelow(n) {
  // Rejection sampling: no modulo bias (C.3 wants a cryptographic, uniform draw).
  const limit = Math.floor(2 ** 32 / n) * n;
  const buf = new Uint32Array(1);
  do crypto.getRandomValues(buf); while (buf[0] >= limit);
  return buf[0] % n;
}

export function newCode() {
  return [randomBelow(1000), ...Array.from({ length: 3 }, () => WORDS[randomBelow(WORDS.length)])].join("-");
}

export function startSendPage() {
  $("send-box").classList.remove("hidden");
  const pick = (list) => { if (!xfer.code) start([...list].map((f) => ({ file: f, path: (f.webkitRelativePath || f.name).normalize("NFC") }))); };
  $("files").onchange = (e) => pick(e.target.files);
  $("dir").onchange = (e) => pick(e.target.files);
  const drop = $("drop");
  drop.ondragover = (e) => e.preventDefault();
  drop.ondrop = async (e) => {
    e.preventDefault();
    const out = [];
    await Promise.all([...e.dataTransfer.items].map((i) => walk(i.webkitGetAsEntry?.(), "", out)));
    if (!xfer.code) start(out);
  };
}

async function walk(entry, prefix, out) {
  if (!entry) return;
  if (entry.isFile) {
    const file = await new Promise((ok, ko) => entry.file(ok, ko));
    out.push({ file, path: `${prefix}${entry.name}`.normalize("NFC") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, ko) => reader.readEntries(ok, ko));
      if (!batch.length) break;
      await Promise.all(batch.map((e) => walk(e, `${prefix}${entry.name}/`, out)));
    }
  }
}

function start(list) {
  if (!list.length) return;
  try {
    validateManifestPaths(list.map((f) => f.path));
  } catch (e) {
    $("outcome").textContent = `Cannot send these files: ${e.message}`;
    return;
  }
  picked = list.map((f, id) => ({ id, path: f.path, size: f.file.size, file: f.file }));
  Object.assign(xfer, { role: "sender", state: "signaling", code: newCode() });
  xfer.files = picked.map((f) => ({ id: f.id, path: f.path, size: f.size, status: "pending", sha256: null }));
  ui.totalBytes = picked.reduce((n, f) => n + f.size, 0);
  $("join-box").classList.add("hidden");
  $("send-code").textContent = xfer.code;
  const link = `${location.origin}${location.pathname}${location.search}#${xfer.code}`;
  $("send-link").textContent = link;
  $("send-link").href = link;
  $("share").classList.remove("hidden");
  $("cancel").classList.remove("hidden");
  render();
  const url = params.get("signal") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  room = new Room(url, xfer.code, "sender", onSignal, (m) => {
    if (m.t === "joined" && m.peer_present) offer();
    else if (m.t === "peer" && m.event === "joined" && !channel) offer();
    else if (m.t === "peer" && m.event === "left" && !xfer.outcome && channel?.readyState !== "open") finish("failed", "timeout", "the receiver left");
    else if (m.t === "error") finish("failed", "signaling", `signaling server refused: ${m.code}: ${m.message}`);
  });
  ui.close = () => { pc?.close(); room?.close(); };
}

async function offer() {
  xfer.state = "connecting";
  pc = ui.pc = new RTCPeerConnection({ iceServers: (params.get("stun") || "").split(",").filter(Boolean).map((u) => ({ urls: u })) });
  channel = pc.createDataChannel("xfer", { protocol: "xfer/1", ordered: true });
  channel.binaryType = "arraybuffer";
  channel.bufferedAmountLowThreshold = HIGH_WATER / 2;
  setTimeout(() => { if (channel.readyState !== "open") finishNoRoute(); }, ICE_DEADLINE_MS);
  startOnOpen(channel, opened, (data) => core.message(data, pc.sctp?.maxMessageSize || 65536));
  channel.addEventListener("open", () => { if (core) pump(); }); // started by a message before open
  channel.onclose = () => { if (!xfer.outcome) finish("failed", "timeout", "the connection to the receiver was lost"); };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  room.signal({ type: "offer", sdp: pc.localDescription.sdp });
}

async function onSignal(data) {
  if (data.type === "answer") await pc.setRemoteDescription(data);
  else if ("candidate" in data && pc) await pc.addIceCandidate(data.candidate === null ? null : data).catch(() => {});
}

function opened(sendText) {
  xfer.state = "open";
  xfer.connection.max_message_size = Math.min(pc.sctp?.maxMessageSize || 65536, MAX_MESSAGE_SIZE);
  core = new SenderCore({
    session: xfer.code, files: picked, maxMessageSize: MAX_MESSAGE_SIZE,
    chunkSize: Number(params.get("chunk") || 65536 - 1024), window: Number(params.get("window") || 128),
    send: sendText,
    events: {
      wake: pump,
      retransmit: (seq, c) => read(c).then((bytes) => sendChunk(c, bytes)).catch((e) => readFailed(c, e)),
      verdict: (id, status, sha256) => { Object.assign(xfer.files[id], { status, sha256 }); render(); },
      terminal: (outcome, code, message) => finish(outcome, code, message),
    },
  });
  core.open();
  refreshDetails();
  setInterval(() => core.tick(), 200);
}

async function read(c) {
  const buf = new Uint8Array(await picked[c.fileId].file.slice(c.offset, c.offset + c.length).arrayBuffer());
  if (buf.length !== c.length) throw new Error(`${picked[c.fileId].path} changed size while being read`);
  return buf;
}

function sendChunk(c, bytes) {
  const f = new Uint8Array(HEADER_LEN + bytes.length);
  packHeader(f, c.fileId, c.chunkIndex, c.seq, c.last, bytes.length);
  f.set(bytes, HEADER_LEN);
  channel.send(f);
}

function readFailed(c, e) {
  xfer.files[c.fileId].status = "io_error";
  core.fail("io_error", `cannot read ${picked[c.fileId].path}: ${e.message ?? e}`, true);
}

const hashers = new Map();
async function hasherFor(id) {
  if (!hashers.has(id)) { const h = await hashwasm.createSHA256(); h.init(); hashers.set(id, h); }
  return hashers.get(id);
}

async function pump() {
  if (pumping) return;
  pumping = true;
  try {
    for (;;) {
      if (core.outcome || channel.readyState !== "open") return;
      if (channel.bufferedAmount > HIGH_WATER) {
        await new Promise((ok) => channel.addEventListener("bufferedamountlow", ok, { once: true }));
        continue;
      }
      const c = core.nextChunk();
      if (!c) return;
      if (!ui.startedAt) { ui.startedAt = performance.now(); xfer.state = "transferring"; }
      const h = await hasherFor(c.fileId);
      if (c.empty) { core.fileRead(c.fileId, h.digest("hex")); continue; }
      let bytes;
      try { bytes = await read(c); } catch (e) { readFailed(c, e); return; }
      h.update(bytes);
      sendChunk(c, bytes);
      xfer.bytes += bytes.length;
      xfer.files[c.fileId].status = "sending";
      if (c.last) {
        const digest = h.digest("hex");
        xfer.files[c.fileId].sha256 = digest;
        hashers.delete(c.fileId);
        core.fileRead(c.fileId, digest);
      }
    }
  } finally {
    pumping = false;
  }
}

$("cancel").addEventListener("click", () => { if (xfer.role === "sender") core ? core.cancel() : finish("cancelled", "user_cancelled", "cancelled by the user"); });
