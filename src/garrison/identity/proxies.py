"""Which peer a request really came from, and whether to believe what a proxy says.

Headers that a TLS front end adds (X-Forwarded-For, the forwarded client certificate) are trusted
only when the TCP peer is one of `settings.trusted_proxies` (addresses or CIDR networks); from
anyone else they are ignored, since any client can send them (checklist A6: spoofed header).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return _networks(tuple(entries))


def is_trusted(peer: str | None, trusted: Sequence[str]) -> bool:
    if not peer or not trusted:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks(trusted))


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[str]) -> str | None:
    """The client's address: the TCP peer, or, behind trusted proxies, the nearest address in
    X-Forwarded-For that is not itself a trusted proxy (the rightmost untrusted hop)."""
    if not forwarded_for or not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_address(hop):
            return peer  # a malformed hop: believe only what we saw ourselves
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
