"""Strip quoted history, signatures and mobile footers from a reply's plain-text body."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Lines longer than this are never treated as a quote header, footer or separator: this keeps
# every per-line check bounded, so hostile input is processed in linear time.
_MAX_HEADER_LINE = 500
_MAX_HEADER_WINDOW = 3  # an attribution header may be wrapped over up to three lines
_SIG_DELIMITERS = frozenset({"-- ", "--"})
_RULE_CHARS = frozenset("-_=*")

# How an attribution header ("On <date>, <name> wrote:") may start: a connective or a date.
_ATTRIBUTION_START = re.compile(
    r"(?:on|am|le|el|il|op|den)\s"
    r"|\d"
    r"|(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,"
    r"|(?:пн|вт|ср|чт|пт|сб|вс|понедельник|вторник|среда|четверг|пятница|суббота|воскресенье),",
    re.IGNORECASE,
)
# The verb an attribution header ends with, before its colon (compared lower-cased).
_ATTRIBUTION_VERBS = (
    "wrote",
    "schrieb",
    "a écrit",
    "escribió",
    "ha scritto",
    "schreef",
    "пишет",
    "писал",
    "писала",
    "писал(а)",
    "написал",
    "написала",
    "написал(а)",
)
_FORWARD_MARKER = re.compile(
    r"-{2,}\s*(?:original message|forwarded message|пересылаемое сообщение"
    r"|исходное сообщение|переадресованное сообщение)\s*-{2,}"
    r"|begin forwarded message:|начало переадресованного сообщения:",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"\*?(?:from|от|от кого):\*?(?:\s|$)", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"\*?(?:sent|date|отправлено|дата):\*?(?:\s|$)", re.IGNORECASE)
_OUTLOOK_FIELD = re.compile(
    r"\*?(?:from|sent|to|cc|subject|date|от|от кого|отправлено|кому|копия|тема|дата):\*?(?:\s|$)",
    re.IGNORECASE,
)
_MOBILE_FOOTER = re.compile(
    r"sent from my [\w\- ]{2,40}"
    r"|sent from (?:yahoo mail|mail|outlook|yandex\.mail|mail\.ru)\b[\w\-. ]{0,40}"
    r"|get outlook for (?:ios|android)"
    r"|отправлено (?:с|со|из) [\w\-. ]{0,30}"
    r"(?:iphone|ipad|android|mail\.ru|почты|почта|телефона|устройства|samsung)[\w\-. ]{0,30}",
    re.IGNORECASE,
)


def strip_quoted(text: str) -> str:
    """Return only what the author wrote: no quoted history, signature or mobile footer.

    Newlines in the result are "\\n". When nothing but quoted material is left, the whole
    input is returned, stripped, so that a reply never becomes empty.
    """
    lines = _split_lines(text)
    body = _cut_at_header(lines)
    sig = _signature_index(body)
    if sig is not None:
        body = body[:sig]
    result = _join_trimmed(body[: _clean_tail(body)])
    return result or "\n".join(lines).strip()


def split_signature(text: str) -> tuple[str, str]:
    """Split at the last line that is exactly "-- " or "--": (body, signature).

    Both parts use "\\n" newlines; the body loses its trailing whitespace and the signature
    its surrounding blank lines. Without a delimiter the signature is "".
    """
    lines = _split_lines(text)
    sig = _signature_index(lines)
    if sig is None:
        return "\n".join(lines).rstrip(), ""
    return "\n".join(lines[:sig]).rstrip(), _join_trimmed(lines[sig + 1 :])


def _split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _is_blank(line: str) -> bool:
    return not line or line.isspace()


def _is_quote(line: str) -> bool:
    return line.startswith(">")


def _is_rule(stripped: str) -> bool:
    """A separator line such as "-----" or "________" (given already stripped)."""
    return len(stripped) >= 5 and set(stripped) <= _RULE_CHARS


def _join_trimmed(lines: Sequence[str]) -> str:
    start = 0
    while start < len(lines) and _is_blank(lines[start]):
        start += 1
    return "\n".join(lines[start:]).rstrip()


def _signature_index(lines: Sequence[str]) -> int | None:
    for index in range(len(lines) - 1, -1, -1):
        if lines[index] in _SIG_DELIMITERS:
            return index
    return None


def _cut_at_header(lines: list[str]) -> list[str]:
    """Keep the lines before the first quote header; step over headers of inline replies."""
    kept: list[str] = []
    index = 0
    while index < len(lines):
        hit = _header_at(lines, index)
        if hit is None:
            kept.append(lines[index])
            index += 1
            continue
        is_attribution, end = hit
        if is_attribution and _answered_below(lines, end):
            index = end  # interleaved reply: drop the header, keep quotes and answers
            continue
        while kept and (_is_blank(kept[-1]) or _is_rule(kept[-1].strip())):
            kept.pop()
        return kept
    return kept


def _header_at(lines: Sequence[str], index: int) -> tuple[bool, int] | None:
    """(is_attribution, end) when a quote header starts at lines[index], else None."""
    line = lines[index]
    if _is_quote(line) or len(line) > _MAX_HEADER_LINE:
        return None
    stripped = line.strip()
    if not stripped:
        return None
    if _FORWARD_MARKER.fullmatch(stripped) or _is_outlook_block(lines, index, stripped):
        return False, index + 1
    end = _attribution_end(lines, index, stripped)
    return None if end is None else (True, end)


def _is_outlook_block(lines: Sequence[str], index: int, stripped: str) -> bool:
    """ "From:" soon followed by "Sent:", or a long underscore line over Outlook fields."""
    following = lines[index + 1 : index + 4]
    if _OUTLOOK_FROM.match(stripped):
        return any(_OUTLOOK_SENT.match(line.lstrip()) for line in following)
    if len(stripped) >= 10 and set(stripped) == {"_"}:
        nonblank = [line.lstrip() for line in following[:2] if not _is_blank(line)]
        return bool(nonblank) and _OUTLOOK_FIELD.match(nonblank[0]) is not None
    return False


def _attribution_end(lines: Sequence[str], index: int, stripped: str) -> int | None:
    """End of an "On <date>, <name> wrote:" header starting at lines[index], if any."""
    dated = _ATTRIBUTION_START.match(stripped) is not None
    if not dated:  # "Name <addr@host> wrote:" on one line still counts
        ok = "@" in stripped and _ends_with_verb(stripped, allow_address=False)
        return index + 1 if ok else None
    limit = min(len(lines), index + _MAX_HEADER_WINDOW)
    window_length = 0
    for end in range(index, limit):
        line = lines[end]
        if end > index and not _continues_header(line, lines[end - 1]):
            return None
        window_length += len(line)
        if window_length > _MAX_HEADER_LINE:
            return None
        if _ends_with_verb(line, allow_address=True):
            window = lines[index : end + 1]
            has_detail = any(char.isdigit() or char == "@" for part in window for char in part)
            return end + 1 if has_detail else None
    return None


def _continues_header(line: str, previous: str) -> bool:
    """Whether `line` may be a wrapped continuation of the header line `previous`."""
    if _is_blank(line) or _is_quote(line) or previous.rstrip().endswith((".", "!", "?")):
        return False
    return _ATTRIBUTION_START.match(line.strip()) is None


def _ends_with_verb(line: str, *, allow_address: bool) -> bool:
    """Whether a line ends like a quote header: "wrote:", "пишет:", or "<a@b>:" (if allowed)."""
    stripped = line.rstrip()
    if not stripped.endswith(":"):
        return False
    head = stripped[:-1].rstrip()
    lowered = head.lower().replace("\u00a0", " ")
    for verb in _ATTRIBUTION_VERBS:
        if lowered.endswith(verb):
            before = len(lowered) - len(verb) - 1
            if before < 0 or not lowered[before].isalnum():
                return True
    if allow_address and head.endswith(">"):
        return "@" in head[head.rfind("<") + 1 :] and "<" in head
    return False


def _answered_below(lines: Sequence[str], end: int) -> bool:
    """Whether the header ending at `end` opens a `>` block that the author answers below."""
    index = end
    while index < len(lines) and _is_blank(lines[index]):
        index += 1
    if index >= len(lines) or not _is_quote(lines[index]):
        return False
    while index < len(lines) and (_is_blank(lines[index]) or _is_quote(lines[index])):
        index += 1
    if index >= len(lines):
        return False
    line = lines[index]
    stripped = line.strip()
    if line in _SIG_DELIMITERS or _is_rule(stripped) or _is_mobile_footer(stripped):
        return False
    return _header_at(lines, index) is None


def _is_mobile_footer(stripped: str) -> bool:
    return len(stripped) <= 100 and _MOBILE_FOOTER.fullmatch(stripped) is not None


def _clean_tail(lines: Sequence[str]) -> int:
    """Length of `lines` once trailing quotes, list and mobile footers are cut off."""
    end = len(lines)
    while True:
        before = end
        while end and (_is_blank(lines[end - 1]) or _is_quote(lines[end - 1])):
            end -= 1
        if end and _is_mobile_footer(lines[end - 1].strip()):
            end -= 1
        end = _list_footer_start(lines, end)
        if end == before:
            return end


def _list_footer_start(lines: Sequence[str], end: int) -> int:
    """Where a mailing-list footer ("_____" then "... mailing list") begins, else `end`."""
    for index in range(end - 1, max(end - 6, 0) - 1, -1):
        stripped = lines[index].strip()
        if len(stripped) >= 10 and set(stripped) == {"_"}:
            tail = " ".join(lines[index + 1 : end]).lower()
            return index if "mailing list" in tail or "listinfo" in tail else end
    return end
