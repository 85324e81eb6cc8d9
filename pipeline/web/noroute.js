// Why no direct route was found (A.1 no_route), case by case, from what this page saw
// of ICE in getStats. The causes and their order follow the CLI's
// pipeline/connection/diagnostics.py, so both peers name a failure the same way;
// what a page cannot measure (its own NAT's port mapping) ends in "symmetric_nat_both".

const SAME_LAN = "Put both devices on the same Wi-Fi or LAN, then try again.";
const VPN = "Put both devices on one VPN (for example WireGuard or Tailscale) and connect through it.";
const OTHER_NETWORK = "Try from another network, for example a phone hotspot, on one of the two sides.";
const IPV6 = "Use IPv6 on both sides if both networks have it (it needs no NAT).";
const PORT_FORWARD = "Forward a UDP port on your router to this device (or enable UPnP/NAT-PMP), then try again.";
const PEER_PORT_FORWARD = "Ask the other person to forward a UDP port on their router (or enable UPnP/NAT-PMP).";
const ALLOW_UDP = "Allow outgoing UDP on this network (a firewall or company network may block it), or ask its administrator to.";
const CHECK_STUN = "Check the STUN server in the link (stun=stun:HOST:3478) and that the server is running.";
const CONFIGURE_STUN = "Give both sides a STUN server (the page: stun=stun:HOST:3478 in the link; the CLI: --stun) so each can learn its public address.";
const CONNECT_THIS = "Connect this device to a network (cable or Wi-Fi), then try again.";
const CONNECT_PEER = "Ask the other person to connect their device to a network (cable or Wi-Fi), then try again.";
const FIREWALL_IN = "Allow incoming UDP for this browser in the local firewall (or the router's), then try again.";

const types = (list) => (list.length ? list.join(", ") : "none");

/** True for an address no other network can reach: RFC 1918, CGNAT, ULA, link-local, mDNS. */
export function isPrivateAddress(address) {
  const a = String(address ?? "").toLowerCase();
  if (a.endsWith(".local")) return true; // Chromium hides host addresses behind mDNS names
  const v4 = a.match(/^(\d+)\.(\d+)\.\d+\.\d+$/);
  if (v4) {
    const [x, y] = [Number(v4[1]), Number(v4[2])];
    return x === 10 || x === 127 || (x === 172 && y >= 16 && y < 32) || (x === 192 && y === 168)
      || (x === 100 && y >= 64 && y < 128) || (x === 169 && y === 254);
  }
  return a.startsWith("fc") || a.startsWith("fd") || a.startsWith("fe80") || a === "::1";
}

/** The observation explainNoRoute needs, from a getStats report (any iterable of stats). */
export function observationFromStats(stats, stunConfigured) {
  const obs = {
    stun_configured: stunConfigured, local_types: [], remote_types: [],
    remote_addresses_private_only: true, checks_from_peer: false, our_checks_answered: false,
  };
  let remotes = 0;
  for (const s of stats) {
    if (s.type === "local-candidate" || s.type === "remote-candidate") {
      const list = s.type === "local-candidate" ? obs.local_types : obs.remote_types;
      if (!list.includes(s.candidateType)) list.push(s.candidateType);
      if (s.type === "remote-candidate") {
        remotes++;
        if (!isPrivateAddress(s.address ?? s.ip)) obs.remote_addresses_private_only = false;
      }
    } else if (s.type === "candidate-pair") {
      if ((s.requestsReceived ?? 0) > 0) obs.checks_from_peer = true;
      if ((s.responsesReceived ?? 0) > 0) obs.our_checks_answered = true;
    }
  }
  if (!remotes) obs.remote_addresses_private_only = false;
  return obs;
}

