"""The spool (SQLite's inbound queue): accepted mail gets its own file, then ``inbound`` once."""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, make_mail
from sqlalchemy import func, select

from maild.config import Config
from maild.ingest.accept import Acceptor
from maild.ingest.queue import InboundQueue
from maild.ingest.smtp import Handler, start_server
from maild.ingest.spool import SpoolQueue, spool_path
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Inbound, Ticket

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
def spool(config: Config, db: Database) -> Iterator[SpoolQueue]:
    path = spool_path(config.storage_url)
    assert path is not None
    sp = SpoolQueue(path, db)
    yield sp
    sp.dispose()


def smtp_send(queue: InboundQueue, messages: list[bytes]) -> list[str]:
    """Send over real SMTP to an aiosmtpd server whose acceptor commits to the queue."""

    async def scenario() -> list[str]:
        acceptor = Acceptor(queue)
        port = free_port()
        handler = Handler(acceptor, max_size=10_000_000)
        server = await start_server(handler, "127.0.0.1", port, hostname="desk.example.com")

        def client() -> list[str]:
            replies = []
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.ehlo()
                for raw in messages:
                    c.mail("customer@example.org")
                    c.rcpt("support@example.com")
                    try:
                        code, text = c.data(raw)
                    except smtplib.SMTPDataError as exc:
                        code, text = exc.smtp_code, exc.smtp_error
                        c.rset()
                    replies.append(f"{code} {text.decode()}")
            return replies

        try:
            return await asyncio.to_thread(client)
        finally:
            server.close()
            await acceptor.close()

    return asyncio.run(scenario())


def test_spool_lives_beside_the_database_and_only_for_sqlite(tmp_path: Path) -> None:
    assert spool_path(f"sqlite:///{tmp_path}/var/maild.db") == tmp_path / "var/maild.db.spool"
    assert spool_path("sqlite:///:memory:") is None
    assert spool_path("postgresql+psycopg://postgres@127.0.0.1:5432/test") is None


