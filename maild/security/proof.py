"""Proof of who wrote, besides our signed Message-IDs: DKIM and trusted Authentication-Results."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import dkim

log = logging.getLogger(__name__)


def _tokens(value: str) -> list[list[str]]:
    """RFC 8601 value -> result groups (split on ';'), each a list of whitespace tokens.

    Comments are dropped and quoted strings stay inside one token, so text an attacker put in
    an envelope address or a comment can never pose as a result or a property.
    """
    groups: list[list[str]] = [[]]
    token, depth, quoted, escaped = "", 0, False, False
    for ch in value:
        if escaped:
            token, escaped = (token + ch) if not depth else token, False
        elif ch == "\\":
            escaped = True
        elif quoted:
            token += ch
            quoted = ch != '"'
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif ch == '"':
            token, quoted = token + ch, True
        elif ch == ";" or ch.isspace():
            if token:
                groups[-1].append(token)
            token = ""
            if ch == ";":
                groups.append([])
        else:
            token += ch
    if token:
        groups[-1].append(token)
    return [g for g in groups if g]


def dkim_pass_domains(values: Sequence[str], trusted_ids: Sequence[str]) -> set[str]:
    """Domains with dkim=pass in the topmost Authentication-Results, if a trusted server wrote it.

    Only the topmost header counts (our border MTA adds it last, above anything the sender
    wrote); if its authserv-id is not trusted, nothing is proven. Only ``header.d`` of a result
    whose method and result are exactly ``dkim=pass`` names a domain.
    """
    if not values:
        return set()
    groups = _tokens(values[0])
    if not groups or groups[0][0].lower() not in {t.lower() for t in trusted_ids}:
        return set()
    domains: set[str] = set()
    for group in groups[1:]:
        if group[0].lower() != "dkim=pass":
            continue
        for prop in group[1:]:
            name, _, val = prop.partition("=")
            if name.lower() == "header.d" and val and '"' not in val and "@" not in val:
                domains.add(val.lower().rstrip("."))
    return domains


def proves_domain(domains: set[str], address: str) -> bool:
    """True when a DKIM-pass domain covers the address's domain exactly."""
    domain = address.rpartition("@")[2].lower()
    return bool(domain) and domain in domains


DnsFunc = Callable[..., Any]
MAX_DKIM_SIGNATURES = 4


def dkim_domains(raw: bytes, dnsfunc: DnsFunc | None = None) -> frozenset[str]:
    """The d= domains of DKIM signatures on ``raw`` that maild verified itself (dkimpy).

    A signature with a body length (l=) proves nothing: text could follow the signed part.
    ``dnsfunc`` resolves the key's TXT record (dkimpy's interface; tests give their own).
    """
    try:
        verifier = dkim.DKIM(raw)
    except Exception:  # mail dkimpy cannot read carries no proof; it is no error
        return frozenset()
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    found: set[str] = set()
    for idx in range(min(count, MAX_DKIM_SIGNATURES)):
        try:
            ok = verifier.verify(idx, dnsfunc) if dnsfunc else verifier.verify(idx)
        except Exception:  # a bad signature, key or DNS answer is just no proof
            log.debug("DKIM signature %d did not verify", idx, exc_info=True)
            continue
        if ok and b"l" not in verifier.signature_fields:
            found.add(verifier.domain.decode("ascii", "replace").lower().rstrip("."))
    return frozenset(found)
