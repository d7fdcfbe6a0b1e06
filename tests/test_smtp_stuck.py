"""SMTP when the store is stuck (451 after a bounded wait) or the daemon stops mid-DATA."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import smtplib
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import text
from test_durability import accepted

from maild.ingest.spool import spool_path
from maild.store.db import Database


@contextlib.contextmanager
def frozen(db_url: str) -> Iterator[None]:
    """A store that does not answer: SQLite's spool lock held, PostgreSQL's inbound locked."""
    if db_url.startswith("sqlite"):
        path = spool_path(db_url)
        assert path is not None
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    holder = Database(db_url)
    with holder.engine.connect() as conn:
        conn.execute(text("LOCK TABLE inbound IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    holder.dispose()


def stored(db: Database) -> int:
    """Processed, or waiting in the queue (the spool on SQLite)."""
    return accepted(db)


def test_stuck_store_answers_451_after_a_bounded_wait(
    running: Callable[..., RunningDaemon], db: Database, db_url: str
) -> None:
    daemon = running()
    assert daemon.daemon is not None
    for handler in daemon.daemon.handlers:
        handler.store_wait = 1.0  # 20 s in the daemon
    raw = make_mail("Stuck")
    with frozen(db_url):
        began = time.monotonic()
        with (
            smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as client,
            pytest.raises(smtplib.SMTPDataError) as refused,
        ):
            client.sendmail("customer@example.org", ["support@example.com"], raw)
        waited = time.monotonic() - began
    assert refused.value.smtp_code == 451 and b"4.3.0" in refused.value.smtp_error
    assert waited < 5
    daemon.send(raw)  # the client's retry, once the store is back: one message, not two
    wait_for(lambda: stored(db) >= 1)
    time.sleep(0.5)
    assert stored(db) == 1


def test_stop_waits_for_the_reply_of_a_mail_in_flight(
    running: Callable[..., RunningDaemon], db: Database
) -> None:
    """SIGTERM while a client is in the middle of DATA: it gets its 250, and the mail is kept."""
    daemon = running()
    assert daemon.daemon is not None
    raw = make_mail("In flight")
    client = smtplib.SMTP("127.0.0.1", daemon.port, timeout=30)
    client.ehlo()
    client.mail("customer@example.org")
    client.rcpt("support@example.com")
    assert client.docmd("DATA")[0] == 354
    half = len(raw) // 2
    client.send(raw[:half])
    stopping = asyncio.run_coroutine_threadsafe(daemon.daemon.stop(), daemon.loop)
    time.sleep(0.5)  # the daemon is stopping now
    client.send(raw[half:] + b".\r\n")
    code, reply = client.getreply()
    client.close()
    stopping.result(60)
    daemon.loop.call_soon_threadsafe(daemon.loop.stop)
    daemon.thread.join(30)
    assert code == 250, reply
    assert stored(db) == 1
