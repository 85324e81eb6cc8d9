// Receiver side of Appendix B, sans-IO like pipeline/protocol/receiver.py: frames
// in, frames and events out. The shell (app.js) owns the channel, hashing and disk.
import { decodeControl, decodeData, encodeControl, frame, ProtocolError, HEADER_LEN } from "./frames.js";
import { ManifestAssembler } from "./manifest.js";

export class ReceiverCore {
  constructor({ session, maxMessageSize, window = 256, send, events }) {
    Object.assign(this, { session, maxMessageSize, window, send, events });
    this.state = "hello";
    this.cum = 0;
    this.beyond = new Set(); // seqs received above cum, not yet contiguous
    this.seen = new Set();
    this.outcome = null;
  }

  sendFrame(t, fields) { this.send(encodeControl(frame(t, fields))); }

  open() {
    this.sendFrame("hello", { v: 1, role: "receiver", session: this.session, max_message_size: this.maxMessageSize, agent: "webrtc-pipeline-web/1" });
  }

  /** One DataChannel message (string = control, ArrayBuffer = DATA). */
  message(data) {
    if (this.outcome) return;
    try {
      if (typeof data === "string") this.control(decodeControl(data));
      else this.data(decodeData(data));
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.fail(e.code, e.message, true);
    }
  }

  control(f) {
    if (f.t === "cancel") return this.terminate("cancelled", f.code, `peer cancelled: ${f.message}`);
    if (f.t === "error") return this.terminate("failed", f.code, `peer reported ${f.code}: ${f.message}`);
    if (f.t === "hello" && this.state === "hello") {
      if (f.role !== "sender") throw new ProtocolError("protocol", `peer says it is a ${f.role}, expected a sender`);
      if (f.session !== this.session) throw new ProtocolError("protocol", "peer's session does not match ours");
      this.state = "manifest";
      this.assembler = new ManifestAssembler({ maxChunkSize: this.maxMessageSize - HEADER_LEN });
      return;
    }
    if (f.t === "manifest" && this.state === "manifest") {
      const files = this.assembler.add(f);
      if (files) {
        this.files = files;
        this.chunkSize = f.chunk_size;
        this.state = "deciding";
        this.events.manifest(files, this.assembler.totalBytes);
      }
      return;
    }
    if (f.t === "file_end" && this.state === "receiving") return this.events.fileEnd(f);
    if (f.t === "done" && this.state === "receiving") { this.doneSeen = f; return this.events.done(f); }
    throw new ProtocolError("protocol", `unexpected ${f.t} frame in state ${this.state}`);
  }

  data(d) {
    if (this.state !== "receiving") throw new ProtocolError("protocol", `DATA frame before accept (state ${this.state})`);
    const file = this.files[d.fileId];
    if (!file) throw new ProtocolError("protocol", `DATA for file ${d.fileId}, manifest has ${this.files.length}`);
    const chunks = Math.ceil(file.size / this.chunkSize);
    if (d.chunkIndex >= chunks) throw new ProtocolError("protocol", `chunk ${d.chunkIndex} beyond file ${d.fileId}`);
    const expected = d.chunkIndex === chunks - 1 ? file.size - d.chunkIndex * this.chunkSize : this.chunkSize;
    if (d.payload.length !== expected) throw new ProtocolError("protocol", `chunk of ${d.payload.length} bytes where ${expected} expected`);
    if (d.last !== (d.chunkIndex === chunks - 1)) throw new ProtocolError("protocol", "LAST flag does not match the file's final chunk");
    if (d.seq < this.cum || this.beyond.has(d.seq) || this.seen.has(d.seq)) return this.ack(); // duplicate: re-ack
    if (d.seq >= this.cum + this.window) throw new ProtocolError("protocol", `DATA seq ${d.seq} outside the window`);
    this.seen.add(d.seq);
    this.events.chunk(d); // the shell calls stored(seq) once written and hashed
  }

  accept() { this.state = "receiving"; this.sendFrame("accept", { window: this.window }); this.lastAck = Date.now(); }
  reject(message) { this.sendFrame("reject", { code: "rejected", message }); this.terminate("rejected", "rejected", message); }

  stored(seq) {
    this.seen.delete(seq);
    this.beyond.add(seq);
    const before = this.cum;
    while (this.beyond.delete(this.cum)) this.cum += 1;
    if (this.cum - before && (this.cum % Math.max(1, this.window >> 2) === 0 || Date.now() - this.lastAck > 200)) this.ack();
    if (this.beyond.size) this.ack(); // a gap: tell the sender now
  }

  /** Timer tick from the shell (every 200 ms): ack while receiving, keepalive 1 s. */
  tick() { if (this.state === "receiving" && Date.now() - this.lastAck >= 200) this.ack(); }

  ack() {
    this.lastAck = Date.now();
    const sack = [...this.beyond].sort((a, b) => a - b).reduce((r, s) => {
      const last = r[r.length - 1];
      if (last && last[1] === s) last[1] = s + 1; else r.push([s, s + 1]);
      return r;
    }, []).slice(0, 64);
    this.sendFrame("ack", { cum: this.cum, sack: sack.length ? sack : undefined });
  }

  verdict(id, status, sha256) { this.sendFrame("file_result", { id, status, sha256 }); }
  doneAck(verified, failed) { this.sendFrame("done_ack", { verified, failed }); }

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
