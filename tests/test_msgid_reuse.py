"""A reused Message-ID must not pull a customer's follow-up off their request (issue 9, item 3)."""

from __future__ import annotations

import json
from collections.abc import Callable

from conftest import make_mail
from sqlalchemy import select

from maild.store.db import Database
from maild.store.models import Event, Message, Outbox, Ticket

Ingest = Callable[..., int]
VICTIM = "victim <victor@cust.test>"
STRANGER = "stranger@evil.test"


def _message(db: Database, inbound_id: int) -> Message:
    with db.session() as s:
        return s.scalars(select(Message).where(Message.inbound_id == inbound_id)).one()


def _events(db: Database, ticket_id: int, kind: str) -> list[dict[str, object]]:
    with db.session() as s:
        rows = s.scalars(select(Event).where(Event.ticket_id == ticket_id, Event.kind == kind))
        return [json.loads(e.detail) for e in rows]


def _ack_id(db: Database, ticket_id: int) -> str:
    with db.session() as s:
        return s.scalars(
            select(Outbox.message_id).where(Outbox.ticket_id == ticket_id, Outbox.kind == "ack")
        ).one()


def _follow_up(ingest: Ingest, refs: str) -> Message:
    """The victim's untagged follow-up that names only ``refs``."""
    return ingest(
        make_mail(
            "one more thing",
            sender=VICTIM,
            body="my PIN is 9999",
            extra=f"References: {refs}\r\n",
        )
    )


def test_reused_message_id_does_not_pull_the_follow_up_away(db: Database, ingest: Ingest) -> None:
    first = ingest(make_mail("Card blocked", sender=VICTIM, message_id="<victor-1@cust.test>"))
    hijack = ingest(make_mail("Hello", sender=STRANGER, message_id="<victor-1@cust.test>"))
    victim_ticket, stranger_ticket = _message(db, first).ticket_id, _message(db, hijack).ticket_id
    assert victim_ticket == 1 and stranger_ticket == 2
    # The stranger's mail is stored and has its request, but its Message-ID is not indexed.
    assert _message(db, hijack).message_id is None
    (event,) = _events(db, 2, "message-id-not-indexed")
    assert event["message_id"] == "<victor-1@cust.test>" and event["held_by"] == 1
    assert "another sender" in str(event["reason"])
    follow = _message(db, _follow_up(ingest, "<victor-1@cust.test>"))
    assert follow.ticket_id == 1
    with db.session() as s:
        assert s.scalar(select(Ticket.id).order_by(Ticket.id.desc()).limit(1)) == 2


def test_reused_acknowledgement_id_does_not_pull_the_follow_up_away(
    db: Database, ingest: Ingest
) -> None:
    ingest(make_mail("Card blocked", sender=VICTIM, message_id="<victor-1@cust.test>"))
    ack = _ack_id(db, 1)
    hijack = ingest(make_mail("Hello", sender=STRANGER, message_id=ack))
    assert _message(db, hijack).ticket_id == 2
    assert _message(db, hijack).message_id is None
    (event,) = _events(db, 2, "message-id-not-indexed")
    assert event["reason"] == "a Message-ID of the desk's own domain"
    assert _message(db, _follow_up(ingest, ack)).ticket_id == 1


def test_own_domain_ids_are_never_claimed(db: Database, ingest: Ingest) -> None:
    """Even one the desk never sent: it may be minted later, and only the desk mints them."""
    iid = ingest(make_mail("Hi", sender=STRANGER, message_id="<ack.future@example.com>"))
    assert _message(db, iid).message_id is None
    assert _events(db, 1, "message-id-not-indexed")


def test_same_sender_may_reuse_own_id(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Card blocked", sender=VICTIM, message_id="<victor-1@cust.test>"))
    again = ingest(make_mail("Card blocked!", sender=VICTIM, message_id="<victor-1@cust.test>"))
    assert _message(db, again).message_id == "<victor-1@cust.test>"
    assert not _events(db, 2, "message-id-not-indexed")


def test_reference_to_a_strangers_mail_on_a_request_does_not_thread(
    db: Database, ingest: Ingest
) -> None:
    """A stranger's automatic mail may sit on a request (it answered our mail): its id is
    no way into that request for anyone else."""
    ingest(make_mail("Card blocked", sender=VICTIM, message_id="<victor-1@cust.test>"))
    ack = _ack_id(db, 1)
    bounce = make_mail(
        "Automatic reply: Card blocked",
        sender="robot@elsewhere.test",
        message_id="<robot-1@elsewhere.test>",
        extra=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {ack}\r\n",
    )
    assert _message(db, ingest(bounce)).ticket_id == 1
    other = make_mail(
        "Re: hello",
        sender=STRANGER,
        extra="In-Reply-To: <robot-1@elsewhere.test>\r\n",
    )
    msg = _message(db, ingest(other))
    assert msg.ticket_id == 2
    with db.session() as s:
        assert s.get(Ticket, 2).parent_id is None  # type: ignore[union-attr]


def test_cc_of_a_request_vouches_for_its_message_id(db: Database, ingest: Ingest) -> None:
    ingest(
        make_mail(
            "Card blocked",
            sender=VICTIM,
            message_id="<victor-1@cust.test>",
            extra="Cc: wife@cust.test\r\n",
        )
    )
    ack = _ack_id(db, 1)
    ingest(
        make_mail(
            "Re: [Support #1] Card blocked",
            sender="wife@cust.test",
            message_id="<wife-1@cust.test>",
            extra=f"In-Reply-To: {ack}\r\n",
        )
    )
    assert _message(db, _follow_up(ingest, "<wife-1@cust.test>")).ticket_id == 1


def test_a_reused_id_cannot_move_the_owners_replies_to_another_worker(db: Database) -> None:
    """Workers share mail by thread key; the owner's follow-up keeps the owner's key even when
    a stranger's copy of the id (with References of its own) came later."""
    from maild.ingest.accept import store_raw
    from maild.store.models import Inbound

    def key(raw: bytes) -> int:
        stored = store_raw(db, raw, source="test")
        with db.session() as s:
            row = s.get(Inbound, stored.ident)
            assert row is not None and row.thread_key is not None
            return row.thread_key

    owner = key(make_mail("Card", sender=VICTIM, message_id="<victor-1@cust.test>"))
    stranger = key(
        make_mail(
            "Hi",
            sender=STRANGER,
            message_id="<victor-1@cust.test>",
            extra="References: <elsewhere-1@evil.test>\r\n",
        )
    )
    assert stranger != owner
    follow = key(make_mail("more", sender=VICTIM, extra="References: <victor-1@cust.test>\r\n"))
    assert follow == owner


def test_an_agents_own_domain_id_is_not_indexed_quietly(db: Database, ingest: Ingest) -> None:
    """Agents' clients often mint ids in the desk's domain: not indexed, but no alarm."""
    ingest(make_mail("Card blocked", sender=VICTIM, message_id="<victor-1@cust.test>"))
    with db.session() as s:
        note = s.scalars(
            select(Outbox.message_id).where(
                Outbox.kind == "notify", Outbox.recipients == "anna@example.com"
            )
        ).one()
    reply = make_mail(
        "Re: [Support #1] Card blocked",
        sender="anna@example.com",
        body="Unblocked.",
        message_id="<tb-1@example.com>",
        extra=f"In-Reply-To: {note}\r\nReferences: {note}\r\n",
    )
    msg = _message(db, ingest(reply))
    assert msg.ticket_id == 1 and msg.kind == "agent" and msg.message_id is None
    assert not _events(db, 1, "message-id-not-indexed")
