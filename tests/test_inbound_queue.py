"""The inbound queue's contract (maild/ingest/queue.py), one suite over every implementation.

As APScheduler tests its data stores: the ``queue`` fixture gives each implementation in turn
(the spool on SQLite, the ``inbound`` table on SQLite and PostgreSQL) and the same test
functions run against each. Real databases, real files, no mocks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import make_mail
from sqlalchemy import func, select

from maild.ingest.accept import store_raw
from maild.ingest.inbound import TableQueue
from maild.ingest.queue import Entry, InboundQueue, Incoming
from maild.ingest.spool import SpoolQueue, spool_path
from maild.store.db import Database
from maild.store.models import Inbound

pytestmark = pytest.mark.parametrize(
    ("db_url", "kind"),
    [
        pytest.param("sqlite", "spool", id="spool"),
        pytest.param("sqlite", "inbound", id="inbound-sqlite"),
        pytest.param("postgres", "inbound", id="inbound-postgres"),
    ],
    indirect=["db_url"],
)
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture
def queue(db: Database, db_url: str, kind: str) -> Iterator[InboundQueue]:
    q = reopen(db, db_url, kind)
    yield q
    q.dispose()


def reopen(db: Database, db_url: str, kind: str) -> InboundQueue:
    """Another instance on the same store, as another process opens it."""
    if kind == "inbound":
        return TableQueue(db)
    path = spool_path(db_url)
    assert path is not None
    return SpoolQueue(path, db)


def mail(n: int, message_id: str | None = None) -> Incoming:
    """The same bytes for the same ``n`` (a Message-ID of its own, not a random one)."""
    mid = message_id or f"<q{n}@c.example>"
    return Incoming(make_mail(f"Question {n}", sender=f"c{n}@example.org", message_id=mid), "smtp")


def subjects(entries: list[Entry]) -> list[str]:
    out = []
    for e in entries:
        line = next(x for x in bytes(e.row["raw"]).splitlines() if x.startswith(b"Subject:"))
        out.append(line.decode().removeprefix("Subject: "))
    return out


def claim(db: Database, queue: InboundQueue, entry: Entry, state: str = "done") -> int | None:
    with db.write() as s:
        return queue.claim(s.connection(), entry, state, None, NOW)


def take_all(queue: InboundQueue) -> list[Entry]:
    return queue.take(10_000, 1 << 40)[0]


def inbound(db: Database) -> list[Inbound]:
    with db.session() as s:
        rows = list(s.scalars(select(Inbound).order_by(Inbound.id)))
        s.expunge_all()
    return rows


def test_put_commits_and_answers_with_an_id(
    db: Database, db_url: str, kind: str, queue: InboundQueue
) -> None:
    queued = queue.put([mail(1), mail(2)], clock)
    assert [q.duplicate for q in queued] == [False, False]
    assert len({q.ident for q in queued}) == 2
    assert all(q.queue_id == f"{queue.prefix}{q.ident}" for q in queued)
    other = reopen(db, db_url, kind)  # committed: another connection sees it
    try:
        assert other.count() == 2
    finally:
        other.dispose()


def test_the_same_mail_twice_is_queued_once(queue: InboundQueue) -> None:
    first, again = queue.put([mail(1), mail(1)], clock)
    (later,) = queue.put([mail(1)], clock)
    assert not first.duplicate and again.duplicate and later.duplicate
    assert again.ident == later.ident == first.ident
    assert queue.count() == 1


def test_mail_already_processed_is_a_duplicate(db: Database, queue: InboundQueue) -> None:
    queue.put([mail(1)], clock)
    (entry,) = take_all(queue)
    claim(db, queue, entry)
    queue.done([entry])
    (again,) = queue.put([mail(1)], clock)
    assert again.duplicate and queue.count() == 0
    assert len(inbound(db)) == 1


def test_take_gives_the_oldest_first_and_removes_nothing(queue: InboundQueue) -> None:
    queue.put([mail(1)], clock)
    queue.put([mail(2), mail(3)], clock)
    assert subjects(take_all(queue)) == ["Question 1", "Question 2", "Question 3"]
    assert subjects(take_all(queue)) == ["Question 1", "Question 2", "Question 3"]
    assert queue.count() == 3


def test_take_keeps_to_the_batch_limits(queue: InboundQueue) -> None:
    queue.put([mail(n) for n in range(5)], clock)
    entries, more = queue.take(2, 1 << 20)
    assert subjects(entries) == ["Question 0", "Question 1"] and more
    entries, more = queue.take(10, 1)  # at least one, however big
    assert subjects(entries) == ["Question 0"] and more
    entries, more = queue.take(10, 1 << 20)
    assert len(entries) == 5 and not more


def test_take_by_id(queue: InboundQueue) -> None:
    queued = queue.put([mail(n) for n in range(3)], clock)
    entries, more = queue.take(10, 1 << 20, ids=[queued[1].ident])
    assert subjects(entries) == ["Question 1"] and not more
    assert entries[0].ident == queued[1].ident


def test_shards_split_by_thread_and_cover_everything(queue: InboundQueue) -> None:
    roots = [mail(n, message_id=f"<root{n}@c.example>") for n in range(8)]
    replies = [
        Incoming(
            make_mail(f"Re: Question {n}", extra=f"In-Reply-To: <root{n}@c.example>\r\n"),
            "smtp",
        )
        for n in range(8)
    ]
    queue.put(roots, clock)
    queue.put(replies, clock)
    shares = [queue.take(100, 1 << 30, (i, 3))[0] for i in range(3)]
    assert sum(len(s) for s in shares) == 16
    for share in shares:
        names = subjects(share)
        for n in range(8):  # a reply goes with the mail it answers, after it
            if f"Re: Question {n}" in names:
                assert names.index(f"Question {n}") < names.index(f"Re: Question {n}")


def test_a_follow_up_inherits_the_thread_key_across_commits(queue: InboundQueue) -> None:
    first = Incoming(
        make_mail(
            "Re: contract",
            message_id="<first@c.example>",
            extra="In-Reply-To: <old@c.example>\r\nReferences: <old@c.example>\r\n",
        ),
        "smtp",
    )
    follow = Incoming(make_mail("Re: contract", extra="In-Reply-To: <first@c.example>\r\n"), "x")
    queue.put([first], clock)
    queue.put([follow], clock)
    for i in range(4):
        share = queue.take(10, 1 << 20, (i, 4))[0]
        assert len(share) in (0, 2)


def test_a_claim_is_made_once(db: Database, queue: InboundQueue) -> None:
    queue.put([mail(1)], clock)
    (entry,) = take_all(queue)
    iid = claim(db, queue, entry)
    assert iid is not None
    assert claim(db, queue, entry) is None  # another worker, or a rerun after a crash
    queue.done([entry])
    assert queue.count() == 0 and take_all(queue) == []
    (row,) = inbound(db)
    assert (row.id, row.state, row.attempts, row.raw) == (iid, "done", 1, entry.row["raw"])


def test_a_crash_before_done_processes_nothing_twice(db: Database, queue: InboundQueue) -> None:
    queue.put([mail(1), mail(2)], clock)
    entries = take_all(queue)
    for e in entries:
        claim(db, queue, e)  # committed; the process dies before queue.done
    again = take_all(queue)
    assert [claim(db, queue, e) for e in again] == [None] * len(again)
    queue.done(again)
    assert queue.count() == 0
    assert [r.state for r in inbound(db)] == ["done", "done"]


def test_a_claim_rolled_back_leaves_the_mail_waiting(db: Database, queue: InboundQueue) -> None:
    queue.put([mail(1)], clock)
    (entry,) = take_all(queue)
    with pytest.raises(RuntimeError), db.write() as s:
        assert queue.claim(s.connection(), entry, "done", None, NOW) is not None
        raise RuntimeError("a stage failed")
    assert queue.count() == 1
    (entry,) = take_all(queue)
    assert claim(db, queue, entry) is not None


def test_quarantine_keeps_the_raw_bytes_and_the_reason(db: Database, queue: InboundQueue) -> None:
    (queued,) = queue.put([mail(1)], clock)
    assert queue.attempt(queued.ident) == 1
    assert queue.attempt(queued.ident) == 2
    assert queue.quarantine(queued.ident, "the worker died 2 times", NOW)
    assert queue.count() == 0
    (row,) = inbound(db)
    assert (row.state, row.error, row.attempts) == ("quarantined", "the worker died 2 times", 2)
    assert row.raw == mail(1).raw
    assert not queue.quarantine(queued.ident, "again", NOW)  # no longer waiting
    assert queue.attempt(queued.ident) == 0


def test_claim_counts_the_attempt_after_earlier_deaths(db: Database, queue: InboundQueue) -> None:
    (queued,) = queue.put([mail(1)], clock)
    queue.attempt(queued.ident)
    (entry,) = take_all(queue)
    claim(db, queue, entry, "quarantined")
    queue.done([entry])
    (row,) = inbound(db)
    assert (row.state, row.attempts) == ("quarantined", 2)


def test_retry_puts_a_quarantined_message_back_with_its_row(
    db: Database, queue: InboundQueue
) -> None:
    (queued,) = queue.put([mail(1)], clock)
    queue.attempt(queued.ident)
    queue.quarantine(queued.ident, "stage failed", NOW)
    (row,) = inbound(db)
    ident = queue.retry(row.id)
    assert ident is not None and queue.count() == 1
    assert queue.retry(row.id) is None  # no longer quarantined
    (entry,) = queue.take(10, 1 << 20, ids=[ident])[0]
    assert claim(db, queue, entry) == row.id
    queue.done([entry])
    (again,) = inbound(db)
    assert (again.id, again.state, again.attempts) == (row.id, "done", 1)


def test_mail_an_older_version_left_pending_in_inbound_is_taken_over(
    db: Database, queue: InboundQueue
) -> None:
    """Before one queue per store, ``deliver``, IMAP and a stop put SQLite's mail into
    ``inbound`` as ``pending``: after the upgrade it is processed, once, in its own row."""
    old = [store_raw(db, mail(n).raw, source="pipe", clock=clock).ident for n in range(3)]
    queue.adopt()
    queue.adopt()  # at every start: nothing twice
    entries = take_all(queue)
    assert subjects(entries) == ["Question 0", "Question 1", "Question 2"]
    assert [claim(db, queue, e) for e in entries] == old
    queue.done(entries)
    assert queue.count() == 0
    assert [(r.id, r.state) for r in inbound(db)] == [(i, "done") for i in old]


def test_the_spool_of_an_older_version_is_upgraded(
    db: Database, db_url: str, kind: str, queue: InboundQueue
) -> None:
    """A spool file written before deaths were counted in it keeps its mail."""
    if kind != "spool":
        pytest.skip("only the spool is a file of its own")
    queue.put([mail(1)], clock)
    queue.dispose()
    path = spool_path(db_url)
    assert path is not None
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE spool DROP COLUMN attempts")
    con.commit()
    con.close()
    again = reopen(db, db_url, kind)
    try:
        (entry,) = take_all(again)
        assert again.attempt(entry.ident) == 1
        assert claim(db, again, entry) is not None
    finally:
        again.dispose()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Inbound)) == 1
