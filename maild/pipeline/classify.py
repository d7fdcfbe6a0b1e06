"""Stage "classify": human, or automatic mail (auto-reply, bounce, list, loop): no answer.

It runs on every mail, an agent's or a department's too: their autoresponders loop as well.
"""

from __future__ import annotations

from dataclasses import replace

from maild.ingest.parse import ParsedMail
from maild.pipeline.base import Context, Work
from maild.tickets.bounces import MachineInput, machine_verdict
from maild.tickets.loops import LoopInput, classify

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
        parsed = work.parsed
        assert parsed is not None
        desk = ctx.config.desk
        inp = LoopInput(
            headers=tuple((k, v) for k, v in parsed.headers if not untrusted_header(k)),
            subject=parsed.subject,
            from_addr=parsed.from_addr,
            envelope_from=work.envelope_from,
            content_type=parsed.content_type,
            report_type=parsed.report_type,
            desk_addresses=frozenset({desk.address, ctx.config.outbound.sender}),
            loop_name=desk.address,
            body_start=parsed.text[:2000],
            answers_desk=answers_desk(parsed, desk.domain),
        )
        verdict = classify(inp, max_received=ctx.config.limits.max_received)
        if not verdict.automatic:
            verdict = machine_verdict(machine_input(parsed)) or verdict
        if not parsed.from_addr and not verdict.automatic:
            verdict = type(verdict)(kind="loop", reason="no usable From address")
        return replace(work, verdict=verdict)


def machine_input(parsed: ParsedMail) -> MachineInput:
    """What the rules for automatic mail without machine headers read (maild.tickets.bounces)."""
    return MachineInput(
        from_addr=parsed.from_addr,
        subject=parsed.subject,
        content_type=parsed.content_type,
        part_types=parsed.part_types,
        text_head=parsed.text[:2000],
    )
