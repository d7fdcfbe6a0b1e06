"""The outbox sender against a real SMTP sink: delivery, back-off while down, permanent 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Sink, free_port, make_mail
from sqlalchemy import select

from maild.config import Config
from maild.core.clock import as_utc, system_clock
from maild.replies.leases import backoff
from maild.replies.sender import OutboxSender
from maild.replies.transport import SmtpTransport
from maild.store.db import Database
from maild.store.models import Outbox


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:  # noqa: ARG001 (set up before this fixture)
    """No agents: the only mail in the outbox is the customer's acknowledgement."""
    return make_config(agents=[])


def outbox(db: Database) -> list[Outbox]:
    with db.session() as s:
        return list(s.scalars(select(Outbox).order_by(Outbox.id)))


def sender_for(db: Database, make_config: Callable[..., Config], port: int) -> OutboxSender:
    cfg = make_config(outbound={"url": f"smtp://127.0.0.1:{port}", "timeout": 5})
    return OutboxSender(db, SmtpTransport(cfg.outbound), max_attempts=cfg.outbound.max_attempts)


def test_relay_down_delays_and_never_drops(
    db: Database, ingest: Callable[..., int], make_config: Callable[..., Config]
) -> None:
    ingest(make_mail("Hello"))
    port = free_port()
    sender = sender_for(db, make_config, port)
    now = system_clock()
    assert asyncio.run(sender.send_due(now)) == 1  # nobody listens on the port
    (row,) = outbox(db)
    assert row.state == "queued" and row.attempts == 1 and row.last_error
    assert as_utc(row.next_attempt_at) >= now + backoff(1) - timedelta(seconds=1)
    assert asyncio.run(sender.send_due(now)) == 0  # not due again yet
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        later = now + timedelta(minutes=5)
        assert asyncio.run(sender.send_due(later)) == 1
    finally:
        controller.stop()
    (row,) = outbox(db)
    assert row.state == "sent" and row.attempts == 2 and len(sink.messages) == 1
    assert b"Subject: [Support #1] Hello" in sink.messages[0][2]


def test_permanent_refusal_marks_failed_with_reply_text(
    db: Database,
    ingest: Callable[..., int],
    make_config: Callable[..., Config],
    smtp_sink: tuple[Sink, Controller],
) -> None:
    sink, controller = smtp_sink
    sink.reply = "550 5.1.1 <customer@example.org>: mailbox unavailable"
    ingest(make_mail("Hello"))
    ingest(make_mail("Second", sender="other@example.net"))
    sender = sender_for(db, make_config, controller.port)
    assert asyncio.run(sender.send_due()) == 2  # the first failure does not stop the queue
    rows = outbox(db)
    assert [r.state for r in rows] == ["failed", "failed"]
    assert "mailbox unavailable" in (rows[0].last_error or "")


def test_temporary_refusal_is_retried(
    db: Database,
    ingest: Callable[..., int],
    make_config: Callable[..., Config],
    smtp_sink: tuple[Sink, Controller],
) -> None:
    sink, controller = smtp_sink
    sink.reply = "451 4.3.0 try later"
    ingest(make_mail("Hello"))
    sender = sender_for(db, make_config, controller.port)
    asyncio.run(sender.send_due())
    (row,) = outbox(db)
    assert row.state == "queued" and "try later" in (row.last_error or "")
    sink.reply = None
    asyncio.run(sender.send_due(system_clock() + timedelta(hours=1)))
    assert outbox(db)[0].state == "sent" and len(sink.messages) == 1


def test_gives_up_after_max_attempts(
    db: Database, ingest: Callable[..., int], make_config: Callable[..., Config]
) -> None:
    ingest(make_mail("Hello"))
    cfg = make_config(
        outbound={"url": f"smtp://127.0.0.1:{free_port()}", "max_attempts": 2, "timeout": 5}
    )
    sender = OutboxSender(db, SmtpTransport(cfg.outbound), max_attempts=2)
    asyncio.run(sender.send_due())
    asyncio.run(sender.send_due(system_clock() + timedelta(hours=2)))
    assert outbox(db)[0].state == "failed"


def test_deferred_recipient_is_retried_alone(
    db: Database,
    ingest: Callable[..., int],
    make_config: Callable[..., Config],
    smtp_sink: tuple[Sink, Controller],
) -> None:
    """A 450 for one CC (greylisting): the others have the mail, only the CC is tried again."""
    _, controller = smtp_sink
    ingest(make_mail("Hello"))
    with db.write() as s:
        row = s.scalar(select(Outbox))
        assert row is not None
        row.recipients = "customer@example.org,grey@example.net"

    class Greylist(Sink):
        greylisting = True

        async def handle_RCPT(
            self,
            _server: object,
            _session: object,
            envelope: Any,
            address: str,
            _options: list[str],
        ) -> str:
            if address == "grey@example.net" and self.greylisting:
                return "450 4.7.1 greylisted, try later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    grey = Greylist()
    controller.handler = grey
    sender = sender_for(db, make_config, controller.port)
    asyncio.run(sender.send_due())
    (row,) = outbox(db)
    assert row.state == "queued" and row.recipients == "grey@example.net"
    assert [m[1] for m in grey.messages] == [["customer@example.org"]]
    grey.greylisting = False
    asyncio.run(sender.send_due(system_clock() + timedelta(hours=1)))
    (row,) = outbox(db)
    assert row.state == "sent"
    assert [m[1] for m in grey.messages] == [["customer@example.org"], ["grey@example.net"]]
