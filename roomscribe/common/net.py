"""Network addresses (standard library only)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Is `host` this machine only (127.0.0.0/8, ::1 or "localhost")? "", "0.0.0.0", "::" and other names are not."""
    host = host.strip()
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
