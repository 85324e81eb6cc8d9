// Sender side of Appendix B, sans-IO like pipeline/protocol/sender.py. The shell
// asks nextChunk() for work, reads and hashes the bytes, and sends the frames.
import { decodeControl, encodeControl, frame, ProtocolError, HEADER_LEN } from "./frames.js";
import { buildManifestParts } from "./manifest.js";

const MIN_CHUNK = 1024;
const RTO_MS = 2000, RTO_MAX_MS = 30000;

export class SenderCore {
  constructor({ session, files, maxMessageSize, chunkSize, window = 128, send, events }) {
    Object.assign(this, { session, files, maxMessageSize, configuredChunk: chunkSize, window, send, events });
    this.state = "hello";
    this.nextSeq = 0;
    this.cum = 0;
    this.unacked = new Map(); // seq -> {fileId, chunkIndex, last}
    this.sacked = new Set();
    this.cursor = { fileId: 0, chunkIndex: 0 };
    this.fileEndSent = new Set();
    this.verdicts = new Map();
    this.outcome = null;
    this.rto = RTO_MS;
    this.progressAt = Date.now();
    this.missingCount = new Map();
  }

  sendFrame(t, fields) { this.send(encodeControl(frame(t, fields))); }

  open() {
    this.sendFrame("hello", { v: 1, role: "sender", session: this.session, max_message_size: this.maxMessageSize, agent: "webrtc-pipeline-web/1" });
  }

  /** `frameLimit`: the smallest of both hellos and the SDP max-message-size (B.1). */
  message(data, frameLimit) {
    if (this.outcome) return;
    try {
      if (typeof data !== "string") throw new ProtocolError("protocol", "DATA frame sent to the sender");
      this.control(decodeControl(data), frameLimit);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.fail(e.code, e.message, true);
    }
  }

  control(f, frameLimit) {
    if (f.t === "cancel") return this.terminate("cancelled", f.code, `peer cancelled: ${f.message}`);
    if (f.t === "error") return this.terminate("failed", f.code, `peer reported ${f.code}: ${f.message}`);
    if (f.t === "hello" && this.state === "hello") {
      if (f.role !== "receiver") throw new ProtocolError("protocol", `peer says it is a ${f.role}, expected a receiver`);
      if (f.session !== this.session) throw new ProtocolError("protocol", "peer's session does not match ours");
      const limit = Math.min(frameLimit, f.max_message_size) - HEADER_LEN;
      this.chunkSize = Math.min(this.configuredChunk, limit - (limit % MIN_CHUNK));
      if (this.chunkSize < MIN_CHUNK) throw new ProtocolError("protocol", `max_message_size ${f.max_message_size} is too small for DATA frames`);
      for (const part of buildManifestParts(this.files, this.chunkSize)) this.send(encodeControl(part));
      this.state = "offered";
      return;
    }
    if (f.t === "accept" && this.state === "offered") {
      if (f.window) this.window = Math.min(this.window, f.window);
      this.state = "streaming";
      this.progressAt = Date.now();
      this.events.wake();
      return;
    }
    if (f.t === "reject" && this.state === "offered") return this.terminate("rejected", f.code, `receiver declined: ${f.message}`);
    if (f.t === "ack" && (this.state === "streaming" || this.state === "draining")) return this.onAck(f);
    if (f.t === "file_result" && (this.state === "streaming" || this.state === "draining")) {
      if (f.id >= this.files.length) throw new ProtocolError("protocol", `file_result for unknown file ${f.id}`);
      this.verdicts.set(f.id, f.status);
      this.events.verdict(f.id, f.status, f.sha256);
      return;
    }
    if (f.t === "done_ack" && this.state === "draining") {
      if (f.failed === 0 && f.verified === this.files.length) return this.terminate("completed", null, `${this.files.length} files verified`);
      const code = [...this.verdicts.values()].includes("io_error") ? "io_error" : "hash_mismatch";
      return this.terminate("failed", code, `receiver verified ${f.verified}, failed ${f.failed} files`);
    }
    throw new ProtocolError("protocol", `unexpected ${f.t} frame in state ${this.state}`);
  }

