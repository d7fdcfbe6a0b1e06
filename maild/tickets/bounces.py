"""Bounces and the machine mail the loop rules miss: flufl.bounce, list managers, complaints.

Pure: it reads a parsed ``email.message.Message`` or a few facts about one and returns
decisions. ``bounce_report`` runs Mailman's bounce detectors (flufl.bounce) on mail that looks
like a bounce and collects the Message-IDs of the original mail it quotes, so the pipeline can
tell a bounce of the desk's own mail and the request it belongs to. ``machine_verdict`` holds
the rules for what real automatic mail carries without any machine header: mailing-list
manager notices, abuse complaints with the reported message attached, and carrier gateways
answering from ``post_master``-like addresses.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser

from flufl.bounce import all_failures

from maild.threading.refs import normalize_msgid
from maild.tickets.loops import AUTO_REPLY, BOUNCE, LIST, Verdict

log = logging.getLogger(__name__)

MAX_QUOTED_IDS = 10
MAX_SCAN_BYTES = 1_048_576  # body bytes: larger mail is not given to the detectors at all
MAX_WEAK_SCAN_BYTES = 262_144  # ... nor mail this large that only has a bounce's words
_TEXT_SCAN = 65_536  # bytes of a text part searched for a quoted Message-ID
_ADDRESS = re.compile(r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+$")
_QUOTED_ID = re.compile(r"^[ \t>]*Message-I[Dd][ \t]*:[ \t]*(<[^<>\s]{3,250}>)", re.MULTILINE)
_BOUNCE_SUBJECT = re.compile(
    r"deliver|undeliver|returned|failure|failed|bounce|mail system error|non-?delivery"
    r"|не доставлен|недоставлен|недоставлено",
)
_BOUNCE_BODY = re.compile(
    r"qmail-send|could(?: not|n't) be delivered|wasn't able to deliver|was not delivered"
    r"|undeliverable|delivery (?:has |to the following recipients? )?failed|permanent error"
    r"|mailbox (?:unavailable|not found|is full)|user unknown|no such user"
    r"|delivery status notification|не (?:может быть )?доставлено",
)  # both matched against lower-cased text: a dozen times faster than re.IGNORECASE
_ROBOT_WORDS = ("postmaster", "mailerdaemon", "maildaemon", "mailerdeamon")
_SEPARATORS = re.compile(r"[-_.+=]")


@dataclass(frozen=True)
class BounceReport:
    """What flufl.bounce found, and the Message-IDs of the original mail the bounce quotes."""

    permanent: tuple[str, ...] = ()
    temporary: tuple[str, ...] = ()
    quoted_ids: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[str, ...]:
        return self.permanent + tuple(a for a in self.temporary if a not in self.permanent)


def robot_local(address: str) -> str:
    """'postmaster' or 'mailerdaemon' if the local part is one, written any way; else ''.

    ``post_master``, ``Post.Master``, ``sms-postmaster``, ``MAILER_DAEMON``, ``postmaster2``.
    """
    local = _SEPARATORS.sub("", address.rpartition("@")[0].lower()).rstrip("0123456789")
    for word in _ROBOT_WORDS:
        if local.startswith(word) or local.endswith(word):
            return "mailerdaemon" if "daemon" in word or "deamon" in word else word
    return ""


def _strong_signs(msg: Message, from_addr: str) -> bool:
    """Headers only a bounce carries: a report, Exim's list, a null sender, a daemon's From."""
    if msg.get_content_type() in ("multipart/report", "message/delivery-status"):
        return True
    if msg.get("X-Failed-Recipients") is not None:
        return True
    if "".join(str(msg.get("Return-Path", "")).split()) == "<>":
        return True
    return bool(robot_local(from_addr))


def _weak_signs(msg: Message, text: str) -> bool:
    """A bounce's words in the subject or at the top of the text."""
    subject, top = _subject(msg).lower(), text[:4096].lower()
    return bool(_BOUNCE_SUBJECT.search(subject) or _BOUNCE_BODY.search(top))


