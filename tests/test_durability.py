"""kill -9 at any moment loses no accepted message and creates no duplicate; SIGTERM exits 0."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, make_mail, wait_for
from sqlalchemy import func, select

from maild.ingest.accept import open_queue
from maild.store.db import Database
from maild.store.models import Inbound, Outbox, Ticket


def write_config(tmp_path: Path, db_url: str) -> tuple[Path, int]:
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(f"""
[desk]
name = "Test Desk"
address = "support@example.com"
timezone = "UTC"
[storage]
url = "{db_url}"
[smtp]
listen = "127.0.0.1:{port}"
[outbound]
url = "maildir:{tmp_path / "outbox"}"
[web]
listen = "127.0.0.1:{free_port()}"
[security]
secret_key = "durability-test-secret-key"
[pipeline]
workers = 2  # two processes sharing the queue: still exactly once
[incident]
threshold = 1000  # many customers, one text: no problem here (issue 12 is tested elsewhere)
""")
    return path, port


def start(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "maild", "--config", str(config), "run"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        assert proc.poll() is None, "daemon exited early"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=60)
    return proc


class Pusher(threading.Thread):
    """Sends distinct messages until told to stop; remembers which ones got a 250."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent: list[bytes] = []
        self.accepted: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            mid = f"<kill{i}@client.example.org>"
            raw = make_mail(f"Request {i}", sender=f"c{i}@example.org", message_id=mid)
            self.sent.append(raw)
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as c:
                    c.sendmail(f"c{i}@example.org", ["support@example.com"], raw)
                self.accepted.append(mid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)
            i += 1


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        return (
            int(s.scalar(select(func.count(Inbound.id))) or 0),
            int(s.scalar(select(func.count(Ticket.id))) or 0),
            int(s.scalar(select(func.count(Outbox.id))) or 0),
        )


@pytest.mark.parametrize("kill_after", [0.7, 1.9])
def test_kill9_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, db_url: str, kill_after: float
) -> None:
    config, port = write_config(tmp_path, db_url)
    proc = start(config, port)
    pusher = Pusher(port)
    pusher.start()
    time.sleep(kill_after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.3)
    pusher.halt.set()
    pusher.join(10)
    assert pusher.accepted, "nothing was accepted before the kill"

    proc = start(config, port)
    try:
        # An MTA retries everything it was not sure about: send every message again.
        for raw in pusher.sent:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.sendmail("x@example.org", ["support@example.com"], raw)
        db = Database(db_url)
        wait_for(
            lambda: (
                counts(db)[0] == counts(db)[1] == counts(db)[2] == len(pusher.sent)
                and _all_done(db)
            ),
            timeout=60,
        )
        with db.session() as s:
            stored = set(s.scalars(select(Inbound.message_id)))
            roots = list(s.scalars(select(Ticket.root_message_id)))
        assert set(pusher.accepted) <= stored
        assert len(roots) == len(set(roots)) == len(pusher.sent)
        db.dispose()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0


def accepted(db: Database) -> int:
    """Every message stored: processed, or waiting in the queue (the spool on SQLite)."""
    queue = open_queue(db)
    try:
        with db.session() as s:
            done = s.scalar(select(func.count(Inbound.id)).where(Inbound.state != "pending"))
        return int(done or 0) + queue.count()
    finally:
        queue.dispose()


def _all_done(db: Database) -> bool:
    with db.session() as s:
        return not s.scalar(select(func.count(Inbound.id)).where(Inbound.state != "done"))


def test_sigterm_exits_zero(tmp_path: Path, db_url: str) -> None:
    config, port = write_config(tmp_path, db_url)
    proc = start(config, port)
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.sendmail("a@example.org", ["support@example.com"], make_mail(sender="a@example.org"))
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    db = Database(db_url)
    assert accepted(db) == 1
    db.dispose()
