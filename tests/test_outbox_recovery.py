"""After an outage mail goes at once: the relay back, a wake-up while sending, the database
away (one log line), a full disk (no file left in tmp/), a refusal kept after a retry."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Sink, free_port, make_mail, wait_for
from sqlalchemy import select

from maild.config import Config, OutboundConfig
from maild.core.clock import as_utc
from maild.replies.sender import OutboxSender
from maild.replies.transport import MaildirTransport, SmtpTransport
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


class Running:
    """``OutboxSender.run`` on a loop of its own, in a thread, as the daemon runs it."""

    def __init__(self, sender: OutboxSender) -> None:
        self.sender = sender
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        await self.sender.run(self.stopping)

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.sender.wake.set)

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        def halt() -> None:
            assert self.stopping is not None
            self.stopping.set()
            self.sender.wake.set()

        self.loop.call_soon_threadsafe(halt)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def run_sender() -> Iterator[Callable[[OutboxSender], Running]]:
    started: list[Running] = []

    def start(sender: OutboxSender) -> Running:
        running = Running(sender)
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def test_relay_back_sends_waiting_mail_at_once(
    db: Database, ingest: Callable[..., int], make_config: Callable[..., Config]
) -> None:
    for i in range(3):
        ingest(make_mail(f"Waiting {i}", sender=f"w{i}@example.org"))
    port = free_port()
    sender = sender_for(db, make_config, port)
    assert asyncio.run(sender.send_due()) == 3  # nobody listens: deferred by 15 s
    assert [r.state for r in outbox(db)] == ["queued"] * 3
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ingest(make_mail("Fresh"))
        assert asyncio.run(sender.send_due()) == 1  # the fresh one goes: the relay is back
        assert asyncio.run(sender.send_due()) == 3  # so the waiting ones go now, not in 15 s
    finally:
        controller.stop()
    assert [r.state for r in outbox(db)] == ["sent"] * 4
    assert len(sink.messages) == 4


def test_relay_back_without_new_mail_is_noticed_at_once(
    db: Database,
    ingest: Callable[..., int],
    make_config: Callable[..., Config],
    run_sender: Callable[[OutboxSender], Running],
) -> None:
    """No new mail comes: a probe of the relay (no mail, no attempt counted) finds it back."""
    for i in range(3):
        ingest(make_mail(f"Waiting {i}", sender=f"w{i}@example.org"))
    port = free_port()
    sender = sender_for(db, make_config, port)
    assert asyncio.run(sender.send_due()) == 3  # nobody listens: deferred by 15 s
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        back = time.monotonic()
        sender.probe_every = 0.5  # 15 s in the daemon
        run_sender(sender)
        wait_for(lambda: len(sink.messages) == 3, timeout=10)
        took = time.monotonic() - back
        wait_for(lambda: [r.state for r in outbox(db)] == ["sent"] * 3)
    finally:
        controller.stop()
    assert took < 5, f"the waiting mail went {took:.1f} s after the relay came back"
    assert [r.attempts for r in outbox(db)] == [2, 2, 2]


def test_wakeup_while_sending_is_not_lost(
    db: Database,
    ingest: Callable[..., int],
    make_config: Callable[..., Config],
    run_sender: Callable[[OutboxSender], Running],
) -> None:
    """A mail queued while the sender is busy goes right after, not at the next 5 s poll."""
    woken: list[float] = []
    holder: list[Running] = []

    class Busy(Sink):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if not woken:  # the pipeline queues another mail while this one is being sent
                ingest(make_mail("Second", sender="second@example.org"))
                woken.append(time.monotonic())
                holder[0].wake()
            await asyncio.sleep(0.3)
            return await super().handle_DATA(server, session, envelope)

    sink = Busy()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        ingest(make_mail("First"))
        holder.append(run_sender(sender_for(db, make_config, controller.port)))
        wait_for(lambda: len(sink.messages) == 2, timeout=15)
        late = time.monotonic() - woken[0]
    finally:
        controller.stop()
    assert late < 2.5, f"the second mail went {late:.1f} s after its wake-up"


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_database_outage_logs_one_line(
    where: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    run_sender: Callable[[OutboxSender], Running],
) -> None:
    if where == "sqlite":
        (tmp_path / "gone.db").mkdir()  # a directory where the database file should be
        url = f"sqlite:///{tmp_path / 'gone.db'}"
    else:  # nothing listens there: connection refused, as while PostgreSQL restarts
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    db = Database(url)
    caplog.set_level(logging.WARNING, logger="maild")
    relay = OutboundConfig(f"smtp://127.0.0.1:{free_port()}", "support@example.com")
    running = run_sender(OutboxSender(db, SmtpTransport(relay)))
    wait_for(lambda: any(r.name.startswith("maild.replies") for r in caplog.records), 10)
    running.stop()
    db.dispose()
    records = [r for r in caplog.records if r.name.startswith("maild.replies")]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records), [
        r.getMessage() for r in records
    ]
    assert "database unavailable" in records[0].getMessage()


def test_maildir_full_disk_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    """A write that fails half-way (a file-size limit: the same OSError as a full disk)."""
    code = """
