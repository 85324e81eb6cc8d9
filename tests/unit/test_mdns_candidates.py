"""A browser's mDNS host candidates never reach aiortc (pipeline.connection.peer)."""

from __future__ import annotations

from pipeline.connection.peer import is_mdns_host, without_mdns_candidates

# The shape chromium sends with WebRtcHideLocalIpsWithMdns on (its default).
BROWSER_SDP = (
    "v=0\r\n"
    "o=- 1 2 IN IP4 127.0.0.1\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "a=candidate:1 1 udp 2113937151 3f1c9c62-7b3e-4a8b-9c55-1c2f0e6a8d11.local 54321 typ host generation 0\r\n"
    "a=candidate:2 1 udp 1677729535 203.0.113.9 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0\r\n"
    "a=candidate:3 1 udp 2113939711 192.0.2.5 40000 typ host generation 0\r\n"
    "a=end-of-candidates\r\n"
)


def test_mdns_candidate_lines_are_dropped_and_the_rest_kept_verbatim() -> None:
    filtered = without_mdns_candidates(BROWSER_SDP)
    assert ".local" not in filtered
    assert filtered == BROWSER_SDP.replace(
        "a=candidate:1 1 udp 2113937151 3f1c9c62-7b3e-4a8b-9c55-1c2f0e6a8d11.local 54321 typ host generation 0\r\n", ""
    )
    assert without_mdns_candidates(filtered) == filtered


def test_mdns_hosts_are_names_ending_in_local() -> None:
    assert is_mdns_host("3f1c9c62-7b3e-4a8b-9c55-1c2f0e6a8d11.local")
    assert is_mdns_host("ABC.LOCAL")
    assert not is_mdns_host("192.0.2.5")
    assert not is_mdns_host("fe80::1")
    assert not is_mdns_host("local.example.org")
