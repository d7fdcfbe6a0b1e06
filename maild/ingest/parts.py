"""The parts of a parsed mail: its text, its HTML and its attachments, from the MIME tree."""

from __future__ import annotations

import binascii
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

from maild.ingest.headers import decode_bytes, decode_value, safe_filename
from maild.ingest.html2text import html_to_text

_SURROGATE = re.compile("[\udc80-\udcff]")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_JUNK = bytes(c for c in range(256) if c not in _B64_ALPHABET)  # for bytes.translate
_B64_PAD = re.compile(rb"=+")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


def raw_headers(msg: Message) -> list[tuple[str, str]]:
    """Header values as stored: str, with 8-bit bytes kept as surrogates (never a Header)."""
    return [(k, str(v)) for k, v in msg.raw_items()]


def _leaves(msg: Message) -> Iterator[tuple[Message, bool]]:
    """Every leaf part in document order, with whether it sits inside an attachment.

    An attached message (message/rfc822 with Content-Disposition: attachment) is one leaf.
    """
    stack: list[tuple[Message, bool]] = [(msg, False)]
    while stack:
        part, inside = stack.pop()
        payload = part.get_payload()
        if not isinstance(payload, list):
            yield part, inside
            continue
        hidden = inside or part.get_content_disposition() == "attachment"
        if hidden and not inside and part.get_content_type() == "message/rfc822":
            yield part, inside
            continue
        children = [p for p in payload if isinstance(p, Message)]
        stack.extend((child, hidden) for child in reversed(children))


def _param_view(part: Message, hint: str | None) -> Message:
    """The part itself, or a copy of its MIME headers with 8-bit bytes decoded.

    compat32 turns 8-bit bytes in a parameter into U+FFFD before we could decode them.
    """
    heads = [(k, v) for k, v in raw_headers(part) if k.lower().startswith("content-")]
    if not any(_SURROGATE.search(v) for _, v in heads):
        return part
    view = Message()
    for k, v in heads:
        view[k] = decode_value(v, hint) if _SURROGATE.search(v) else v
    return view


def _filename(part: Message, hint: str | None) -> str | None:
    view = _param_view(part, hint)
    try:
        name = view.get_filename()
    except (LookupError, ValueError, TypeError, AssertionError):
        return None
    return decode_value(name, hint) if name else None


def _payload_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        try:
            return b"".join(p.as_bytes() for p in part.get_payload() if isinstance(p, Message))
        except (LookupError, ValueError, TypeError, UnicodeError):
            return b""
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        payload = part.get_payload()
        if isinstance(payload, str):
            return _base64(payload.encode("ascii", "ignore"))
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _base64(data: bytes) -> bytes:
    """Lenient base64: junk dropped, each padded run decoded on its own, a dangling char ignored.

    compat32 hands back the undecoded text when the length is off by one.
    """
    data = data.translate(None, _B64_JUNK)
    body = data.rstrip(b"=")
    if b"=" not in body and len(body) % 4 != 1:  # the usual case: one run, padded at the end
        return binascii.a2b_base64(body + b"=" * (-len(body) % 4))
    out = []
    for chunk in _B64_PAD.split(data):
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
        try:
            out.append(binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4)))
        except binascii.Error:
            break
    return b"".join(out)


def _attachment(part: Message, name: str | None, ctype: str) -> Attachment:
    default = "message.eml" if ctype == "message/rfc822" else "attachment"
    ext = mimetypes.guess_extension(ctype) if ctype != "application/octet-stream" else None
    return Attachment(
        safe_filename(name, default + (ext or "") if default == "attachment" else default),
        ctype[:128],
        _payload_bytes(part),
    )


def body_charset(msg: Message) -> str | None:
    """The charset of the first text part: the best guess for undeclared 8-bit headers."""
    for part, _ in _leaves(msg):
        if part.get_content_maintype() == "text":
            return part.get_content_charset()
    return None


def _is_body(part: Message, inside: bool, name: str | None) -> bool:
    """Text shown as the message: text/plain or text/html that is not an attached file.

    A multipart whose boundary never shows up keeps its body as one string: show that too.
    """
    if inside or part.get_content_disposition() == "attachment":
        return False
    if name and part.get_content_disposition() != "inline":
        return False
    ctype = part.get_content_type()
    return ctype in ("text/plain", "text/html") or part.get_content_maintype() == "multipart"


def _is_attachment(part: Message, inside: bool, name: str | None) -> bool:
    if name or inside or part.get_content_disposition() == "attachment":
        return True
    return part.get_content_maintype() not in ("text", "multipart", "message")


def bodies(msg: Message, hint: str | None) -> tuple[str, str | None, tuple[Attachment, ...]]:
    plain: list[str] = []
    html: list[str] = []
    atts: list[Attachment] = []
    for part, inside in _leaves(msg):
        name = _filename(part, hint)
        if _is_body(part, inside, name):
            text = decode_bytes(_payload_bytes(part), part.get_content_charset())
            text = text.replace("\r\n", "\n").replace("\x00", "")  # PostgreSQL refuses NUL
            (html if part.get_content_type() == "text/html" else plain).append(text)
        if _is_attachment(part, inside, name):
            atts.append(_attachment(part, name, part.get_content_type()))
    text = "\n".join(t for t in plain if t).strip()
    html_raw = "\n".join(h for h in html if h).strip()
    if not text and html_raw:
        text = html_to_text(html_raw)
    # Kept as received: nothing renders it, and whatever ever does must sanitise it there
    # (nh3 on every part was quadratic on nested tags: minutes for one hostile mail).
    return text, (html_raw or None), tuple(atts)
