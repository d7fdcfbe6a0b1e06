"""SMTP in, mail out: a real daemon, a real smtplib client, a real SMTP sink."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, free_port, make_mail, wait_for
from sqlalchemy import func, select

from maild.config import Config
from maild.ingest.accept import Acceptor, open_queue
from maild.ingest.inbound import TableQueue
from maild.ingest.smtp import Handler, start_server
from maild.store.db import Database
from maild.store.models import Inbound, Outbox, Ticket


def count(db: Database, model: type, *where: object) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_message_becomes_request_and_ack_reaches_the_relay(
    make_config: Callable[..., Config],
    db: Database,
    smtp_sink: tuple[Sink, object],
    running: Callable[..., RunningDaemon],
) -> None:
    sink, controller = smtp_sink
    cfg = make_config(outbound={"url": f"smtp://127.0.0.1:{controller.port}"})  # type: ignore[attr-defined]
    d = running(cfg)
    d.send(make_mail("Printer is broken", message_id="<p1@client.example.org>"))
    to_customer = lambda: [m for m in sink.messages if m[1] == ["customer@example.org"]]  # noqa: E731
    wait_for(to_customer)
    sender, _rcpts, raw = to_customer()[0]
    assert sender == "support@example.com"
    ack = message_from_bytes(raw, policy=default)
    assert ack["Subject"] == "[Support #1] Printer is broken"
    assert ack["In-Reply-To"] == "<p1@client.example.org>"
    # Both agents are notified of the new request.
    wait_for(lambda: count(db, Outbox, Outbox.state == "sent") == 3)
    assert sorted(m[1][0] for m in sink.messages) == [
        "anna@example.com",
        "boris@example.com",
        "customer@example.org",
    ]
    # The customer answers the acknowledgement: it lands on request 1, no second ack.
    d.send(
        make_mail(
            "Re: [Support #1] Printer is broken",
            body="Model X100",
            extra=f"In-Reply-To: {ack['Message-ID']}\r\n",
        )
    )
    wait_for(lambda: count(db, Ticket, Ticket.status == "open") == 1)
    assert count(db, Ticket) == 1
    wait_for(lambda: len(sink.messages) == 5)  # two more notifications, nothing to the customer
    assert len(to_customer()) == 1


@pytest.mark.usefixtures("config")
def test_maildir_outbox_by_default(running: Callable[..., RunningDaemon], tmp_path: Path) -> None:
    d = running()
    d.send(make_mail("Где мой заказ?", body="Заказ 123 не пришёл."))
    new = tmp_path / "outbox" / "new"
    wait_for(lambda: list(new.glob("*")) if new.exists() else [])
    wait_for(lambda: len(list(new.glob("*"))) == 3)  # the ack and two agent notifications
    mails = [message_from_bytes(f.read_bytes(), policy=default) for f in new.glob("*")]
    (msg,) = [m for m in mails if m["Delivered-To"] == "customer@example.org"]
    assert msg["Subject"] == "[Support #1] Где мой заказ?"
    assert "Мы ответим" in msg.get_body(("plain",)).get_content()


def test_oversize_is_refused_with_552_and_size_is_advertised(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(smtp={"max_message_size": 4096}))
    with smtplib.SMTP("127.0.0.1", d.port) as client:
        client.ehlo()
        assert client.has_extn("size") and client.esmtp_features["size"] == "4096"
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(
                "customer@example.org",
                ["support@example.com"],
                make_mail(body=("x" * 70 + "\r\n") * 150),
            )
        assert refused.value.smtp_code == 552
        # A client that does not declare SIZE is refused at the end of DATA.
        client.rset()
        assert client.mail("customer@example.org")[0] == 250
        assert client.rcpt("support@example.com")[0] == 250
        code, _ = client.data(make_mail(body=("x" * 70 + "\r\n") * 150))
        assert code == 552
    assert count(db, Inbound) == 0


@pytest.mark.usefixtures("config")
def test_same_message_twice_is_stored_once(
    db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running()
    raw = make_mail("Retry me", message_id="<retry@client.example.org>")
    d.send(raw)
    d.send(raw)
    wait_for(lambda: count(db, Inbound, Inbound.state == "done") == 1)
    assert count(db, Inbound) == 1 and count(db, Ticket) == 1


@pytest.mark.usefixtures("config")
def test_header_injection_in_envelope_is_refused(running: Callable[..., RunningDaemon]) -> None:
    d = running()
    with smtplib.SMTP("127.0.0.1", d.port) as client:
        client.ehlo()
        assert client.sock is not None
        client.sock.sendall(b"MAIL FROM:<a@b.org\rBcc: x@y.org>\r\n")  # a bare CR inside
        code, _ = client.getreply()
        assert code >= 500
        assert client.mail("customer@example.org")[0] == 250
        client.sock.sendall(b"RCPT TO:<support@example.com\rX: y>\r\n")
        code, _ = client.getreply()
        assert code >= 500


def test_database_down_answers_451_never_500() -> None:
    """With the database unreachable the sender must retry: 451 4.3.0, not a 5xx."""
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    port = free_port()

    async def scenario() -> str:
        acceptor = Acceptor(TableQueue(db))
        server = await start_server(
            Handler(acceptor, max_size=10_000_000), "127.0.0.1", port, hostname="test"
        )

        def client() -> str:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                try:
                    c.sendmail("customer@example.org", ["support@example.com"], make_mail())
                except smtplib.SMTPDataError as err:
                    return f"{err.smtp_code} {err.smtp_error.decode()}"
            return "250"

        try:
            return await asyncio.to_thread(client)
        finally:
            server.close()
            await acceptor.close()

    reply = asyncio.run(scenario())
    assert reply.startswith("451 4.3.0"), reply
    db.dispose()


def test_sigterm_style_stop_finishes_and_restart_processes_backlog(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    config = make_config(incident={"threshold": 1000})  # 20 customers, one text: no problem
    d = running(config)
    for i in range(20):
        d.send(make_mail(f"Question {i}", sender=f"c{i}@example.org"))
    d.stop()
    # Every message that got 250 is stored (processed, or waiting in the queue: the spool on
    # SQLite); whatever was not processed yet is done after restart.
    queue = open_queue(db)
    try:
        assert count(db, Inbound, Inbound.state != "pending") + queue.count() == 20
    finally:
        queue.dispose()
    running(config)
    wait_for(lambda: count(db, Inbound, Inbound.state == "done") == 20)
    assert count(db, Ticket) == 20