def _payload_size(msg: Message) -> int:
    return sum(len(p.get_payload()) for p in msg.walk() if isinstance(p.get_payload(), str))


def _worth_scanning(msg: Message, from_addr: str, text: str) -> bool:
    """Whether to run the detectors, which read every line of the body with many patterns
    (seconds on a large attachment): only for mail that looks like a bounce, and not large."""
    size = _payload_size(msg)
    if size > MAX_SCAN_BYTES:
        return False
    if _strong_signs(msg, from_addr):
        return True
    return size <= MAX_WEAK_SCAN_BYTES and _weak_signs(msg, text)


def _addresses(found: frozenset[bytes]) -> tuple[str, ...]:
    """Detector output as clean lower-case addresses; anything else a heuristic picked up
    (base64 fragments, quoted-printable junk) is dropped."""
    out: list[str] = []
    for raw in found:
        address = raw.decode("ascii", "replace").strip().strip("<>").lower()
        if _ADDRESS.match(address) and len(address) <= 254 and address not in out:
            out.append(address)
    return tuple(sorted(out))


def _text_of(part: Message) -> str:
    """The start of a text part, decoded in its charset as well as can be."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        return payload[:_TEXT_SCAN].decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return payload[:_TEXT_SCAN].decode("utf-8", "replace")


def _subject(msg: Message) -> str:
    """The Subject with RFC 2047 words decoded (undecodable ones stay as they are)."""
    value = str(msg.get("Subject", ""))
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeError):
        return value


def quoted_message_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs of the original mail a bounce quotes: an attached message/rfc822, a
    text/rfc822-headers part, or header lines copied into the text (qmail, Exim)."""
    own = normalize_msgid(str(msg.get("Message-ID", "")))
    found: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            values = [str(inner.get("Message-ID", ""))] if isinstance(inner, Message) else []
        elif ctype == "text/rfc822-headers":
            values = [str(HeaderParser().parsestr(_text_of(part)).get("Message-ID", ""))]
        elif ctype == "text/plain":
            values = _QUOTED_ID.findall(_text_of(part))
        else:
            continue
        for value in values:
            mid = normalize_msgid(value)
            if mid and mid != own and mid not in found:
                found.append(mid)
    return tuple(found[:MAX_QUOTED_IDS])


def bounce_report(msg: Message, from_addr: str, text: str) -> BounceReport | None:
    """flufl.bounce's verdict on a mail that looks like a bounce; None for any other mail.

    ``from_addr`` and ``text`` are what the parse step read from ``msg`` already.
    """
    if not _worth_scanning(msg, from_addr, text):
        return None
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd input must not fail the message
        log.debug("flufl.bounce could not read a message", exc_info=True)
        temporary, permanent = frozenset(), frozenset()
    report = BounceReport(_addresses(permanent), _addresses(temporary), quoted_message_ids(msg))
    return report if report.failed or report.quoted_ids else None


# --- rules for machine mail without machine headers ----------------------------------


@dataclass(frozen=True)
class MachineInput:
    """The facts ``machine_verdict`` reads, taken from one parsed message."""

    from_addr: str
    subject: str
    content_type: str
    part_types: tuple[str, ...]
    text_head: str


_LIST_SOFTWARE = frozenset(
    {"majordomo", "listserv", "listproc", "mailman", "sympa", "ecartis", "lyris", "smartlist"}
)
_LIST_ROLE_RE = re.compile(r"^(?:owner-.+|.+-(?:owner|admin|request|bounces?))$")
# Said to the sender about its posting; a person writing to a help desk does not talk so.
_LIST_NOTICE_RE = re.compile(
    r"loop alert|mail loop|loop detected"
    r"|(?:you are|you're|you aren't|sender is) not (?:a )?(?:member|subscriber|subscribed)"
    r"|non-?member (?:post|submission|message)|post(?:ing)? by (?:a )?non-?member"
    r"|your (?:message|posting|post|mail) to \S+@\S+ (?:has been|was|is) (?:held|rejected"
    r"|not distributed|discarded|awaiting|pending|bounced|being held)"
    r"|(?:awaits|awaiting|requires|pending) moderator(?:'s)? approval|posting (?:was )?rejected"
    r"|results of your email command|majordomo results|bounce action notification"
    r"|welcome to the \S+ mailing list|your membership in the \S+ mailing list"
    r"|не являетесь (?:участником|подписчиком)|ваше сообщение в (?:список|рассылку)",
    re.IGNORECASE,
)


