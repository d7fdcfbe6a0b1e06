"""Subject tags `[<tag> #<n>]` and reply/forward prefixes: find, strip, build."""

from __future__ import annotations

import functools
import re

MAX_TICKET_NUMBER = 10**12
_MAX_DIGITS = len(str(MAX_TICKET_NUMBER))

# One reply/forward prefix: the word, an optional counter ("Re[2]", "Re(3)", "Re^2"),
# then an ASCII or full-width colon. Longer alternatives come first (Fwd before Fw).
_PREFIX_WORDS = (
    "re",
    "fwd",
    "fw",
    "aw",
    "wg",
    "sv",
    "vs",
    "antw",
    "ответ",
    "отв",
    "на",
    "пересл",
    "перес",
)
_PREFIX = r"(?:{words})\s*(?:\[\s*\d+\s*\]|\(\s*\d+\s*\)|\^\s*\d+)?\s*[:\uff1a]".format(
    words="|".join(_PREFIX_WORDS)
)
_PREFIXES_RE = re.compile(rf"^\s*(?:{_PREFIX}\s*)+", re.IGNORECASE)

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _collapse(text: str) -> str:
    """Replace control characters by spaces and squeeze all whitespace runs into one space."""
    return " ".join(_CONTROL_RE.sub(" ", text).split())


@functools.lru_cache(maxsize=32)
def _tag_pattern(tag: str) -> re.Pattern[str]:
    """The regex for `[<tag> #<digits>]`; whitespace inside the tag matches any whitespace run.

    Remembered per tag: several times a message, and building the text and finding it in
    re's cache cost more than the search."""
    words = [re.escape(word) for word in tag.split()]
    tag_re = r"\s+".join(words)
    return re.compile(rf"\[\s*{tag_re}\s*#\s*([0-9]+)\s*\]", re.IGNORECASE)


def _valid_number(digits: str) -> int | None:
    """`digits` as a ticket number, or None when it is 0 or absurdly large."""
    stripped = digits.lstrip("0")
    if not stripped or len(stripped) > _MAX_DIGITS:
        return None
    number = int(stripped)
    return number if number <= MAX_TICKET_NUMBER else None


def find_ticket_number(subject: str, tag: str) -> int | None:
    """The number of the first valid `[<tag> #<n>]` in an already decoded subject, if any.

    Tags whose number is out of range (0, or above 10**12) are skipped, so
    `[Support #0] [Support #7]` yields 7. An empty tag never matches.
    """
    if not tag.strip():
        return None
    for match in _tag_pattern(tag).finditer(subject):
        number = _valid_number(match.group(1))
        if number is not None:
            return number
    return None


def strip_reply_prefixes(subject: str) -> str:
    """Remove any nesting of Re:/Fwd:/AW:/Ответ:/... prefixes; collapse whitespace."""
    return _collapse(_PREFIXES_RE.sub("", _collapse(subject), count=1))


def strip_tag(subject: str, tag: str) -> str:
    """Remove every `[<tag> #<n>]` of ours from a subject; collapse whitespace."""
    if not tag.strip():
        return _collapse(subject)
    return _collapse(_tag_pattern(tag).sub(" ", subject))


def tagged_subject(tag: str, number: int, subject: str) -> str:
    """`[<tag> #N] <subject>` without reply prefixes or an old tag; never contains CR/LF."""
    clean_tag = _collapse(tag)
    # Tag first: prefixes may sit on both sides of it ("Re: [Support #1] Re: x").
    rest = strip_reply_prefixes(strip_tag(subject, clean_tag))
    head = f"[{clean_tag} #{number}]"
    return f"{head} {rest}" if rest else head
