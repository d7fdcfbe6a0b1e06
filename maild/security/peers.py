"""Concurrent connections per client address, counted for the SMTP and HTTP listeners."""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter

log = logging.getLogger(__name__)


def address_of(peername: object) -> str | None:
    """The client's IP address from a transport's ``peername``; None for a unix socket."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        try:
            return str(ipaddress.ip_address(peername[0].partition("%")[0]))
        except ValueError:
            return None
    return None


class PeerLimit:
    """At most ``limit`` open connections from one address (one event loop, no locking)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def enter(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and not counted) over the limit."""
        if self.open[address] >= self.limit:
            return False
        self.open[address] += 1
        return True

    def leave(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]
