"""The circuit breaker on every outgoing mail, and agents' autoresponders (issue 9, item 1)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clockkit import build_config, create_at, deliver_at, events, mail, outbox, text, ticket
from conftest import make_mail
from sqlalchemy import select

from maild.config import Config
from maild.core.clock import fixed_clock
from maild.ingest.accept import store_raw
from maild.pipeline import runner
from maild.pipeline.runner import Pipeline
from maild.scheduler.jobs import sweep_pending
from maild.store.db import Database
from maild.store.models import Message

T0 = datetime.fromisoformat("2026-11-30T08:00:00+00:00")  # a Monday, 11:00 in Moscow
ANNA = "anna@example.com"


def make(db_url: str, tmp_path: Path, **limits: int) -> Config:
    # The same text from several customers would make a problem (issue 12): not counted here.
    incident = {"threshold": 1000}
    if limits:
        return build_config(db_url, tmp_path, limits=limits, incident=incident)
    return build_config(db_url, tmp_path, incident=incident)


def notification(db: Database, agent: str = ANNA, n: int = 1) -> Any:
    rows = [r for r in outbox(db, "notify") if r.recipients == agent and r.ticket_id == n]
    return mail(rows[-1])


def reply(parent: Any, sender: str, body: str, subject: str = "", extra: str = "") -> bytes:
    mid = parent["Message-ID"]
    return make_mail(
        subject or f"Re: {parent['Subject']}",
        sender=sender,
        body=body,
        extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n{extra}",
    )


def customer_reply(db: Database, config: Config, at: datetime, body: str = "Still broken") -> None:
    deliver_at(db, config, make_mail("Re: [Support #1] Printer is broken", body=body), at)


def kinds(db: Database, n: int = 1) -> list[str]:
    return [e.kind for e in events(db, n)]


def test_mails_per_request_hour_trips_once_and_tells_the_lead_once(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    config = make(db_url, tmp_path, mails_per_request_hour=6)
    create_at(db, config, T0)  # ack + 2 notifications
    customer_reply(db, config, T0 + timedelta(minutes=1))  # 2 notifications: 5
    customer_reply(db, config, T0 + timedelta(minutes=2))  # 2 more would make 7
    customer_reply(db, config, T0 + timedelta(minutes=3))
    assert len(outbox(db)) == 5 + 1  # and the lead's one mail
    (held,) = events(db, 1, "mail-held")
    assert "more than 6 mails about request #1" in held.detail
    (lead,) = outbox(db, "breaker")
    assert lead.recipients == "lead@example.com"
    body = text(lead)
    assert "#1" in body and "more than 6 mails" in body
    assert mail(lead)["Subject"] == "Mail stopped: [Support #1] Printer is broken"
    assert mail(lead)["Auto-Submitted"] == "auto-generated"


def batch_at(db: Database, config: Config, raws: list[bytes], at: datetime) -> None:
    """Several mails through the real pipeline in one call and one transaction (the slice is
    made long enough), so mail queued for the first ones counts for the next ones before
    anything is committed."""
    stored = [store_raw(db, raw, source="test", envelope_from=None) for raw in raws]
    Pipeline(config, db, clock=fixed_clock(at)).process(ids=[s.ident for s in stored])


def test_a_batch_counts_the_mail_it_queued_itself(
    db: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limits hold for mails processed together exactly as for mails one by one."""
    monkeypatch.setattr(runner, "SLICE_SECONDS", 3600.0)
    config = make(db_url, tmp_path, mails_per_request_hour=6, auto_replies_per_hour=2)
    create_at(db, config, T0)  # ack + 2 notifications
    replies = [make_mail("Re: [Support #1] Printer is broken", body=f"Still {i}") for i in range(3)]
    batch_at(db, config, replies, T0 + timedelta(minutes=1))
    assert len(outbox(db)) == 5 + 1  # as one by one: the second reply trips it, the lead told
    assert "more than 6 mails about request #1" in events(db, 1, "mail-held")[0].detail
    news = [make_mail(f"Scanner {i} is broken", body=f"Scanner {i} jams.") for i in range(3)]
    batch_at(db, config, news, T0 + timedelta(minutes=2))  # requests #2, #3, #4
    acks = [r.ticket_id for r in outbox(db, "ack")]
    assert acks == [1, 2]  # two automatic mails an hour to the customer
    assert [n for n in (2, 3, 4) if "ack-suppressed" in kinds(db, n)] == [3, 4]


def test_an_hour_later_mail_flows_again(db: Database, db_url: str, tmp_path: Path) -> None:
    config = make(db_url, tmp_path, mails_per_request_hour=6)
    create_at(db, config, T0)
    for minute in (1, 2, 3):
        customer_reply(db, config, T0 + timedelta(minutes=minute))
    assert len(outbox(db, "notify")) == 4
    customer_reply(db, config, T0 + timedelta(minutes=61))
    assert len(outbox(db, "notify")) == 4  # the hold lasts an hour from the trip
    customer_reply(db, config, T0 + timedelta(minutes=64))
    assert len(outbox(db, "notify")) == 6


