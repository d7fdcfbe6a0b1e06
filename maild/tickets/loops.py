"""Loop and noise classification (RFC 3834, RFC 3464): may the desk answer this mail?"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from maild.threading.tags import strip_reply_prefixes

HUMAN = "human"
AUTO_REPLY = "auto-reply"
BOUNCE = "bounce"
LIST = "list"
LOOP = "loop"

# Most specific first: when several rules hit, the verdict takes the first kind here.
_KIND_ORDER = (LOOP, BOUNCE, AUTO_REPLY, LIST)


@dataclass(frozen=True)
class LoopInput:
    """What classification looks at; built by the parse step from one message."""

    headers: Sequence[tuple[str, str]]
    subject: str
    from_addr: str
    envelope_from: str | None
    content_type: str
    report_type: str
    desk_addresses: frozenset[str]
    loop_name: str
    # The first characters of the text, and whether the mail answers one the desk sent
    # (a reference at the desk's domain): body and "thank you" rules apply only to those.
    body_start: str = ""
    answers_desk: bool = False


@dataclass(frozen=True)
class Verdict:
    """The kind of a message and the first reason found for it ('' for human mail)."""

    kind: str
    reason: str = ""

    @property
    def automatic(self) -> bool:
        """True for anything the desk must not auto-answer."""
        return self.kind != HUMAN


@dataclass(frozen=True)
class _View:
    """Headers indexed by lower-cased name, plus the rule settings."""

    inp: LoopInput
    max_received: int
    by_name: dict[str, list[str]] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        return self.by_name.get(name.lower(), [])

    def has(self, name: str) -> bool:
        return name.lower() in self.by_name


def _view(inp: LoopInput, max_received: int) -> _View:
    by_name: dict[str, list[str]] = {}
    for name, value in inp.headers:
        by_name.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    return _View(inp, max_received, by_name)


_COMMENT_RE = re.compile(r"\([^()]*\)")
_TOKEN_SPLIT_RE = re.compile(r"[;,\s]+")


def _first_token(value: str) -> str:
    """The leading keyword of a header value, comments and parameters removed, lower-case."""
    parts = _TOKEN_SPLIT_RE.split(_COMMENT_RE.sub(" ", value).strip(), maxsplit=1)
    return parts[0].lower()


Rule = Callable[[_View], Verdict | None]


# --- loop ---------------------------------------------------------------------------


def _own_x_loop(view: _View) -> Verdict | None:
    ours = view.inp.loop_name.strip().strip("<>").lower()
    if not ours:
        return None
    for value in view.values("X-Loop"):
        if value.strip().strip("<>").lower() == ours:
            return Verdict(LOOP, f"X-Loop: {ours}")
    return None


def _from_desk(view: _View) -> Verdict | None:
    sender = view.inp.from_addr.strip().lower()
    desk = {address.lower() for address in view.inp.desk_addresses}
    if sender and sender in desk:
        return Verdict(LOOP, f"From is the desk's own address {sender}")
    return None


def _too_many_received(view: _View) -> Verdict | None:
    count = len(view.values("Received"))
    if count > view.max_received:
        return Verdict(LOOP, f"{count} Received headers (limit {view.max_received})")
    return None


# --- bounce -------------------------------------------------------------------------


def _null_sender(view: _View) -> Verdict | None:
    if view.inp.envelope_from == "":
        return Verdict(BOUNCE, "null envelope sender <>")
    for value in view.values("Return-Path"):
        if "".join(_COMMENT_RE.sub("", value).split()) == "<>":
            return Verdict(BOUNCE, "Return-Path: <>")
    return None


_REPORT_KINDS = {
    "delivery-status": BOUNCE,
    "feedback-report": BOUNCE,
    "disposition-notification": AUTO_REPLY,
}


def _report(view: _View) -> Verdict | None:
    if view.inp.content_type.strip().lower() != "multipart/report":
        return None
    report_type = view.inp.report_type.strip().lower()
    # Any other report (TLS-RPT, ...) is machine-made too.
    kind = _REPORT_KINDS.get(report_type, AUTO_REPLY)
    return Verdict(kind, f"multipart/report; report-type={report_type or '(none)'}")


def _failed_recipients(view: _View) -> Verdict | None:
    if view.has("X-Failed-Recipients"):
        return Verdict(BOUNCE, "X-Failed-Recipients present")
    return None


_ROBOT_LOCAL_RE = re.compile(
    r"^(?P<name>mailer-daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)"
    r"(?:[+\-_.=].*)?$",
    re.IGNORECASE,
)
_BOUNCE_LOCALS = ("mailer-daemon", "postmaster", "bounce", "bounces")


def _robot_sender(view: _View) -> Verdict | None:
    local = view.inp.from_addr.strip().rpartition("@")[0]
    match = _ROBOT_LOCAL_RE.match(local)
    if not match:
        return None
    name = match.group("name").lower()
    kind = BOUNCE if name in _BOUNCE_LOCALS else AUTO_REPLY
    return Verdict(kind, f"From local part {name}")


# --- auto-reply ---------------------------------------------------------------------


def _auto_submitted(view: _View) -> Verdict | None:
    for value in view.values("Auto-Submitted"):
        keyword = _first_token(value)
        if keyword and keyword != "no":
            return Verdict(AUTO_REPLY, f"Auto-Submitted: {keyword}")
    return None


_PRECEDENCE_KINDS = {"bulk": LIST, "list": LIST, "junk": AUTO_REPLY, "auto_reply": AUTO_REPLY}


def _precedence(view: _View) -> Verdict | None:
    for value in view.values("Precedence"):
        token = _first_token(value)
        if token in _PRECEDENCE_KINDS:
            return Verdict(_PRECEDENCE_KINDS[token], f"Precedence: {token}")
    return None


_AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_FALSE_VALUES = frozenset({"no", "false", "0", "off"})


def _autoreply_headers(view: _View) -> Verdict | None:
    for name in _AUTOREPLY_HEADERS:
        for value in view.values(name):
            if _first_token(value) not in _FALSE_VALUES:
                return Verdict(AUTO_REPLY, f"{name} present")
    return None


_EXCHANGE_AUTO_SOURCE_RE = re.compile(r"mailbox rules agent|auto-?repl|\boof\b", re.IGNORECASE)


def _exchange(view: _View) -> Verdict | None:
    if view.has("X-MS-Exchange-Inbox-Rules-Loop"):
        return Verdict(AUTO_REPLY, "X-MS-Exchange-Inbox-Rules-Loop present")
    for value in view.values("X-MS-Exchange-Generated-Message-Source"):
        if _EXCHANGE_AUTO_SOURCE_RE.search(value):
            return Verdict(AUTO_REPLY, f"X-MS-Exchange-Generated-Message-Source: {value}")
    return None


_AUTO_WORDS_RE = re.compile(
    r"auto[- ]?reply|automatic reply|out of (?:the )?office|abwesenheit|automatische antwort"
    r"|r[ée]ponse automatique|автоответ|автоматический ответ",
    re.IGNORECASE,
)


def _suppress_with_subject(view: _View) -> Verdict | None:
    if view.has("X-Auto-Response-Suppress") and _AUTO_WORDS_RE.search(view.inp.subject):
        return Verdict(AUTO_REPLY, "X-Auto-Response-Suppress with an auto-reply subject")
    return None


# --- list ---------------------------------------------------------------------------


def _list_headers(view: _View) -> Verdict | None:
    for name in ("List-Id", "List-Post", "List-Unsubscribe"):
        if view.has(name):
            return Verdict(LIST, f"{name} present")
    return None


# --- subject heuristics -------------------------------------------------------------

_END = r"\s*(?:[:\uff1a]|$)"
_SUBJECT_RULES: tuple[tuple[str, str, str], ...] = (
    (AUTO_REPLY, "Auto reply:", r"auto[- ]?reply\s*[:\uff1a]"),
    (AUTO_REPLY, "Autoreply", r"auto[- ]?reply" + _END),
    (AUTO_REPLY, "Automatic reply:", r"automatic reply\s*[:\uff1a]"),
    (AUTO_REPLY, "Out of Office", r"out of (?:the )?office(?:\s+auto-?reply)?" + _END),
    (AUTO_REPLY, "Abwesenheitsnotiz", r"abwesenheitsnotiz" + _END),
    (AUTO_REPLY, "Automatische Antwort", r"automatische antwort" + _END),
    (AUTO_REPLY, "Réponse automatique", r"r[ée]ponse automatique" + _END),
    (AUTO_REPLY, "Автоответ", r"автоответ" + _END),
    (AUTO_REPLY, "Автоматический ответ", r"автоматический ответ" + _END),
    (BOUNCE, "Undeliverable:", r"undeliverable\s*[:\uff1a]"),
    (BOUNCE, "Undelivered Mail Returned to Sender", r"undelivered mail returned to sender"),
    (BOUNCE, "Mail delivery failed", r"mail delivery failed" + _END),
    (BOUNCE, "Delivery Status Notification", r"delivery status notification\s*(?:\(|[:\uff1a]|$)"),
    (BOUNCE, "Returned mail:", r"returned mail\s*[:\uff1a]"),
    (BOUNCE, "failure notice", r"failure notice" + _END),
    (BOUNCE, "Недоставленное сообщение", r"недоставленное сообщение" + _END),
    (BOUNCE, "Не доставлено", r"не доставлено" + _END),
)
_COMPILED_SUBJECT_RULES = tuple(
    (kind, label, re.compile(pattern, re.IGNORECASE)) for kind, label, pattern in _SUBJECT_RULES
)
_LEADING_BRACKET_RE = re.compile(r"^\[[^\[\]]{0,100}\]\s*")


def _subject_core(subject: str) -> str:
    """The subject without leading reply prefixes and bracketed tags (`[EXTERNAL]`, ours)."""
    text = strip_reply_prefixes(subject)
    while match := _LEADING_BRACKET_RE.match(text):
        text = strip_reply_prefixes(text[match.end() :])
    return text


def _subject(view: _View) -> Verdict | None:
    core = _subject_core(view.inp.subject)
    for kind, label, pattern in _COMPILED_SUBJECT_RULES:
        if pattern.match(core):
            return Verdict(kind, f"Subject starts with {label!r}")
    return None


# --- autoresponders without headers: answers to the desk's own mail -----------------

# An autoresponder's fixed subject, not a reply ("Re: ..."): "Thanks for your mail".
_THANKS_SUBJECT_RE = re.compile(
    r"(?:many\s+)?(?:thanks|thank\s+you)\s+(?:for\s+(?:your|the)\s+"
    r"(?:e-?mail|mail|message|letter|inquiry|enquiry|request)|for\s+contacting)"
    r"|(?:спасибо|благодарим)(?:\s+вас)?\s+за\s+(?:ваше\s+|ваш\s+)?"
    r"(?:письмо|сообщение|обращение)",
    re.IGNORECASE,
)


def _fresh_subject(subject: str) -> bool:
    """No reply prefix: an autoresponder's own subject, not the request's."""
    subject = " ".join(subject.split())
    return bool(subject) and strip_reply_prefixes(subject) == subject


def _thanks_subject(view: _View) -> Verdict | None:
    if not view.inp.answers_desk or not _fresh_subject(view.inp.subject):
        return None
    if _THANKS_SUBJECT_RE.match(_subject_core(view.inp.subject)):
        return Verdict(AUTO_REPLY, "a 'thank you for your mail' subject answering our mail")
    return None


_GREETING_RE = re.compile(
    r"^(?:hello|hi|dear|good\s+(?:morning|afternoon|day)|greetings|здравствуйте|добрый\s+день"
    r"|доброе\s+утро|добрый\s+вечер|уважаемый|уважаемая|приветствую)\b.{0,40}$",
    re.IGNORECASE,
)
_AWAY_RE = re.compile(
    r"(?:^|[.!]\s+)(?:"
    r"(?:this\s+is\s+an?\s+)?(?:automatic|automated|auto-?generated)\s+(?:reply|response|message)"
    r"|auto[- ]?reply\b|out\s+of\s+(?:the\s+)?office\b"
    r"|(?:i\s+am|i'm|i\s+will\s+be|i'll\s+be)\s+(?:currently\s+|now\s+)?(?:away\b"
    r"|out\s+of\s+(?:the\s+)?office|on\s+(?:annual\s+|sick\s+|parental\s+)?"
    r"(?:leave|vacation|holidays?)\b|off\s+work)"
    r"|(?:это\s+)?автоматическ(?:ий|ое)\s+(?:ответ|сообщение)|автоответ"
    r"|(?:я\s+)?(?:сейчас\s+|в\s+настоящее\s+время\s+)?(?:нахожусь\s+)?в\s+отпуске"
    r"|(?:я\s+)?(?:нахожусь\s+|буду\s+)?вне\s+офиса|меня\s+нет\s+в\s+офисе"
    r"|я\s+(?:сейчас\s+)?(?:отсутствую|в\s+командировке|на\s+больничном))",
    re.IGNORECASE,
)


def _first_line(text: str) -> str:
    """The first line that says something: blank lines and a short greeting skipped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and _GREETING_RE.match(lines[0]):
        return lines[1]
    return lines[0] if lines else ""


