"""Message-ID lists from In-Reply-To / References headers, tolerant of real-world junk."""

from __future__ import annotations

import re

MAX_IDS = 100
MAX_ID_LENGTH = 998

_BRACKETED_RE = re.compile(r"<([^<>]*)>")
_COMMENT_RE = re.compile(r"\([^()]*\)")
_WHITESPACE_RE = re.compile(r"\s+")
# Anything that may not appear inside an id once folding whitespace is gone
# (`[` `]` stay allowed: `<x@[192.0.2.1]>` is a valid id).
_BAD_CHAR_RE = re.compile(r"[\x00-\x20\x7f\"\\,;()<>]")


def _clean_inner(inner: str) -> str | None:
    """The bracketed id for an id's inside (folding whitespace removed), or None if invalid."""
    inner = _WHITESPACE_RE.sub("", inner)
    if not inner or _BAD_CHAR_RE.search(inner):
        return None
    msgid = f"<{inner}>"
    return msgid if len(msgid) <= MAX_ID_LENGTH else None


def _bare_id(value: str) -> str | None:
    """A single id written without angle brackets (`abc@host`), or None."""
    token = _COMMENT_RE.sub(" ", value).strip()
    if "@" not in token or _WHITESPACE_RE.search(token):
        return None
    return _clean_inner(token)


def _dedupe(ids: list[str]) -> list[str]:
    """Drop repeated ids, keeping the first occurrence and the order."""
    return list(dict.fromkeys(ids))


def parse_msgid_list(value: str | None) -> list[str]:
    """All Message-IDs in an In-Reply-To/References value, each with angle brackets.

    Junk between ids is ignored, folded whitespace inside an id is removed,
    repeats are dropped (first occurrence kept), ids over 998 characters are
    dropped, and only the last 100 are kept: the nearest ancestors come last.
    A value holding no bracketed id but exactly one bare `local@host` token
    yields that token in brackets.
    """
    if not value:
        return []
    found = [_clean_inner(inner) for inner in _BRACKETED_RE.findall(value)]
    ids = [msgid for msgid in found if msgid is not None]
    if not ids and "<" not in value:
        bare = _bare_id(value)
        ids = [bare] if bare else []
    return _dedupe(ids)[-MAX_IDS:]


def normalize_msgid(value: str | None) -> str | None:
    """One Message-ID, stripped and in angle brackets, or None if empty or invalid."""
    ids = parse_msgid_list(value)
    return ids[0] if ids else None


def msgid_domain(msgid: str) -> str:
    """The part after the last ``@`` of a bracketed Message-ID, lower-cased ('' if none)."""
    inner = msgid.strip().removeprefix("<").removesuffix(">")
    return inner.rpartition("@")[2].lower() if "@" in inner else ""


def is_own_msgid(msgid: str, domain: str) -> bool:
    """Whether ``msgid`` is in the desk's own domain: only the desk mints those, so inbound
    mail may carry them in its references but never claim one as its own."""
    return msgid_domain(msgid) == domain.lower() != ""
