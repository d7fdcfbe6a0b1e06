"""Where outgoing mail goes: a local Maildir, or an SMTP relay through aiosmtplib."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from itertools import count
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from maild.config import OutboundConfig
from maild.core.errors import CannotCreate, MaildError


class SendError(MaildError):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry: Sequence[str] = (),
        refused: str | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        # Recipients to try again (a 4xx for some of them); the others already have the mail.
        self.retry = tuple(retry)
        # The recipients refused for good (5xx) while others were deferred, with the replies.
        self.refused = refused
        # The relay could not be reached at all (refused, timed out, 421, cut off): when a
        # later delivery works, mail that waited for it is tried again at once.
        self.unreachable = unreachable


class HandOff:
    """The moment a relay takes responsibility for a mail, one mail at a time per sender.

    The transport takes it just before the final DATA; the sender lets it go once the outcome
    is committed. A kill -9 can then leave at most one mail delivered but not recorded.
    """

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock
        self.taken = False

    async def take(self) -> None:
        await self.lock.acquire()
        self.taken = True

    def release(self) -> None:
        if self.taken:
            self.taken = False
            self.lock.release()


class Transport(Protocol):
    async def send(
        self, sender: str, recipients: Sequence[str], raw: bytes, handoff: HandOff | None = None
    ) -> str | None:
        """Deliver or raise SendError; a returned text is a warning (some recipients refused)."""


Mail = tuple[str, Sequence[str], bytes]  # envelope sender, recipients, the message
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)")
_DATE = re.compile(rb"(?im)^date:[ \t]*([^\r\n]+)")


class MaildirTransport:
    """Writes each mail into ``new/`` of a Maildir (tmp, fsync, rename), as an MDA would."""

    _seq = count()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        try:
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path / "tmp")  # a folder we cannot write fails now
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CannotCreate("outbox", path, f"{exc.filename}: {exc.strerror}") from exc

    def _name(self, recipients: Sequence[str], raw: bytes) -> str:
        """The same name each time one mail is written: a mail that reached ``new/`` before
        a kill -9, but not the database, is not delivered twice. Sorted by the mail's Date."""
        head = raw.split(b"\r\n\r\n", 1)[0]
        mid = _MESSAGE_ID.search(head)
        if mid is None:
            return f"{time.time():.6f}.P{os.getpid()}Q{next(self._seq)}.{self.host}"
        date = _DATE.search(head)
        try:
            when = int(parsedate_to_datetime(date.group(1).decode()).timestamp()) if date else 0
        except (ValueError, TypeError):
            when = 0
        key = hashlib.sha256(mid.group(1) + ",".join(recipients).encode("utf-8", "replace"))
        return f"{when}.M{key.hexdigest()[:24]}.{self.host}"

    def _write(self, sender: str, recipients: Sequence[str], raw: bytes) -> None:
        name = self._name(recipients, raw)
        if (self.path / "new" / name).exists():
            return  # delivered before a crash: the outcome was not recorded, the mail was
        head = f"Return-Path: <{sender}>\r\nDelivered-To: {', '.join(recipients)}\r\n"
        tmp = self.path / "tmp" / name
        try:
            with open(tmp, "wb") as fh:
                fh.write(head.encode("ascii", "replace") + raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, self.path / "new" / name)
        except OSError:  # disk full, quota: leave no empty or partial file behind in tmp/
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        raw: bytes,
        handoff: HandOff | None = None,  # noqa: ARG002 (the Transport protocol; a file has no hand-off)
    ) -> str | None:
        (error,) = await self.send_many([(sender, recipients, raw)])
        if error is not None:
            raise error
        return None

    def _write_all(
        self, mails: Sequence[tuple[str, Sequence[str], bytes]]
    ) -> list[SendError | None]:
        errors: list[SendError | None] = []
        for sender, recipients, raw in mails:
            try:
                self._write(sender, recipients, raw)
                errors.append(None)
            except OSError as exc:
                errors.append(SendError(f"maildir: {exc}", permanent=False, unreachable=True))
        try:  # the renames are durable once the directory is
            fd = os.open(self.path / "new", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return [SendError(f"maildir: {exc}", permanent=False, unreachable=True)] * len(mails)
        return errors

    async def send_many(self, mails: Sequence[Mail]) -> list[SendError | None]:
        """Write a whole batch in one trip to a worker thread."""
        return await asyncio.to_thread(self._write_all, mails)


class SmtpTransport:
    """Relays through ``smtp://[user:pass@]host:port`` with STARTTLS or implicit TLS."""

    def __init__(self, cfg: OutboundConfig) -> None:
        parts = urlsplit(cfg.url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if cfg.tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.cfg = cfg

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.cfg.tls,
            start_tls=self.cfg.starttls or None,
            timeout=self.cfg.timeout,
        )

    async def probe(self) -> bool:
        """Whether the relay answers (greeting, EHLO, STARTTLS, AUTH, QUIT); sends no mail."""
        try:
            async with self._client():
                pass
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            return False
        return True

    async def send(
        self, sender: str, recipients: Sequence[str], raw: bytes, handoff: HandOff | None = None
    ) -> str | None:
        try:
            async with self._client() as client:
                errors = await _envelope(client, sender, recipients, raw)
                if handoff is not None:
                    await handoff.take()
                await client.data(raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            errors = {r.recipient: r for r in exc.recipients}
            refused = {k: v for k, v in errors.items() if v.code >= 500}
            later = [k for k, v in errors.items() if v.code < 500]
            raise SendError(
                _replies(errors),
                permanent=not later,
                retry=later,
                refused=_replies(refused) or None,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SendError(
                f"{exc.code} {exc.message}", permanent=exc.code >= 500, unreachable=exc.code == 421
            ) from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise SendError(
                f"{type(exc).__name__}: {exc}", permanent=False, unreachable=True
            ) from exc
        return _partial(errors)


async def _envelope(
    client: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], raw: bytes
) -> dict[str, aiosmtplib.SMTPRecipientRefused]:
    """MAIL FROM and RCPT TO; returns the refused recipients (raises when all are)."""
    utf8 = not _ascii(sender, recipients, raw)
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    await client.mail(
        sender, options=["SMTPUTF8"] if utf8 else [], encoding="utf-8" if utf8 else "ascii"
    )
    errors: dict[str, aiosmtplib.SMTPRecipientRefused] = {}
    for rcpt in recipients:
        try:
            await client.rcpt(rcpt, encoding="utf-8" if utf8 else "ascii")
        except aiosmtplib.SMTPRecipientRefused as exc:
            errors[rcpt] = exc
    if len(errors) == len(recipients):
        raise aiosmtplib.SMTPRecipientsRefused(list(errors.values()))
    return errors


def _replies(errors: Mapping[str, aiosmtplib.SMTPRecipientRefused]) -> str:
    return "; ".join(f"{k}: {v.code} {v.message}" for k, v in errors.items())


def _partial(errors: Mapping[str, aiosmtplib.SMTPRecipientRefused]) -> str | None:
    """Some recipients have the mail: a 4xx for others is tried again, a 5xx is a warning."""
    if not errors:
        return None
    text = _replies(errors)
    later = [k for k, v in errors.items() if v.code < 500]
    if later:
        refused = {k: v for k, v in errors.items() if v.code >= 500}
        raise SendError(
            f"some recipients deferred: {text}",
            permanent=False,
            retry=later,
            refused=_replies(refused) or None,
        )
    return f"some recipients refused: {text}"


def _ascii(sender: str, recipients: Sequence[str], raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return sender.isascii() and all(r.isascii() for r in recipients) and head.isascii()


def transport_from_config(cfg: OutboundConfig) -> Transport:
    if cfg.url.startswith("maildir:"):
        return MaildirTransport(Path(cfg.url[len("maildir:") :]))
    return SmtpTransport(cfg)
