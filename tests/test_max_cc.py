"""1,000 addresses in Cc must not make the desk a mailer for strangers (issue 9, item 4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest
from conftest import make_mail
from sqlalchemy import select

from maild.config import Config
from maild.core.errors import ConfigError
from maild.store.db import Database
from maild.store.models import Event, Outbox, TicketCc

Ingest = Callable[..., int]
MANY = [f"stranger{i:04d}@victims.test" for i in range(1000)]


def _cc_header(addresses: list[str]) -> str:
    return "Cc: " + ",\r\n ".join(addresses) + "\r\n"


def _ccs(db: Database, ticket: int = 1) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(TicketCc.email).where(TicketCc.ticket_id == ticket)))


def _mails(db: Database, kind: str) -> list[tuple[Outbox, EmailMessage]]:
    with db.session() as s:
        rows = list(s.scalars(select(Outbox).where(Outbox.kind == kind).order_by(Outbox.id)))
    return [(r, message_from_bytes(r.raw, policy=default)) for r in rows]  # type: ignore[misc]


def _text(msg: EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _event(db: Database, kind: str) -> dict[str, object]:
    with db.session() as s:
        row = s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)).first()
        assert row is not None, kind
        return dict(json.loads(row.detail))


def test_thousand_ccs_are_capped_and_named(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken", extra=_cc_header(MANY)))
    ccs = _ccs(db)
    assert len(ccs) == 10 and set(ccs) == set(MANY[:10])
    created = _event(db, "created")
    assert created["cc"] == MANY[:10] and created["cc_left_out_count"] == 990
    notes = _mails(db, "notify")
    assert len(notes) == 2  # Anna and Boris
    for _, msg in notes:
        text = _text(msg)
        assert "Cc addresses not added (990; at most 10 per request)" in text
        assert MANY[10] in text and MANY[29] in text and MANY[30] not in text
        assert "and 970 more" in text
    # An agent's reply goes to the requester and those ten, no more.
    _, note = notes[0]
    mid = note["Message-ID"]
    ingest(
        make_mail(
            f"Re: {note['Subject']}",
            sender="anna@example.com",
            body="We are on it.",
            extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n",
        )
    )
    ((relay, msg),) = _mails(db, "agent-reply")
    recipients = relay.recipients.split(",")
    assert sorted(recipients) == sorted(["customer@example.org", *MANY[:10]])
    assert len(str(msg["Cc"]).split(",")) == 10


def test_a_later_reply_fills_up_to_the_limit(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken", extra=_cc_header(MANY[:8])))
    ((_, ack),) = _mails(db, "ack")
    assert not any("not added" in _text(m) for _, m in _mails(db, "notify"))
    mid = ack["Message-ID"]
    ingest(
        make_mail(
            f"Re: {ack['Subject']}",
            body="adding my colleagues",
            extra=f"In-Reply-To: {mid}\r\n" + _cc_header(MANY[5:14]),
        )
    )
    assert set(_ccs(db)) == set(MANY[:10])
    reply = _event(db, "customer-reply")
    assert reply["cc"] == MANY[8:10] and reply["cc_left_out"] == MANY[10:14]
    last = _mails(db, "notify")[-1][1]
    assert f"(4; at most 10 per request): {', '.join(MANY[10:14])}." in _text(last)


@pytest.mark.parametrize("value", [0, -1, "ten"])
def test_max_cc_is_validated(make_config: Callable[..., Config], value: object) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(limits={"max_cc": value})
    assert "limits.max_cc" in str(err.value)


def test_max_cc_default(make_config: Callable[..., Config]) -> None:
    assert make_config().limits.max_cc == 10
    assert make_config(limits={"max_cc": 3}).limits.max_cc == 3
