"""Which local addresses ICE gathers host candidates on: loopback when there is nothing else.

aioice 0.13 gathers on every address ``aioice.ice.get_host_addresses`` returns,
and that function leaves out 127.0.0.1 and ::1.  On a host whose only
interface is ``lo`` (a container, an offline machine) neither side then offers
any candidate, and two processes on the same machine cannot reach each other
although the kernel would carry their packets.

:func:`install` wraps that function once per process (the connection process
calls it before its first peer connection): when the host has no other
address, the loopback addresses of the families asked for are offered.  A
loopback candidate can only ever reach a peer on this same machine, so it adds
nothing where another address exists, and nothing is offered where loopback is
down (``getifaddrs`` then lists no address at all: the no-route diagnosis says
"this machine has no usable network address").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import ifaddr

LOOPBACK_V4: Final = "127.0.0.1"
LOOPBACK_V6: Final = "::1"

_installed = False


def loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """The loopback addresses that are configured (on an interface) for the families asked for."""
    configured: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            configured.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    wanted = [(use_ipv4, LOOPBACK_V4), (use_ipv6, LOOPBACK_V6)]
    return [address for use, address in wanted if use and address in configured]


def with_loopback_fallback(gather: Callable[[bool, bool], list[str]]) -> Callable[[bool, bool], list[str]]:
    """``gather``, or the configured loopback addresses when it finds nothing."""

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        found = gather(use_ipv4, use_ipv6)
        return found if found else loopback_addresses(use_ipv4, use_ipv6)

    get_host_addresses.__wrapped__ = gather  # type: ignore[attr-defined]
    return get_host_addresses


def install() -> None:
    """Patch aioice (idempotent).  Raises RuntimeError if aioice no longer has the hook."""
    global _installed
    if _installed:
        return
    import aioice.ice

    original = getattr(aioice.ice, "get_host_addresses", None)
    if original is None or not callable(original):
        raise RuntimeError(
            "aioice.ice.get_host_addresses is missing; update pipeline/connection/host_addresses.py "
            f"(written for aioice 0.13, found {getattr(aioice, '__version__', '?')})"
        )
    aioice.ice.get_host_addresses = with_loopback_fallback(original)  # type: ignore[assignment]
    _installed = True
