"""Why there is no route: from ICE observations to advice (Appendix A.4).

Pure reasoning: no aiortc, no I/O.  :func:`pipeline.connection.ice_probe.observe`
fills an :class:`Observation` from a live peer connection; this module turns it
into a :class:`Diagnosis` a non-expert can act on.

The decision order (first match wins) and the signal each step relies on::

    this side gathered no candidate at all    -> no_local_address
    the peer offered none, and none arrived   -> peer_no_address
    STUN not configured, nothing arrived      -> no_stun_different_networks
    STUN configured, no srflx candidate:
        yet UDP reached the peer (checks)     -> stun_unreachable
        the peer did get a srflx              -> udp_blocked
        neither side got one                  -> stun_unreachable
    peer offered only private addresses       -> peer_no_public_address
    peer's checks arrived, ours unanswered    -> peer_filters
    ours answered, none of theirs arrived     -> we_filter
    nothing in either direction:
        we are not behind a symmetric NAT     -> peer_filters
        we measured that we are               -> symmetric_nat_here
        we cannot tell                        -> symmetric_nat_both
    anything else                             -> unknown

Whether "we are behind a symmetric NAT" is known depends on two STUN servers
(distinct addresses) answering the same socket: see ``ice_probe.probe_nat_mapping``.

"Nothing in either direction" is what two NATs that drop unsolicited UDP look
like when at least one of them picks a new port per destination (symmetric):
only a relay (TURN) would help, and this tool never uses one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Final

CAUSES: Final[tuple[str, ...]] = (
    "no_local_address",
    "peer_no_address",
    "udp_blocked",
    "stun_unreachable",
    "symmetric_nat_both",
    "symmetric_nat_here",
    "peer_filters",
    "we_filter",
    "no_stun_different_networks",
    "peer_no_public_address",
    "unknown",
)

# Advice lines shared by several causes, in words a non-expert can act on.
_SAME_LAN: Final = (
    "Connect both computers to the same local network (same Wi-Fi or router) and try again."
)
_IPV6: Final = (
    "If both networks offer IPv6, enable it on both sides: IPv6 usually needs no NAT traversal."
)
_VPN: Final = (
    "Put both computers on one VPN (for example WireGuard or Tailscale) and connect through it."
)
_OTHER_NETWORK: Final = (
    "Try from another network, for example a phone hotspot, on one of the two sides."
)
_PORT_FORWARD: Final = (
    "Forward a UDP port on your router to this computer (or enable UPnP/NAT-PMP), then try again."
)
_PEER_PORT_FORWARD: Final = (
    "Ask the other person to forward a UDP port on their router to their computer "
    "(or enable UPnP/NAT-PMP)."
)
_ALLOW_UDP: Final = (
    "Allow outgoing UDP on this network (a firewall or company network may block it), "
    "or ask its administrator to."
)
_CHECK_STUN: Final = (
    "Check the STUN server address given with --stun (host and port, usually 3478) "
    "and that the server is running."
)
_CONFIGURE_STUN: Final = (
    "Configure a STUN server on both sides with --stun stun:HOST:3478 so each side "
    "can learn its public address."
)
_CONNECT_THIS: Final = (
    "Connect this computer to a network (check the cable or Wi-Fi; `ip addr` should list "
    "an address besides 127.0.0.1), then try again."
)
_CONNECT_PEER: Final = (
    "Ask the other person to connect their computer to a network (cable or Wi-Fi), "
    "then try again."
)
_CONTAINER: Final = (
    "In a container or network namespace, give it a network interface with an address "
    "(not only lo); two programs inside the same one connect over loopback."
)
_LOOPBACK_UP: Final = (
    "For a transfer between two programs on this machine, bring the loopback interface "
    "up (`ip link set lo up`): both sides then offer 127.0.0.1."
)
_FIREWALL_IN: Final = (
    "Allow incoming UDP for this program in the local firewall (or the router's "
    "firewall), then try again."
)


@dataclass(frozen=True)
class Observation:
    """What one side saw of ICE when no route was found.

    ``stun_answered`` is None when no STUN server was configured;
    ``local_symmetric_nat`` is None when it could not be measured (it needs
    two STUN server addresses answering the same socket).
    """

    stun_configured: bool
    stun_answered: bool | None
    local_types: list[str]
    remote_types: list[str]
    remote_addresses_private_only: bool
    checks_from_peer: bool
    our_checks_answered: bool
    local_symmetric_nat: bool | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Diagnosis:
    """One cause, what was seen, what it most likely means, what to do."""

    cause: str
    summary: str
    likely: str
    advice: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [
            "No direct connection could be made.",
            f"What we saw: {self.summary}",
            f"Most likely: {self.likely}",
        ]
        if self.advice:
            lines.append("What you can do:")
            lines.extend(f"  - {line}" for line in self.advice)
        lines.append(f"(cause: {self.cause})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "cause": self.cause,
            "summary": self.summary,
            "likely": self.likely,
            "advice": list(self.advice),
        }


def _types(types: list[str]) -> str:
    return ", ".join(types) if types else "none"


def explain_no_route(obs: Observation) -> Diagnosis:
    """Explain a failed ICE negotiation (``no_route``, Appendix A.1)."""
    has_srflx = "srflx" in obs.local_types
    peer_srflx = "srflx" in obs.remote_types
    seen = (
        f"this side offered {_types(obs.local_types)}; "
        f"the other side offered {_types(obs.remote_types)}"
    )

    if not obs.local_types:
        return Diagnosis(
            cause="no_local_address",
            summary=(
                "This side gathered no network address at all to offer "
                f"(the other side offered {_types(obs.remote_types)})."
            ),
            likely=(
                "This machine has no usable network address: no interface with an IPv4 "
                "address or a global IPv6 address is up (only a loopback interface that is "
                "down, or an IPv6 link-local address, which WebRTC does not use)."
            ),
            advice=[_CONNECT_THIS, _CONTAINER, _LOOPBACK_UP],
        )

    if not obs.remote_types and not obs.checks_from_peer:
        return Diagnosis(
            cause="peer_no_address",
            summary=(
                f"The other side offered no network address at all (this side offered "
                f"{_types(obs.local_types)}), and nothing from it arrived."
            ),
            likely="The other computer has no usable network address (it reports the same).",
            advice=[_CONNECT_PEER, _CONTAINER],
        )

    if not obs.stun_configured and not obs.checks_from_peer:
        return Diagnosis(
            cause="no_stun_different_networks",
            summary=(
                "No STUN server was configured, so this side only offered its local "
                f"network addresses ({seen}), and nothing from the other side arrived."
            ),
            likely=(
                "The two computers are on different networks and could not learn each "
                "other's public address."
            ),
            advice=[_CONFIGURE_STUN, _SAME_LAN, _VPN],
        )

    if obs.stun_configured and not (obs.stun_answered or has_srflx):
        if obs.checks_from_peer or obs.our_checks_answered:
            return Diagnosis(
                cause="stun_unreachable",
                summary=(
                    "The STUN server never answered, although packets from the other "
                    f"side did reach this computer ({seen})."
                ),
                likely=(
                    "UDP works here, but the STUN server is down, misspelt or "
                    "unreachable, so this side could not learn its public address."
                ),
                advice=[_CHECK_STUN, _SAME_LAN, _VPN],
            )
        if peer_srflx:
            return Diagnosis(
                cause="udp_blocked",
                summary=(
                    "The STUN server did not answer this side, while the other side "
                    f"reached it ({seen}); no packet from the other side arrived either."
                ),
                likely=(
                    "This network blocks UDP (a firewall, a company or hotel network), "
                    "so no direct connection is possible from here."
                ),
                advice=[_ALLOW_UDP, _OTHER_NETWORK, _VPN, _SAME_LAN],
            )
        return Diagnosis(
            cause="stun_unreachable",
            summary=(
                "Neither side got an answer from the STUN server, so neither learned "
                f"its public address ({seen})."
            ),
            likely=(
                "The STUN server is down or its address is wrong (or both networks block UDP)."
            ),
            advice=[_CHECK_STUN, _ALLOW_UDP, _SAME_LAN, _VPN],
        )

    if obs.remote_addresses_private_only and not peer_srflx and not obs.checks_from_peer:
        return Diagnosis(
            cause="peer_no_public_address",
            summary=(
                "The other side offered only private network addresses and no public "
                f"one ({seen}); nothing from it arrived."
            ),
            likely=(
                "The other side could not reach a STUN server (its network blocks UDP, "
                "or it has no STUN server configured), so it cannot be reached from "
                "another network."
            ),
            advice=[
                "Ask the other person to configure the same STUN server with --stun and "
                "to allow outgoing UDP on their network.",
                _SAME_LAN,
                _VPN,
                "Ask the other person to try from another network, for example a phone hotspot.",
            ],
        )

    if obs.checks_from_peer and not obs.our_checks_answered:
        return Diagnosis(
            cause="peer_filters",
            summary=(
                "Connectivity checks from the other side reached this computer, but "
                f"none of ours was answered ({seen})."
            ),
            likely=("The other side's router or firewall drops the packets this side sends."),
            advice=[_PEER_PORT_FORWARD, _IPV6, _VPN, _OTHER_NETWORK],
        )

    if obs.our_checks_answered and not obs.checks_from_peer:
        return Diagnosis(
            cause="we_filter",
            summary=(
                "The other side answered our connectivity checks, but none of its own "
                f"checks reached this computer ({seen})."
            ),
            likely=(
                "A firewall on this computer or this router drops incoming UDP from the other side."
            ),
            advice=[_FIREWALL_IN, _PORT_FORWARD, _VPN, _OTHER_NETWORK],
        )

    if not obs.checks_from_peer and not obs.our_checks_answered:
        if obs.local_symmetric_nat is False:
            return Diagnosis(
                cause="peer_filters",
                summary=(
                    "Both sides learned their public addresses, but no connectivity "
                    "check got through in either direction; this side's router keeps "
                    f"the same public port for every destination ({seen})."
                ),
                likely=(
                    "The other side is behind a strict (symmetric) NAT or firewall, "
                    "which changes its port for every destination, while this router "
                    "only lets in packets from addresses it has already sent to."
                ),
                advice=[_PORT_FORWARD, _PEER_PORT_FORWARD, _IPV6, _VPN, _OTHER_NETWORK],
            )
        if obs.local_symmetric_nat:
            return Diagnosis(
                cause="symmetric_nat_here",
                summary=(
                    "Both sides learned their public addresses, but no connectivity "
                    "check got through in either direction; this side's router picks a "
                    f"new public port for every destination, a symmetric NAT ({seen})."
                ),
                likely=(
                    "This side's symmetric NAT sends from a port the other side never "
                    "heard of, and the other side's router drops packets from unknown "
                    "ports. From behind a symmetric NAT, a direct connection needs the "
                    "other side to accept UDP from anywhere (a public address, a "
                    "full-cone NAT or a forwarded port)."
                ),
                advice=[_OTHER_NETWORK, _PEER_PORT_FORWARD, _IPV6, _VPN, _SAME_LAN],
            )
        return Diagnosis(
            cause="symmetric_nat_both",
            summary=(
                "Both sides learned their public addresses, but no connectivity check "
                "got through in either direction; this side's NAT type could not be "
                f"measured (it takes two STUN servers) ({seen})."
            ),
            likely=(
                "Both sides are behind routers that drop unexpected incoming UDP, at "
                "least one of them a symmetric NAT (common on mobile and company "
                "networks). Only a relay server would help, and this tool never uses one."
            ),
            advice=[_IPV6, _VPN, _PORT_FORWARD, _OTHER_NETWORK, _SAME_LAN],
        )

    return Diagnosis(
        cause="unknown",
        summary=(
            "Connectivity checks got through in both directions, yet no connection "
            f"was agreed ({seen})."
        ),
        likely=(
            "The path is unstable (heavy packet loss) or it broke while the connection "
            "was being set up."
        ),
        advice=["Try again.", _SAME_LAN, _VPN, _OTHER_NETWORK],
    )