  onAck(f) {
    if (f.cum > this.nextSeq) throw new ProtocolError("protocol", `ack covers seq ${f.cum} never sent`);
    if (f.cum < this.cum) return; // stale (docs/protocol.md)
    if (f.cum > this.cum) {
      for (let s = this.cum; s < f.cum; s++) this.unacked.delete(s);
      this.cum = f.cum;
      this.progressAt = Date.now();
      this.rto = RTO_MS;
    }
    this.sacked = new Set();
    for (const [a, b] of f.sack ?? []) for (let s = a; s < b; s++) if (this.unacked.has(s)) this.sacked.add(s);
    // Fast retransmit: missing below a sacked frame for 3 consecutive acks (B.5).
    const highest = f.sack?.length ? f.sack[f.sack.length - 1][1] : 0;
    for (const seq of this.unacked.keys()) {
      if (seq >= highest || this.sacked.has(seq)) { this.missingCount.delete(seq); continue; }
      const n = (this.missingCount.get(seq) ?? 0) + 1;
      this.missingCount.set(seq, n);
      if (n === 3) this.events.retransmit(seq, this.unacked.get(seq));
    }
    this.events.wake();
    this.maybeDone();
  }

  /** The next new chunk to send, or null (window full, or everything is out). */
  nextChunk() {
    if (this.state !== "streaming" || this.nextSeq >= this.cum + this.window) return null;
    const c = this.cursor;
    while (c.fileId < this.files.length && c.chunkIndex * this.chunkSize >= this.files[c.fileId].size) {
      if (this.files[c.fileId].size === 0) return { empty: true, fileId: c.fileId++ };
      c.fileId += 1; c.chunkIndex = 0;
    }
    if (c.fileId >= this.files.length) return null;
    const size = this.files[c.fileId].size;
    const offset = c.chunkIndex * this.chunkSize;
    const length = Math.min(this.chunkSize, size - offset);
    const chunk = { fileId: c.fileId, chunkIndex: c.chunkIndex, seq: this.nextSeq++, offset, length, last: offset + length === size };
    this.unacked.set(chunk.seq, chunk);
    c.chunkIndex += 1;
    return chunk;
  }

  /** The shell finished reading (and hashing) a file: announce its digest. */
  fileRead(fileId, sha256) {
    const f = this.files[fileId];
    this.fileEndSent.add(fileId);
    this.sendFrame("file_end", { id: fileId, size: f.size, chunks: Math.ceil(f.size / this.chunkSize), sha256 });
    this.maybeDone();
  }

  maybeDone() {
    if (this.state === "streaming" && this.fileEndSent.size === this.files.length && this.cum === this.nextSeq) {
      this.state = "draining";
      this.progressAt = Date.now();
      this.sendFrame("done", { files: this.files.length, bytes: this.files.reduce((n, f) => n + f.size, 0) });
    }
  }

  /** Timer (every 200 ms): retransmission timeout without progress in cum (B.5). */
  tick() {
    if (this.outcome || Date.now() - this.progressAt < this.rto) return;
    this.progressAt = Date.now();
    this.rto = Math.min(this.rto * 2, RTO_MAX_MS);
    if (this.state === "streaming" && this.unacked.has(this.cum)) this.events.retransmit(this.cum, this.unacked.get(this.cum));
    else if (this.state === "draining") this.sendFrame("done", { files: this.files.length, bytes: this.files.reduce((n, f) => n + f.size, 0) });
  }

  fail(code, message, tellPeer) {
    if (this.outcome) return;
    if (tellPeer) this.sendFrame("error", { code, message: message.slice(0, 32768) });
    this.terminate("failed", code, message);
  }

  cancel() {
    if (this.outcome) return;
    this.sendFrame("cancel", { code: "user_cancelled", message: "cancelled by the user" });
    this.terminate("cancelled", "user_cancelled", "cancelled by the user");
  }

  terminate(outcome, code, message) {
    if (this.outcome) return;
    this.outcome = outcome;
    this.state = "done";
    this.events.terminal(outcome, code, message);
  }
}
