"""The sections of config.toml that drive agents, departments and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import TYPE_CHECKING

from maild.config.table import Table, hostport, is_email, resolve
from maild.core.errors import ConfigError
from maild.tickets.sla import DAY_NAMES, BusinessHours, ClockConfig
from maild.tickets.words import AGENT_PROOFS, PRIORITIES, TYPES, AgentProof, Priority, TicketType

if TYPE_CHECKING:
    from maild.ingest.imap_config import ImapConfig


@dataclass(frozen=True)
class Agent:
    email: str
    name: str


@dataclass(frozen=True)
class Department:
    name: str
    email: str
    title: str = ""  # the human name customers read: "технического инженера"

    @property
    def human(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class Route:
    """A key client: mail from ``match`` (an address or ``@domain``) goes to ``assignee``."""

    match: str
    assignee: str
    priority: Priority | None = None
    type: TicketType | None = None

    def matches(self, address: str) -> bool:
        address = address.lower()
        if self.match.startswith("@"):
            return address.endswith(self.match)
        return address == self.match


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
    tell_customer: bool = True
    # Categories with a clock of their own (`#category registration`), in business hours.
    categories: dict[str, float] = field(
        default_factory=lambda: {"suggestion": 16.0, "registration": 2.0}
    )

    def hours(self, kind: str, priority: str, category: str | None = None) -> float:
        base = self.categories.get((category or "").lower())
        if base is None:
            base = self.targets.get(kind, self.targets["question"])
        return base * self.factors.get(priority, 1.0)


@dataclass(frozen=True)
class KbConfig:
    """``[kb]``: how alike (0..1, shared meaningful words) a request and an answer must be."""

    similar_threshold: float = 0.3  # a solved request named in the agents' notification
    suggest_threshold: float = 0.4  # a public article offered in the acknowledgement


def kb(t: Table) -> KbConfig:
    found = []
    for name, default in (("similar_threshold", 0.3), ("suggest_threshold", 0.4)):
        value = t.get(name, float, default)
        t.check(name, lambda v: 0 < v <= 1, "must be a number above 0 and at most 1", value)
        found.append(value)
    t.finish()
    return KbConfig(*found)


def departments(items: object) -> tuple[Department, ...]:
    if not isinstance(items, list):
        raise ConfigError("departments", "must be an array of tables ([[departments]])")
    found: list[Department] = []
    for i, item in enumerate(items):
        t = Table(item, f"departments[{i}]")
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
        t.check("email", is_email, f"not an email address: {email!r}", email)
        title = t.get("title", str, "").strip()
        t.check("title", lambda v: "\n" not in v and "\r" not in v, "must be one line", title)
        t.check(
            "title",
            lambda v: not v or v.lower() not in {d.title.lower() for d in found},
            "is used twice",
            title,
        )
        t.finish()
        found.append(Department(name, email, title))
    return tuple(found)


def routing(items: object) -> tuple[Route, ...]:
    """``[[routing]]``: key clients assigned at once to their manager."""
    if not isinstance(items, list):
        raise ConfigError("routing", "must be an array of tables ([[routing]])")
    found: list[Route] = []
    for i, item in enumerate(items):
        t = Table(item, f"routing[{i}]")
        match = t.get("match", str).strip().lower()
        t.check(
            "match",
            lambda v: is_email(v) or (v.startswith("@") and is_email("x" + v)),
            f"must be an address or @domain, not {match!r}",
            match,
        )
        assignee = t.get("assignee", str).strip().lower()
        t.check("assignee", is_email, f"not an email address: {assignee!r}", assignee)
        priority = t.get("priority", str, "").strip().lower() or None
        t.check(
            "priority", lambda v: v in (None, *PRIORITIES), f"must be one of {PRIORITIES}", priority
        )
        kind = t.get("type", str, "").strip().lower() or None
        t.check("type", lambda v: v in (None, *TYPES), f"must be one of {TYPES}", kind)
        t.finish()
        found.append(
            Route(
                match,
                assignee,
                Priority(priority) if priority else None,
                TicketType(kind) if kind else None,
            )
        )
    return tuple(found)


def _positive(t: Table, name: str, default: float) -> float:
    value = t.get(name, float, float(default))
    t.check(name, lambda v: v > 0, "must be positive", value)
    return value


def sla(t: Table) -> SlaConfig:
    base = SlaConfig()
    targets = {k: _positive(t, k, v) for k, v in base.targets.items()}
    factors = dict(base.factors)
    factors["urgent"] = _positive(t, "urgent_factor", base.factors["urgent"])
    factors["low"] = _positive(t, "low_factor", base.factors["low"])
    warn_at = _positive(t, "warn_at", base.warn_at)
    t.check("warn_at", lambda v: v < 1, "must be below 1 (0.8 = warn at 80%)", warn_at)
    tell = t.get("tell_customer", bool, base.tell_customer)
    categories = {"suggestion": targets["suggestion"], "registration": 2.0}
    cats = Table(t.get("categories", dict, {}), t.key("categories"))
    for name in list(cats.data):
        categories[name.lower()] = _positive(cats, name, 1.0)
    cats.finish()
    t.finish()
    return SlaConfig(targets, factors, warn_at, tell, categories)


def clock(survey: Table, autoclose: Table, pending: Table, hold: Table) -> ClockConfig:
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


def trusted_authserv_ids(t: Table) -> tuple[str, ...]:
    ids = t.get("trusted_authserv_ids", list, [])
    t.check(
        "trusted_authserv_ids",
        lambda v: all(isinstance(i, str) and i.strip() for i in v),
        "must be a list of host names",
        ids,
    )
    return tuple(i.strip().lower() for i in ids)


def agent_proof(t: Table) -> tuple[AgentProof, ...]:
    """How an agent's or a department's mail may prove who wrote it (maild/security/)."""
    proofs = t.get("agent_proof", list, ["signed-id"])
    t.check(
        "agent_proof",
        lambda v: bool(v) and all(p in AGENT_PROOFS for p in v) and len(set(v)) == len(v),
        f"must be a non-empty list of distinct values from {AGENT_PROOFS}",
        proofs,
    )
    t.check(
        "agent_proof",
        lambda v: "authres" not in v or bool(t.data.get("trusted_authserv_ids")),
        '"authres" needs security.trusted_authserv_ids',
        proofs,
    )
    return tuple(AgentProof(p) for p in proofs)


def imap(items: object) -> tuple[ImapConfig, ...]:
    from maild.ingest.imap_config import imap_configs_from_toml  # ingest imports config

    return imap_configs_from_toml(items)


def lmtp(t: Table, base: Path) -> str | None:
    listen = t.get("listen", str, "")
    t.finish()
    if not listen:
        return None
    if listen.startswith(("/", "./", "unix:")):
        return str(resolve(base, listen.removeprefix("unix:")))
    t.check("listen", hostport, f"must be host:port or a socket path, not {listen!r}", listen)
    return listen


def _clock_time(t: Table, name: str, default: str) -> time:
    value = t.get(name, str, default)
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ConfigError(t.key(name), f"must be HH:MM, not {value!r}") from None


def hours(t: Table, timezone: str) -> BusinessHours:
    days = t.get("days", list, ["mon", "tue", "wed", "thu", "fri"])
    t.check(
        "days",
        lambda v: bool(v) and all(d in DAY_NAMES for d in v),
        f"must list days from {DAY_NAMES}",
        days,
    )
    start, end = _clock_time(t, "start", "09:00"), _clock_time(t, "end", "18:00")
    t.check("end", lambda v: v > start, "must be after start", end)
    holidays = []
    for i, h in enumerate(t.get("holidays", list, [])):
        try:
            holidays.append(date.fromisoformat(str(h)))
        except ValueError:
            raise ConfigError(t.key(f"holidays[{i}]"), f"not a YYYY-MM-DD date: {h!r}") from None
    t.finish()
    return BusinessHours(
        timezone, frozenset(DAY_NAMES.index(d) for d in days), start, end, frozenset(holidays)
    )


@dataclass(frozen=True)
class DigestConfig:
    """The morning digest: desk time it goes out on working days; None when it is off."""

    at: time | None = time(9, 0)


def digest(t: Table) -> DigestConfig:
    value = t.get("at", str, "09:00").strip()
    t.finish()
    if value.lower() in ("", "off"):
        return DigestConfig(None)
    return DigestConfig(_clock_time(t, "at", value))


def agents(items: object) -> tuple[Agent, ...]:
    if not isinstance(items, list):
        raise ConfigError("agents", "must be an array of tables ([[agents]])")
    agents = []
    for i, item in enumerate(items):
        t = Table(item, f"agents[{i}]")
        email = t.get("email", str).strip().lower()
        t.check("email", is_email, f"not an email address: {email!r}", email)
        name = t.get("name", str, email.partition("@")[0])
        t.check("name", lambda v: "\n" not in v and "\r" not in v, "must be one line", name)
        t.finish()
        agents.append(Agent(email, name.strip()))
    return tuple(agents)
