"""Composition of outgoing mail: thread headers, loop headers, and no header injection."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from maild.core.errors import HeaderInjection
from maild.replies import mime

AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"


@dataclass(frozen=True)
class Outgoing:
    """Everything one outgoing mail needs; built by the pipeline, rendered here."""

    sender_name: str
    sender: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    message_id: str
    loop_name: str
    language: str
    date: datetime
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    auto_submitted: str | None = AUTO_REPLIED
    extra_headers: tuple[tuple[str, str], ...] = ()
    reply_to: str | None = None
    # (file name, content type, bytes): the name is only ever a MIME parameter, never a path
    attachments: tuple[tuple[str, str, bytes], ...] = ()


def clean_header(value: str, what: str) -> str:
    """Refuse CR/LF (and NUL) in anything bound for a header or the SMTP envelope."""
    if "\r" in value or "\n" in value or "\0" in value:  # a dozen times a mail: no generator
        raise HeaderInjection(f"line break in {what}: {value[:60]!r}")
    return value


def new_message_id(domain: str, prefix: str = "maild") -> str:
    return f"<{prefix}.{secrets.token_hex(10)}@{clean_header(domain, 'domain')}>"


def _references(out: Outgoing) -> list[str]:
    refs = [r for r in out.references if r != out.in_reply_to]
    if out.in_reply_to:
        refs.append(out.in_reply_to)
    # An absurdly long id would make a header line longer than SMTP allows: leave it out.
    return [clean_header(r, "References") for r in refs[-20:] if len(r) <= 250]


def _content(out: Outgoing) -> tuple[str, bytes]:
    """(Content-Type header block, body) of the whole mail."""
    plain = mime.text_part(out.text, "plain")
    if out.html:
        ctype, body = mime.multipart("alternative", [plain, mime.text_part(out.html, "html")])
        part = f"Content-Type: {ctype}\r\n\r\n".encode() + body
    else:
        part = plain
    if out.attachments:
        atts = [mime.attachment_part(n, t, d) for n, t, d in out.attachments]
        ctype, body = mime.multipart("mixed", [part, *atts])
        return f"Content-Type: {ctype}\r\n", body
    head, _, body = part.partition(b"\r\n\r\n")
    return head.decode() + "\r\n", body


def build(out: Outgoing) -> bytes:
    """The wire form of ``out`` (CRLF line ends, 7-bit headers, nothing unchecked)."""
    h = [
        "From: "
        + mime.address(
            clean_header(out.sender_name, "From name"), clean_header(out.sender, "From")
        ),
        "To: " + mime.fold_list([clean_header(a, "To") for a in out.to], ", "),
    ]
    if out.cc:
        h.append("Cc: " + mime.fold_list([clean_header(a, "Cc") for a in out.cc], ", "))
    h += [
        f"Subject: {mime.encode_words(clean_header(out.subject, 'Subject'))}",
        f"Date: {format_datetime(out.date)}",
        f"Message-ID: {clean_header(out.message_id, 'Message-ID')}",
    ]
    if out.in_reply_to and len(out.in_reply_to) <= 250:
        h.append(f"In-Reply-To: {clean_header(out.in_reply_to, 'In-Reply-To')}")
    refs = _references(out)
    if refs:
        h.append("References: " + mime.fold_list(refs))
    if out.reply_to:
        h.append(f"Reply-To: {clean_header(out.reply_to, 'Reply-To')}")
    if out.auto_submitted:
        h.append(f"Auto-Submitted: {out.auto_submitted}")
    h += [
        "X-Auto-Response-Suppress: All",
        f"X-Loop: {clean_header(out.loop_name, 'X-Loop')}",
        f"Content-Language: {clean_header(out.language, 'language')}",
    ]
    for name, value in out.extra_headers:
        if not re.fullmatch(r"[!-9;-~]+", name):
            raise HeaderInjection(f"bad header name {name[:40]!r}")
        h.append(f"{name}: {mime.encode_words(clean_header(value, name))}")
    ctype, body = _content(out)
    head = "\r\n".join(h) + "\r\nMIME-Version: 1.0\r\n" + ctype + "\r\n"
    # RFC 6532: a customer with a non-ASCII address gets UTF-8 headers (the relay needs SMTPUTF8).
    return head.encode("ascii" if head.isascii() else "utf-8") + body
