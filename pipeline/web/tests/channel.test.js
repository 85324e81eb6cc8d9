// startOnOpen against a fake RTCDataChannel: Chromium can hand an announced channel's
// first message to the page before readyState is "open"; nothing sent then may be lost.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startOnOpen } from "../rtc.js";

class FakeChannel {
  constructor(readyState) { this.readyState = readyState; this.sent = []; }
  send(data) {
    if (this.readyState !== "open") throw new Error(`InvalidStateError: send while ${this.readyState}`);
    this.sent.push(data);
  }
  open() { this.readyState = "open"; this.onopen?.(); }
  message(data) { this.onmessage?.({ data }); }
}

test("an already open channel starts at once and sends straight through", () => {
  const ch = new FakeChannel("open");
  let starts = 0;
  startOnOpen(ch, (send) => { starts++; send("hello"); }, () => {});
  assert.equal(starts, 1);
  assert.deepEqual(ch.sent, ["hello"]);
  ch.open(); // a late open event does not start twice
  assert.equal(starts, 1);
});

test("a first message before open starts the protocol and its hello waits for open", () => {
  const ch = new FakeChannel("connecting");
  const got = [];
  startOnOpen(ch, (send) => send("hello"), (data) => got.push(data));
  ch.message("their hello");
  assert.deepEqual(got, ["their hello"]);
  assert.deepEqual(ch.sent, []);
  ch.open();
  assert.deepEqual(ch.sent, ["hello"]);
});

test("frames held while connecting go out in order before the next one", () => {
  const ch = new FakeChannel("connecting");
  let send;
  startOnOpen(ch, (s) => { send = s; s("a"); }, () => {});
  ch.message("x");
  send("b");
  ch.readyState = "open"; // open without an event yet: the next send flushes first
  send("c");
  assert.deepEqual(ch.sent, ["a", "b", "c"]);
});

test("with no open event at all, the held hello still goes out once the state is open", async () => {
  const ch = new FakeChannel("connecting");
  startOnOpen(ch, (send) => send("hello"), () => {});
  ch.message("x");
  ch.readyState = "open";
  await new Promise((ok) => setTimeout(ok, 60));
  assert.deepEqual(ch.sent, ["hello"]);
});

test("a channel that closes while connecting drops what it held and never throws", async () => {
  const ch = new FakeChannel("connecting");
  let send;
  startOnOpen(ch, (s) => { send = s; s("hello"); }, () => {});
  ch.message("x");
  ch.readyState = "closed";
  await new Promise((ok) => setTimeout(ok, 60));
  send("late");
  assert.deepEqual(ch.sent, []);
});
