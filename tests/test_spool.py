"""The SMTP spool (SQLite): accepted mail gets its own file, then moves into ``inbound`` once."""

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
from maild.ingest.smtp import Handler, start_server
from maild.ingest.spool import Spool, import_spool, spool_path
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Inbound, Ticket

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
def spool(config: Config) -> Iterator[Spool]:
    path = spool_path(config.storage_url)
    assert path is not None
    sp = Spool(path)
    yield sp
    sp.dispose()


def smtp_send(db: Database, spool: Spool, messages: list[bytes]) -> list[str]:
    """Send over real SMTP to an aiosmtpd server whose acceptor commits to the spool."""

    async def scenario() -> list[str]:
        acceptor = Acceptor(db, spool=spool)
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
    config: Config, db: Database, spool: Spool
) -> None:
    raw = make_mail("Счёт не пришёл", sender="c1@example.org")
    replies = smtp_send(db, spool, [raw])
    assert replies[0].startswith("250 2.0.0 OK: queued as S"), replies
    # Durable in the spool file (a fresh connection sees it), not yet in inbound.
    con = sqlite3.connect(str(spool.path))
    assert con.execute("SELECT raw FROM spool").fetchall() == [(raw,)]
    con.close()
    assert count(db, Inbound) == 0

    assert Pipeline(config, db, spool=spool).process() == 1
    assert spool.count() == 0
    assert count(db, Inbound, Inbound.state == "done") == 1
    assert count(db, Ticket) == 1
    with db.session() as s:
        assert s.scalar(select(Inbound.raw)) == raw


@sqlite_only
def test_same_message_twice_is_one_request_whether_spooled_or_imported(
    config: Config, db: Database, spool: Spool
) -> None:
    raw = make_mail("Printer on fire", sender="c2@example.org")
    first, second = smtp_send(db, spool, [raw, raw])
    assert first.startswith("250") and "(duplicate)" not in first
    assert second.startswith("250") and second.endswith("(duplicate)"), second
    assert spool.count() == 1

    Pipeline(config, db, spool=spool).process()
    (again,) = smtp_send(db, spool, [raw])  # an MTA retry after we processed it
    assert again.endswith("(duplicate)") and "queued as S" not in again, again
    assert spool.count() == 0
    assert count(db, Inbound) == 1
    assert count(db, Ticket) == 1


@sqlite_only
@pytest.mark.parametrize("mover", ["pipeline", "import on stop"])
def test_crash_before_the_spool_delete_processes_nothing_twice(
    config: Config, db: Database, spool: Spool, mover: str
) -> None:
    messages = [make_mail(f"Question {i}", sender=f"q{i}@example.org") for i in range(3)]
    smtp_send(db, spool, messages)
    pipeline = Pipeline(config, db, spool=spool)
    # Keep a copy of the spool as it was; after the move, put it back: exactly the state a
    # kill -9 after the inbound commit and before the spool delete leaves on disk.
    snapshot = sqlite3.connect(":memory:")
    live = sqlite3.connect(str(spool.path))
    live.backup(snapshot)
    if mover == "pipeline":
        assert pipeline.process() == 3
    else:
        assert import_spool(db, spool, limit=10, max_bytes=1 << 20) == 3
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
def test_spooled_and_inbound_mail_share_a_batch(config: Config, db: Database, spool: Spool) -> None:
    from maild.ingest.accept import store_raw

    smtp_send(db, spool, [make_mail("By SMTP", sender="s@example.org")])
    store_raw(db, make_mail("By the pipe", sender="p@example.org"), source="pipe")
    assert Pipeline(config, db, spool=spool).process() == 2
    assert spool.count() == 0
    assert count(db, Inbound, Inbound.state == "done") == 2
    assert count(db, Ticket) == 2


@sqlite_only
def test_bad_spooled_mail_is_quarantined_with_its_raw_bytes(
    config: Config, db: Database, spool: Spool
) -> None:
    bad = b"Subject: huge header\r\n" + (b"X-Junk: " + b"x" * 70 + b"\r\n") * 3000 + b"\r\nbody\r\n"
    good = make_mail("Fine", sender="f@example.org")
    assert [r[:3] for r in smtp_send(db, spool, [bad, good])] == ["250", "250"]
    assert Pipeline(config, db, spool=spool).process() == 2
    with db.session() as s:
        rows = {r.state: r for r in s.scalars(select(Inbound))}
    assert set(rows) == {"done", "quarantined"}
    assert rows["quarantined"].raw == bad and rows["quarantined"].error
    assert count(db, Ticket) == 1


