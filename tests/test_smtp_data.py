"""DATA read in chunks (maild/ingest/smtp_data.py): the same bytes as a line-by-line reading."""

from __future__ import annotations

import asyncio
import random
import smtplib

import pytest
from conftest import free_port, make_mail
from sqlalchemy import select

from maild.ingest.accept import Acceptor
from maild.ingest.inbound import TableQueue
from maild.ingest.smtp import Handler, start_server
from maild.ingest.smtp_data import TOO_LONG, TOO_MUCH, read_data, unstuff
from maild.store.db import Database
from maild.store.models import Inbound


def by_lines(wire: bytes) -> bytes:
    """RFC 5321 4.5.2 the slow way: lines up to the lone ".", each losing a first dot."""
    out = []
    for line in wire.split(b"\r\n"):
        if line == b".":
            break
        out.append(line[1:] if line.startswith(b".") else line)
    return b"".join(x + b"\r\n" for x in out)


def read(wire: bytes, *, limit: int = 64, size: int | None = None, line: int = 1000) -> object:
    """Feed ``wire`` (and what a pipelining client sends after it) to a real StreamReader
    whose buffer limit is ``limit``, as aiosmtpd's is its line length limit."""

    async def go() -> tuple[object, bytes]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(wire + b"QUIT\r\n")
        reader.feed_eof()
        got = await read_data(reader, size, line)
        rest = await reader.read()
        assert rest == b"QUIT\r\n"  # the next command stays for the session
        return (got.error or unstuff(got.data)), rest

    return asyncio.run(go())[0]


@pytest.mark.parametrize(
    "wire",
    [
        b".\r\n",
        b"Subject: x\r\n\r\nbody\r\n.\r\n",
        b"Subject: x\r\n\r\nThe end.\r\nAnother line.\r\n.\r\n",
        b"Subject: x\r\n\r\n..leading dot\r\n...two\r\n.\r\n",
        b".Subject: first line stuffed\r\n.\r\n",
        b"Subject: x\r\n\r\n. \r\n.x\r\n.\r\n",
        b"Subject: x\r\n\r\n" + b"A" * 300 + b".\r\n" + b"B" * 500 + b"\r\n.\r\n",
        b"bare\nlf.\n.\nstill in the message\r\n.\r\n",
    ],
)
def test_the_same_bytes_as_line_by_line(wire: bytes) -> None:
    assert read(wire) == by_lines(wire)


def test_random_messages_match_line_by_line() -> None:
    rng = random.Random(11)
    pieces = [b"a", b".", b"..", b"\r\n", b"text.", b"\r\n.", b"x" * 90, b"\n", b"\r"]
    for _ in range(300):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 60)))
        lines = body.split(b"\r\n")  # stuffed as a client does: a line's first dot doubled
        wire = b"\r\n".join(b"." + x if x.startswith(b".") else x for x in lines) + b"\r\n.\r\n"
        assert read(wire, limit=rng.choice([16, 64, 4096])) == body + b"\r\n", wire


def test_over_the_size_limit_is_552_and_nothing_is_kept() -> None:
    wire = b"Subject: x\r\n\r\n" + b"line.\r\n" * 200 + b".\r\n"
    assert read(wire, size=100) == TOO_MUCH
    assert read(wire, size=len(wire)) == by_lines(wire)
    no_dots = b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\n"
    assert read(no_dots, size=100, limit=64) == TOO_MUCH


def test_a_line_over_the_limit_is_500() -> None:
    wire = b"Subject: x\r\n\r\n" + b"z" * 2000 + b"\r\n.\r\n"
    assert read(wire, line=1000, limit=1000) == TOO_LONG
    assert read(wire, line=2002, limit=2002) == by_lines(wire)


def test_over_real_smtp_one_message_after_another(db: Database) -> None:
    """smtplib against the real listener: the stored bytes are what was sent, message after
    message on one connection (the end of one DATA never eats the next command)."""
    mails = [
        make_mail("One", body="Thanks.\r\n.leading dot\r\n..two\r\nEnd."),
        make_mail("Two", body="x" * 5000 + ".\r\n" + "y" * 70),
        make_mail("Three"),
    ]

    async def scenario() -> None:
        acceptor = Acceptor(TableQueue(db))
        port = free_port()
        server = await start_server(
            Handler(acceptor, max_size=1 << 20), "127.0.0.1", port, hostname="desk.example.com"
        )

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                for raw in mails:
                    c.sendmail("a@example.org", ["support@example.com"], raw)

        try:
            await asyncio.to_thread(client)
        finally:
            server.close()
            await acceptor.close()

    asyncio.run(scenario())
    with db.session() as s:
        assert list(s.scalars(select(Inbound.raw).order_by(Inbound.id))) == mails
