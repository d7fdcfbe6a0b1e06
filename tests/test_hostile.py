"""Hostile input through the real pipeline: forged internal headers, header injection, loops."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes
from email.policy import compat32

import pytest
from conftest import fixture_bytes, make_mail
from sqlalchemy import select

from maild.ingest.headers import decode_value
from maild.store.db import Database
from maild.store.models import Attachment, Inbound, Message, Outbox, Ticket

Ingest = Callable[..., int]

# What a line of an outgoing header block may be: a header field or a folded continuation.
_FIELD = re.compile(rb"^[!-9;-~]+:")


def outbox(db: Database) -> list[Outbox]:
    with db.session() as s:
        return list(s.scalars(select(Outbox).order_by(Outbox.id)))


def header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    assert end > 0, "an outgoing mail without a header/body separator"
    return raw[:end]


def header_names(raw: bytes) -> list[str]:
    lines = header_block(raw).split(b"\r\n")
    names = []
    for line in lines:
        assert b"\r" not in line and b"\n" not in line
        if line[:1] in (b" ", b"\t"):
            continue  # folding
        assert _FIELD.match(line), f"not a header line: {line!r}"
        names.append(line.split(b":", 1)[0].decode().lower())
    return names


def assert_no_injection(raw: bytes, *forbidden: str) -> None:
    """One Subject, From, To and Message-ID; no Bcc; the forbidden text in no other header.

    The customer's own subject text ("hi Bcc: evil@example.net") may come back inside the
    one Subject value, as plain words: that is no header of its own and reaches no one.
    """
    names = header_names(raw)
    for single in ("subject", "from", "to", "message-id"):
        assert names.count(single) == 1, f"{single} appears {names.count(single)} times"
    assert "bcc" not in names
    msg = message_from_bytes(raw, policy=compat32)
    assert msg.get_all("Bcc") is None
    for name, value in msg.items():
        text = str(value)
        assert "\r" not in text.replace("\r\n ", "").replace("\r\n\t", ""), name
        if name.lower() == "subject":
            continue
        decoded = decode_value(value).lower()
        for bad in forbidden:
            assert bad.lower() not in text.lower() and bad.lower() not in decoded, (name, text)


def test_hostile_headers_fixture(db: Database, ingest: Ingest) -> None:
    iid = ingest(fixture_bytes("hostile_headers.eml"))
    with db.session() as s:
        assert s.get(Inbound, iid).state == "done"  # type: ignore[union-attr]
        (ticket,) = s.scalars(select(Ticket))
        # X-Maild-Ticket: 5 and X-Maild-Agent: yes are ignored; the body's "#status solved"
        # from a customer is no agent command.
        assert ticket.id == 1
        assert ticket.status == "new"
        assert ticket.requester == "customer@example.org"
        assert "\r" not in ticket.subject and "\n" not in ticket.subject
    rows = outbox(db)
    acks = [r for r in rows if r.kind == "ack"]
    assert len(acks) == 1 and acks[0].ticket_id == 1
    for row in rows:
        assert_no_injection(row.raw, "evil@example.net")
        assert "evil@example.net" not in row.recipients
        assert "\r" not in row.recipients and "\n" not in row.recipients
    subject = message_from_bytes(acks[0].raw, policy=compat32)["Subject"]
    assert "[Support #1]" in str(subject)


SUBJECTS = [
    "=?utf-8?q?hi=0D=0ABcc:_evil@example.net?=",
    "=?utf-8?q?hi=0ABcc:_evil@example.net?=",
    "=?utf-8?q?hi=0DBcc:_evil@example.net?=",
    "=?utf-8?B?aGkNCkJjYzogZXZpbEBleGFtcGxlLm5ldA0KDQpib2R5?=",  # hi\r\nBcc: ...\r\n\r\nbody
    "=?utf-8?q?hi=0D=0A=20Bcc:_evil@example.net?=",
    "=?koi8-r?q?=F0=D2=C9=D7=C5=D4=0D=0ABcc:_evil@example.net?=",
]

NAMES = [
    "=?utf-8?q?Carol=0D=0ABcc:_evil@example.net?=",
    "=?utf-8?B?Q2Fyb2wNCkJjYzogZXZpbEBleGFtcGxlLm5ldA==?=",
    '"Carol\\\r\n Bcc: evil@example.net"',
    "=?utf-8?q?Carol=00=0ABcc:_evil@example.net?=",
]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_encoded_crlf_in_subject_never_injects(db: Database, ingest: Ingest, subject: str) -> None:
    ingest(make_mail(subject))
    rows = outbox(db)
    assert [r.kind for r in rows if r.kind == "ack"] == ["ack"]
    for row in rows:
        assert_no_injection(row.raw, "evil@example.net")


@pytest.mark.parametrize("name", NAMES)
def test_encoded_crlf_in_from_name_never_injects(db: Database, ingest: Ingest, name: str) -> None:
    ingest(make_mail("Printer is broken", sender=f"{name} <customer@example.org>"))
    rows = outbox(db)
    assert rows, "the customer's request was not acknowledged"
    for row in rows:
        assert_no_injection(row.raw, "evil@example.net")
    with db.session() as s:
        (msg,) = s.scalars(select(Message).where(Message.direction == "in"))
        assert msg.from_addr == "customer@example.org"
        assert "\r" not in msg.from_name and "\n" not in msg.from_name


def test_crlf_in_reply_references_never_injects(db: Database, ingest: Ingest) -> None:
    extra = "In-Reply-To: =?utf-8?q?<x@y>=0D=0ABcc:_evil@example.net?=\r\n"
    ingest(make_mail("Printer is broken", extra=extra, message_id="<ok-1@client.example.org>"))
    for row in outbox(db):
        assert_no_injection(row.raw, "evil@example.net")


def test_own_x_loop_is_stored_but_never_answered(db: Database, ingest: Ingest) -> None:
    iid = ingest(fixture_bytes("own_loop.eml"))
    assert [r for r in outbox(db) if r.kind == "ack"] == []
    with db.session() as s:
        assert s.get(Inbound, iid).state == "done"  # type: ignore[union-attr]
        msg = s.scalar(select(Message).where(Message.inbound_id == iid))
        assert msg is not None and msg.direction == "in"


def test_x_loop_on_plain_mail_gets_no_ack(db: Database, ingest: Ingest) -> None:
    iid = ingest(make_mail("Looks new", extra="X-Loop: support@example.com\r\n"))
    assert [r for r in outbox(db) if r.kind == "ack"] == []
    with db.session() as s:
        assert s.scalar(select(Message).where(Message.inbound_id == iid)) is not None


def test_forged_x_maild_headers_are_not_trusted(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("First request"))
    forged = "X-Maild-Ticket: 1\r\nX-Maild-Agent: yes\r\nX-Maild-Direction: out\r\n"
    ingest(make_mail("Unrelated question", sender="other@example.net", extra=forged))
    with db.session() as s:
        ts = list(s.scalars(select(Ticket).order_by(Ticket.id)))
        assert [(t.id, t.requester) for t in ts] == [
            (1, "customer@example.org"),
            (2, "other@example.net"),
        ]
        msgs = list(s.scalars(select(Message).where(Message.ticket_id == 1)))
        assert all(m.from_addr != "other@example.net" for m in msgs)


def test_attachment_name_never_becomes_a_path(db: Database, ingest: Ingest) -> None:
    ingest(fixture_bytes("with_attachment_pdf.eml"))
    raw = (
        b"From: Carol <customer@example.org>\r\nTo: support@example.com\r\nSubject: files\r\n"
        b"Message-ID: <paths-1@client.example.org>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b'--b\r\nContent-Type: application/octet-stream; name="..\\\\..\\\\boot.ini"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment;"
        b" filename*=utf-8''%2Fetc%2F%D1%84%D0%B0%D0%B9%D0%BB.pdf\r\n"
        b"\r\nJVBERg==\r\n--b--\r\n"
    )
    ingest(raw, envelope_from="customer@example.org")
    with db.session() as s:
        names = sorted(s.scalars(select(Attachment.filename)))
    assert names == ["boot.ini", "passwd.pdf", "файл.pdf"]
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".")


def test_sixty_received_headers_get_no_ack(db: Database, ingest: Ingest) -> None:
    hops = "".join(
        f"Received: from relay{i}.example.net by relay{i + 1}.example.net; "
        f"Mon, 23 Nov 2026 10:00:{i % 60:02d} +0000\r\n"
        for i in range(60)
    )
    iid = ingest(hops.encode() + make_mail("Looping around"))
    assert [r for r in outbox(db) if r.kind == "ack"] == []
    with db.session() as s:
        assert s.get(Inbound, iid).state == "done"  # type: ignore[union-attr]
        assert s.scalar(select(Message).where(Message.inbound_id == iid)) is not None


def test_fifty_received_headers_still_answered(db: Database, ingest: Ingest) -> None:
    hops = "".join(
        f"Received: from r{i}.example.net; Mon, 23 Nov 2026 10:00:00 +0000\r\n" for i in range(50)
    )
    ingest(hops.encode() + make_mail("Long route but fine"))
    assert [r.kind for r in outbox(db) if r.kind == "ack"] == ["ack"]
