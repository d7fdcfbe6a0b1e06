"""The sections of config.toml that drive agents, departments and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from maild.errors import ConfigError

if TYPE_CHECKING:
    from maild.config import _Table

TYPES = ("question", "problem", "incident", "task")
PRIORITIES = ("low", "normal", "high", "urgent")


@dataclass(frozen=True)
class Department:
    name: str
    email: str


@dataclass(frozen=True)
class SlaConfig:
    """First-response targets in business hours (the desk's practice by default)."""

    targets: dict[str, float] = field(
        default_factory=lambda: {
            "question": 4.0,
            "suggestion": 16.0,
            "problem": 6.0,
            "incident": 4.0,
            "task": 8.0,
        }
    )
    factors: dict[str, float] = field(
        default_factory=lambda: {"low": 2.0, "normal": 1.0, "high": 1.0, "urgent": 0.5}
    )
    warn_at: float = 0.8

    def hours(self, kind: str, priority: str) -> float:
        return self.targets.get(kind, self.targets["question"]) * self.factors.get(priority, 1.0)


@dataclass(frozen=True)
class ClockConfig:
    """Survey, auto-close, pending and hold timings."""

    survey_delay_hours: float = 24.0
    survey_valid_days: int = 30
    autoclose_days: float = 7.0
    pending_remind_days: float = 3.0
    pending_solve_days: float = 7.0
    hold_remind_hours: float = 24.0


def departments(items: object) -> tuple[Department, ...]:
    from maild.config import _email, _Table

    if not isinstance(items, list):
        raise ConfigError("departments", "must be an array of tables ([[departments]])")
    found: list[Department] = []
    for i, item in enumerate(items):
        t = _Table(item, f"departments[{i}]")
        name = t.get("name", str).strip()
        t.check(
            "name",
            lambda v: bool(v) and " " not in v and "\n" not in v,
            "must be one word (it is typed after #escalate)",
            name,
        )
        t.check(
            "name",
            lambda v: v.lower() not in {d.name.lower() for d in found},
            "is used twice",
            name,
        )
        email = t.get("email", str).strip().lower()
        t.check("email", _email, f"not an email address: {email!r}", email)
        t.finish()
        found.append(Department(name, email))
    return tuple(found)


def _positive(t: _Table, name: str, default: float) -> float:
    value = t.get(name, float, float(default))
    t.check(name, lambda v: v > 0, "must be positive", value)
    return value


def sla(t: _Table) -> SlaConfig:
    base = SlaConfig()
    targets = {k: _positive(t, k, v) for k, v in base.targets.items()}
    factors = dict(base.factors)
    factors["urgent"] = _positive(t, "urgent_factor", base.factors["urgent"])
    factors["low"] = _positive(t, "low_factor", base.factors["low"])
    warn_at = _positive(t, "warn_at", base.warn_at)
    t.check("warn_at", lambda v: v < 1, "must be below 1 (0.8 = warn at 80%)", warn_at)
    t.finish()
    return SlaConfig(targets, factors, warn_at)


def clock(survey: _Table, autoclose: _Table, pending: _Table, hold: _Table) -> ClockConfig:
    base = ClockConfig()
    values = ClockConfig(
        survey_delay_hours=_positive(survey, "delay_hours", base.survey_delay_hours),
        survey_valid_days=int(_positive(survey, "valid_days", base.survey_valid_days)),
        autoclose_days=_positive(autoclose, "days", base.autoclose_days),
        pending_remind_days=_positive(pending, "remind_days", base.pending_remind_days),
        pending_solve_days=_positive(pending, "solve_days", base.pending_solve_days),
        hold_remind_hours=_positive(hold, "remind_hours", base.hold_remind_hours),
    )
    for table in (survey, autoclose, pending, hold):
        table.finish()
    return values


def trusted_authserv_ids(t: _Table) -> tuple[str, ...]:
    ids = t.get("trusted_authserv_ids", list, [])
    t.check(
        "trusted_authserv_ids",
        lambda v: all(isinstance(i, str) and i.strip() for i in v),
        "must be a list of host names",
        ids,
    )
    return tuple(i.strip().lower() for i in ids)
