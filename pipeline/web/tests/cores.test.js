// SenderCore and ReceiverCore (sans-IO) talking to each other in memory, the way
// the page's shells drive them: a whole session, a lost frame, cancel, reject.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { SenderCore } from "../sender.js";
import { ReceiverCore } from "../receiver.js";
import { HEADER_LEN, packHeader } from "../frames.js";

function session({ sizes, drop = () => false, window = 8 }) {
  const content = sizes.map((n, i) => Buffer.alloc(n, i + 1));
  const files = sizes.map((size, id) => ({ id, path: `d/f${id}`, size }));
  const wire = [];
  const log = { sender: null, receiver: null, retransmits: 0, received: sizes.map(() => []) };
  let n = 0;
  const toReceiver = (m) => { if (!drop(m, n++)) wire.push(["r", m]); };
  const hashes = new Map();
  const sender = new SenderCore({
    session: "1-a-b-c", files, maxMessageSize: 65536, chunkSize: 1024, window,
    send: toReceiver,
    events: {
      wake: () => {},
      retransmit: (seq, c) => { log.retransmits++; toReceiver(frameOf(c)); },
      verdict: () => {},
      terminal: (o, code) => { log.sender = [o, code]; },
    },
  });
  const frameOf = (c) => {
    const f = new Uint8Array(HEADER_LEN + c.length);
    packHeader(f, c.fileId, c.chunkIndex, c.seq, c.last, c.length);
    f.set(content[c.fileId].subarray(c.offset, c.offset + c.length), HEADER_LEN);
    return f.buffer;
  };
  const receiver = new ReceiverCore({
    session: "1-a-b-c", maxMessageSize: 65536, window,
    send: (m) => wire.push(["s", m]),
    events: {
      manifest: () => {},
      chunk: (d) => { log.received[d.fileId][d.chunkIndex] = Buffer.from(d.payload); receiver.stored(d.seq); },
      fileEnd: (f) => {
        const got = createHash("sha256").update(Buffer.concat(log.received[f.id].filter(Boolean))).digest("hex");
        receiver.verdict(f.id, got === f.sha256 ? "verified" : "mismatch", got);
        hashes.set(f.id, got === f.sha256);
      },
      done: () => receiver.doneAck([...hashes.values()].filter(Boolean).length, [...hashes.values()].filter((v) => !v).length) || receiver.terminate("completed", null, "ok"),
      terminal: (o, code) => { log.receiver = [o, code]; },
    },
  });
  // The sender's shell: read, hash in order, send, announce file_end.
  const pump = () => {
    for (let c = sender.nextChunk(); c; c = sender.nextChunk()) {
      if (c.empty) { sender.fileRead(c.fileId, createHash("sha256").digest("hex")); continue; }
      toReceiver(frameOf(c));
      if (c.last) sender.fileRead(c.fileId, createHash("sha256").update(content[c.fileId]).digest("hex"));
    }
  };
  sender.events.wake = pump;
  sender.open();
  receiver.open();
  const run = (steps = 100000) => {
    for (let i = 0; i < steps && wire.length; i++) {
      const [to, m] = wire.shift();
      if (to === "r") receiver.message(m); else sender.message(m, 65536);
      if (wire.length) continue;
      receiver.lastAck = 0; // idle: first the receiver's 200 ms ack timer, then the sender's RTO
      receiver.tick();
      if (!wire.length) { sender.progressAt = 0; sender.tick(); }
    }
  };
  return { sender, receiver, log, run, wire };
}

test("a whole session completes on both sides, empty file included", () => {
  const s = session({ sizes: [5000, 0, 1024, 3] });
  s.run(50);
  assert.equal(s.receiver.state, "deciding");
  s.receiver.accept();
  s.run();
  assert.deepEqual(s.log.sender, ["completed", null]);
  assert.deepEqual(s.log.receiver, ["completed", null]);
  assert.equal(s.log.retransmits, 0);
});

test("a lost DATA frame is retransmitted with its seq and the files still verify", () => {
  let dropped = false;
  const s = session({ sizes: [20000], drop: (m) => {
    if (dropped || typeof m === "string" || new DataView(m).getUint32(8) !== 3) return false;
    return (dropped = true);
  } });
  s.run(50);
  s.receiver.accept();
  s.run();
  assert.ok(dropped);
  assert.ok(s.log.retransmits >= 1);
  assert.deepEqual(s.log.sender, ["completed", null]);
});

test("the window bounds the frames in flight", () => {
  const s = session({ sizes: [100000], window: 4 });
  s.run(50);
  s.receiver.accept();
  s.run(1); // accept reaches the sender, which fills its window
  const inFlight = s.wire.filter(([to, m]) => to === "r" && typeof m !== "string").length;
  assert.equal(inFlight, 4);
});

test("cancel from the receiver ends both sides cancelled; reject ends both rejected", () => {
  const s = session({ sizes: [50000] });
  s.run(50);
  s.receiver.accept();
  s.run(5);
  s.receiver.cancel();
  s.run();
  assert.deepEqual(s.log.receiver, ["cancelled", "user_cancelled"]);
  assert.deepEqual(s.log.sender, ["cancelled", "user_cancelled"]);
  const r = session({ sizes: [10] });
  r.run(50);
  r.receiver.reject("no thanks");
  r.run();
  assert.deepEqual(r.log.sender, ["rejected", "rejected"]);
});

test("DATA before accept is a protocol error sent to the peer", () => {
  const s = session({ sizes: [10] });
  s.run(50);
  const f = new Uint8Array(HEADER_LEN + 10);
  packHeader(f, 0, 0, 0, true, 10);
  s.receiver.message(f.buffer);
  s.run();
  assert.deepEqual(s.log.receiver, ["failed", "protocol"]);
  assert.deepEqual(s.log.sender, ["failed", "protocol"]);
});
