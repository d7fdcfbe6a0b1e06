"""The pipeline on real databases: new requests, threading, membership, loops and noise."""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes
from email.policy import default

import pytest
from conftest import fixture_bytes, make_mail
from sqlalchemy import func, select

from maild.config import Config
from maild.ingest.accept import store_raw
from maild.pipeline.records import guess_language
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Inbound, Message, Outbox, Ticket
from maild.tickets.incidents import band_keys, words

Ingest = Callable[..., int]


def tickets(db: Database) -> list[Ticket]:
    with db.session() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def acks(db: Database) -> list[Outbox]:
    with db.session() as s:
        return list(s.scalars(select(Outbox).where(Outbox.kind == "ack").order_by(Outbox.id)))


def ack_of(db: Database, ticket_id: int):  # type: ignore[no-untyped-def]
    rows = [a for a in acks(db) if a.ticket_id == ticket_id]
    assert len(rows) == 1
    return message_from_bytes(rows[0].raw, policy=default)


def test_new_request_is_numbered_and_acknowledged(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken", message_id="<a1@client.example.org>"))
    ingest(make_mail("Second one", sender="other@example.net"))
    ts = tickets(db)
    assert [(t.id, t.status, t.requester) for t in ts] == [
        (1, "new", "customer@example.org"),
        (2, "new", "other@example.net"),
    ]
    ack = ack_of(db, 1)
    assert ack["Subject"] == "[Support #1] Printer is broken"
    assert ack["To"] == "customer@example.org"
    assert ack["In-Reply-To"] == "<a1@client.example.org>"
    assert "<a1@client.example.org>" in ack["References"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Loop"] == "support@example.com"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["Message-ID"].endswith("@example.com>")
    body = ack.get_body(("plain",)).get_content()
    assert "#1" in body and "We will answer" in body
    assert ack.get_body(("html",)) is not None


@pytest.mark.parametrize(
    "name", ["new_plain_ru_utf8.eml", "new_koi8r_subject.eml", "new_cp1251_subject.eml"]
)
def test_cyrillic_request_gets_russian_ack(db: Database, ingest: Ingest, name: str) -> None:
    ingest(fixture_bytes(name))
    (t,) = tickets(db)
    assert t.language == "ru"
    assert any("А" <= c <= "я" for c in t.subject), t.subject
    ack = ack_of(db, t.id)
    assert ack["Subject"] == f"[Support #{t.id}] {t.subject}"
    body = ack.get_body(("plain",)).get_content()
    assert "Мы ответим" in body and f"#{t.id}" in body


@pytest.mark.parametrize(
    "subject",
    [
        "Re: [Support #1] Printer is broken",
        "RE: AW: Fwd: [support #1] Printer is broken",
        "Ответ: НА: Пересл: [SUPPORT #1] Printer",
        "=?koi8-r?B?8M/X1M/SOiBbU3VwcG9ydCAjMV0g0NLJztTF0g==?=",
        "=?windows-1251?Q?=CE=F2=E2=E5=F2:_[Support_#1]_=EF=F0=E8=ED=F2=E5=F0?=",
        "=?utf-8?B?0J7RgtCyOiBbU3VwcG9ydCAjMV0g0L/RgNC40L3RgtC10YA=?=",
    ],
)
def test_reply_joins_by_tag(db: Database, ingest: Ingest, subject: str) -> None:
    ingest(make_mail("Printer is broken"))
    ingest(make_mail(subject, body="More details."))
    (t,) = tickets(db)
    assert t.status == "open"
    with db.session() as s:
        texts = [
            m.text
            for m in s.scalars(
                select(Message).where(Message.ticket_id == 1, Message.direction == "in")
            )
        ]
    assert texts == ["It prints nothing.", "More details."]
    assert len(acks(db)) == 1  # a reply is not acknowledged again


def test_reply_joins_by_references_without_tag(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken"))
    ack_id = ack_of(db, 1)["Message-ID"]
    ingest(make_mail("no tag here", extra=f"In-Reply-To: {ack_id}\r\nReferences: {ack_id}\r\n"))
    assert len(tickets(db)) == 1


def test_tag_of_missing_request_starts_new_one(db: Database, ingest: Ingest) -> None:
    ingest(
        make_mail("Re: [Support #77] where is it?", extra="In-Reply-To: <nowhere@x.example>\r\n")
    )
    (t,) = tickets(db)
    assert t.id == 1 and t.parent_id is None


def test_stranger_with_tag_gets_new_linked_request(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken"))
    ack_id = ack_of(db, 1)["Message-ID"]
    ingest(
        make_mail(
            "Re: [Support #1] Printer is broken",
            sender="mallory@evil.example",
            body="I am taking over",
            extra=f"In-Reply-To: {ack_id}\r\n",
        )
    )
    first, second = tickets(db)
    assert second.requester == "mallory@evil.example" and second.parent_id == 1
    assert first.status == "new"
    with db.session() as s:
        on_first = s.scalar(
            select(func.count(Message.id)).where(
                Message.ticket_id == 1, Message.from_addr == "mallory@evil.example"
            )
        )
    assert on_first == 0
    # Mallory's acknowledgement is truthful: #1 is neither closed nor Mallory's (issue 9).
    text = ack_of(db, 2).get_body(("plain",)).get_content()
    assert "already closed" not in text and "#1" not in text


def test_cc_becomes_member_and_can_reply(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer", extra="Cc: Boss <boss@example.org>, support@example.com\r\n"))
    (t,) = tickets(db)
    with db.session() as s:
        t = s.get(Ticket, 1)  # type: ignore[assignment]
        assert [c.email for c in t.ccs] == ["boss@example.org"]
    ingest(make_mail("Re: [Support #1] Printer", sender="boss@example.org"))
    assert len(tickets(db)) == 1


@pytest.mark.parametrize(
    "name",
    [
        "autoreply_rfc3834.eml",
        "autoreply_apple_no_header.eml",
        "autoreply_exchange.eml",
        "autoreply_ru.eml",
        "bounce_dsn_postfix.eml",
        "bounce_exim_x_failed.eml",
        "bounce_qmail.eml",
        "list_mail.eml",
        "mdn_read_receipt.eml",
        "arf_complaint.eml",
        "own_loop.eml",
    ],
)
def test_automatic_mail_is_stored_never_answered(db: Database, ingest: Ingest, name: str) -> None:
    iid = ingest(fixture_bytes(name))
    assert acks(db) == []
    with db.session() as s:
        assert s.get(Inbound, iid).state == "done"  # type: ignore[union-attr]
        msg = s.scalar(select(Message).where(Message.inbound_id == iid))
    assert msg is not None and msg.kind in ("auto-reply", "bounce", "list", "loop")


def test_auto_reply_threads_onto_its_request(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken"))
    ack_id = ack_of(db, 1)["Message-ID"]
    ingest(
        make_mail(
            "Automatic reply: [Support #1] Printer is broken",
            extra=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {ack_id}\r\n",
        )
    )
    (t,) = tickets(db)
    assert t.status == "new"
    with db.session() as s:
        kinds = [m.kind for m in s.scalars(select(Message).where(Message.ticket_id == 1))]
    assert "auto-reply" in kinds and len(acks(db)) == 1


def test_null_envelope_sender_is_a_bounce(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Hello"), envelope_from="")
    assert tickets(db) == [] and acks(db) == []


def test_at_most_five_acks_per_address_per_hour(db: Database, ingest: Ingest) -> None:
    for i in range(7):
        ingest(make_mail(f"Question {i}"))
    assert len(tickets(db)) == 7
    assert len(acks(db)) == 5


def test_duplicate_delivery_creates_nothing(db: Database, ingest: Ingest) -> None:
    raw = make_mail("Once only", message_id="<dup@client.example.org>")
    first = ingest(raw)
    again = ingest(b"Received: from relay by mx; Mon, 23 Nov 2026 10:00:01 +0000\r\n" + raw)
    assert first == again
    assert len(tickets(db)) == 1 and len(acks(db)) == 1


def test_bad_message_goes_to_quarantine_and_queue_goes_on(db: Database, ingest: Ingest) -> None:
    bad = ingest(
        fixture_bytes("many_parts.eml").replace(b"support@", b"support@"),
    )
    good = ingest(make_mail("after the bad one"))
    with db.session() as s:
        bad_row, good_row = s.get(Inbound, bad), s.get(Inbound, good)
        assert bad_row is not None and good_row is not None
        if bad_row.state == "quarantined":
            assert bad_row.error
        assert good_row.state == "done"


def test_what_is_prepared_before_the_transaction_is_what_is_stored(
    db: Database, config: Config
) -> None:
    # The verdict, the language, the words, their MinHash keys and the index row of a new
    # request are worked out with the parse, outside the write transaction; the request gets
    # exactly those.
    store_raw(
        db,
        make_mail("Не работает загрузка", body="Не могу загрузить отчёт в систему."),
        source="smtp",
    )
    pipeline = Pipeline(config, db)
    (entry,), _ = pipeline.queue.take(10)
    parsed = pipeline.parse(entry).parsed
    assert parsed is not None
    subject = "Не работает загрузка"
    assert set(parsed.memo) >= {
        ("words", subject),
        ("band keys", subject),
        ("language", config.desk.language),
        ("verdict", entry.row["envelope_from"]),
    }
    assert parsed.memo[("band keys", subject)] == band_keys(words(subject, parsed.text))
    assert (("index", "customer") in parsed.memo) == db.is_sqlite
    assert pipeline.process() == 1
    (ticket,) = tickets(db)
    assert ticket.language == guess_language(f"{subject}\n{parsed.text}", config.desk.language)
    assert ticket.fingerprint == " ".join(sorted(words(subject, parsed.text)))
    if db.is_sqlite:
        with db.session() as s:
            row = (
                s.connection()
                .exec_driver_sql(
                    "SELECT rowid FROM message_fts WHERE body MATCH ?",
                    (parsed.memo[("index", "customer")].split()[0],),
                )
                .scalar()
            )
        assert row is not None
