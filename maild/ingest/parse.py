"""The parse step: raw bytes -> a frozen ParsedMail; limits are checked before the costly work."""

from __future__ import annotations

import email
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr

import mailparser
import nh3

from maild.errors import LimitExceeded, QuarantineError
from maild.ingest.headers import decode_value, safe_filename
from maild.ingest.html2text import html_to_text
from maild.threading.refs import normalize_msgid, parse_msgid_list

log = logging.getLogger(__name__)

_CT_LINE = re.compile(rb"(?im)^content-type[ \t]*:")


@dataclass(frozen=True)
class Limits:
    max_parts: int = 1000
    max_depth: int = 50
    max_header_bytes: int = 102_400


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    subject: str
    from_addr: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    content_type: str
    report_type: str
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


def check_limits(raw: bytes, limits: Limits) -> None:
    """Cheap structural checks on the raw bytes, before any MIME parsing."""
    head_end = min(
        (i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=len(raw)
    )
    if head_end > limits.max_header_bytes:
        raise LimitExceeded(
            f"header is {head_end} bytes, over the limit of {limits.max_header_bytes}"
        )
    parts = len(_CT_LINE.findall(raw))
    if parts > limits.max_parts:
        raise LimitExceeded(f"too many MIME parts ({parts} > {limits.max_parts})")


def _depth(msg: Message, limit: int) -> int:
    stack, deepest = [(msg, 1)], 1
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return deepest


def _addresses(msg: Message, name: str) -> tuple[str, ...]:
    values = [decode_value(v) for v in msg.get_all(name, [])]
    found = []
    for _, addr in getaddresses(values):
        addr = addr.strip().lower()
        if "@" in addr and addr not in found and not any(c in addr for c in "\r\n<> "):
            found.append(addr)
    return tuple(found[:100])


def _bodies(msg: Message) -> tuple[str, str | None, tuple[Attachment, ...]]:
    mp = mailparser.MailParser(msg)
    text = "\n".join(t for t in mp.text_plain if t).strip()
    html_raw = "\n".join(h for h in mp.text_html if h).strip()
    html = nh3.clean(html_raw) if html_raw else None
    if not text and html_raw:
        text = html_to_text(html_raw)
    atts = []
    for a in mp.attachments:
        payload = a.get("payload") or ""
        if a.get("binary"):
            import base64

            data = base64.b64decode(payload, validate=False)
        else:
            data = payload.encode("utf-8", "replace")
        atts.append(
            Attachment(
                safe_filename(a.get("filename")),
                str(a.get("mail_content_type") or "application/octet-stream")[:128],
                data,
            )
        )
    return text, html, tuple(atts)


def parse_mail(raw: bytes, limits: Limits = Limits()) -> ParsedMail:
    """Parse a raw message; raise QuarantineError (with the reason) if it cannot be used."""
    check_limits(raw, limits)
    try:
        msg = email.message_from_bytes(raw, policy=compat32)
        depth = _depth(msg, limits.max_depth)
    except RecursionError:
        raise LimitExceeded("MIME nesting too deep to parse") from None
    if depth > limits.max_depth:
        raise LimitExceeded(f"MIME nesting too deep ({depth} > {limits.max_depth})")
    headers = tuple((k, decode_value(v)) for k, v in msg.items())
    from_name, from_addr = parseaddr(decode_value(msg.get("From", "")))
    from_addr = from_addr.strip().lower()
    if any(c in from_addr for c in "\r\n<> "):
        from_addr = ""
    try:
        text, html, atts = _bodies(msg)
    except RecursionError:
        raise LimitExceeded("MIME nesting too deep to parse") from None
    except (LookupError, ValueError, TypeError, AttributeError) as exc:
        raise QuarantineError(f"body could not be decoded: {type(exc).__name__}: {exc}") from exc
    return ParsedMail(
        message_id=normalize_msgid(decode_value(msg.get("Message-ID", ""))),
        subject=decode_value(msg.get("Subject", "")),
        from_addr=from_addr,
        from_name=from_name.strip()[:256],
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        in_reply_to=tuple(parse_msgid_list(decode_value(msg.get("In-Reply-To", "")))),
        references=tuple(parse_msgid_list(decode_value(msg.get("References", "")))),
        headers=headers,
        content_type=msg.get_content_type().lower(),
        report_type=str(msg.get_param("report-type", "") or "").lower(),
        text=text,
        html=html,
        attachments=atts,
        defects=tuple(type(d).__name__ for d in msg.defects),
    )
