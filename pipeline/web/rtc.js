// Signaling (Appendix C over WebSocket /ws) and the peer connection: the browser
// receiver answers the sender's offer; ICE is gathered fully before the answer.
export class Room {
  constructor(url, code, role, onSignal, onEvent) {
    this.ws = new WebSocket(url);
    this.ws.onopen = () => this.ws.send(JSON.stringify({ t: "join", room: code, role }));
    this.ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.t === "signal") onSignal(msg.data);
      else onEvent(msg);
    };
    this.ws.onclose = () => onEvent({ t: "closed" });
  }
  signal(data) { this.ws.send(JSON.stringify({ t: "signal", data })); }
  close() { try { this.ws.close(); } catch { /* already closed */ } }
}

export function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, 5000); // an unreachable STUN server must not hold the answer forever
  });
}

/** Candidate types and the selected pair with its RTT, from getStats (A.4). */
export async function diagnostics(pc) {
  const out = { candidate_types_local: [], candidate_types_remote: [], selected_pair: null, rtt_ms: null };
  if (!pc) return out;
  const stats = await pc.getStats();
  const byId = new Map();
  stats.forEach((s) => byId.set(s.id, s));
  for (const s of byId.values()) {
    const list = s.type === "local-candidate" ? out.candidate_types_local : s.type === "remote-candidate" ? out.candidate_types_remote : null;
    if (list && !list.includes(s.candidateType)) list.push(s.candidateType);
    if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) {
      const l = byId.get(s.localCandidateId), r = byId.get(s.remoteCandidateId);
      out.selected_pair = { local: `${l?.candidateType} ${l?.address}:${l?.port}`, remote: `${r?.candidateType} ${r?.address}:${r?.port}` };
      if (s.currentRoundTripTime !== undefined) out.rtt_ms = Math.round(s.currentRoundTripTime * 1000);
    }
  }
  return out;
}

/**
 * Start a channel's protocol once, on its open event or on its first message, whichever
 * comes first, and hand start() a send() that holds frames while the channel is still
 * "connecting" instead of dropping them. Chromium can deliver the first message of a
 * channel the other peer announced before its readyState turns "open"; a hello sent
 * then used to be dropped, and both peers waited for each other forever.
 */
export function startOnOpen(ch, start, onMessage) {
  const pending = [];
  let started = false;
  let polling = false;
  const flush = () => {
    while (pending.length && ch.readyState === "open") ch.send(pending.shift());
    if (ch.readyState !== "connecting") pending.length = 0;
    if (pending.length && !polling) { // no open event is promised once a message came first
      polling = true;
      setTimeout(() => { polling = false; flush(); }, 20);
    }
  };
  const send = (data) => {
    if (ch.readyState === "connecting") { pending.push(data); flush(); return; }
    flush();
    if (ch.readyState === "open") ch.send(data);
  };
  const begin = () => { if (!started) { started = true; start(send); } };
  ch.onopen = () => { begin(); flush(); };
  ch.onmessage = (e) => {
    if (!started && ch.readyState !== "open") console.info(`channel ${ch.label}: first message while ${ch.readyState}`);
    begin();
    onMessage(e.data);
  };
  if (ch.readyState === "open") begin();
}