def _away_text(view: _View) -> Verdict | None:
    if not view.inp.answers_desk:
        return None
    places = [("first line", view.inp.body_start)]
    if _fresh_subject(view.inp.subject):  # a reply's subject is the customer's own words
        places.insert(0, ("subject", _subject_core(view.inp.subject)))
    for where, text in places:
        line = " ".join(_first_line(text).split())[:300]
        if found := _AWAY_RE.search(line):
            return Verdict(AUTO_REPLY, f"{where} says {found.group(0).strip(' .!')!r}")
    return None


_RULES: tuple[Rule, ...] = (
    _own_x_loop,
    _from_desk,
    _too_many_received,
    _null_sender,
    _report,
    _failed_recipients,
    _robot_sender,
    _auto_submitted,
    _precedence,
    _autoreply_headers,
    _exchange,
    _suppress_with_subject,
    _list_headers,
    _subject,
    _thanks_subject,
    _away_text,
)


def classify(inp: LoopInput, *, max_received: int = 50) -> Verdict:
    """Classify one message; any rule hit makes it automatic, the most specific kind wins."""
    view = _view(inp, max_received)
    hits = [verdict for rule in _RULES if (verdict := rule(view)) is not None]
    for kind in _KIND_ORDER:
        for verdict in hits:
            if verdict.kind == kind:
                return verdict
    return Verdict(HUMAN, "")