@sqlite_only
def test_250_means_committed_to_the_spool_then_imported_once(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    raw = make_mail("Счёт не пришёл", sender="c1@example.org")
    replies = smtp_send(spool, [raw])
    assert replies[0].startswith("250 2.0.0 OK: queued as S"), replies
    # Durable in the spool file (a fresh connection sees it), not yet in inbound.
    con = sqlite3.connect(str(spool.path))
    assert con.execute("SELECT raw FROM spool").fetchall() == [(raw,)]
    con.close()
    assert count(db, Inbound) == 0

    assert Pipeline(config, db, queue=spool).process() == 1
    assert spool.count() == 0
    assert count(db, Inbound, Inbound.state == "done") == 1
    assert count(db, Ticket) == 1
    with db.session() as s:
        assert s.scalar(select(Inbound.raw)) == raw


@sqlite_only
def test_same_message_twice_is_one_request_whether_spooled_or_imported(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    raw = make_mail("Printer on fire", sender="c2@example.org")
    first, second = smtp_send(spool, [raw, raw])
    assert first.startswith("250") and "(duplicate)" not in first
    assert second.startswith("250") and second.endswith("(duplicate)"), second
    assert spool.count() == 1

    Pipeline(config, db, queue=spool).process()
    (again,) = smtp_send(spool, [raw])  # an MTA retry after we processed it
    assert again.endswith("(duplicate)") and "queued as S" not in again, again
    assert spool.count() == 0
    assert count(db, Inbound) == 1
    assert count(db, Ticket) == 1


@sqlite_only
def test_crash_before_the_spool_delete_processes_nothing_twice(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    messages = [make_mail(f"Question {i}", sender=f"q{i}@example.org") for i in range(3)]
    smtp_send(spool, messages)
    pipeline = Pipeline(config, db, queue=spool)
    # Keep a copy of the spool as it was; after the move, put it back: exactly the state a
    # kill -9 after the inbound commit and before the spool delete leaves on disk.
    snapshot = sqlite3.connect(":memory:")
    live = sqlite3.connect(str(spool.path))
    live.backup(snapshot)
    assert pipeline.process() == 3
    assert spool.count() == 0
    snapshot.backup(live)
    live.close()
    assert spool.count() == 3

    while pipeline.process():
        pass
    assert spool.count() == 0
    assert count(db, Inbound) == 3
    assert count(db, Inbound, Inbound.state == "done") == 3
    assert count(db, Ticket) == 3


@sqlite_only
def test_smtp_and_pipe_mail_share_the_spool(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    from maild.ingest.accept import store_raw

    smtp_send(spool, [make_mail("By SMTP", sender="s@example.org")])
    queued = store_raw(spool, make_mail("By the pipe", sender="p@example.org"), source="pipe")
    assert queued.queue_id.startswith("S") and spool.count() == 2
    assert Pipeline(config, db, queue=spool).process() == 2
    assert spool.count() == 0
    assert count(db, Inbound, Inbound.state == "done") == 2
    assert count(db, Ticket) == 2


@sqlite_only
def test_bad_spooled_mail_is_quarantined_with_its_raw_bytes(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    bad = b"Subject: huge header\r\n" + (b"X-Junk: " + b"x" * 70 + b"\r\n") * 3000 + b"\r\nbody\r\n"
    good = make_mail("Fine", sender="f@example.org")
    assert [r[:3] for r in smtp_send(spool, [bad, good])] == ["250", "250"]
    assert Pipeline(config, db, queue=spool).process() == 2
    with db.session() as s:
        rows = {r.state: r for r in s.scalars(select(Inbound))}
    assert set(rows) == {"done", "quarantined"}
    assert rows["quarantined"].raw == bad and rows["quarantined"].error
    assert count(db, Ticket) == 1


@sqlite_only
def test_take_respects_the_batch_limits(config: Config, db: Database, spool: SpoolQueue) -> None:
    smtp_send(spool, [make_mail(f"M {i}", sender=f"m{i}@example.org") for i in range(5)])
    entries, more = spool.take(2, 1 << 20)
    assert [e.ident for e in entries] == [1, 2] and more
    entries, more = spool.take(10, 1)  # at least one, however big
    assert [e.ident for e in entries] == [1] and more
    assert spool.count() == 5


@sqlite_only
def test_a_broken_spool_answers_451_not_250(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    spool.dispose()
    for extra in spool.path.parent.glob(spool.path.name + "-*"):
        extra.unlink()
    spool.path.write_bytes(b"this is not a database file" * 200)
    (reply,) = smtp_send(spool, [make_mail("Hello", sender="x@example.org")])
    assert reply.startswith("451 4.3.0"), reply


def test_thread_key_puts_a_reply_with_the_mail_it_answers() -> None:
    from maild.threading.rawids import thread_key

    root = make_mail("Question", message_id="<root@client.example.org>")
    quick = make_mail("Re: Question", extra="In-Reply-To: <root@client.example.org>\r\n")
    deep = make_mail(
        "RE: [Support #7] Question",
        extra="In-Reply-To: <ack.7.x@example.com>\r\nReferences: <root@client.example.org>\r\n"
        " <ack.7.x@example.com>\r\n",
    )
    other = make_mail("Another question", message_id="<other@client.example.org>")
    assert thread_key(root) == thread_key(quick) == thread_key(deep)
    assert thread_key(other) != thread_key(root)
    assert thread_key(b"Subject: no ids at all\r\n\r\nbody") >= 0


@sqlite_only
def test_health_counts_spooled_mail_as_pending(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    from maild.web.app import _counts

    smtp_send(spool, [make_mail(f"H {i}", sender=f"h{i}@example.org") for i in range(3)])
    assert _counts(db, spool)["inbound_pending"] == 3
    Pipeline(config, db, queue=spool).process()
    assert _counts(db, spool)["inbound_pending"] == 0


@sqlite_only
def test_the_spool_takes_mail_while_the_main_database_is_broken(
    config: Config, db: Database, spool: SpoolQueue, tmp_path: Path
) -> None:
    broken_path = tmp_path / "broken.db"
    broken_path.write_bytes(b"this is not a database file" * 200)
    broken = Database(f"sqlite:///{broken_path}")
    raw = make_mail("Accepted anyway", sender="b@example.org")
    beside_broken = SpoolQueue(spool.path, broken)
    (reply,) = smtp_send(beside_broken, [raw])
    beside_broken.dispose()
    broken.dispose()
    assert reply.startswith("250 2.0.0 OK: queued as S"), reply
    assert spool.count() == 1
    Pipeline(config, db, queue=spool).process()  # once the database is back
    assert count(db, Ticket) == 1


@sqlite_only
def test_a_backlog_an_older_version_left_in_inbound_is_processed_after_upgrade(
    config: Config, db: Database, spool: SpoolQueue
) -> None:
    """Older versions queued ``deliver`` and IMAP mail in ``inbound`` and moved the spool there
    on stop: those rows are taken into the spool at start (adopt), once, and processed in
    order, and the customer's follow-up over SMTP does not overtake its original."""
    from maild.ingest.accept import store_raw

    backlog = [make_mail(f"Backlog {i}", sender=f"b{i}@example.org") for i in range(99)]
    original = make_mail("Cannot log in", sender="c@example.org", message_id="<orig@c.example>")
    for raw in [*backlog, original]:
        store_raw(db, raw, source="pipe")  # pending in inbound, as the old version left it
    assert spool.adopt() == 100
    assert spool.adopt() == 0  # once
    follow_up = make_mail(
        "Re: Cannot log in",
        sender="c@example.org",
        extra="In-Reply-To: <orig@c.example>\r\nReferences: <orig@c.example>\r\n",
    )
    smtp_send(spool, [follow_up])
    pipeline = Pipeline(config, db, queue=spool)  # batches of 64: the original is in the 2nd
    while pipeline.process():
        pass
    with db.session() as s:
        mine = s.scalars(select(Ticket.id).where(Ticket.requester == "c@example.org")).all()
    assert len(mine) == 1
    assert count(db, Inbound, Inbound.state == "done") == 101
    assert count(db, Inbound) == 101 and spool.count() == 0


def _keys(db: Database, spool: SpoolQueue) -> list[int]:
    with spool.db.session() as s:
        from maild.ingest.spool import SPOOL

        spooled = list(s.scalars(select(SPOOL.c.thread_key).order_by(SPOOL.c.id)))
    with db.session() as s:
        stored = list(s.scalars(select(Inbound.thread_key).order_by(Inbound.id)))
    return spooled + [int(k) for k in stored if k is not None]


@sqlite_only
@pytest.mark.parametrize(
    "how", ["one group commit", "two commits", "pipe then SMTP", "SMTP then pipe"]
)
def test_a_follow_up_inherits_the_thread_key_of_the_mail_it_answers(
    config: Config, db: Database, spool: SpoolQueue, how: str
) -> None:
    """The first mail itself answers something older (References: <old>), the follow-up
    names only that first mail: both must still go to the same worker."""
    from maild.ingest.accept import store_raw
    from maild.ingest.queue import Incoming
    from maild.threading.rawids import thread_key

    first = make_mail(
        "Re: our contract",
        sender="c@example.org",
        message_id="<first@c.example>",
        extra="In-Reply-To: <old@c.example>\r\nReferences: <old@c.example>\r\n",
    )
    follow = make_mail(
        "Re: our contract",
        sender="c@example.org",
        extra="In-Reply-To: <first@c.example>\r\n",
    )
    assert thread_key(first) != thread_key(follow)  # the headers alone do not tell
    if how == "one group commit":
        spool.put([Incoming(first, "smtp"), Incoming(follow, "smtp")])
    elif how == "two commits":
        spool.put([Incoming(first, "smtp")])
        spool.put([Incoming(follow, "smtp")])
    elif how == "pipe then SMTP":  # the first in inbound (processed, or an older version's)
        store_raw(db, first, source="pipe")
        spool.put([Incoming(follow, "smtp")])
    else:  # the original still waits in the spool when the follow-up comes through the pipe
        spool.put([Incoming(first, "smtp")])
        store_raw(spool, follow, source="pipe")
    keys = _keys(db, spool)
    assert len(keys) == 2 and keys[0] == keys[1], keys


@sqlite_only
def test_a_spool_file_of_an_earlier_version_is_upgraded_and_kept(
    config: Config, db: Database, tmp_path: Path
) -> None:
    """The first spool had no thread key and no Message-ID index; its mail must not be lost."""
    path = spool_path(config.storage_url)
    assert path is not None
    raw = make_mail("Spooled by the old version", sender="old@example.org")
    con = sqlite3.connect(str(path))
    con.execute(
        "CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at DATETIME NOT NULL,"
        " source VARCHAR(16) NOT NULL, envelope_from VARCHAR(512), recipients TEXT NOT NULL,"
        " digest VARCHAR(64) NOT NULL, message_id VARCHAR(998), size INTEGER NOT NULL,"
        " raw BLOB NOT NULL)"
    )
    con.execute(
        "INSERT INTO spool (received_at, source, envelope_from, recipients, digest, message_id,"
        " size, raw) VALUES ('2026-12-02 04:00:00.000000', 'smtp', 'old@example.org',"
        " 'support@example.com', 'abc', '<old@x>', ?, ?)",
        (len(raw), raw),
    )
    con.commit()
    con.close()
    spool = SpoolQueue(path, db)
    try:
        smtp_send(spool, [make_mail("New mail", sender="new@example.org")])
        pipeline = Pipeline(config, db, queue=spool)
        while pipeline.process():
            pass
        assert spool.count() == 0
    finally:
        spool.dispose()
    assert count(db, Ticket) == 2
