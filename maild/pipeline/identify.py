"""Stage "identify": who wrote. An agent or department must prove it; a From is no proof."""

from __future__ import annotations

import logging
from dataclasses import replace
from email.utils import getaddresses

from maild.config import Config
from maild.ingest.parse import ParsedMail
from maild.pipeline.base import Context, Work
from maild.security.proof import DnsFunc, dkim_domains, dkim_pass_domains, proves_domain
from maild.security.signing import verify_message_ids
from maild.tickets.words import AgentProof, Role

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


# Sources fed by the operator's own MTA, which writes the topmost Authentication-Results.
MTA_SOURCES = frozenset({"lmtp", "pipe", "imap"})


def staff_dkim(
    config: Config, parsed: ParsedMail | None, raw: bytes, dnsfunc: DnsFunc | None
) -> frozenset[str]:
    """DKIM domains verified on mail whose From is an agent or a department, when "dkim" is an
    accepted proof; nothing for anyone else (DNS lookups cost time, in the parse step)."""
    if parsed is None or AgentProof.DKIM not in config.agent_proof:
        return frozenset()
    sender = parsed.from_addr
    if not sender or (config.agent(sender) is None and config.department(sender) is None):
        return frozenset()
    return dkim_domains(raw, dnsfunc)


def authres_trusted(work: Work, config: Config) -> bool:
    """Authentication-Results count only where our own MTA wrote them: LMTP, the pipe, IMAP,
    or maild's SMTP listener when it sits behind that MTA (``[smtp] behind_mta``)."""
    if AgentProof.AUTHRES not in config.agent_proof or not config.trusted_authserv_ids:
        return False
    return work.source in MTA_SOURCES or (work.source == "smtp" and config.smtp.behind_mta)


def _proof(work: Work, ctx: Context, kind: str) -> tuple[int | None, str]:
    """(the request a signed Message-ID proves, or None; how it was proven, or '')."""
    parsed = work.parsed
    assert parsed is not None
    cfg = ctx.config
    if not single_from(parsed):
        return None, ""
    if AgentProof.SIGNED_ID in cfg.agent_proof:
        refs = (*parsed.in_reply_to, *parsed.references)
        ticket = verify_message_ids(cfg.secret_key, kind, refs, parsed.from_addr, cfg.desk.domain)
        if ticket is not None:
            return ticket, "signed Message-ID"
    if AgentProof.DKIM in cfg.agent_proof and proves_domain(set(work.dkim), parsed.from_addr):
        return None, "DKIM signature verified by maild"
    if authres_trusted(work, cfg):
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
            kind, role = "n", Role.AGENT
        elif ctx.config.department(sender) is not None:
            kind, role = "e", Role.DEPARTMENT
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
            "an" if role == Role.AGENT else "a",
            role,
        )
        return replace(work, role=Role.CUSTOMER, proof=f"unproven {role} From")