/** {cause, summary, likely, advice[]} for one observation; never throws. */
export function explainNoRoute(obs) {
  const hasSrflx = obs.local_types.includes("srflx");
  const peerSrflx = obs.remote_types.includes("srflx");
  const seen = `this side offered ${types(obs.local_types)}; the other side offered ${types(obs.remote_types)}`;
  const d = (cause, summary, likely, advice) => ({ cause, summary, likely, advice });
  if (!obs.local_types.length) {
    return d("no_local_address", `This side gathered no network address at all to offer (the other side offered ${types(obs.remote_types)}).`,
      "This device has no usable network address (no network connection, or the browser may not use it).", [CONNECT_THIS, SAME_LAN]);
  }
  if (!obs.remote_types.length && !obs.checks_from_peer) {
    return d("peer_no_address", `The other side offered no network address at all (this side offered ${types(obs.local_types)}), and nothing from it arrived.`,
      "The other device has no usable network address (it reports the same).", [CONNECT_PEER]);
  }
  if (!obs.stun_configured && !obs.checks_from_peer) {
    return d("no_stun_different_networks", `No STUN server was configured, so this side only offered its local network addresses (${seen}), and nothing from the other side arrived.`,
      "The two devices are on different networks and could not learn each other's public address.", [CONFIGURE_STUN, SAME_LAN, VPN]);
  }
  if (obs.stun_configured && !hasSrflx) {
    if (obs.checks_from_peer || obs.our_checks_answered) {
      return d("stun_unreachable", `The STUN server never answered, although packets from the other side did reach this device (${seen}).`,
        "UDP works here, but the STUN server is down, misspelt or unreachable, so this side could not learn its public address.", [CHECK_STUN, SAME_LAN, VPN]);
    }
    if (peerSrflx) {
      return d("udp_blocked", `The STUN server did not answer this side, while the other side reached it (${seen}); no packet from the other side arrived either.`,
        "This network blocks UDP (a firewall, a company or hotel network), so no direct connection is possible from here.", [ALLOW_UDP, OTHER_NETWORK, VPN, SAME_LAN]);
    }
    return d("stun_unreachable", `Neither side got an answer from the STUN server, so neither learned its public address (${seen}).`,
      "The STUN server is down or its address is wrong (or both networks block UDP).", [CHECK_STUN, ALLOW_UDP, SAME_LAN, VPN]);
  }
  if (obs.remote_addresses_private_only && !peerSrflx && !obs.checks_from_peer) {
    return d("peer_no_public_address", `The other side offered only private network addresses and no public one (${seen}); nothing from it arrived.`,
      "The other side could not reach a STUN server (its network blocks UDP, or it has none configured), so it cannot be reached from another network.",
      ["Ask the other person to use the same STUN server and to allow outgoing UDP on their network.", SAME_LAN, VPN]);
  }
  if (obs.checks_from_peer && !obs.our_checks_answered) {
    return d("peer_filters", `Connectivity checks from the other side reached this device, but none of ours was answered (${seen}).`,
      "The other side's router or firewall drops the packets this side sends.", [PEER_PORT_FORWARD, IPV6, VPN, OTHER_NETWORK]);
  }
  if (obs.our_checks_answered && !obs.checks_from_peer) {
    return d("we_filter", `The other side answered our connectivity checks, but none of its own checks reached this device (${seen}).`,
      "A firewall on this device or this router drops incoming UDP from the other side.", [FIREWALL_IN, PORT_FORWARD, VPN, OTHER_NETWORK]);
  }
  if (!obs.checks_from_peer && !obs.our_checks_answered) {
    return d("symmetric_nat_both", `Both sides learned their public addresses, but no connectivity check got through in either direction (${seen}).`,
      "Both sides are behind routers that drop unexpected incoming UDP, at least one of them a symmetric NAT (common on mobile and company networks). Only a relay server would help, and this tool never uses one.",
      [IPV6, VPN, PORT_FORWARD, OTHER_NETWORK, SAME_LAN]);
  }
  return d("unknown", `Connectivity checks got through in both directions, yet no connection was agreed (${seen}).`,
    "The path is unstable (heavy packet loss) or it broke while the connection was being set up.", ["Try again.", SAME_LAN, VPN, OTHER_NETWORK]);
}

/** The diagnosis as the page shows it: what was seen, most likely, what to do. */
export function noRouteText(diagnosis) {
  return [`What we saw: ${diagnosis.summary}`, `Most likely: ${diagnosis.likely}`, "What you can do:",
    ...diagnosis.advice.map((a) => `  - ${a}`), `(cause: ${diagnosis.cause})`].join("\n");
}

/** Read pc's stats and explain; a page that cannot read them gets "unknown", never a throw. */
export async function diagnoseNoRoute(pc, stunConfigured) {
  try {
    return explainNoRoute(observationFromStats((await pc.getStats()).values(), stunConfigured));
  } catch { // no connection yet, or closed under us: nothing was seen
    return { cause: "unknown", summary: "This page could not read its connection's state.",
      likely: "No direct network path was found between the two devices (no relay is ever used).",
      advice: [SAME_LAN, VPN, OTHER_NETWORK] };
  }
}
