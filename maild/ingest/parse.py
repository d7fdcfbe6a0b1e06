"""The parse step: raw bytes -> a frozen ParsedMail; limits are checked before the costly work."""

from __future__ import annotations

import binascii
import email
import logging
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses, parseaddr
from typing import TypeVar, cast

import mailparser

from maild.core.errors import LimitExceeded, QuarantineError
from maild.ingest.headers import decode_bytes, decode_value, safe_filename
from maild.ingest.html2text import html_to_text
from maild.threading.refs import normalize_msgid, parse_msgid_list
from maild.tickets.bounces import BounceReport, bounce_report

log = logging.getLogger(__name__)

_CT_LINE = re.compile(rb"(?im)^content-type[ \t]*:")
# A UTF-8 byte-order mark and blank or whitespace-only lines before the first header.
_LEADING_JUNK = re.compile(rb"\A(?:\xef\xbb\xbf)?(?:[ \t]*\r?\n)*")
_FOLD = re.compile(r"\r?\n[ \t]*")
_SURROGATE = re.compile("[\udc80-\udcff]")
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?.*?\?=")
_STASHED = re.compile(r"maildEW(\d+)x")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_JUNK = bytes(c for c in range(256) if c not in _B64_ALPHABET)  # for bytes.translate
_B64_PAD = re.compile(rb"=+")
_ADDR_SPEC = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class _Policy(Compat32):
    """compat32, except that MIME headers are unfolded as RFC 5322 says (CRLF removed).

    Outlook folds long boundaries inside the quotes; compat32 keeps the CRLF in the
    boundary and then finds no part at all.
    """

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if name.lower() in ("content-type", "content-disposition"):
            value = value.replace("\r", "").replace("\n", "")
        return name, value


_POLICY = _Policy()


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


_T = TypeVar("_T")


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
    bounce: BounceReport | None = None  # flufl.bounce's findings, for mail that looks like one
    part_types: tuple[str, ...] = ()  # every content type in the structure, once each
    # What was worked out from this mail alone (its language, its words, its index row), so
    # that the work done before the write transaction is not done again inside it
    # (maild.pipeline.records.prepare).
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    def remembered(self, key: object, compute: Callable[[], _T]) -> _T:
        """``compute()``, worked out once for this mail under ``key``."""
        if key not in self.memo:
            self.memo[key] = compute()
        return cast(_T, self.memo[key])

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


def check_limits(raw: bytes, limits: Limits) -> None:
    """Cheap structural checks on the raw bytes, before any MIME parsing."""
    # The first blank line, CRLF or bare LF; a bare one is only looked for before the first
    # CRLF one (a CRLF message has none, and searching all of it cost more than the rest).
    head_end = raw.find(b"\r\n\r\n")
    bare = raw.find(b"\n\n", 0, len(raw) if head_end < 0 else head_end)
    if bare >= 0 or head_end < 0:
        head_end = bare if bare >= 0 else len(raw)
    if head_end > limits.max_header_bytes:
        raise LimitExceeded(
            f"header is {head_end} bytes, over the limit of {limits.max_header_bytes}"
        )
    # Every part has a Content-* header; only a message with that many gets the exact count.
    # Each "ontent-" ends in its own "-": few dashes (base64 has none) need no counting.
    if raw.count(b"-") <= limits.max_parts:
        return
    if raw.count(b"ontent-") + raw.count(b"ONTENT-") <= limits.max_parts:
        return
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


def _raw_headers(msg: Message) -> list[tuple[str, str]]:
    """Header values as stored: str, with 8-bit bytes kept as surrogates (never a Header)."""
    return [(k, str(v)) for k, v in msg.raw_items()]


def _first(heads: list[tuple[str, str]], name: str) -> str:
    lname = name.lower()
    return next((v for k, v in heads if k.lower() == lname), "")


def _clean_addr(addr: str) -> str:
    """A lower-cased address, or "" if it could not be one (8-bit bytes read as utf-8)."""
    if _STASHED.search(addr):
        return ""  # an encoded word inside an address: not an address
    addr = decode_value(addr, "utf-8").lower()
    if "\ufffd" in addr:
        return ""
    # Quoted local parts with "," or ";" would split into several SMTP recipients later on.
    ok = addr.count("@") == 1 and not any(c in addr for c in '\r\n<> \t\x00,;"()[]\\')
    return addr if ok and len(addr) <= 254 else ""


def _stash_words(value: str) -> tuple[str, list[str]]:
    """The value with each RFC 2047 word replaced by a plain token, and the words.

    An encoded word may hide ":", "<", "," or "@" ("=?utf-8?q?x=0D=0ABcc:_evil@example.net?=");
    the address parser must never see those, or the display name becomes a group or an
    address. RFC 2047 words are decoded after parsing, in the name only.
    """
    words: list[str] = []

    def keep(m: re.Match[str]) -> str:
        words.append(m.group(0))
        return f"maildEW{len(words) - 1}x"

    return _ENCODED_WORD.sub(keep, _FOLD.sub(" ", value)), words


