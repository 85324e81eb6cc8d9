// The page's no_route diagnosis: each cause from the stats a page would see, in the
// CLI's order (pipeline/connection/diagnostics.py), and the text the page shows.
import { test } from "node:test";
import assert from "node:assert/strict";
import { explainNoRoute, observationFromStats, isPrivateAddress, noRouteText, diagnoseNoRoute } from "../noroute.js";

const local = (candidateType, address = "192.168.1.5") => ({ type: "local-candidate", candidateType, address });
const remote = (candidateType, address) => ({ type: "remote-candidate", candidateType, address });
const pair = (requestsReceived, responsesReceived) => ({ type: "candidate-pair", requestsReceived, responsesReceived });
const cause = (stats, stun = true) => explainNoRoute(observationFromStats(stats, stun)).cause;

test("each cause from what the page saw", () => {
  assert.equal(cause([remote("host", "10.0.0.2")]), "no_local_address");
  assert.equal(cause([local("host")]), "peer_no_address");
  assert.equal(cause([local("host"), remote("host", "10.0.0.2")], false), "no_stun_different_networks");
  assert.equal(cause([local("host"), remote("host", "10.0.0.2"), pair(1, 0)]), "stun_unreachable");
  assert.equal(cause([local("host"), remote("srflx", "203.0.113.9")]), "udp_blocked");
  assert.equal(cause([local("host"), remote("host", "10.0.0.2")]), "stun_unreachable");
  assert.equal(cause([local("host"), local("srflx", "198.51.100.1"), remote("host", "10.0.0.2")]), "peer_no_public_address");
  const both = [local("host"), local("srflx", "198.51.100.1"), remote("host", "10.0.0.2"), remote("srflx", "203.0.113.9")];
  assert.equal(cause([...both, pair(3, 0)]), "peer_filters");
  assert.equal(cause([...both, pair(0, 2)]), "we_filter");
  assert.equal(cause([...both, pair(0, 0)]), "symmetric_nat_both");
  assert.equal(cause([...both, pair(1, 1)]), "unknown");
});

test("checks on any pair count, and a candidate type is listed once", () => {
  const obs = observationFromStats([local("host"), local("host", "10.1.1.1"), pair(0, 0), pair(2, 0)], true);
  assert.deepEqual(obs.local_types, ["host"]);
  assert.equal(obs.checks_from_peer, true);
  assert.equal(obs.our_checks_answered, false);
});

test("private addresses, mDNS names included; public ones are not", () => {
  for (const a of ["10.1.2.3", "172.16.0.1", "172.31.255.1", "192.168.0.9", "100.64.0.1", "169.254.1.1", "127.0.0.1",
    "fd00::1", "fe80::1", "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab.local"]) assert.equal(isPrivateAddress(a), true, a);
  for (const a of ["172.32.0.1", "8.8.8.8", "100.128.0.1", "2001:db8::1", "203.0.113.9"]) assert.equal(isPrivateAddress(a), false, a);
});

test("the shown text says what was seen, what is likely, what to do, and the cause", () => {
  const text = noRouteText(explainNoRoute(observationFromStats([local("host"), remote("host", "10.0.0.2")], false)));
  assert.match(text, /^What we saw: No STUN server was configured/);
  assert.match(text, /Most likely: The two devices are on different networks/);
  assert.match(text, /What you can do:\n {2}- Give both sides a STUN server/);
  assert.match(text, /\(cause: no_stun_different_networks\)$/);
});

test("a page that cannot read its stats gets 'unknown', not an exception", async () => {
  assert.equal((await diagnoseNoRoute(null, true)).cause, "unknown");
  const closed = { getStats: () => Promise.reject(new Error("InvalidStateError")) };
  assert.equal((await diagnoseNoRoute(closed, true)).cause, "unknown");
  const live = { getStats: async () => new Map([["a", local("host")]]) };
  assert.equal((await diagnoseNoRoute(live, true)).cause, "peer_no_address");
});
