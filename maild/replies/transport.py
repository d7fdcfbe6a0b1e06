"""Where outgoing mail goes: a local Maildir, or an SMTP relay through aiosmtplib."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from maild.config import OutboundConfig
from maild.errors import CannotCreate, MaildError


class SendError(MaildError):
    def __init__(self, message: str, *, permanent: bool, retry: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.permanent = permanent
        # Recipients to try again (a 4xx for some of them); the others already have the mail.
        self.retry = tuple(retry)


class Transport(Protocol):
    async def send(self, sender: str, recipients: Sequence[str], raw: bytes) -> str | None:
        """Deliver or raise SendError; a returned text is a warning (some recipients refused)."""


Mail = tuple[str, Sequence[str], bytes]  # envelope sender, recipients, the message


class MaildirTransport:
    """Writes each mail into ``new/`` of a Maildir (tmp, fsync, rename), as an MDA would."""

    _seq = count()

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path / "tmp")  # a folder we cannot write fails now
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CannotCreate("outbox", path, f"{exc.filename}: {exc.strerror}") from exc

    def _write(self, sender: str, recipients: Sequence[str], raw: bytes) -> None:
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(self._seq)}.{socket.gethostname()}"
        head = f"Return-Path: <{sender}>\r\nDelivered-To: {', '.join(recipients)}\r\n"
        tmp = self.path / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(head.encode("ascii", "replace") + raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.path / "new" / name)

    async def send(self, sender: str, recipients: Sequence[str], raw: bytes) -> str | None:
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
                errors.append(SendError(f"maildir: {exc}", permanent=False))
        try:  # the renames are durable once the directory is
            fd = os.open(self.path / "new", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return [SendError(f"maildir: {exc}", permanent=False)] * len(mails)
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

    async def send(self, sender: str, recipients: Sequence[str], raw: bytes) -> str | None:
        try:
            errors, _ = await aiosmtplib.send(
                raw,
                sender=sender,
                recipients=list(recipients),
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.cfg.tls,
                start_tls=self.cfg.starttls or None,
                timeout=self.cfg.timeout,
                mail_options=[] if _ascii(sender, recipients, raw) else ["SMTPUTF8"],
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise SendError(text, permanent=all(c >= 500 for c in codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SendError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise SendError(f"{type(exc).__name__}: {exc}", permanent=False) from exc
        if errors:
            text = "; ".join(f"{k}: {v.code} {v.message}" for k, v in errors.items())
            later = [k for k, v in errors.items() if v.code < 500]
            if later:
                raise SendError(f"some recipients deferred: {text}", permanent=False, retry=later)
            return f"some recipients refused: {text}"
        return None


def _ascii(sender: str, recipients: Sequence[str], raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return sender.isascii() and all(r.isascii() for r in recipients) and head.isascii()


def transport_from_config(cfg: OutboundConfig) -> Transport:
    if cfg.url.startswith("maildir:"):
        return MaildirTransport(Path(cfg.url[len("maildir:") :]))
    return SmtpTransport(cfg)
