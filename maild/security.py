"""Proof of who wrote: signed Message-IDs we hand out, and trusted Authentication-Results."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence

_SIGNED = re.compile(r"^<([a-z])\.(\d{1,12})\.([0-9a-f]{8})\.([0-9a-f]{24})@([^>]+)>$")
_RESINFO = re.compile(r"\bdkim\s*=\s*([a-z]+)\b(.*?)(?=;|$)", re.I | re.S)
_HEADER_D = re.compile(r"\bheader\.(?:d|i)\s*=\s*\"?@?([^\s;\"]+)", re.I)


def _mac(secret: str, kind: str, ticket: int, recipient: str, nonce: str) -> str:
    msg = f"{kind}|{ticket}|{recipient.lower()}|{nonce}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:24]


def signed_message_id(secret: str, kind: str, ticket: int, recipient: str, domain: str) -> str:
    """A Message-ID that proves, when someone replies to it, that ``recipient`` received it.

    ``kind`` is one letter: "n" for an agent notification, "e" for an escalation mail.
    """
    nonce = secrets.token_hex(4)
    return f"<{kind}.{ticket}.{nonce}.{_mac(secret, kind, ticket, recipient, nonce)}@{domain}>"


def verify_message_ids(
    secret: str, kind: str, refs: Iterable[str], sender: str, domain: str
) -> int | None:
    """The request number proven by any of ``refs`` for ``sender``, or None."""
    for ref in refs:
        m = _SIGNED.match(ref.strip())
        if not m or m.group(1) != kind or m.group(5).lower() != domain.lower():
            continue
        ticket, nonce, mac = int(m.group(2)), m.group(3), m.group(4)
        if hmac.compare_digest(mac, _mac(secret, kind, ticket, sender, nonce)):
            return ticket
    return None


def dkim_pass_domains(values: Sequence[str], trusted_ids: Sequence[str]) -> set[str]:
    """Domains with dkim=pass in the topmost Authentication-Results of a trusted server.

    Only the first header (the one our own border MTA added last) from a trusted authserv-id
    counts; one further down may have been written by anyone.
    """
    trusted = {t.lower() for t in trusted_ids}
    for value in values:
        authserv = value.split(";", 1)[0].strip().split()[0].lower() if value.strip() else ""
        if authserv not in trusted:
            continue
        domains: set[str] = set()
        for result, props in _RESINFO.findall(value.split(";", 1)[1] if ";" in value else ""):
            if result.lower() == "pass":
                domains.update(d.lower().rstrip(".") for d in _HEADER_D.findall(props))
        return domains
    return set()


def proves_domain(domains: set[str], address: str) -> bool:
    """True when a DKIM-pass domain covers the address's domain exactly."""
    domain = address.rpartition("@")[2].lower()
    return bool(domain) and any(d == domain or d.endswith("@" + domain) for d in domains)
