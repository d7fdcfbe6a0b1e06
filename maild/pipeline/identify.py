"""Stage "identify": who wrote. An agent or department must prove it; a From is no proof."""

from __future__ import annotations

import logging
from dataclasses import replace
from email.utils import getaddresses

from maild.ingest.parse import ParsedMail
from maild.pipeline.base import Context, Work
from maild.security import dkim_pass_domains, proves_domain, verify_message_ids

log = logging.getLogger(__name__)


def single_from(parsed: ParsedMail) -> bool:
    """Exactly one From header with exactly one address, the one we read.

    DKIM and DMARC judge the From a mail client shows; a second From header, a second address
    or an address hidden in a display name must not let us read a different one.
    """
    froms = [v for k, v in parsed.headers if k.lower() == "from"]
    if len(froms) != 1:
        return False
    found = getaddresses([froms[0]])
    return len(found) == 1 and found[0][1].strip().lower() == parsed.from_addr


def _proof(work: Work, ctx: Context, kind: str) -> tuple[int | None, str]:
    """(the request a signed Message-ID proves, or None; how it was proven, or '')."""
    parsed = work.parsed
    assert parsed is not None
    cfg = ctx.config
    if not single_from(parsed):
        return None, ""
    refs = (*parsed.in_reply_to, *parsed.references)
    ticket = verify_message_ids(cfg.secret_key, kind, refs, parsed.from_addr, cfg.desk.domain)
    if ticket is not None:
        return ticket, "signed Message-ID"
    if cfg.trusted_authserv_ids:
        results = [v for k, v in parsed.headers if k.lower() == "authentication-results"]
        domains = dkim_pass_domains(results, cfg.trusted_authserv_ids)
        if proves_domain(domains, parsed.from_addr):
            return None, "dkim=pass from a trusted Authentication-Results"
    return None, ""


class Identify:
    name = "identify"

    def __call__(self, work: Work, ctx: Context) -> Work:
        parsed, verdict = work.parsed, work.verdict
        assert parsed is not None and verdict is not None
        # Automatic mail is identified too: an agent's autoresponder becomes an internal note.
        sender = parsed.from_addr
        if ctx.config.agent(sender) is not None:
            kind, role = "n", "agent"
        elif ctx.config.department(sender) is not None:
            kind, role = "e", "department"
        else:
            return work
        ticket, how = _proof(work, ctx, kind)
        if how:
            return replace(work, role=role, proof=how, proven_ticket=ticket)
        log.warning(
            "inbound %d: ALERT: From %s claims to be %s %s without proof; "
            "treated as a customer message",
            work.inbound_id,
            sender,
            "an" if role == "agent" else "a",
            role,
        )
        return replace(work, role="customer", proof=f"unproven {role} From")
