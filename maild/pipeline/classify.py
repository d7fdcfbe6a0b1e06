"""Stage "classify": human, or automatic mail (auto-reply, bounce, list, loop): no answer.

It runs on every mail, an agent's or a department's too: their autoresponders loop as well.
"""

from __future__ import annotations

from dataclasses import replace

from maild.config import Config
from maild.ingest.parse import ParsedMail
from maild.pipeline.base import Context, Work
from maild.tickets.bounces import MachineInput, machine_verdict
from maild.tickets.loops import LoopInput, Verdict, classify

# Headers maild uses internally: never trusted from the outside, whatever they say.
INTERNAL_PREFIXES = ("x-maild-",)


def untrusted_header(name: str) -> bool:
    return name.lower().startswith(INTERNAL_PREFIXES)


def answers_desk(parsed: ParsedMail, domain: str) -> bool:
    """The mail answers one the desk sent: a Message-ID of the desk's domain among its refs."""
    suffix = f"@{domain.lower()}>"
    return any(r.lower().endswith(suffix) for r in (*parsed.in_reply_to, *parsed.references))


class Classify:
    name = "classify"

    def __call__(self, work: Work, ctx: Context) -> Work:
        assert work.parsed is not None
        return replace(work, verdict=verdict_of(work.parsed, work.envelope_from, ctx.config))


def verdict_of(parsed: ParsedMail, envelope_from: str | None, config: Config) -> Verdict:
    """The mail's verdict: it depends on the mail and the config alone, so the runner works
    it out before the write transaction (maild.pipeline.records.prepare), once a mail."""
    return parsed.remembered(
        ("verdict", envelope_from), lambda: _verdict(parsed, envelope_from, config)
    )


def _verdict(parsed: ParsedMail, envelope_from: str | None, config: Config) -> Verdict:
    desk = config.desk
    inp = LoopInput(
        headers=tuple((k, v) for k, v in parsed.headers if not untrusted_header(k)),
        subject=parsed.subject,
        from_addr=parsed.from_addr,
        envelope_from=envelope_from,
        content_type=parsed.content_type,
        report_type=parsed.report_type,
        desk_addresses=frozenset({desk.address, config.outbound.sender}),
        loop_name=desk.address,
        body_start=parsed.text[:2000],
        answers_desk=answers_desk(parsed, desk.domain),
    )
    verdict = classify(inp, max_received=config.limits.max_received)
    if not verdict.automatic:
        verdict = machine_verdict(machine_input(parsed)) or verdict
    if not parsed.from_addr and not verdict.automatic:
        verdict = type(verdict)(kind="loop", reason="no usable From address")
    return verdict


def machine_input(parsed: ParsedMail) -> MachineInput:
    """What the rules for automatic mail without machine headers read (maild.tickets.bounces)."""
    return MachineInput(
        from_addr=parsed.from_addr,
        subject=parsed.subject,
        content_type=parsed.content_type,
        part_types=parsed.part_types,
        text_head=parsed.text[:2000],
    )