def _list_manager(inp: MachineInput) -> Verdict | None:
    local = inp.from_addr.rpartition("@")[0].lower()
    if local in _LIST_SOFTWARE:
        return Verdict(LIST, f"From is list software ({local})")
    if not _LIST_ROLE_RE.match(local):
        return None
    # An IT admin or a shop owner may write to us too: the text must be a list manager's.
    match = _LIST_NOTICE_RE.search(inp.subject) or _LIST_NOTICE_RE.search(inp.text_head)
    if match is None:
        return None
    return Verdict(LIST, f"list manager notice from {local}@ ({match.group(0)!r})")


_HOST = r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[?[0-9a-f:]*:[0-9a-f:.]+\]?|[a-z0-9-]+(?:\.[a-z0-9-]+)+)"
_COMPLAINT_SUBJECT_RE = re.compile(
    rf"^(?:spam |abuse )?complaint about (?:a )?(?:message|mail|e-?mail) from \[?{_HOST}\]?"
    r"(?=$|[\s,;:)])",
    re.IGNORECASE,
)
_ABUSE_LOCALS = frozenset(
    {"abuse", "fbl", "feedbackloop", "feedback-loop", "scomp", "complaints", "spamcop", "jmrp"}
)
_ABUSE_SUBJECT_RE = re.compile(r"complaint|abuse|spam|feedback|report", re.IGNORECASE)
_ATTACHED_MAIL = ("message/rfc822", "text/rfc822-headers")


def _complaint(inp: MachineInput) -> Verdict | None:
    """An abuse desk's complaint with the reported message attached (not ARF, which the
    loop rules know by its multipart/report)."""
    if not any(t in _ATTACHED_MAIL for t in inp.part_types):
        return None
    if _COMPLAINT_SUBJECT_RE.match(inp.subject):
        return Verdict(BOUNCE, "abuse complaint with the reported message attached")
    local = inp.from_addr.rpartition("@")[0].lower()
    if local in _ABUSE_LOCALS and _ABUSE_SUBJECT_RE.search(inp.subject):
        return Verdict(BOUNCE, f"abuse complaint from {local}@ with a message attached")
    return None


_RECEIPT_RE = re.compile(r"^(?:not )?read\s*:|^(?:не )?прочитано\s*:", re.IGNORECASE)


def _tnef_receipt(inp: MachineInput) -> Verdict | None:
    """Outlook's read receipt wrapped in TNEF (winmail.dat) instead of an RFC 8098 report."""
    if inp.content_type == "application/ms-tnef" and _RECEIPT_RE.match(inp.subject):
        return Verdict(AUTO_REPLY, "Outlook read receipt in TNEF")
    return None


def _carrier(inp: MachineInput) -> Verdict | None:
    """Gateways answer from post_master, Post.Master, MAILER_DAEMON and such."""
    word = robot_local(inp.from_addr)
    if word:
        return Verdict(BOUNCE, f"From local part is a {word}")
    return None


_MACHINE_RULES = (_list_manager, _complaint, _tnef_receipt, _carrier)


def machine_verdict(inp: MachineInput) -> Verdict | None:
    """The verdict for automatic mail that carries no machine header at all, or None."""
    for rule in _MACHINE_RULES:
        verdict = rule(inp)
        if verdict is not None:
            return verdict
    return None