@sqlite_only
def test_import_respects_the_batch_limits(config: Config, db: Database, spool: Spool) -> None:
    smtp_send(db, spool, [make_mail(f"M {i}", sender=f"m{i}@example.org") for i in range(5)])
    assert import_spool(db, spool, limit=2, max_bytes=1 << 20) == 2
    assert import_spool(db, spool, limit=10, max_bytes=1) == 1  # at least one, however big
    assert spool.count() == 2
    with db.session() as s:
        subjects = [r.decode() for r in s.scalars(select(Inbound.raw).order_by(Inbound.id))]
    assert [next(x for x in r.splitlines() if x.startswith("Subject:")) for r in subjects] == [
        "Subject: M 0",
        "Subject: M 1",
        "Subject: M 2",
    ]


@sqlite_only
def test_a_broken_spool_answers_451_not_250(config: Config, db: Database, spool: Spool) -> None:
    spool.dispose()
    for extra in spool.path.parent.glob(spool.path.name + "-*"):
        extra.unlink()
    spool.path.write_bytes(b"this is not a database file" * 200)
    (reply,) = smtp_send(db, spool, [make_mail("Hello", sender="x@example.org")])
    assert reply.startswith("451 4.3.0"), reply


def test_thread_key_puts_a_reply_with_the_mail_it_answers() -> None:
    from maild.ingest.accept import thread_key

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
def test_health_counts_spooled_mail_as_pending(config: Config, db: Database, spool: Spool) -> None:
    from maild.web.app import _counts

    smtp_send(db, spool, [make_mail(f"H {i}", sender=f"h{i}@example.org") for i in range(3)])
    assert _counts(db, [spool])["inbound_pending"] == 3
    Pipeline(config, db, spool=spool).process()
    assert _counts(db, [spool])["inbound_pending"] == 0


@sqlite_only
def test_the_spool_takes_mail_while_the_main_database_is_broken(
    config: Config, db: Database, spool: Spool, tmp_path: Path
) -> None:
    broken_path = tmp_path / "broken.db"
    broken_path.write_bytes(b"this is not a database file" * 200)
    broken = Database(f"sqlite:///{broken_path}")
    raw = make_mail("Accepted anyway", sender="b@example.org")
    (reply,) = smtp_send(broken, spool, [raw])
    broken.dispose()
    assert reply.startswith("250 2.0.0 OK: queued as S"), reply
    assert spool.count() == 1
    Pipeline(config, db, spool=spool).process()  # once the database is back
    assert count(db, Ticket) == 1


@sqlite_only
def test_a_follow_up_never_overtakes_its_original_waiting_in_inbound(
    config: Config, db: Database, spool: Spool
) -> None:
    """A backlog moved into inbound (a stop), then the customer's follow-up over SMTP: the
    batch that takes the follow-up must not run before the original, deep in the backlog."""
    backlog = [make_mail(f"Backlog {i}", sender=f"b{i}@example.org") for i in range(99)]
    original = make_mail("Cannot log in", sender="c@example.org", message_id="<orig@c.example>")
    smtp_send(db, spool, [*backlog, original])
    while import_spool(db, spool, limit=256, max_bytes=1 << 25):
        pass
    follow_up = make_mail(
        "Re: Cannot log in",
        sender="c@example.org",
        extra="In-Reply-To: <orig@c.example>\r\nReferences: <orig@c.example>\r\n",
    )
    smtp_send(db, spool, [follow_up])
    pipeline = Pipeline(config, db, spool=spool)  # batches of 64: the original is in the 2nd
    while pipeline.process():
        pass
    with db.session() as s:
        mine = s.scalars(select(Ticket.id).where(Ticket.requester == "c@example.org")).all()
    assert len(mine) == 1
    assert count(db, Inbound, Inbound.state == "done") == 101


def _keys(db: Database, spool: Spool) -> list[int]:
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
    config: Config, db: Database, spool: Spool, how: str
) -> None:
    """The first mail itself answers something older (References: <old>), the follow-up
    names only that first mail: both must still go to the same worker."""
    from maild.ingest.accept import Incoming, store_raw, thread_key

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
        spool.put(db, [Incoming(first, "smtp"), Incoming(follow, "smtp")])
    elif how == "two commits":
        spool.put(db, [Incoming(first, "smtp")])
        spool.put(db, [Incoming(follow, "smtp")])
    elif how == "pipe then SMTP":
        store_raw(db, first, source="pipe")
        spool.put(db, [Incoming(follow, "smtp")])
    else:  # the original still waits in the spool when the follow-up comes through the pipe
        spool.put(db, [Incoming(first, "smtp")])
        store_raw(db, follow, source="pipe")
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
    spool = Spool(path)
    try:
        smtp_send(db, spool, [make_mail("New mail", sender="new@example.org")])
        pipeline = Pipeline(config, db, spool=spool)
        while pipeline.process():
            pass
        assert spool.count() == 0
    finally:
        spool.dispose()
    assert count(db, Ticket) == 2
