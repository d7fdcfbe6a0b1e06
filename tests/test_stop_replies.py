"""SIGTERM under load: every mail the daemon stored was answered 250, every 250 was stored."""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from pathlib import Path

from conftest import make_mail
from sqlalchemy import select
from test_durability import start, write_config

from maild.ingest.accept import open_queue
from maild.store.db import Database
from maild.store.models import Inbound
from maild.threading.rawids import message_id


class Client(threading.Thread):
    """Sends mail after mail until the daemon goes away; notes what each one was told."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.name_ = name
        self.answered: dict[str, str] = {}  # Message-ID -> "250" | "4xx/5xx" | "cut off"

    def run(self) -> None:
        for i in range(100_000):
            mid = f"<{self.name_}.{i}@client.example.org>"
            raw = make_mail(f"Load {i}", sender=f"{self.name_}@example.org", message_id=mid)
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
                    c.sendmail(f"{self.name_}@example.org", ["support@example.com"], raw)
                self.answered[mid] = "250"
            except smtplib.SMTPResponseException as exc:
                self.answered[mid] = str(exc.smtp_code)
            except (OSError, smtplib.SMTPException):
                self.answered[mid] = "cut off"
                if i and all(v != "250" for v in list(self.answered.values())[-3:]):
                    return


def test_sigterm_answers_every_stored_mail(tmp_path: Path, db_url: str) -> None:
    config, port = write_config(tmp_path, db_url)
    proc = start(config, port)
    clients = [Client(port, f"c{n}") for n in range(6)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    for c in clients:
        c.join(30)
    db = Database(db_url)
    with db.session() as s:
        stored = set(s.scalars(select(Inbound.message_id)))
    queue = open_queue(db)  # and what waits in the queue (the spool on SQLite)
    waiting, _ = queue.take(100_000, 1 << 40)
    stored |= {message_id(bytes(e.row["raw"])) for e in waiting}
    queue.dispose()
    db.dispose()
    answered = {mid: how for c in clients for mid, how in c.answered.items()}
    accepted = {mid for mid, how in answered.items() if how == "250"}
    unanswered = {mid: answered.get(mid) for mid in stored - accepted}
    assert accepted, "nothing was accepted before the SIGTERM"
    assert accepted <= stored, "a mail answered 250 was lost"
    assert not unanswered, f"stored but never answered 250: {unanswered}"
