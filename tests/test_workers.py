"""Several pipeline worker processes share the queue: each message once, and a dead worker is
started again so its share of the mail does not wait forever."""

from __future__ import annotations

import os
import signal
import smtplib
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import func, select

from maild.config import Config
from maild.pipeline.worker import ProcessWorker
from maild.store.db import Database
from maild.store.models import Inbound, Message, Outbox, Ticket
from maild.threading.rawids import thread_key

# Many customers with one text would make a problem (issue 12); these tests are about workers.
NO_INCIDENTS = {"threshold": 1000}


def count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_two_workers_process_each_message_once(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(pipeline={"workers": 2}, incident=NO_INCIDENTS))
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
    d = running(make_config(pipeline={"workers": 2}, incident=NO_INCIDENTS))
    assert d.daemon is not None
    victim = d.daemon.workers[1]
    assert isinstance(victim, ProcessWorker)
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.join(10)
    # Mail for both shards (three each), sent while worker 2 is dead: all of it gets processed.
    shares: dict[int, list[bytes]] = {0: [], 1: []}
    i = 0
    while min(len(v) for v in shares.values()) < 3:
        raw = make_mail(f"After the kill {i}", sender=f"k{i}@example.org")
        if len(shares[thread_key(raw) % 2]) < 3:
            shares[thread_key(raw) % 2].append(raw)
        i += 1
    for raw in shares[0] + shares[1]:
        d.send(raw)
    wait_for(lambda: count(db, Inbound, Inbound.state == "done") == 6, timeout=30)
    replacement = d.daemon.workers[1]
    assert isinstance(replacement, ProcessWorker) and replacement is not victim
    assert replacement.proc.is_alive()
    assert count(db, Ticket) == 6


