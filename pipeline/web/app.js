// The receive page's shell: DOM, signaling, the DataChannel, hashing (hash-wasm)
// and the OPFS sink. Protocol decisions live in receiver.js.
import { ReceiverCore } from "./receiver.js";
import { Room, gathered, diagnostics, NO_ROUTE_ADVICE } from "./rtc.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ICE_DEADLINE_MS = Number(params.get("ice_timeout") || 20) * 1000;
const MAX_MESSAGE_SIZE = 262144;
let resolveFinished;
const xfer = window.xfer = {
  role: "receiver", state: "idle", code: null, outcome: null, error_code: null, message: null,
  files: [], bytes: 0,
  connection: { candidate_types_local: [], candidate_types_remote: [], selected_pair: null, rtt_ms: null, max_message_size: 65536 },
  finished: new Promise((r) => { resolveFinished = r; }),
};

const human = (n) => n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : n < 2 ** 30 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 2 ** 30).toFixed(2)} GiB`;

let pc = null, channel = null, room = null, core = null, opfs = null, startedAt = 0, totalBytes = 0;
const sinks = new Map(); // file id -> {writable, hasher, next, pending: Map(chunk -> {seq, payload}), handle}
const fileEnds = new Map();

function render() {
  const done = xfer.files.filter((f) => f.status === "verified").length;
  const secs = (performance.now() - startedAt) / 1000;
  const rate = startedAt && secs > 0 ? xfer.bytes / secs : 0;
  const eta = rate > 0 ? Math.round((totalBytes - xfer.bytes) / rate) : null;
  $("progress").textContent = totalBytes || xfer.files.length
    ? `${human(xfer.bytes)} of ${human(totalBytes)} · ${human(rate)}/s · ETA ${eta ?? "?"} s · files done ${done}/${xfer.files.length}` : "";
  $("files-table").tBodies[0].replaceChildren(...xfer.files.map((f) => {
    const tr = document.createElement("tr");
    for (const t of [f.path, human(f.size), f.status]) tr.appendChild(document.createElement("td")).textContent = t;
    tr.dataset.status = f.status;
    return tr;
  }));
}

async function refreshDetails() {
  Object.assign(xfer.connection, await diagnostics(pc).catch(() => ({})));
  $("details-text").textContent = `state: ${xfer.state}\nICE: ${pc?.iceConnectionState ?? "-"}\n${JSON.stringify(xfer.connection, null, 1)}`
    + (xfer.outcome === "no_route" ? `\n\n${NO_ROUTE_ADVICE}` : "");
}

function finish(outcome, code, message) {
  if (xfer.outcome) return;
  Object.assign(xfer, { outcome, error_code: code ?? null, message, state: "done" });
  const words = { completed: "Completed", failed: "Failed", rejected: "Rejected", cancelled: "Cancelled", no_route: "No route" }[outcome];
  $("outcome").textContent = `${words}${code && outcome !== "completed" ? ` (${code})` : ""}: ${message}`;
  $("cancel").classList.add("hidden");
  $("offer-box").classList.add("hidden");
  for (const [id, s] of sinks) if (xfer.files[id].status !== "verified") discard(id, s);
  refreshDetails().finally(() => {
    render();
    resolveFinished({ ...xfer, finished: undefined });
    // Keep the channel a moment so our last frames (done_ack, error) get out.
    setTimeout(() => { pc?.close(); room?.close(); }, outcome === "completed" ? 5000 : 1000);
  });
}

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
  xfer.files[id].status = "io_error";
  core.verdict(id, "io_error", null);
  core.fail("io_error", `cannot write ${xfer.files[id].path}: ${e.message ?? e}`, true);
}

async function maybeVerify(id) {
  const s = sinks.get(id), end = fileEnds.get(id), f = xfer.files[id];
  if (!s || !end || s.verifying || s.next < end.chunks) return;
  s.verifying = true;
  await s.queue;
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
  await s.writable.close();
  f.status = "verified";
  core.verdict(id, "verified", digest);
  deliver(id, f, s.handle);
  render();
  maybeDoneAck();
}

async function deliver(id, f, handle) {
  // The File from OPFS is backed by disk, not memory; only verified files get here.
  const file = await handle.getFile();
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
  totalBytes = total;
  xfer.files = files.map((f) => ({ id: f.id, path: f.path, size: f.size, status: "pending", sha256: null }));
  xfer.state = "deciding";
  const top = [...new Set(files.map((f) => f.path.split("/")[0]))];
  $("offer").textContent = `${files.length} files, ${human(total)}: ${top.slice(0, 10).join(", ")}${top.length > 10 ? ", …" : ""}`;
  $("offer-box").classList.remove("hidden");
  render();
  if (params.get("yes") === "1") doAccept();
}

async function doAccept() {
  if (xfer.state !== "deciding") return;
  $("offer-box").classList.add("hidden");
  opfs = await navigator.storage.getDirectory();
  for (const f of xfer.files) sinks.set(f.id, await openSink(f.id));
  startedAt = performance.now();
  xfer.state = "transferring";
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
    pc = new RTCPeerConnection({ iceServers: (params.get("stun") || "").split(",").filter(Boolean).map((u) => ({ urls: u })) });
    xfer.state = "connecting";
    const deadline = setTimeout(() => { if (!channel || channel.readyState !== "open") finish("no_route", "no_route", NO_ROUTE_ADVICE); }, ICE_DEADLINE_MS);
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
  ch.onopen = () => {
    xfer.state = "open";
    const sctp = pc.sctp?.maxMessageSize || 65536;
    xfer.connection.max_message_size = Math.min(sctp, MAX_MESSAGE_SIZE);
    core = new ReceiverCore({
      session: xfer.code, maxMessageSize: MAX_MESSAGE_SIZE, window: Number(params.get("window") || 256),
      send: (text) => { if (ch.readyState === "open") ch.send(text); },
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
  };
  ch.onmessage = (e) => core?.message(e.data);
  ch.onclose = () => { if (!xfer.outcome) finish("failed", "timeout", "the connection to the sender was lost"); };
}

setInterval(() => { core?.tick(); if (xfer.state === "transferring") render(); }, 200);
setInterval(refreshDetails, 2000);
$("accept").onclick = doAccept;
$("reject").onclick = () => core?.reject("declined by the user");
$("cancel").onclick = () => core ? core.cancel() : finish("cancelled", "user_cancelled", "cancelled by the user");
$("join").onclick = () => join($("code-input").value);
const code = params.get("code") || decodeURIComponent(location.hash.slice(1));
if (code) join(code); else $("join-box").classList.remove("hidden");
