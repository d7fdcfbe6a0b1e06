"""Several pipeline worker processes share the queue: each message once, and a dead worker is
started again so its share of the mail does not wait forever."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import func, select

from maild.config import Config
from maild.pipeline.worker import ProcessWorker
from maild.store.db import Database
from maild.store.models import Inbound, Outbox, Ticket


def count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_two_workers_process_each_message_once(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(pipeline={"workers": 2}))
    assert d.daemon is not None and len(d.daemon.workers) == 2
    for i in range(30):
        d.send(make_mail(f"Question {i}", sender=f"w{i}@example.org"), sender=f"w{i}@example.org")
    wait_for(lambda: count(db, Inbound, Inbound.state == "done") == 30)
    assert count(db, Ticket) == 30
    with db.session() as s:
        numbers = sorted(s.scalars(select(Ticket.id)))
        acks = s.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack"))
    assert numbers == list(range(1, 31))  # no gaps, no duplicates, whichever worker got it
    assert acks == 30


def test_a_killed_worker_is_started_again(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(pipeline={"workers": 2}))
    assert d.daemon is not None
    victim = d.daemon.workers[1]
    assert isinstance(victim, ProcessWorker)
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.join(10)
    # Mail for both shards, sent while worker 2 is dead: all of it gets processed.
    for i in range(6):
        d.send(make_mail(f"After the kill {i}", sender=f"k{i}@example.org"))
    wait_for(lambda: count(db, Inbound, Inbound.state == "done") == 6, timeout=30)
    replacement = d.daemon.workers[1]
    assert isinstance(replacement, ProcessWorker) and replacement is not victim
    assert replacement.proc.is_alive()
    assert count(db, Ticket) == 6