def _unstash(text: str, words: list[str]) -> str:
    def back(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return words[i] if i < len(words) else m.group(0)

    return _STASHED.sub(back, text)


def _sender(value: str, hint: str | None) -> tuple[str, str]:
    """(name, address) of a From value, parsed before its encoded words are decoded."""
    plain, words = _stash_words(value)
    name, addr = parseaddr(plain)
    found = _clean_addr(addr)
    if not found:
        # "Big Bug bb@bug.com", "a@x.org b@x.org": take the first thing shaped like an address.
        m = _ADDR_SPEC.search(plain)
        if m:
            found = _clean_addr(m.group(0))
            name = name or plain[: m.start()].strip(" <\"'")
    return decode_value(_unstash(name, words), hint)[:256], found


def _addresses(heads: list[tuple[str, str]], name: str) -> tuple[str, ...]:
    lname = name.lower()
    values = [_stash_words(v)[0] for k, v in heads if k.lower() == lname]
    found: list[str] = []
    for _, addr in getaddresses(values):
        addr = _clean_addr(addr)
        if addr and addr not in found:
            found.append(addr)
    return tuple(found[:100])


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
    heads = [(k, v) for k, v in _raw_headers(part) if k.lower().startswith("content-")]
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


def _body_charset(msg: Message) -> str | None:
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


def _bodies(msg: Message, hint: str | None) -> tuple[str, str | None, tuple[Attachment, ...]]:
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


def parse_mail(raw: bytes, limits: Limits = Limits()) -> ParsedMail:
    """Parse a raw message; raise QuarantineError (with the reason) if it cannot be used."""
    junk = _LEADING_JUNK.match(raw)  # always matches, mostly nothing: no copy then
    raw = raw[junk.end() :] if junk and junk.end() else raw
    check_limits(raw, limits)
    try:
        msg = email.message_from_bytes(raw, policy=_POLICY)
        depth = _depth(msg, limits.max_depth)
    except RecursionError:
        raise LimitExceeded("MIME nesting too deep to parse") from None
    if depth > limits.max_depth:
        raise LimitExceeded(f"MIME nesting too deep ({depth} > {limits.max_depth})")
    try:
        return _parsed(msg)
    except RecursionError:
        raise LimitExceeded("MIME nesting too deep to parse") from None
    except (LookupError, ValueError, TypeError, AttributeError, UnicodeError) as exc:
        raise QuarantineError(f"body could not be decoded: {type(exc).__name__}: {exc}") from exc


def _defects(msg: Message) -> tuple[str, ...]:
    found = {type(d).__name__ for part in msg.walk() for d in part.defects}
    return tuple(sorted(found))


def _recover(msg: Message) -> tuple[str, tuple[str, ...]]:
    """mail-parser's repairs for a broken structure (a part lost in the epilogue, ...).

    Only for messages the stdlib flags as defective: it walks the whole message again.
    """
    try:
        mp = mailparser.MailParser(msg)
    except Exception:  # a second opinion must never fail the message
        log.debug("mail-parser could not read a defective message", exc_info=True)
        return "", ()
    text = "\n".join(t for t in mp.text_plain if t).strip()
    if not text and mp.text_html:
        text = html_to_text("\n".join(mp.text_html))
    return text.replace("\x00", ""), tuple(sorted(mp.defects_categories))


def _parsed(msg: Message) -> ParsedMail:
    heads = _raw_headers(msg)
    hint = _body_charset(msg)
    text, html, atts = _bodies(msg, hint)
    defects = _defects(msg)
    if defects:
        recovered, categories = _recover(msg)
        text = text or ("" if html else recovered)
        defects = categories or defects
    from_name, from_addr = _sender(_first(heads, "From"), hint)
    return ParsedMail(
        message_id=normalize_msgid(decode_value(_first(heads, "Message-ID"))),
        subject=decode_value(_first(heads, "Subject"), hint),
        from_addr=from_addr,
        from_name=from_name,
        to=_addresses(heads, "To"),
        cc=_addresses(heads, "Cc"),
        in_reply_to=tuple(parse_msgid_list(decode_value(_first(heads, "In-Reply-To")))),
        references=tuple(parse_msgid_list(decode_value(_first(heads, "References")))),
        headers=tuple((decode_value(k), decode_value(v, hint)) for k, v in heads),
        content_type=msg.get_content_type().lower(),
        report_type=str(msg.get_param("report-type", "") or "").lower(),
        text=text,
        html=html,
        attachments=atts,
        defects=defects,
        bounce=bounce_report(msg, from_addr, text),
        part_types=tuple(dict.fromkeys(p.get_content_type() for p in msg.walk())),
    )
