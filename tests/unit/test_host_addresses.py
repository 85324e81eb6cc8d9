"""with_loopback_fallback: loopback only when the host offers nothing else."""

from __future__ import annotations

import aioice.ice
import pytest

from pipeline.connection import host_addresses


def test_addresses_found_are_kept_and_loopback_is_not_added() -> None:
    wrapped = host_addresses.with_loopback_fallback(lambda v4, v6: ["192.0.2.7"])
    assert wrapped(use_ipv4=True, use_ipv6=True) == ["192.0.2.7"]


def test_nothing_found_offers_the_configured_loopback_of_the_families_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_addresses, "loopback_addresses", lambda v4, v6: [a for ok, a in ((v4, "127.0.0.1"), (v6, "::1")) if ok])
    wrapped = host_addresses.with_loopback_fallback(lambda v4, v6: [])
    assert wrapped(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    assert wrapped(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]


def test_loopback_addresses_lists_only_what_an_interface_has() -> None:
    found = host_addresses.loopback_addresses(True, True)
    assert set(found) <= {"127.0.0.1", "::1"}
    assert found == [a for a in ("127.0.0.1", "::1") if a in found]  # families in order


def test_install_wraps_aioice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    original = aioice.ice.get_host_addresses
    monkeypatch.setattr(host_addresses, "_installed", False)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", original)
    host_addresses.install()
    host_addresses.install()
    assert aioice.ice.get_host_addresses.__wrapped__ is original  # type: ignore[attr-defined]
