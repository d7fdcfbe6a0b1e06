"""Composition of outgoing mail: thread headers, loop headers, and no header injection."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from email import encoders
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr
from io import BytesIO

from maild.errors import HeaderInjection

_UTF8 = "utf-8"
_BODY_CHARSET = Charset("utf-8")
_BODY_CHARSET.body_encoding = QP
_WIRE = compat32.clone(linesep="\r\n")

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
    if any(c in value for c in "\r\n\0"):
        raise HeaderInjection(f"line break in {what}: {value[:60]!r}")
    return value


def new_message_id(domain: str, prefix: str = "maild") -> str:
    return f"<{prefix}.{secrets.token_hex(10)}@{clean_header(domain, 'domain')}>"


def _references(out: Outgoing) -> str:
    refs = [r for r in out.references if r != out.in_reply_to]
    if out.in_reply_to:
        refs.append(out.in_reply_to)
    return " ".join(clean_header(r, "References") for r in refs[-20:])


def _header(value: str) -> str:
    """ASCII stays as it is; anything else becomes RFC 2047 words that keep every space."""
    return value if value.isascii() else Header(value, _UTF8, header_name="Subject").encode()


def _body(text: str, subtype: str) -> MIMEText:
    return MIMEText(text, subtype, _BODY_CHARSET)  # type: ignore[arg-type]


def _attachment(name: str, ctype: str, data: bytes) -> MIMEBase:
    maintype, _, subtype = ctype.partition("/")
    if not (maintype.isascii() and subtype.isascii() and maintype and subtype) or "\n" in ctype:
        maintype, subtype = "application", "octet-stream"
    part = MIMEBase(maintype, subtype)
    part.set_payload(data)
    encoders.encode_base64(part)
    safe = "".join(c for c in name if c >= " " and c not in '"\\/') or "attachment"
    param: str | tuple[str, str, str] = safe if safe.isascii() else ("utf-8", "", safe)
    part.add_header("Content-Disposition", "attachment", filename=param)
    return part


def build(out: Outgoing) -> bytes:
    """The wire form of ``out`` (CRLF line ends, 7-bit safe headers)."""
    msg: MIMEBase = _body(out.text, "plain")
    if out.html:
        msg = MIMEMultipart("alternative")
        msg.attach(_body(out.text, "plain"))
        msg.attach(_body(out.html, "html"))
    if out.attachments:
        mixed = MIMEMultipart("mixed")
        mixed.attach(msg)
        for name, ctype, data in out.attachments:
            mixed.attach(_attachment(name, ctype, data))
        msg = mixed
    name = clean_header(out.sender_name, "From name")
    msg["From"] = formataddr((name, clean_header(out.sender, "From")), charset="utf-8")
    msg["To"] = ", ".join(clean_header(a, "To") for a in out.to)
    if out.cc:
        msg["Cc"] = ", ".join(clean_header(a, "Cc") for a in out.cc)
    msg["Subject"] = _header(clean_header(out.subject, "Subject"))
    msg["Date"] = format_datetime(out.date)
    msg["Message-ID"] = clean_header(out.message_id, "Message-ID")
    if out.in_reply_to:
        msg["In-Reply-To"] = clean_header(out.in_reply_to, "In-Reply-To")
    refs = _references(out)
    if refs:
        msg["References"] = refs
    if out.reply_to:
        msg["Reply-To"] = clean_header(out.reply_to, "Reply-To")
    if out.auto_submitted:
        msg["Auto-Submitted"] = out.auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = clean_header(out.loop_name, "X-Loop")
    msg["Content-Language"] = out.language
    for hname, value in out.extra_headers:
        msg[clean_header(hname, "header name")] = _header(clean_header(value, hname))
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    buf = BytesIO()
    BytesGenerator(buf, mangle_from_=False, policy=_WIRE).flatten(msg)
    return buf.getvalue()
