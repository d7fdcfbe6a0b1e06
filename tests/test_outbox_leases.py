"""Outbox leases: a starting sender frees the mail of senders that are gone, and only theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta

import pytest
from conftest import make_mail
from sqlalchemy import insert, select

from maild.clock import system_clock
from maild.config import Config
from maild.replies import leases
from maild.store.db import Database
from maild.store.models import Outbox, OutboxSender

LEASE = timedelta(seconds=60)


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:
    """No agents: one acknowledgement per request."""
    return make_config(agents=[])


def holders(db: Database) -> list[str | None]:
    with db.session() as s:
        return list(s.scalars(select(Outbox.claimed_by).order_by(Outbox.id)))


def test_start_frees_only_the_mail_of_senders_that_are_gone(
    db: Database, ingest: Callable[..., int]
) -> None:
    now = system_clock()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    senders = {  # instance -> (host, pid, heartbeat)
        "dead-pid": (leases.HOST, int(dead.stdout), now),
        "silent": ("elsewhere", 4242, now - 2 * LEASE),
        "other-host": ("elsewhere", 4242, now),
        "parent": (leases.HOST, os.getppid(), now),
        "earlier-run-of-our-pid": (leases.HOST, os.getpid(), now),
    }
    for i in range(len(senders)):
        ingest(make_mail(f"Mail {i}", sender=f"c{i}@example.org"))
    with db.write() as s:
        for name, (host, pid, beat) in senders.items():
            s.execute(
                insert(OutboxSender).values(
                    instance=name, host=host, pid=pid, started_at=beat, heartbeat_at=beat
                )
            )
        for row, name in zip(s.scalars(select(Outbox).order_by(Outbox.id)), senders, strict=True):
            row.claimed_by, row.claimed_until = name, now + LEASE
    me = leases.new_instance()
    assert leases.register(db, me, now, LEASE) == 3
    assert holders(db) == [None, None, "other-host", "parent", None]
    with db.session() as s:
        left = set(s.scalars(select(OutboxSender.instance)))
    assert left == {"other-host", "parent", me}
    claimed = leases.claim_due(db, system_clock(), 10, me, LEASE)
    assert len(claimed) == 3  # the freed ones, not those of the live senders