def test_notifications_count_per_agent_per_request(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """Six notifications to Anna about #1 trip it; a busy desk's other requests go on."""
    config = make(db_url, tmp_path, auto_replies_per_hour=3)
    create_at(db, config, T0)
    for minute in (1, 2, 3, 4):
        customer_reply(db, config, T0 + timedelta(minutes=minute))
    to_anna = [r for r in outbox(db, "notify") if r.recipients == ANNA]
    assert len(to_anna) == 3
    (held,) = events(db, 1, "mail-held")
    assert f"automatic mails to {ANNA}" in held.detail
    for i in range(5):  # other customers' requests: Anna hears of every one
        create_at(db, config, T0 + timedelta(minutes=5), sender=f"c{i}@example.org")
    assert len([r for r in outbox(db, "notify") if r.recipients == ANNA]) == 3 + 5


def test_an_agent_acting_releases_the_request(db: Database, db_url: str, tmp_path: Path) -> None:
    config = make(db_url, tmp_path, mails_per_request_hour=6)
    create_at(db, config, T0)
    note = notification(db)
    for minute in (1, 2):
        customer_reply(db, config, T0 + timedelta(minutes=minute))
    assert "mail-held" in kinds(db)
    # An answer on its way before the trip (an autoresponder's) releases nothing.
    trip = events(db, 1, "mail-held")[0].at
    deliver_at(db, config, reply(note, ANNA, "Try again."), trip + timedelta(seconds=20))
    assert outbox(db, "agent-reply") == [] and "mail-released" not in kinds(db)
    # A person acting later does: the answer goes out, and the count starts again.
    deliver_at(db, config, reply(note, ANNA, "Please try now."), T0 + timedelta(minutes=10))
    assert "mail-released" in kinds(db)
    (relay,) = outbox(db, "agent-reply")
    assert text(relay).strip().startswith("Please try now.")
    customer_reply(db, config, T0 + timedelta(minutes=11), "Works, thanks")
    assert len([r for r in outbox(db, "notify") if r.recipients == ANNA]) == 3


def test_sweep_mail_passes_the_breaker(db: Database, db_url: str, tmp_path: Path) -> None:
    """Reminders go through the same breaker: a held request gets none."""
    config = make(db_url, tmp_path, mails_per_request_hour=3)
    create_at(db, config, T0)
    customer_reply(db, config, T0 + timedelta(minutes=1))
    assert "mail-held" in kinds(db)
    with db.write() as s:
        t = s.get(type(ticket(db, 1)), 1)
        assert t is not None
        t.status, t.status_since = "pending", T0 - timedelta(days=4)
    before = len(outbox(db))
    assert sweep_pending(db, config, T0 + timedelta(minutes=5)) == 1
    assert len(outbox(db)) == before


@pytest.mark.parametrize(
    ("subject", "body", "extra"),
    [
        ("Thanks for your mail", "We will get back to you.", ""),
        ("", "I am out of the office until Monday.", ""),
        ("", "Здравствуйте!\n\nЯ в отпуске до 10 декабря.", ""),
        ("", "#status closed\nAway.", "Auto-Submitted: auto-replied\r\n"),
        ("Automatic reply: [Support #1] Printer is broken", "Away.", ""),
    ],
)
def test_agents_autoresponder_is_an_internal_note(
    db: Database, db_url: str, tmp_path: Path, subject: str, body: str, extra: str
) -> None:
    config = make(db_url, tmp_path)
    create_at(db, config, T0)
    before = len(outbox(db))
    deliver_at(db, config, reply(notification(db), ANNA, body, subject, extra), T0)
    t = ticket(db, 1)
    assert (t.status, t.first_response_at, t.assignee) == ("new", None, None)
    assert len(outbox(db)) == before  # not relayed, no command error, nothing
    with db.session() as s:
        stored = s.scalars(
            select(Message).where(Message.from_addr == ANNA, Message.direction == "in")
        ).one()
        assert (stored.kind, stored.ticket_id) == ("note", 1)
    assert "automatic-mail" in kinds(db)


def test_departments_autoresponder_is_an_internal_note(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    config = make(db_url, tmp_path)
    create_at(db, config, T0)
    deliver_at(db, config, reply(notification(db), ANNA, "#escalate billing"), T0)
    (esc,) = outbox(db, "escalation")
    before = len(outbox(db))
    answer = reply(mail(esc), "billing@example.com", "I am on vacation until Friday.")
    deliver_at(db, config, answer, T0 + timedelta(minutes=1))
    assert len(outbox(db)) == before  # the agents are not told of an out-of-office
    assert "department-reply" not in kinds(db) and "automatic-mail" in kinds(db)