def test_a_quick_follow_up_stays_with_its_request_across_workers(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    """The follow-up (In-Reply-To the customer's own first mail, no tag yet) is sent right
    after the first mail's 250; whichever worker takes it must see the request already."""
    d = running(make_config(pipeline={"workers": 2}, incident=NO_INCIDENTS))
    pairs = 24
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        for i in range(pairs):
            sender = f"fast{i}@example.org"
            first = f"<first{i}@client.example.org>"
            client.sendmail(
                sender,
                ["support@example.com"],
                make_mail(f"Cannot log in {i}", sender=sender, message_id=first),
            )
            client.sendmail(
                sender,
                ["support@example.com"],
                make_mail(
                    f"Re: Cannot log in {i}",
                    sender=sender,
                    body="Forgot to say: since Monday.",
                    extra=f"In-Reply-To: {first}\r\nReferences: {first}\r\n",
                ),
            )
    wait_for(lambda: count(db, Inbound, Inbound.state == "done") == 2 * pairs)
    with db.session() as s:
        per_ticket = Counter(s.scalars(select(Message.ticket_id).where(Message.direction == "in")))
    assert count(db, Ticket) == pairs
    assert sorted(per_ticket.values()) == [2] * pairs


def test_the_sender_hears_of_every_batch_not_only_the_end_of_a_backlog(
    make_config: Callable[..., Config], db: Database
) -> None:
    from maild.ingest.accept import store_raw
    from maild.pipeline.runner import Pipeline, drain

    config = make_config(pipeline={"workers": 0, "batch_size": 2})
    for i in range(5):
        store_raw(db, make_mail(f"Backlog {i}", sender=f"b{i}@example.org"), source="t")
    batches: list[int] = []
    assert drain(Pipeline(config, db), after_batch=batches.append) == 5
    assert batches == [2, 2, 1]


def test_signals_to_and_from_workers_never_block_on_a_full_pipe() -> None:
    """The daemon wakes workers on every group commit and a worker signals after every batch;
    a blocking write on a full pipe would let each wait for the other forever."""
    import multiprocessing

    from maild.pipeline.worker import send_nowait

    reader, writer = multiprocessing.Pipe(duplex=False)
    os.set_blocking(writer.fileno(), False)
    sent = [send_nowait(writer, b"w") for _ in range(20_000)]  # nobody reads
    assert sent[0] and not sent[-1]
    while reader.poll(0):  # what did get through is whole, one signal at a time
        assert reader.recv_bytes() == b"w"
    reader.close()
    writer.close()


@pytest.mark.usefixtures("db")
def test_a_worker_is_woken_without_blocking(make_config: Callable[..., Config]) -> None:
    worker = ProcessWorker(make_config(pipeline={"workers": 1}))
    try:
        assert not os.get_blocking(worker._to_child.fileno())
        for _ in range(20_000):
            worker.wake()
        assert worker.proc.is_alive()
    finally:
        worker.stop(10)
    assert worker.proc.exitcode == 0


def take_over(d: RunningDaemon) -> None:
    """The test plays supervisor, and the worker is frozen (SIGSTOP): it cannot finish."""
    assert d.daemon is not None and d.daemon._supervisor is not None
    d.loop.call_soon_threadsafe(d.daemon._supervisor.cancel)
    wait_for(d.daemon._supervisor.done)
    os.kill(d.daemon.workers[0].proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]


def die_on(d: RunningDaemon, kind: int, ident: int, *, careful: bool) -> None:
    """The frozen worker is told that it holds the message, and killed, as a crash no
    ``except`` catches (segfault, OOM killer) would kill it; the supervisor replaces it."""
    import asyncio

    assert d.daemon is not None
    worker = d.daemon.workers[0]
    assert isinstance(worker, ProcessWorker)
    assert (worker.in_hand[2] > 0) == careful  # careful after a death in this daemon
    worker.in_hand[1], worker.in_hand[0] = ident, kind
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.join(10)
    asyncio.run_coroutine_threadsafe(d.daemon._replace_dead(0, 1), d.loop).result(30)
    os.kill(d.daemon.workers[0].proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_message_a_worker_keeps_dying_on_goes_to_quarantine(
    make_config: Callable[..., Config],
    db: Database,
    running: Callable[..., RunningDaemon],
) -> None:
    """The first death may have hit any message of a batch: it only makes the next worker
    take messages one at a time. Deaths of such a careful worker count against the message,
    in its spool row (committed): a restart of the whole daemon does not forget them."""
    from maild.daemon import POISON_DEATHS
    from maild.ingest.queue import Incoming
    from maild.ingest.spool import SPOOL, SpoolQueue, spool_path
    from maild.pipeline.runner import HELD

    assert POISON_DEATHS == 3
    config = make_config(pipeline={"workers": 1})
    d = running(config)
    take_over(d)
    poison = make_mail("Poison", sender="p@example.org")
    path = spool_path(config.storage_url)
    assert path is not None
    spool = SpoolQueue(path, db)
    (queued,) = spool.put([Incoming(poison, "smtp")])
    sid = queued.ident

    def attempts() -> int:
        with spool.db.session() as s:
            return int(s.scalar(select(SPOOL.c.attempts).where(SPOOL.c.id == sid)) or 0)

    die_on(d, HELD, sid, careful=False)
    assert attempts() == 0  # not counted: it might have been bad luck
    die_on(d, HELD, sid, careful=True)
    assert attempts() == 1 and spool.count() == 1  # counted, and still waiting
    os.kill(d.daemon.workers[0].proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    d.stop()  # a restart of the whole daemon
    d = running(config)
    take_over(d)
    die_on(d, HELD, sid, careful=False)
    die_on(d, HELD, sid, careful=True)
    assert attempts() == 2
    die_on(d, HELD, sid, careful=True)  # the third counted death, two since the restart
    assert spool.count() == 0
    with db.session() as s:
        row = s.scalar(select(Inbound))
    assert row is not None and row.state == "quarantined" and row.raw == poison
    assert row.attempts == POISON_DEATHS
    assert row.error == f"the pipeline worker died {POISON_DEATHS} times on this message"
    assert count(db, Ticket) == 0
    # The restarted worker is not frozen: the queue moves again.
    os.kill(d.daemon.workers[0].proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    d.send(make_mail("Fine", sender="f@example.org"))
    wait_for(lambda: count(db, Ticket) == 1)
    spool.dispose()
