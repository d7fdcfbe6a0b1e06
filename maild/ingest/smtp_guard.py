"""Deadlines and a per-address connection cap for the SMTP (and LMTP) sessions.

aiosmtpd's ``timeout`` runs from one valid command to the next and closes without a word;
we used 300 s for it and for all of DATA, so a client trickling a byte every few seconds held a
session for minutes per command, and for ever if it finished each one in time. Here each
command must arrive whole within ``command_timeout`` of the previous one and the whole DATA
phase (the message and our store) within ``data_timeout``; a client over a deadline gets
``421 4.4.2`` before it is disconnected. An address with ``max_connections_per_address``
sessions open gets ``421 4.7.0`` instead of a greeting.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, syntax

from maild.config import Config
from maild.ingest.smtp_data import read_data, unstuff
from maild.security.peers import PeerLimit, address_of

log = logging.getLogger(__name__)

TOO_MANY = "421 4.7.0 Too many connections from your address, try again later"


@dataclass(frozen=True)
class SessionGuard:
    """What a session may take: seconds per command, seconds for DATA, sessions per address."""

    command_timeout: float = 60.0
    data_timeout: float = 600.0
    peers: PeerLimit | None = None  # None: no cap (LMTP from the operator's own MTA)


def smtp_guard(config: Config) -> SessionGuard:
    """The SMTP listener's guard from `[smtp]`; LMTP (the operator's MTA) has no cap."""
    smtp = config.smtp
    return SessionGuard(
        smtp.command_timeout, smtp.data_timeout, PeerLimit(smtp.max_connections_per_address)
    )


class GuardedSMTP(SMTP):
    """aiosmtpd's SMTP with whole-command and whole-DATA deadlines and a per-address cap."""

    def __init__(self, handler: Any, guard: SessionGuard, **kwargs: Any) -> None:
        super().__init__(handler, timeout=guard.command_timeout, **kwargs)
        self.guard = guard
        self.counted: str | None = None  # the address this session is counted under
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peers = self.guard.peers
        if peers is not None and self.counted is None and not self.refused:
            address = address_of(transport.get_extra_info("peername"))
            if address is not None:
                if peers.enter(address):
                    self.counted = address
                else:
                    self.refused = True
                    log.warning("smtp: %s: refused, %d sessions open", address, peers.limit)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.counted is not None and self.guard.peers is not None:
            self.guard.peers.leave(self.counted)
            self.counted = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self.refused:
            await self.push(TOO_MANY)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            assert isinstance(transport, asyncio.WriteTransport)
            reply = f"421 4.4.2 {self.hostname} Error: timeout exceeded, closing connection\r\n"
            transport.write(reply.encode("ascii", "replace"))
        peer = self.session.peer if self.session is not None else None
        log.info("smtp: %s: over the deadline, disconnected", peer)
        super()._timeout_cb()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._reset_timeout(self.guard.data_timeout)
        try:
            await self._data(arg)
        finally:
            if self.transport is not None:
                self._reset_timeout()  # the next command gets the command deadline again

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, with the message read in chunks (maild/ingest/smtp_data.py)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            got = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.IncompleteReadError:  # the client went away
            return
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if got.error is not None:
            await self.push(got.error)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = unstuff(got.data)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class GuardedLMTP(GuardedSMTP, LMTP):
    """The same guards on LMTP (RFC 2033): LHLO instead of HELO/EHLO."""
