"""Outbox leases: a starting sender frees the mail of senders that are gone, and only theirs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Sink, free_port, make_mail
from sqlalchemy import insert, select

from maild.config import Config
from maild.core.clock import system_clock
from maild.replies import leases
from maild.replies.sender import OutboxSender
from maild.replies.transport import SmtpTransport
from maild.store.db import Database
from maild.store.models import Outbox, SenderInstance

LEASE = timedelta(seconds=60)


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:  # noqa: ARG001 (set up before this fixture)
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
                insert(SenderInstance).values(
                    instance=name, host=host, pid=pid, started_at=beat, heartbeat_at=beat
                )
            )
        for row, name in zip(s.scalars(select(Outbox).order_by(Outbox.id)), senders, strict=True):
            row.claimed_by, row.claimed_until = name, now + LEASE
    me = leases.new_instance()
    assert leases.register(db, me, now, LEASE) == 3
    assert holders(db) == [None, None, "other-host", "parent", None]
    with db.session() as s:
        left = set(s.scalars(select(SenderInstance.instance)))
    assert left == {"other-host", "parent", me}
    claimed = leases.claim_due(db, system_clock(), 10, me, LEASE)
    assert len(claimed) == 3  # the freed ones, not those of the live senders


def test_leases_are_renewed_while_sending(
    db: Database, ingest: Callable[..., int], make_config: Callable[..., Config]
) -> None:
    """A relay slower than the lease: another sender never gets a mail that is being sent."""
    for i in range(4):
        ingest(make_mail(f"Mail {i}", sender=f"c{i}@example.org"))

    class Slow(Sink):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(0.5)
            return await super().handle_DATA(server, session, envelope)

    sink = Slow()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    cfg = make_config(outbound={"url": f"smtp://127.0.0.1:{controller.port}", "timeout": 5})
    sender = OutboxSender(db, SmtpTransport(cfg.outbound), lease=timedelta(seconds=1))
    taken: list[leases.Claimed] = []

    async def race() -> int:
        sending = asyncio.create_task(sender.send_due())
        while not sending.done():
            await asyncio.sleep(0.2)
            taken.extend(
                await asyncio.to_thread(
                    leases.claim_due, db, system_clock(), 50, "other", timedelta(seconds=1)
                )
            )
        return await sending

    try:
        assert asyncio.run(race()) == 4
    finally:
        controller.stop()
    assert taken == []
    assert len(sink.messages) == 4
