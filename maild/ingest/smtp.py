"""The SMTP (and LMTP) front door: store raw, fsync, then 250; our own failures are 451."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from maild.core.errors import RejectedMessage, TemporaryFailure
from maild.ingest.accept import Acceptor, Incoming, check_acceptable, strip_mbox_line
from maild.ingest.smtp_guard import GuardedLMTP, GuardedSMTP, SessionGuard

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary local problem, please try again later"
# RFC 5321 allows 998 characters a line; real bounces (Amazon SES, GMX) carry 4,000, and
# Postfix takes any length. Only CRLF ends a line in DATA, so a client that sends bare LF
# (smtplib with a file read from disk) sends its whole message as one "line": allow 1 MiB.
MAX_LINE = 1024 * 1024 + 3
_BARE_LF_STUFFED = re.compile(rb"(?<!\r)\n\.\.")


def _as_received(raw: bytes) -> bytes:
    """The message as its sender meant it: no mbox "From " line, and the dot-stuffing of lines
    a bare-LF client ended with LF undone (aiosmtpd undoes it after CRLF only; Postfix, like
    smtplib, takes LF as a line end too)."""
    if b"\n.." in raw:
        raw = _BARE_LF_STUFFED.sub(b"\n.", raw)
    return strip_mbox_line(raw)


STORE_WAIT = 20.0  # seconds a session waits for a stuck (frozen) database before a 451


def _clean_address(address: str) -> str | None:
    if any(c in address for c in "\r\n\0") or len(address) > 320:
        return None
    return address


class Handler:
    """aiosmtpd handler: one DATA is one durable store; in-flight work is counted for shutdown."""

    def __init__(
        self, acceptor: Acceptor, *, source: str = "smtp", max_size: int, max_recipients: int = 100
    ) -> None:
        self.lmtp = source == "lmtp"
        self.acceptor = acceptor
        self.source = source
        self.max_size = max_size
        self.max_recipients = max_recipients
        self.store_wait = STORE_WAIT
        self.in_flight = 0  # sessions between their DATA command and the written reply
        self.on_reply: Callable[[str, str], None] | None = None  # (source, reply): metrics
        self.idle = asyncio.Event()
        self.idle.set()

    def begin(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    def _refused(self, reply: str) -> str:
        if self.on_reply is not None:
            self.on_reply(self.source, reply)
        return reply

    async def handle_MAIL(
        self,
        _server: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if _clean_address(address) is None:
            return self._refused("553 5.1.7 Bad sender address syntax")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        _server: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _rcpt_options: list[str],
    ) -> str:
        if _clean_address(address) is None:
            return self._refused("553 5.1.3 Bad recipient address syntax")
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return self._refused("452 4.5.3 Too many recipients")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, _session: Session, envelope: Envelope) -> str:
        status = await self._store(envelope)
        if self.on_reply is not None:
            self.on_reply(self.source, status)
        if self.lmtp:
            # LMTP answers once per recipient (RFC 2033); one durable store serves them all.
            for _ in envelope.rcpt_tos[1:]:
                await server.push(status)
        return status

    async def _store(self, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        raw = _as_received(bytes(raw))
        try:
            check_acceptable(raw, self.max_size)
            incoming = Incoming(
                raw, self.source, envelope.mail_from or "", tuple(envelope.rcpt_tos)
            )
            # A frozen database must not hold the client forever; if the mail is stored after
            # all, the client's retry is recognised as a duplicate.
            stored = await asyncio.wait_for(self.acceptor.accept(incoming), self.store_wait)
        except RejectedMessage as exc:
            log.info("%s: refused: %s", self.source, exc)
            return f"554 5.6.0 {exc}"
        except TemporaryFailure as exc:
            log.error("%s: answered 451: %s", self.source, exc)
            return TEMPFAIL
        except TimeoutError:
            log.error("%s: answered 451: not stored within %.0f s", self.source, self.store_wait)
            return TEMPFAIL
        note = " (duplicate)" if stored.duplicate else ""
        return f"250 2.0.0 OK: queued as {stored.queue_id}{note}"

    async def handle_exception(self, error: Exception) -> str:
        log.error(
            "%s: session error answered 451: %s: %s", self.source, type(error).__name__, error
        )
        return TEMPFAIL


class _SMTP(GuardedSMTP):
    """aiosmtpd's SMTP with our line limit; a session counts from its DATA command until its
    reply is written, so that a stop never closes a session whose mail is stored but not yet
    answered."""

    line_length_limit = MAX_LINE

    async def smtp_DATA(self, arg: str) -> None:
        handler: Handler = self.event_handler
        handler.begin()
        try:
            await super().smtp_DATA(arg)
        finally:
            handler.end()


class _LMTP(_SMTP, GuardedLMTP):
    pass


def smtp_factory(
    handler: Handler, *, hostname: str, lmtp: bool = False, guard: SessionGuard | None = None
) -> Any:
    """A protocol factory for ``loop.create_server`` that runs aiosmtpd in our own loop."""
    cls = _LMTP if lmtp else _SMTP
    session_guard = guard or SessionGuard()

    def factory() -> SMTP:
        return cls(
            handler,
            session_guard,
            data_size_limit=handler.max_size,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="maild ESMTP",
        )

    return factory


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    *,
    hostname: str,
    lmtp: bool = False,
    guard: SessionGuard | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        smtp_factory(handler, hostname=hostname, lmtp=lmtp, guard=guard), host=host, port=port
    )


async def start_unix_server(
    handler: Handler, path: str, *, hostname: str, guard: SessionGuard | None = None
) -> asyncio.Server:
    """LMTP on a unix socket, as Postfix's ``lmtp:unix:/path`` and Dovecot expect."""
    if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
        os.unlink(path)  # a stale socket from a previous run
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(
        smtp_factory(handler, hostname=hostname, lmtp=True, guard=guard), path=path
    )
    os.chmod(path, 0o660)
    return server
