// The receive page's shell: DOM, signaling, the DataChannel, hashing (hash-wasm)
// and the OPFS sink. Protocol decisions live in receiver.js.
import { ReceiverCore } from "./receiver.js";
import { Room, gathered, startOnOpen } from "./rtc.js";
import { $, params, xfer, ui, human, render, refreshDetails, finish, finishNoRoute, ICE_DEADLINE_MS } from "./ui.js";
import { startSendPage } from "./send.js";

const MAX_MESSAGE_SIZE = 262144;
let pc = null, channel = null, room = null, core = null, opfs = null;
const sinks = new Map(); // file id -> {handle, writable, hasher, next, pending: Map(chunk -> frame), queue}
const fileEnds = new Map();
ui.onFinish = () => { for (const [id, s] of sinks) if (xfer.files[id].status !== "verified") discard(id, s); };
ui.close = () => { pc?.close(); room?.close(); };

async function discard(id, s) {
  sinks.delete(id);
  try { await s.writable?.abort(); } catch { /* already closed */ }
  try { await opfs.removeEntry(`partial-${id}`); } catch { /* never created */ }
}

// -- sink: OPFS staging, then a download of each VERIFIED file -----------------

async function openSink(id) {
  const handle = await opfs.getFileHandle(`partial-${id}`, { create: true });
  const writable = await handle.createWritable();
  const hasher = await hashwasm.createSHA256();
  hasher.init();
  return { handle, writable, hasher, next: 0, pending: new Map(), queue: Promise.resolve() };
}

async function onChunk(d) {
  xfer.state = "transferring";
  const s = sinks.get(d.fileId);
  xfer.files[d.fileId].status = "receiving";
  s.pending.set(d.chunkIndex, d);
  // Hash and write strictly in order; out-of-order chunks wait (bounded by the window).
  while (s.pending.has(s.next)) {
    const c = s.pending.get(s.next);
    s.pending.delete(s.next);
    s.next += 1;
    s.hasher.update(c.payload);
    const data = c.payload.slice();
    s.queue = s.queue.then(() => s.writable.write({ type: "write", position: c.chunkIndex * core.chunkSize, data }))
      .then(() => { xfer.bytes += data.length; core.stored(c.seq); })
      .catch((e) => ioFail(d.fileId, e));
  }
  maybeVerify(d.fileId);
}

function ioFail(id, e) {
  if (xfer.outcome) return; // the session already ended; its partials are being deleted
  xfer.files[id].status = "io_error";
  core.verdict(id, "io_error", null);
  core.fail("io_error", `cannot write ${xfer.files[id].path}: ${e?.message ?? e}`, true);
}

async function maybeVerify(id) {
  const s = sinks.get(id), end = fileEnds.get(id), f = xfer.files[id];
  if (!s || !end || s.verifying || s.next < end.chunks) return;
  s.verifying = true;
  await s.queue;
  if (sinks.get(id) !== s) return; // the session ended meanwhile: discard() owns this file
  const digest = s.hasher.digest("hex");
  f.sha256 = digest;
  if (digest !== end.sha256 || end.size !== f.size) {
    f.status = "mismatch";
    await discard(id, s);
    core.verdict(id, "mismatch", digest);
    core.fail("hash_mismatch", `${f.path}: received data does not match the sender's SHA-256`, true);
    render();
    return;
  }
  try {
    await s.writable.close();
  } catch (e) {
    if (sinks.get(id) === s) ioFail(id, e);
    return;
  }
  if (sinks.get(id) !== s) return; // discarded while closing: never offered
  f.status = "verified";
  core.verdict(id, "verified", digest);
  deliver(id, f, s.handle);
  render();
  maybeDoneAck();
}

let dirHandle = null; // File System Access API: the folder the user chose (sink "dir")

/** Ask for a folder when the browser can and the user clicked Accept (a picker needs a gesture). */
async function pickDirectory(byClick) {
  const sink = params.get("sink") || "auto";
  if (!window.showDirectoryPicker || !(sink === "dir" || (sink === "auto" && byClick))) return;
  try {
    dirHandle = await window.showDirectoryPicker({ mode: "readwrite" });
  } catch {
    dirHandle = null; // declined or unavailable (headless): per-file downloads instead
  }
}

/** Copy a verified file into the chosen folder; never overwrites an existing file. */
async function saveToDirectory(f, file) {
  const parts = f.path.split("/");
  let dir = dirHandle;
  for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p, { create: true });
  const name = parts[parts.length - 1];
  const exists = await dir.getFileHandle(name).then(() => true, () => false);
  if (exists) throw new Error(`${f.path} already exists in the chosen folder`);
  await file.stream().pipeTo(await (await dir.getFileHandle(name, { create: true })).createWritable());
}

