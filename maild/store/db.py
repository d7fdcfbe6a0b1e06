"""Engines and sessions: SQLite in WAL with full fsync, or PostgreSQL through psycopg 3."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from maild.core.errors import CannotCreate, UnsafeStorage

log = logging.getLogger(__name__)


def sqlite_path(url: str) -> Path | None:
    rest = url.split("///", 1)[1] if "///" in url else ""
    return Path(rest) if rest and rest != ":memory:" else None


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (savepoints need it).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("maild_begin", "")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN")


def _setup_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Durable before accepted: never let a server default turn this off under us.
        with dbapi_connection.cursor() as cur:
            cur.execute("SET synchronous_commit = on")
        dbapi_connection.commit()


SQLITE_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
PG_DURABLE = ("on", "remote_apply")  # synchronous_commit at least "on"


def durability(engine: Engine, dbapi_connection: Any) -> str | None:
    """What is wrong with this connection's durability, or None when it is what we promise:
    SQLite ``synchronous`` FULL or more, PostgreSQL ``synchronous_commit`` on or more."""
    cur = dbapi_connection.cursor()
    try:
        if engine.dialect.name == "sqlite":
            level = int(cur.execute("PRAGMA synchronous").fetchone()[0])
            return None if level >= SQLITE_FULL else f"PRAGMA synchronous={level}, not FULL"
        cur.execute("SHOW synchronous_commit")
        value = str(cur.fetchone()[0])
        dbapi_connection.rollback()  # leave no transaction open behind the pool's back
        return None if value in PG_DURABLE else f"synchronous_commit = {value}, not on"
    finally:
        cur.close()


def _guard_durability(engine: Engine, where: str) -> None:
    """Every connection is checked once, on its first checkout, after every "connect" hook has
    run (ours or anyone's): one opened below FULL / on is refused, never used. A kill -9 test
    cannot see lost durability (only a power cut can), so this guard is what keeps it."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("maild_durable"):
            return
        problem = durability(engine, dbapi_connection)
        if problem is not None:
            raise UnsafeStorage(
                f"{where} opened with {problem}: refused (a power cut could "
                "lose mail already answered 250)"
            )
        record.info["maild_durable"] = True


class _WriteLock:
    """Serialises SQLite writers across threads and processes with flock.

    SQLite's own busy handler polls with sleeps of up to 100 ms, which a waiting SMTP session
    would feel; a blocked flock wakes the moment the holder lets go.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self.local = threading.Lock()
        self.fd: int | None = None
        self.pid = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self.local:
            if self.fd is None or self.pid != os.getpid():
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self.pid = os.getpid()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


class Database:
    """One engine and its sessions; create one per process."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            path = sqlite_path(url)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise CannotCreate("database", path, f"{exc.filename}: {exc.strerror}") from exc
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=5,
                connect_args={"connect_timeout": 5},
            )
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _setup_sqlite(self.engine)
        else:
            _setup_postgres(self.engine)
        _guard_durability(self.engine, f"database {self.engine.url.database or url}")
        path = sqlite_path(url) if self.is_sqlite else None
        self._lock = _WriteLock(path) if path is not None else None
        writer = self.engine.execution_options(maild_begin="immediate")
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(writer, expire_on_commit=False)

    def session(self) -> Session:
        """A session for reading (SQLite: a deferred transaction)."""
        return self._reader()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading whose transaction ends with COMMIT, not ROLLBACK: the same
        thing for a read, but psycopg forgets every statement it has prepared on a connection
        at each ROLLBACK (and sends DEALLOCATE ALL), so the pipeline's statements, prepared by
        the server after five runs, would be parsed and planned again after every batch."""
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error."""
        if self._lock is None:
            with self._writer() as session, session.begin():
                yield session
            return
        with self._lock.hold(), self._writer() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    return Database(url)
