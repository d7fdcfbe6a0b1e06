"""LMTP hand-off from an MTA: per-recipient replies, 250 only after commit, unix socket too."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import func, select

from maild.config import Config
from maild.store.db import Database
from maild.store.models import Inbound, Ticket


def stored(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count(Inbound.id))) or 0)


def test_lmtp_tcp_one_reply_per_recipient(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(lmtp={"listen": "127.0.0.1:0"}))
    assert d.daemon is not None
    with smtplib.LMTP("127.0.0.1", d.daemon.lmtp_port) as client:
        refused = client.sendmail(
            "customer@example.org",
            ["support@example.com", "help@example.com"],
            make_mail("Via Postfix"),
        )
        assert refused == {}
        # smtplib reads only the first reply; the second must be waiting for us too.
        code, text = client.getreply()
        assert code == 250 and b"queued as" in text
    wait_for(lambda: stored(db) == 1)  # the worker moves it from the spool (SQLite)
    with db.session() as s:
        row = s.scalar(select(Inbound))
        assert row is not None and row.source == "lmtp"
        assert row.recipients == "support@example.com,help@example.com"
    wait_for(lambda: _tickets(db) == 1)


def _tickets(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count(Ticket.id))) or 0)


def test_lmtp_unix_socket(
    make_config: Callable[..., Config],
    db: Database,
    running: Callable[..., RunningDaemon],
    tmp_path: Path,
) -> None:
    path = tmp_path / "lmtp.sock"
    running(make_config(lmtp={"listen": str(path)}))
    with smtplib.LMTP(str(path)) as client:
        assert (
            client.sendmail(
                "customer@example.org", ["support@example.com"], make_mail("Via socket")
            )
            == {}
        )
    wait_for(lambda: stored(db) == 1)  # the worker moves it from the spool (SQLite)
