"""Stage "classify": human, or automatic mail (auto-reply, bounce, list, loop): no answer."""

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