import asyncio, resource, signal, sys
from pathlib import Path
from maild.replies.transport import MaildirTransport, SendError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
transport = MaildirTransport(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    raw = b"Subject: x\\r\\n\\r\\n" + b"x" * 65536
    asyncio.run(transport.send("a@example.com", ["b@example.org"], raw))
except SendError as exc:
    print("deferred:", exc, "unreachable" if exc.unreachable else "")
"""
    box = tmp_path / "outbox"
    done = subprocess.run(
        [sys.executable, "-c", code, str(box)], capture_output=True, text=True, timeout=60
    )
    assert list((box / "tmp").iterdir()) == []
    assert list((box / "new").iterdir()) == []
    assert "deferred: maildir:" in done.stdout and "unreachable" in done.stdout, done


def test_refusal_stays_on_the_row_after_a_later_delivery(
    db: Database,
    ingest: Callable[..., int],
    make_config: Callable[..., Config],
    smtp_sink: tuple[Sink, Controller],
) -> None:
    """A 550 for one recipient and a 450 for another: when the 450 one gets the mail later,
    the row still says who never got it and why."""
    _, controller = smtp_sink
    ingest(make_mail("Hello"))
    with db.write() as s:
        row = s.scalar(select(Outbox))
        assert row is not None
        row.recipients = "customer@example.org,grey@example.net,gone@example.net"

    class Relay(Sink):
        greylisting = True

        async def handle_RCPT(
            self,
            _server: object,
            _session: object,
            envelope: Any,
            address: str,
            _options: list[str],
        ) -> str:
            if address == "gone@example.net":
                return "550 5.1.1 no such user"
            if address == "grey@example.net" and self.greylisting:
                return "450 4.7.1 greylisted, try later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    relay = Relay()
    controller.handler = relay
    sender = sender_for(db, make_config, controller.port)
    asyncio.run(sender.send_due())
    (row,) = outbox(db)
    assert row.state == "queued" and row.recipients == "grey@example.net"
    relay.greylisting = False
    asyncio.run(sender.send_due(as_utc(row.next_attempt_at)))
    (row,) = outbox(db)
    assert row.state == "sent"
    assert "gone@example.net: 550 5.1.1 no such user" in (row.last_error or "")
    assert [m[1] for m in relay.messages] == [["customer@example.org"], ["grey@example.net"]]


def test_maildir_mail_written_before_a_crash_is_not_written_again(
    db: Database, ingest: Callable[..., int], tmp_path: Path
) -> None:
    """The mail reached new/ but the kill came before its outcome was committed: the
    restarted sender sends it again, and the Maildir still holds it once."""
    ingest(make_mail("Hello"))
    box = tmp_path / "box"
    transport = MaildirTransport(box)
    (row,) = outbox(db)
    recipients = row.recipients.split(",")
    asyncio.run(transport.send(row.envelope_from, recipients, row.raw))  # then: kill -9
    assert asyncio.run(OutboxSender(db, transport).send_due()) == 1
    assert [r.state for r in outbox(db)] == ["sent"]
    assert len(list((box / "new").iterdir())) == 1
