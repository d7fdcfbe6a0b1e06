"""config.toml -> frozen dataclasses; every error names the key that is wrong."""

from __future__ import annotations

import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from maild.config import sections
from maild.config.incident import IncidentConfig, incident
from maild.config.sections import Agent, Department, DigestConfig, SlaConfig
from maild.config.table import Table, hostport, is_email, positive, resolve
from maild.core.errors import ConfigError
from maild.tickets.sla import BusinessHours, ClockConfig
from maild.tickets.words import AgentProof

if TYPE_CHECKING:  # ingest imports config: only the type, no import cycle
    from maild.ingest.imap_config import ImapConfig

T = TypeVar("T")
_MISSING = object()
LANGUAGES = ("en", "ru")


@dataclass(frozen=True)
class DeskConfig:
    name: str
    address: str
    tag: str
    language: str
    timezone: str
    templates: Path | None = None
    lead: str | None = None
    name_in: str = ""  # the name after «в»: "Службу поддержки РИТ"

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:2525"
    max_message_size: int = 26_214_400
    max_recipients: int = 100
    command_timeout: float = 60.0
    data_timeout: float = 600.0
    max_connections_per_address: int = 20
    behind_mta: bool = False  # the listener only hears the operator's own MTA


@dataclass(frozen=True)
class OutboundConfig:
    url: str
    sender: str
    starttls: bool = False
    tls: bool = False
    timeout: float = 30.0
    max_attempts: int = 30


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"
    page_days: int = 90  # how long the request-page link in a mail stays valid
    read_timeout: float = 15.0
    max_connections_per_address: int = 20
    board_hours: float = 12.0


@dataclass(frozen=True)
class LimitsConfig:
    max_parts: int = 1000
    max_depth: int = 50
    max_header_bytes: int = 102_400
    max_received: int = 50
    auto_replies_per_hour: int = 5
    max_cc: int = 10
    mails_per_request_hour: int = 30
    message_seconds: int = 20  # processing budget of one message (CPU s), outside the worker


@dataclass(frozen=True)
class PipelineConfig:
    workers: int = 2
    batch_size: int = 64


