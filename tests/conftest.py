"""Shared fixtures: real SQLite and PostgreSQL databases, an in-process SMTP sink, a daemon."""

from __future__ import annotations

import asyncio
import os
import secrets
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest_dovecot import dovecot, dovecot_tls  # noqa: F401
from sqlalchemy import create_engine, text

from maild.config import Config, from_mapping
from maild.daemon import Daemon
from maild.store.db import Database
from maild.store.migrate import upgrade

MAIL = Path(__file__).resolve().parent / "mail"
CORPUS = Path(os.environ.get("MAILD_CORPUS", Path(__file__).resolve().parents[2] / "shared/corpus"))
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_url() -> str:
    """MAILD_TEST_POSTGRES_URL when set (empty: no PostgreSQL variants); else the local server
    on the default port (127.0.0.1:5432, db test, user postgres) when one answers."""
    if "MAILD_TEST_POSTGRES_URL" in os.environ:
        return os.environ["MAILD_TEST_POSTGRES_URL"]
    try:
        import psycopg

        psycopg.connect(PG_DEFAULT.replace("+psycopg", ""), connect_timeout=2).close()
    except Exception:  # no server, no such database or user: the variants are skipped
        return ""
    return PG_DEFAULT


PG_URL = _postgres_url()


def pytest_report_header() -> str:
    where = PG_URL.rsplit("@", 1)[-1] if PG_URL else "none (set MAILD_TEST_POSTGRES_URL)"
    return f"maild: SQLite always; PostgreSQL variants: {where}"


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def fixture_bytes(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_schema_url(schema: str) -> str:
    url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'maild.db'}"
        return
    if not PG_URL:
        if os.environ.get("MAILD_REQUIRE_POSTGRES"):
            pytest.fail("MAILD_REQUIRE_POSTGRES is set but MAILD_TEST_POSTGRES_URL is not")
        pytest.skip("set MAILD_TEST_POSTGRES_URL to run the PostgreSQL variant")
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    upgrade(database)
    yield database
    database.dispose()


def config_mapping(db_url: str, tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "desk": {
            "name": "Example Support",
            "address": "support@example.com",
            "tag": "Support",
            "language": "en",
            "timezone": "Europe/Moscow",
        },
        "storage": {"url": db_url},
        "smtp": {"listen": "127.0.0.1:0"},
        "outbound": {"url": f"maildir:{tmp_path / 'outbox'}", "from": "support@example.com"},
        "web": {"listen": "127.0.0.1:0"},
        "security": {"secret_key": "test-secret-key-0123456789"},
        "agents": [
            {"email": "anna@example.com", "name": "Anna"},
            {"email": "boris@example.com", "name": "Boris"},
        ],
        "pipeline": {"workers": 0},
        # No morning digest unless a test asks for one (it would add mail at any daemon start).
        "digest": {"at": "off"},
    }
    for name, values in sections.items():
        data[name] = values if isinstance(values, list) else {**data.get(name, {}), **values}
    return data


@pytest.fixture
def make_config(db_url: str, tmp_path: Path) -> Callable[..., Config]:
    def make(**sections: dict[str, Any]) -> Config:
        return from_mapping(config_mapping(db_url, tmp_path, **sections), tmp_path)

    return make


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:  # noqa: ARG001 (set up before this fixture)
    return make_config()


class Sink:
    """A real SMTP server in this process that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.reply: str | None = None  # e.g. "550 5.1.1 no such user" to refuse

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.reply:
            return self.reply
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Sink, Controller]]:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield sink, controller
    controller.stop()


class RunningDaemon:
    """A real Daemon on its own asyncio loop in a thread, as `maild run` would be."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.daemon: Daemon | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.daemon = Daemon(self.config)
            self.loop.run_until_complete(self.daemon.start())
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> RunningDaemon:
        self.thread.start()
        self.ready.wait(30)
        if self.error:
            raise self.error
        return self

    @property
    def port(self) -> int:
        assert self.daemon is not None
        return self.daemon.smtp_port

    def stop(self) -> None:
        if self.daemon is not None and self.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.daemon.stop(), self.loop)
            fut.result(60)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    def send(
        self,
        raw: bytes,
        sender: str = "customer@example.org",
        rcpts: tuple[str, ...] = ("support@example.com",),
    ) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(sender, list(rcpts), raw)


@pytest.fixture
def running(config: Config) -> Iterator[Callable[..., RunningDaemon]]:
    started: list[RunningDaemon] = []

    def start(cfg: Config | None = None) -> RunningDaemon:
        d = RunningDaemon(cfg or config).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def ingest(db: Database, config: Config) -> Callable[..., int]:
    """Store raw bytes as a source would, then run the real pipeline over them."""
    from maild.ingest.accept import store_raw
    from maild.pipeline.runner import Pipeline

    pipeline = Pipeline(config, db)

    def run(
        raw: bytes, envelope_from: str | None = "customer@example.org", source: str = "pipe"
    ) -> int:
        stored = store_raw(db, raw, source=source, envelope_from=envelope_from)
        pipeline.process(ids=[stored.ident])
        return stored.ident

    return run


def make_mail(
    subject: str = "Printer is broken",
    sender: str = "customer@example.org",
    body: str = "It prints nothing.",
    *,
    message_id: str | None = None,
    extra: str = "",
    to: str = "support@example.com",
) -> bytes:
    """A small plain-text mail, for tests that need many variations."""
    mid = message_id or f"<{secrets.token_hex(8)}@client.example.org>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