async function deliver(id, f, handle) {
  // The File from OPFS is backed by disk, not memory; only verified files get here.
  const file = await handle.getFile();
  if (dirHandle) {
    try {
      await saveToDirectory(f, file);
      await opfs.removeEntry(`partial-${id}`);
      return;
    } catch (e) {
      $("outcome").textContent = `Saved ${f.path} as a download instead: ${e.message}`;
    }
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(file);
  a.download = f.path.split("/").pop();
  a.textContent = "save";
  document.querySelector(`#files-table tbody tr:nth-child(${id + 1}) td:last-child`)?.append(" ", a);
  if (params.get("sink") !== "opfs") a.click();
}

function maybeDoneAck() {
  if (!core.doneSeen || xfer.outcome) return;
  if (xfer.files.every((f) => f.status === "verified")) {
    core.doneAck(xfer.files.length, 0);
    finish("completed", null, `${xfer.files.length} files verified`);
  }
}

window.xferReadFile = async (path) => {
  const id = xfer.files.findIndex((f) => f.path === path);
  const file = await (await opfs.getFileHandle(`partial-${id}`)).getFile();
  const h = await hashwasm.createSHA256(); h.init();
  const reader = file.stream().getReader();
  for (;;) { const { done, value } = await reader.read(); if (done) break; h.update(value); }
  return h.digest("hex");
};

// -- connection ---------------------------------------------------------------

async function onManifest(files, total) {
  ui.totalBytes = total;
  xfer.files = files.map((f) => ({ id: f.id, path: f.path, size: f.size, status: "pending", sha256: null }));
  xfer.state = "deciding";
  const top = [...new Set(files.map((f) => f.path.split("/")[0]))];
  $("offer").textContent = `${files.length} files, ${human(total)}: ${top.slice(0, 10).join(", ")}${top.length > 10 ? ", …" : ""}`;
  $("offer-box").classList.remove("hidden");
  render();
  if (params.get("yes") === "1") doAccept(null);
}

async function doAccept(event) {
  if (xfer.state !== "deciding") return;
  xfer.state = "transferring"; // before any await: a second click changes nothing
  $("offer-box").classList.add("hidden");
  await pickDirectory(Boolean(event?.isTrusted));
  opfs = await navigator.storage.getDirectory();
  for (const f of xfer.files) sinks.set(f.id, await openSink(f.id));
  ui.startedAt = performance.now();
  core.accept();
  for (const f of xfer.files) if (f.size === 0 && fileEnds.has(f.id)) maybeVerify(f.id);
}

function join(code) {
  xfer.code = code.trim().toLowerCase();
  xfer.state = "signaling";
  $("join-box").classList.add("hidden");
  $("cancel").classList.remove("hidden");
  const url = params.get("signal") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  room = new Room(url, xfer.code, "receiver", onSignal, (m) => {
    if (m.t === "error") finish("failed", "signaling", `signaling server refused: ${m.code}: ${m.message}`);
    if (m.t === "peer" && m.event === "left" && !xfer.outcome && !channel) finish("failed", "signaling", "the sender left");
  });
}

async function onSignal(data) {
  if (data.type === "offer") {
    pc = ui.pc = new RTCPeerConnection({ iceServers: (params.get("stun") || "").split(",").filter(Boolean).map((u) => ({ urls: u })) });
    xfer.state = "connecting";
    const deadline = setTimeout(() => { if (!channel || channel.readyState !== "open") finishNoRoute(); }, ICE_DEADLINE_MS);
    pc.ondatachannel = (e) => { clearTimeout(deadline); adopt(e.channel); };
    await pc.setRemoteDescription(data);
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    room.signal({ type: "answer", sdp: pc.localDescription.sdp });
  } else if ("candidate" in data && pc) {
    await pc.addIceCandidate(data.candidate === null ? null : data).catch(() => {});
  }
}

function adopt(ch) {
  channel = ch;
  ch.binaryType = "arraybuffer";
  // The sender's channel can be "open" already when it is announced, and its first
  // message can come before the open event: startOnOpen starts on whichever is first.
  startOnOpen(ch, (send) => {
    xfer.state = "open";
    const sctp = pc.sctp?.maxMessageSize || 65536;
    xfer.connection.max_message_size = Math.min(sctp, MAX_MESSAGE_SIZE);
    core = new ReceiverCore({
      session: xfer.code, maxMessageSize: MAX_MESSAGE_SIZE, window: Number(params.get("window") || 256),
      send,
      events: {
        manifest: onManifest,
        chunk: onChunk,
        fileEnd: (f) => { fileEnds.set(f.id, f); maybeVerify(f.id); },
        done: () => maybeDoneAck(),
        terminal: (outcome, code, message) => finish(outcome, code, message),
      },
    });
    core.open();
    refreshDetails();
  }, (data) => core.message(data));
  ch.onclose = () => { if (!xfer.outcome) finish("failed", "timeout", "the connection to the sender was lost"); };
}

setInterval(() => core?.tick(), 200);
$("accept").onclick = doAccept;
$("reject").onclick = () => core?.reject("declined by the user");
$("cancel").addEventListener("click", () => { if (xfer.role === "receiver") core ? core.cancel() : finish("cancelled", "user_cancelled", "cancelled by the user"); });
$("join").onclick = () => join($("code-input").value);
const code = params.get("code") || decodeURIComponent(location.hash.slice(1));
if (code) join(code);
else {
  $("join-box").classList.remove("hidden");
  startSendPage();
}
