"""Keep WebRTC traffic on this machine: which local addresses we offer, which remote ones we use.

The server offers host candidates only on the configured addresses (``127.0.0.1`` by default)
and ignores any remote candidate that is not one of this machine's own addresses, so no test
ever sends packets off the host. No STUN or TURN server is ever configured.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
from collections.abc import Iterable

import aioice.ice
import ifaddr

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "devserver_host_addresses", default=None)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _scoped_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _HOST_ADDRESSES.get()
    if chosen is None:
        return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def install() -> None:
    """Let the dev server choose aioice's host addresses for its own peer connections only."""
    if aioice.ice.get_host_addresses is not _scoped_get_host_addresses:
        aioice.ice.get_host_addresses = _scoped_get_host_addresses


def use_host_addresses(addresses: Iterable[str]) -> contextvars.Token:
    """Within the current task (and tasks it starts), gather candidates on ``addresses`` only."""
    install()
    return _HOST_ADDRESSES.set(tuple(addresses))


def own_addresses() -> set[str]:
    """Every IP address of this machine's interfaces, loopback included."""
    found = {"127.0.0.1", "::1"}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found


def resolve_ice_addresses(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"loopback"`` → 127.0.0.1, ``"local"`` → this machine's non-loopback IPv4s, or a list."""
    if isinstance(spec, str):
        if spec == "loopback":
            return ("127.0.0.1",)
        if spec == "local":
            return tuple(a for a in _original_get_host_addresses(True, False)) or ("127.0.0.1",)
        return tuple(a.strip() for a in spec.split(",") if a.strip())
    return tuple(spec)


_CAND_RE = re.compile(r"candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ")


def candidate_is_local(candidate: str, allowed: set[str]) -> bool:
    """True when an ICE candidate line points at one of ``allowed`` (this machine's) addresses."""
    match = _CAND_RE.search(candidate)
    if not match:
        return False
    host = match.group(1)
    if host.endswith(".local"):
        return False  # mDNS names would need multicast resolution off-host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or str(ip) in allowed


def filter_sdp_candidates(sdp: str, allowed: set[str]) -> str:
    """Drop ``a=candidate`` lines that point anywhere but this machine."""
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    kept = [ln for ln in lines if not ln.startswith("a=candidate:") or candidate_is_local(ln[2:], allowed)]
    return ("\r\n" if "\r\n" in sdp else "\n").join(kept)
