"""The parse step: raw bytes -> a frozen ParsedMail; limits are checked before the costly work."""

from __future__ import annotations

import email
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses, parseaddr
from typing import TypeVar, cast

import mailparser

from maild.core.errors import LimitExceeded, QuarantineError
from maild.ingest.headers import decode_value
from maild.ingest.html2text import html_to_text
from maild.ingest.parts import Attachment, bodies, body_charset, raw_headers
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
    heads = raw_headers(msg)
    hint = body_charset(msg)
    text, html, atts = bodies(msg, hint)
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
