"""kill -9 of a daemon while it sends through a slow relay: after the restart every
acknowledgement goes out at once, and at most one is delivered twice."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from conftest import free_port, make_mail, wait_for
from sqlalchemy import select

from maild.store.db import Database
from maild.store.models import Outbox

MAILS = 40
_MSGID = re.compile(rb"(?im)^message-id:\s*(<[^>]+>)")


class SlowRelay:
    """A real SMTP relay that takes ``delay`` seconds to accept each mail (after its DATA)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, float]] = []  # (Message-ID, monotonic time)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.sleep(self.delay)
        found = _MSGID.search(envelope.original_content)
        with self.lock:
            self.arrivals.append((found.group(1).decode() if found else "?", time.monotonic()))
        return "250 2.0.0 OK"

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(mid for mid, _ in self.arrivals)


def write_config(tmp_path: Path, db_url: str, relay_port: int) -> tuple[Path, int]:
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
url = "smtp://127.0.0.1:{relay_port}"
timeout = 30
[web]
listen = "127.0.0.1:{free_port()}"
[security]
secret_key = "crash-test-secret-key-0123"
""")
    return path, port


def start(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maild", "--config", str(config), "run"],
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        assert proc.poll() is None, f"daemon exited early: {log.read_text()[-2000:]}"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=60)
    return proc


def acks(db_url: str) -> list[str]:
    db = Database(db_url)
    try:
        with db.session() as s:
            return list(s.scalars(select(Outbox.message_id)))
    finally:
        db.dispose()


def test_kill9_while_sending_resends_at_once_and_at_most_one_twice(
    tmp_path: Path, db_url: str
) -> None:
    relay = SlowRelay(delay=0.15)
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    config, port = write_config(tmp_path, db_url, controller.port)
    log = tmp_path / "daemon.log"
    proc = start(config, port, log)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for i in range(MAILS):
                raw = make_mail(f"Request {i}", sender=f"c{i}@example.org")
                client.sendmail(f"c{i}@example.org", ["support@example.com"], raw)
        wait_for(lambda: len(relay.arrivals) >= 8, timeout=60)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = sum(relay.counts().values())
        assert before < MAILS, "everything went out before the kill"

        restarted = time.monotonic()
        proc = start(config, port, log)
        wanted = wait_for(lambda: (found := acks(db_url)) and len(found) == MAILS and found, 60)
        wait_for(lambda: set(wanted) <= set(relay.counts()), timeout=90)
        last = max(t for mid, t in relay.arrivals if t >= restarted) - restarted
        time.sleep(1.0)  # anything sent twice would arrive now
        twice = {mid: n for mid, n in relay.counts().items() if n > 1}
        print(
            f"\nkill -9 after {before} of {MAILS} delivered: {len(twice)} delivered twice, "
            f"the last acknowledgement {last:.1f} s after the restart"
        )
        assert len(twice) <= 1, twice
        assert last < 90
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        controller.stop()
