"""explain_no_route: every cause, reached from the observations that imply it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pipeline.connection import diagnostics
from pipeline.connection.diagnostics import Diagnosis, Observation, explain_no_route

# Both sides learned public addresses; nothing got through: the base of most cases.
BASE = Observation(
    stun_configured=True,
    stun_answered=True,
    local_types=["host", "srflx"],
    remote_types=["host", "srflx"],
    remote_addresses_private_only=False,
    checks_from_peer=False,
    our_checks_answered=False,
    local_symmetric_nat=None,
)

CASES: dict[str, Observation] = {
    # Measured in a namespace whose only interface has an IPv6 link-local address
    # (tests/integration/test_no_route.py): both sides, with and without STUN.
    "no_local_address": replace(BASE, stun_configured=False, stun_answered=None, local_types=[], remote_types=["host"]),
    "peer_no_address": replace(BASE, stun_configured=False, stun_answered=None, local_types=["host"], remote_types=[]),
    "udp_blocked": replace(BASE, stun_answered=False, local_types=["host"]),
    "stun_unreachable": replace(
        BASE,
        stun_answered=False,
        local_types=["host"],
        remote_types=["host"],
        remote_addresses_private_only=True,
    ),
    "symmetric_nat_both": BASE,  # nothing got through, our NAT type unmeasured
    "symmetric_nat_here": replace(BASE, local_symmetric_nat=True),
    "peer_filters": replace(BASE, checks_from_peer=True, remote_types=["host", "srflx", "prflx"]),
    "we_filter": replace(BASE, our_checks_answered=True),
    "no_stun_different_networks": replace(
        BASE,
        stun_configured=False,
        stun_answered=None,
        local_types=["host"],
        remote_types=["host"],
        remote_addresses_private_only=True,
    ),
    "peer_no_public_address": replace(
        BASE, remote_types=["host"], remote_addresses_private_only=True
    ),
    "unknown": replace(BASE, checks_from_peer=True, our_checks_answered=True),
}


def test_every_cause_is_covered() -> None:
    assert set(CASES) == set(diagnostics.CAUSES)


@pytest.mark.parametrize("cause", sorted(CASES))
def test_cause(cause: str) -> None:
    diagnosis = explain_no_route(CASES[cause])
    assert diagnosis.cause == cause
    assert diagnosis.summary.endswith(".") and diagnosis.likely.endswith(".")
    assert diagnosis.advice, "a user must always get something to try"
    assert all(line.strip() for line in diagnosis.advice)
    # Relays are never an option for this tool; do not suggest one.
    text = diagnosis.to_text()
    assert "TURN" not in text
    assert "turn server" not in text.lower()


def test_messages_differ_between_causes() -> None:
    diagnoses = [explain_no_route(obs) for obs in CASES.values()]
    assert len({d.summary for d in diagnoses}) == len(diagnoses)
    assert len({d.likely for d in diagnoses}) == len(diagnoses)
    assert len({tuple(d.advice) for d in diagnoses}) == len(diagnoses)


def test_udp_blocked_vs_stun_unreachable() -> None:
    """No srflx here: it is our network when the peer reached the same server,
    the server when nobody did, and the server when UDP demonstrably works."""
    blocked = explain_no_route(CASES["udp_blocked"])
    assert "UDP" in blocked.likely
    assert any("UDP" in line for line in blocked.advice)

    nobody = explain_no_route(CASES["stun_unreachable"])
    assert "STUN server" in nobody.likely
    assert any("--stun" in line for line in nobody.advice)

    udp_works = replace(CASES["udp_blocked"], checks_from_peer=True)
    diagnosis = explain_no_route(udp_works)
    assert diagnosis.cause == "stun_unreachable"
    assert diagnosis.summary != nobody.summary


def test_nat_type_splits_nothing_got_through() -> None:
    unknown_nat = explain_no_route(BASE)
    assert unknown_nat.cause == "symmetric_nat_both"
    assert "could not be measured" in unknown_nat.summary
    symmetric = explain_no_route(replace(BASE, local_symmetric_nat=True))
    assert symmetric.cause == "symmetric_nat_here"
    assert "new public port" in symmetric.summary and "symmetric NAT" in symmetric.summary
    # From behind a symmetric NAT, the other side's help is what can make it work.
    assert any("other person" in line for line in symmetric.advice)
    cone = explain_no_route(replace(BASE, local_symmetric_nat=False))
    assert cone.cause == "peer_filters"
    # Our own port forward helps when only the peer maps per destination.
    assert any("your router" in line for line in cone.advice)
    assert cone.summary != explain_no_route(CASES["peer_filters"]).summary


def test_advice_mentions_what_the_spec_lists() -> None:
    symmetric = explain_no_route(CASES["symmetric_nat_both"]).to_text().lower()
    for words in ("same local network", "ipv6", "wireguard", "another network", "forward"):
        assert words in symmetric
    no_stun = explain_no_route(CASES["no_stun_different_networks"])
    assert any("--stun" in line for line in no_stun.advice)


def test_to_text_and_to_dict() -> None:
    diagnosis = explain_no_route(CASES["we_filter"])
    text = diagnosis.to_text()
    lines = text.splitlines()
    assert lines[0] == "No direct connection could be made."
    assert lines[1] == f"What we saw: {diagnosis.summary}"
    assert lines[2] == f"Most likely: {diagnosis.likely}"
    assert lines[3] == "What you can do:"
    assert lines[4 : 4 + len(diagnosis.advice)] == [f"  - {a}" for a in diagnosis.advice]
    assert lines[-1] == "(cause: we_filter)"

    as_dict = diagnosis.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert Diagnosis(**as_dict) == diagnosis  # type: ignore[arg-type]
    assert json.loads(json.dumps(CASES["we_filter"].to_dict()))["our_checks_answered"] is True


def test_summary_names_the_candidate_types() -> None:
    diagnosis = explain_no_route(CASES["peer_no_public_address"])
    assert "this side offered host, srflx" in diagnosis.summary
    assert "the other side offered host" in diagnosis.summary
    empty = explain_no_route(replace(CASES["udp_blocked"], local_types=[]))
    assert empty.cause == "no_local_address" and "(the other side offered host, srflx)" in empty.summary
    silent_peer = explain_no_route(replace(CASES["no_stun_different_networks"], remote_types=[]))
    assert "the other side offered no network address" in silent_peer.summary.lower()


def test_no_address_of_its_own_is_not_blamed_on_different_networks() -> None:
    """Issue 12: a side that gathered nothing used to be told the two computers were
    on different networks; STUN or not, it is now told it has no address."""
    for stun in (False, True):
        ours = explain_no_route(replace(CASES["no_local_address"], stun_configured=stun, stun_answered=False if stun else None))
        assert ours.cause == "no_local_address"
        assert "no usable network address" in ours.likely and "different networks" not in ours.to_text()
        theirs = explain_no_route(replace(CASES["peer_no_address"], stun_configured=stun, stun_answered=True if stun else None, local_types=["host", "srflx"] if stun else ["host"]))
        assert theirs.cause == "peer_no_address" and "other computer has no usable network address" in theirs.likely
    # The peer's checks did arrive (its candidates were, e.g., mDNS names we drop): not "no address".
    assert explain_no_route(replace(CASES["peer_no_address"], checks_from_peer=True)).cause != "peer_no_address"