@dataclass(frozen=True)
class Config:
    desk: DeskConfig
    storage_url: str
    smtp: SmtpConfig
    outbound: OutboundConfig
    web: WebConfig
    secret_key: str
    agents: tuple[Agent, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    hours: BusinessHours = field(default_factory=BusinessHours)
    lmtp_listen: str | None = None
    departments: tuple[Department, ...] = ()
    sla: SlaConfig = field(default_factory=SlaConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    trusted_authserv_ids: tuple[str, ...] = ()
    agent_proof: tuple[AgentProof, ...] = (AgentProof.SIGNED_ID,)
    imap: tuple[ImapConfig, ...] = ()
    routing: tuple[sections.Route, ...] = ()
    digest: DigestConfig = field(default_factory=DigestConfig)
    kb: sections.KbConfig = field(default_factory=sections.KbConfig)
    incident: IncidentConfig = field(default_factory=IncidentConfig)
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def agent(self, email: str) -> Agent | None:
        email = email.lower()
        return next((a for a in self.agents if a.email == email), None)

    def department(self, name_oremail: str) -> Department | None:
        key = name_oremail.lower()
        return next(
            (d for d in self.departments if key in (d.name.lower(), d.email, d.title.lower())),
            None,
        )

    def route(self, address: str) -> sections.Route | None:
        return next((r for r in self.routing if r.matches(address)), None)


def _desk(t: Table, base: Path) -> DeskConfig:
    address = t.get("address", str).strip().lower()
    t.check("address", is_email, f"not an email address: {address!r}", address)
    tag = t.get("tag", str, "Support").strip()
    t.check(
        "tag",
        lambda v: bool(v) and not any(c in v for c in "[]#\r\n"),
        "must be non-empty without [ ] # or line breaks",
        tag,
    )
    language = t.get("language", str, "en")
    t.check("language", lambda v: v in LANGUAGES, f"must be one of {LANGUAGES}", language)
    timezone = t.get("timezone", str, "UTC")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(t.key("timezone"), f"unknown time zone {timezone!r}") from None
    templates = t.get("templates", str, "")
    lead = t.get("lead", str, "").strip().lower() or None
    t.check("lead", lambda v: v is None or is_email(v), f"not an email address: {lead!r}", lead)
    name = t.get("name", str)
    t.check(
        "name",
        lambda v: bool(v.strip()) and "\n" not in v and "\r" not in v,
        "must be one non-empty line",
        name,
    )
    name_in = t.get("name_in", str, "").strip()
    t.check("name_in", lambda v: "\n" not in v and "\r" not in v, "must be one line", name_in)
    t.finish()
    return DeskConfig(
        name.strip(),
        address,
        tag,
        language,
        timezone,
        resolve(base, templates) if templates else None,
        lead,
        name_in,
    )


def _storage_url(t: Table, base: Path) -> str:
    url = t.get("url", str, "sqlite:///var/maild.db")
    prefixes = ("sqlite://", "postgresql://", "postgresql+psycopg://")
    t.check("url", lambda v: v.startswith(prefixes), f"must start with one of {prefixes}", url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and rest != ":memory:":
            url = "sqlite:///" + str(resolve(base, rest))
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    t.finish()
    return url


def _smtp(t: Table) -> SmtpConfig:
    listen = t.get("listen", str, "127.0.0.1:2525")
    t.check("listen", hostport, f"must be host:port, not {listen!r}", listen)
    size = t.get("max_message_size", int, 26_214_400)
    t.check("max_message_size", lambda v: v >= 1024, "must be at least 1024", size)
    rcpts = t.get("max_recipients", int, 100)
    t.check("max_recipients", positive, "must be positive", rcpts)
    command_timeout = _seconds(t, "command_timeout", 60.0)
    data_timeout = _seconds(t, "data_timeout", 600.0)
    per_address = t.get("max_connections_per_address", int, 20)
    t.check("max_connections_per_address", positive, "must be positive", per_address)
    behind_mta = t.get("behind_mta", bool, False)
    t.finish()
    return SmtpConfig(listen, size, rcpts, command_timeout, data_timeout, per_address, behind_mta)


def _seconds(t: Table, name: str, default: float) -> float:
    """A deadline in seconds: positive and at most a day."""
    value = t.get(name, float, default)
    t.check(name, lambda v: 0 < v <= 86400, "must be seconds between 0 and 86400", value)
    return value


def _outbound(t: Table, base: Path, desk: DeskConfig) -> OutboundConfig:
    url = t.get("url", str, "maildir:var/outbox")
    if url.startswith("maildir:"):
        url = "maildir:" + str(resolve(base, url[len("maildir:") :]))
    elif not url.startswith(("smtp://", "smtps://")):
        raise ConfigError(t.key("url"), f"must be maildir:PATH or smtp://host:port, not {url!r}")
    sender = t.get("from", str, desk.address)
    t.check("from", lambda v: is_email(v.strip()), f"not an email address: {sender!r}", sender)
    starttls = t.get("starttls", bool, False)
    tls = t.get("tls", bool, url.startswith("smtps://"))
    t.check("tls", lambda v: not (v and starttls), "tls and starttls exclude each other", tls)
    timeout = t.get("timeout", float, 30.0)
    attempts = t.get("max_attempts", int, 30)
    t.check("max_attempts", positive, "must be positive", attempts)
    t.finish()
    return OutboundConfig(url, sender.strip().lower(), starttls, tls, timeout, attempts)


def _web(t: Table) -> WebConfig:
    listen = t.get("listen", str, "127.0.0.1:8080")
    t.check("listen", hostport, f"must be host:port, not {listen!r}", listen)
    base_url = t.get("base_url", str, f"http://{listen}").rstrip("/")
    t.check(
        "base_url",
        lambda v: v.startswith(("http://", "https://")),
        "must start with http:// or https://",
        base_url,
    )
    page_days = t.get("page_days", int, 90)
    t.check("page_days", positive, "must be positive", page_days)
    read_timeout = _seconds(t, "read_timeout", 15.0)
    per_address = t.get("max_connections_per_address", int, 20)
    t.check("max_connections_per_address", positive, "must be positive", per_address)
    board_hours = t.get("board_hours", float, 12.0)
    t.check(
        "board_hours",
        lambda v: 0 < v <= 24 * 31,
        "must be more than 0 and at most 744 (31 days)",
        board_hours,
    )
    t.finish()
    return WebConfig(
        listen,
        base_url,
        page_days=page_days,
        read_timeout=read_timeout,
        max_connections_per_address=per_address,
        board_hours=board_hours,
    )


def _secret(t: Table) -> str:
    t.seen.add("trusted_authserv_ids")  # read by config_sections.trusted_authserv_ids
    t.seen.add("agent_proof")  # read by config_sections.agent_proof
    secret = os.environ.get("MAILD_SECRET_KEY") or t.get("secret_key", str, "")
    t.seen.add("secret_key")
    if len(secret) < 16:
        raise ConfigError(
            t.key("secret_key"), "must be at least 16 characters (or set MAILD_SECRET_KEY)"
        )
    t.finish()
    return secret


def _limits(t: Table) -> LimitsConfig:
    values = {}
    for name, default in vars(LimitsConfig()).items():
        value = t.get(name, int, default)
        t.check(name, positive, "must be positive", value)
        values[name] = value
    t.finish()
    return LimitsConfig(**values)


def _pipeline(t: Table) -> PipelineConfig:
    workers = t.get("workers", int, 2)
    t.check(
        "workers",
        lambda v: 0 <= v <= 16,
        "must be 0 (in the daemon) or 1 to 16 (worker processes)",
        workers,
    )
    batch = t.get("batch_size", int, 64)
    t.check("batch_size", positive, "must be positive", batch)
    t.finish()
    return PipelineConfig(workers, batch)


KNOWN_SECTIONS = frozenset(
    {
        "desk",
        "storage",
        "smtp",
        "outbound",
        "web",
        "security",
        "agents",
        "limits",
        "pipeline",
        "departments",
        "hours",
        "sla",
        "survey",
        "autoclose",
        "pending",
        "hold",
        "imap",
        "lmtp",
        "routing",
        "digest",
        "kb",
        "incident",
    }
)


def from_mapping(data: Mapping[str, Any], base: Path, path: Path | None = None) -> Config:
    """Build a Config from parsed TOML; relative paths are taken from ``base``."""
    for section in data:
        if section not in KNOWN_SECTIONS:
            raise ConfigError(section, "unknown section")
    desk = _desk(Table(data.get("desk", _MISSING_DESK), "desk"), base)
    return Config(
        desk=desk,
        storage_url=_storage_url(Table(data.get("storage", {}), "storage"), base),
        smtp=_smtp(Table(data.get("smtp", {}), "smtp")),
        outbound=_outbound(Table(data.get("outbound", {}), "outbound"), base, desk),
        web=_web(Table(data.get("web", {}), "web")),
        secret_key=_secret(Table(data.get("security", {}), "security")),
        agents=sections.agents(data.get("agents", [])),
        limits=_limits(Table(data.get("limits", {}), "limits")),
        pipeline=_pipeline(Table(data.get("pipeline", {}), "pipeline")),
        lmtp_listen=sections.lmtp(Table(data.get("lmtp", {}), "lmtp"), base),
        hours=sections.hours(Table(data.get("hours", {}), "hours"), desk.timezone),
        departments=sections.departments(data.get("departments", [])),
        sla=sections.sla(Table(data.get("sla", {}), "sla")),
        clock=sections.clock(
            *(Table(data.get(n, {}), n) for n in ("survey", "autoclose", "pending", "hold"))
        ),
        imap=sections.imap(data.get("imap")),
        routing=sections.routing(data.get("routing", [])),
        digest=sections.digest(Table(data.get("digest", {}), "digest")),
        kb=sections.kb(Table(data.get("kb", {}), "kb")),
        trusted_authserv_ids=sections.trusted_authserv_ids(
            Table(data.get("security", {}), "security")
        ),
        agent_proof=sections.agent_proof(Table(data.get("security", {}), "security")),
        incident=incident(Table(data.get("incident", {}), "incident")),
        path=path,
        raw=data,
    )


_MISSING_DESK: Any = None


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``path``; raise ConfigError naming the key on any problem."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(p), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"not valid TOML: {exc}") from None
    if "desk" not in data:
        raise ConfigError("desk", "section is missing")
    return from_mapping(data, p.resolve().parent, p)
