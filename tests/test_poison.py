"""Poison mail from outside: a nested-HTML mail holds nothing up, a message over its processing
budget is quarantined and its worker replaced, and SIGTERM and a restart still work at once."""

from __future__ import annotations

import argparse
import os
import signal
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import func, select
from test_durability import start, write_config

from maild.cli import cmd_quarantine
from maild.config import Config
from maild.pipeline.worker import ProcessWorker
from maild.store.db import Database
from maild.store.models import Inbound, Ticket

HEAD = "From: eve@example.org\r\nTo: support@example.com\r\nMIME-Version: 1.0\r\n"


def nested_html_mail(depth: int) -> bytes:
    """``<div>`` nested ``depth`` deep (137,000: 1.5 MB): nh3.clean took minutes on it."""
    lines = depth // 100  # SMTP lines of 100 tags (at most 998 characters a line)
    opened, closed = ("<div>" * 100 + "\r\n") * lines, ("</div>" * 100 + "\r\n") * lines
    html = "<html><body><p>Hello</p>\r\n" + opened + "deep" + closed
    return (
        HEAD + "Subject: Nested\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
    ).encode()


def big_html_mail() -> bytes:
    """10 MB of line breaks: about 2.5 s of CPU (linear, 0.27 s a MB), over a 1 s budget."""
    html = ("<br>" * 100 + "\r\n") * 25_000
    return (HEAD + "Subject: Big\r\nContent-Type: text/html\r\n\r\n" + html).encode()


def tickets(db: Database, *subjects: str) -> int:
    with db.session() as s:
        stmt = select(func.count()).select_from(Ticket)
        return int(s.scalar(stmt.where(Ticket.subject.in_(subjects)) if subjects else stmt) or 0)


