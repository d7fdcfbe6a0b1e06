"""Poison messages, seen from outside the worker: what a message costs, attempts kept in rows.

A pipeline worker publishes the message in hand (see ``Pipeline.in_hand``) with the CPU time
and the wall time at which it took it. The daemon's supervisor reads them, and the worker's
CPU time from ``/proc``: a message that has had more than ``[limits] message_seconds`` of CPU
is over its budget. CPU, not wall time: a worker waiting for a locked or frozen database uses
none, and the message it holds is not to blame. (Without ``/proc`` wall time is used.)

A worker death on a message counts as an attempt in its queue row (``InboundQueue.attempt``:
the spool row on SQLite, ``inbound.attempts`` on PostgreSQL), committed, so that a restart of
the whole daemon does not forget it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from maild.pipeline.runner import NOTHING

log = logging.getLogger(__name__)

SLOTS = 5  # the shared array: kind, id, careful, CPU µs and wall µs when it was taken
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def over_budget_reason(seconds: int) -> str:
    return f"processing took longer than {seconds} s"


@dataclass(frozen=True)
class InHand:
    """What a worker holds: ``kind`` (NOTHING or HELD), the message's queue id, and the
    seconds (CPU where it can be measured, else wall) it has spent on it so far."""

    kind: int
    ident: int
    seconds: float


def mark(slots: Any, kind: int, ident: int, cpu: float) -> None:
    """Publish the message in hand; its clocks restart only when it is a different one."""
    if int(slots[0]) != kind or int(slots[1]) != ident:
        slots[3] = int(cpu * 1e6)
        slots[4] = int(time.monotonic() * 1e6)
        slots[1] = ident
    slots[0] = kind


def in_hand(slots: Any, cpu_now: float | None) -> InHand:
    """What the worker publishing ``slots`` holds; ``cpu_now`` is its CPU time now (None when
    it cannot be read: wall time is used then)."""
    kind, ident = int(slots[0]), int(slots[1])
    if kind == NOTHING:
        return InHand(NOTHING, 0, 0.0)
    if cpu_now is None:
        return InHand(kind, ident, time.monotonic() - slots[4] / 1e6)
    return InHand(kind, ident, max(0.0, cpu_now - slots[3] / 1e6))


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used by process ``pid`` so far, from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (name) "
    return (int(fields[11]) + int(fields[12])) / _TICK
