"""`maild run` with an [[imap]] mailbox: mail appended at the provider becomes a request."""

from __future__ import annotations

from collections.abc import Callable

from conftest import RunningDaemon, make_mail, wait_for
from dovecot import Dovecot
from sqlalchemy import func, select

from maild.config import Config
from maild.store.db import Database
from maild.store.models import Inbound, Ticket


def test_daemon_reads_the_mailbox_and_acknowledges(
    dovecot: Dovecot,
    make_config: Callable[..., Config],
    db: Database,
    running: Callable[..., RunningDaemon],
) -> None:
    cfg = make_config(imap=[{
        "host": dovecot.host, "port": dovecot.port, "tls": "none", "username": dovecot.user,
        "password": dovecot.password, "processed_folder": "Processed", "idle": True,
        "poll_seconds": 2,
    }])  # fmt: skip
    running(cfg)
    dovecot.append(make_mail("Письмо через IMAP", message_id="<imap1@client.example.org>"))

    def ticket() -> Ticket | None:
        with db.session() as s:
            return s.scalar(select(Ticket))

    t = wait_for(ticket, timeout=30)
    assert t.subject == "Письмо через IMAP" and t.requester == "customer@example.org"
    with db.session() as s:
        assert s.scalar(select(func.count(Inbound.id)).where(Inbound.source == "imap")) == 1
    wait_for(lambda: dovecot.folder_uids("Processed") and not dovecot.folder_uids("INBOX"))