def send(port: int, raw: bytes, sender: str = "eve@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail(sender, ["support@example.com"], raw)


def five_ordinary(port: int) -> list[str]:
    subjects = [f"Ordinary {i}" for i in range(5)]
    for i, subject in enumerate(subjects):
        send(port, make_mail(subject, sender=f"o{i}@example.org"), f"o{i}@example.org")
    return subjects


@pytest.mark.timeout(300)
def test_ordinary_mail_after_a_nested_html_mail(tmp_path: Path, db_url: str) -> None:
    """Issue 9's goal: five ordinary mails sent right after a 1.5 MB nested-HTML mail all
    become requests within 60 s; SIGTERM stops the daemon within 30 s; after a restart mail
    flows at once. (Before: the nested mail pinned a worker for minutes.)"""
    config, port = write_config(tmp_path, db_url)
    proc = start(config, port)
    db = Database(db_url)
    try:
        send(port, make_mail("Warm-up", sender="w@example.org"), "w@example.org")
        wait_for(lambda: tickets(db, "Warm-up") == 1, timeout=60)  # the workers are up
        raw = nested_html_mail(137_000)
        assert len(raw) > 1_500_000
        send(port, raw)
        sent = time.monotonic()
        subjects = five_ordinary(port)
        wait_for(lambda: tickets(db, *subjects) == 5, timeout=60)
        five = time.monotonic() - sent
        wait_for(lambda: tickets(db, "Nested") == 1, timeout=60)
        with db.session() as s:
            row = s.scalars(select(Inbound).where(Inbound.size == len(raw))).one()
            assert row.processed_at is not None and row.state == "done"
            nested = (row.processed_at - row.received_at).total_seconds()
        asked = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        stopped = time.monotonic() - asked
        proc = start(config, port)
        again = time.monotonic()
        send(port, make_mail("After the restart", sender="r@example.org"), "r@example.org")
        wait_for(lambda: tickets(db, "After the restart") == 1, timeout=10)
        restart = time.monotonic() - again
        print(
            f"\nnested mail processed in {nested:.2f} s; five ordinary mails requests in "
            f"{five:.2f} s; SIGTERM exit in {stopped:.2f} s; after the restart {restart:.2f} s"
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        db.dispose()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [1, 0])
def test_a_message_over_its_budget_goes_to_quarantine(
    make_config: Callable[..., Config],
    db: Database,
    running: Callable[..., RunningDaemon],
    workers: int,
) -> None:
    """The supervisor, outside the worker, sees a message take more than ``[limits]
    message_seconds`` of CPU: the worker is replaced (a thread, with ``workers = 0``, cannot
    be interrupted: a new one takes over, the old one's result is dropped), the message is
    quarantined with the reason, and mail flows on."""
    # Five alike mails from five customers would open a problem (a sixth request): not here.
    config = make_config(
        limits={"message_seconds": 1},
        pipeline={"workers": workers},
        incident={"threshold": 1000},
    )
    d = running(config)
    assert d.daemon is not None
    first = d.daemon.workers[0]
    big = big_html_mail()
    d.send(big, sender="eve@example.org")
    subjects = five_ordinary(d.port)

    def quarantined() -> Inbound | None:
        with db.session() as s:
            return s.scalars(select(Inbound).where(Inbound.state == "quarantined")).first()

    row = wait_for(quarantined, timeout=60)
    assert row.error == "processing took longer than 1 s" and row.raw == big
    wait_for(lambda: tickets(db, *subjects) == 5, timeout=60)
    assert d.daemon.workers[0] is not first  # replaced
    if isinstance(first, ProcessWorker):
        assert not first.proc.is_alive()
    else:  # the old thread stops once it is through with the message
        wait_for(lambda: not first.thread.is_alive(), timeout=60)
    assert tickets(db, "Big") == 0  # not processed: its result, if any, was dropped
    with db.session() as s:
        assert s.scalar(select(Inbound.state).where(Inbound.id == row.id)) == "quarantined"
    if not workers:
        return
    # The operator decides: with the daemon stopped (a running one would take it again, with
    # its budget), retry runs it in the command, without a budget, and it becomes a request.
    d.stop()
    args = argparse.Namespace(action="retry", id=row.id, json=False)
    assert cmd_quarantine(config, args) == 0
    assert tickets(db, "Big") == 1


def test_worker_deaths_are_counted_in_the_database(config: Config, db: Database) -> None:
    """On both backends (the spool on SQLite, ``inbound`` on PostgreSQL): each counted death
    adds to the queue row's attempts, which a new daemon reads as the old one left it; the
    quarantined row keeps them, and ``maild quarantine retry`` starts the count again."""
    from maild.daemon import POISON_DEATHS, Daemon
    from maild.ingest.accept import open_queue, store_raw

    queue = open_queue(db)
    try:
        qid = store_raw(queue, make_mail("Deadly"), source="deliver").ident
        assert queue.attempt(qid) == 1
    finally:
        queue.dispose()
    daemon = Daemon(config)  # another daemon, as after a restart: nothing in its memory
    try:
        for _ in range(POISON_DEATHS - 1):
            daemon._count_death(qid)
        assert daemon.queue.attempt(qid) == 0  # no longer waiting
    finally:
        daemon.queue.dispose()
        daemon.db.dispose()
    with db.session() as s:
        row = s.scalar(select(Inbound))
        assert row is not None and (row.state, row.attempts) == ("quarantined", POISON_DEATHS)
        iid = row.id
    assert cmd_quarantine(config, argparse.Namespace(action="retry", id=iid, json=False)) == 0
    with db.session() as s:
        row = s.get(Inbound, iid)
        assert row is not None and (row.state, row.attempts) == ("done", 1)


@pytest.mark.timeout(120)
def test_stop_does_not_wait_for_a_message_over_its_budget(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    """At a stop, a worker over its budget is not waited for: killed, its message quarantined,
    so the next start does not take it again (the supervisor is out of the way here)."""
    config = make_config(limits={"message_seconds": 1}, pipeline={"workers": 1})
    d = running(config)
    assert d.daemon is not None and d.daemon._supervisor is not None
    d.loop.call_soon_threadsafe(d.daemon._supervisor.cancel)
    wait_for(d.daemon._supervisor.done)
    worker = d.daemon.workers[0]
    assert isinstance(worker, ProcessWorker)
    d.send(big_html_mail(), sender="eve@example.org")
    wait_for(lambda: worker.holding().kind, timeout=60)
    asked = time.monotonic()
    d.stop()
    assert time.monotonic() - asked < 20
    with db.session() as s:
        row = s.scalars(select(Inbound)).one()
    assert (row.state, row.error) == ("quarantined", "processing took longer than 1 s")
