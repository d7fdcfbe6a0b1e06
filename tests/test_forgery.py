"""Forgeries that must change nothing: planted DKIM text, From tricks, CC injection, commas."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import make_mail
from sqlalchemy import select

from maild.config import Config
from maild.security.proof import dkim_pass_domains
from maild.store.db import Database
from maild.store.models import Outbox, Ticket, TicketCc

Ingest = Callable[..., int]
TRUSTED = ["mx.example.com"]


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:  # noqa: ARG001 (set up before this fixture)
    return make_config(
        security={"trusted_authserv_ids": TRUSTED, "agent_proof": ["signed-id", "authres"]}
    )


@pytest.mark.parametrize(
    ("header", "domains"),
    [
        ("mx.example.com; dkim=pass header.d=example.com header.s=s1", {"example.com"}),
        (
            "mx.example.com; dkim=none; spf=softfail "
            "smtp.mailfrom=dkim=pass.header.i=x@example.com",
            set(),
        ),
        (
            'mx.example.com; spf=pass smtp.mailfrom="dkim=pass header.d=example.com"@x.test; '
            "dkim=pass header.d=x.test",
            {"x.test"},
        ),
        ("mx.example.com; dkim=pass (header.d=example.com; ok) header.d=x.test", {"x.test"}),
        ("mx.example.com; dkim=pass header.i=@example.com", set()),
        ("mx.example.com; dkim=fail header.d=example.com", set()),
        ("mx.evil.test; dkim=pass header.d=example.com", set()),
    ],
)
def test_authentication_results_is_parsed_not_searched(header: str, domains: set[str]) -> None:
    assert dkim_pass_domains([header], TRUSTED) == domains


def test_only_the_topmost_header_counts() -> None:
    headers = [
        "mx.evil.test; dkim=pass header.d=example.com",
        "mx.example.com; dkim=pass header.d=example.com",
    ]
    assert dkim_pass_domains(headers, TRUSTED) == set()


def _open(ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken", sender="victim@example.org"))


def _ticket(db: Database) -> Ticket:
    with db.session() as s:
        t = s.get(Ticket, 1)
        assert t is not None
        return t


@pytest.mark.parametrize(
    "from_header",
    [
        "anna@example.com <evil@x.test>",
        "<anna@example.com>, <evil@x.test>",
        '"anna@example.com" <evil@x.test>',
    ],
)
def test_dkim_proof_needs_one_plain_from(db: Database, ingest: Ingest, from_header: str) -> None:
    _open(ingest)
    raw = make_mail(
        "Re: [Support #1] Printer is broken",
        sender=from_header,
        body="#status solved\nDone.",
        extra="Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n",
    )
    ingest(raw)
    assert _ticket(db).status != "solved"


def test_two_from_headers_prove_nothing(db: Database, ingest: Ingest) -> None:
    _open(ingest)
    raw = make_mail(
        "Re: [Support #1] Printer is broken",
        sender="anna@example.com",
        body="#priority urgent\nOk.",
        extra="From: evil@x.test\r\nAuthentication-Results: mx.example.com; "
        "dkim=pass header.d=example.com\r\n",
    )
    ingest(raw)
    assert _ticket(db).priority == "normal"


def test_forged_requester_reply_cannot_add_a_reader(db: Database, ingest: Ingest) -> None:
    _open(ingest)
    ingest(
        make_mail(
            "Re: [Support #1] Printer is broken",
            sender="victim@example.org",
            body="Please copy my colleague.",
            extra="Cc: spy@evil.test\r\n",
        )
    )
    with db.session() as s:
        assert list(s.scalars(select(TicketCc.email))) == []


def test_reply_to_our_mail_may_add_a_cc(db: Database, ingest: Ingest) -> None:
    _open(ingest)
    with db.session() as s:
        ack = s.scalar(select(Outbox.message_id).where(Outbox.kind == "ack"))
    ingest(
        make_mail(
            "Re: [Support #1] Printer is broken",
            sender="victim@example.org",
            body="Copying my boss.",
            extra=f"In-Reply-To: {ack}\r\nCc: boss@example.org\r\n",
        )
    )
    with db.session() as s:
        assert list(s.scalars(select(TicketCc.email))) == ["boss@example.org"]


def test_comma_in_a_quoted_address_never_splits_recipients(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Hello", sender='"x,spy@evil.test,y"@example.org'))
    with db.session() as s:
        rows = list(s.scalars(select(Outbox.recipients)))
    assert rows  # one address was read (the sender wrote it), never three from one
    for row in rows:
        for rcpt in row.split(","):
            assert rcpt.count("@") == 1 and '"' not in rcpt, row


def test_stranger_automatic_mail_with_a_tag_stays_off_the_request(
    db: Database, ingest: Ingest
) -> None:
    _open(ingest)
    ingest(
        make_mail(
            "Re: [Support #1] Printer is broken",
            sender="stranger@evil.test",
            body="planted",
            extra="Auto-Submitted: auto-replied\r\n",
        )
    )
    with db.session() as s:
        from maild.store.models import Message

        on_ticket = list(s.scalars(select(Message.from_addr).where(Message.ticket_id == 1)))
    assert "stranger@evil.test" not in on_ticket
