"""Agents by mail: proof, relayed replies, commands, notes, departments (issue 3)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from zoneinfo import ZoneInfo

import pytest
from conftest import fixture_bytes, make_mail
from sqlalchemy import select

from maild.config import Config
from maild.core.clock import fixed_clock
from maild.ingest.accept import store_raw
from maild.pipeline.runner import Pipeline
from maild.scheduler.jobs import sweep_hold
from maild.store.db import Database
from maild.store.models import Event, Message, Outbox, Ticket

Ingest = Callable[..., int]
DEPTS = [{"name": "billing", "email": "billing@example.com"}]
PROOFS = ["signed-id", "authres"]


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:  # noqa: ARG001 (set up before this fixture)
    return make_config(
        departments=DEPTS,
        security={"trusted_authserv_ids": ["mx.example.com"], "agent_proof": PROOFS},
    )


def mails(db: Database, kind: str | None = None) -> list[tuple[Outbox, EmailMessage]]:
    with db.session() as s:
        stmt = select(Outbox).order_by(Outbox.id)
        if kind:
            stmt = stmt.where(Outbox.kind == kind)
        rows = list(s.scalars(stmt))
    return [(r, message_from_bytes(r.raw, policy=default)) for r in rows]  # type: ignore[misc]


def text_of(msg: EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def said(msg: EmailMessage) -> str:
    """What the agent said: the customer mail's text above the desk's hint, link and quote."""
    text = text_of(msg)
    for hint in ("To add a comment, just reply", "Чтобы добавить комментарий, просто ответьте"):
        text = text.partition(hint)[0]
    return text.strip()


def notification(db: Database, agent: str, ticket: int = 1) -> EmailMessage:
    found = [m for r, m in mails(db, "notify") if r.recipients == agent and r.ticket_id == ticket]
    assert found, f"no notification to {agent}"
    return found[-1]


def reply_to(parent: EmailMessage, sender: str, body: str, extra: str = "") -> bytes:
    mid = parent["Message-ID"]
    return make_mail(
        f"Re: {parent['Subject']}",
        sender=sender,
        body=body,
        extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n{extra}",
    )


def ticket(db: Database, n: int = 1) -> Ticket:
    with db.session() as s:
        t = s.get(Ticket, n)
        assert t is not None
        return t


def events(db: Database, n: int = 1) -> list[str]:
    with db.session() as s:
        return [e.kind for e in s.scalars(select(Event).where(Event.ticket_id == n))]


@pytest.fixture
def opened(db: Database, ingest: Ingest) -> EmailMessage:
    """A customer request; returns the notification Anna got."""
    ingest(
        make_mail(
            "Printer is broken",
            message_id="<c1@client.example.org>",
            extra="Cc: boss@example.org\r\n",
        )
    )
    return notification(db, "anna@example.com")


def test_new_request_notifies_every_agent_with_signed_ids(
    db: Database, opened: EmailMessage
) -> None:
    boris = notification(db, "boris@example.com")
    assert opened["Message-ID"] != boris["Message-ID"]
    assert re.match(r"<n\.1\.[0-9a-f]{8}\.[0-9a-f]{24}@example\.com>", opened["Message-ID"])
    assert opened["Subject"] == "[Support #1] Printer is broken"
    body = text_of(opened)
    assert "customer@example.org" in body and "It prints nothing." in body
    assert "Priority:  normal" in body and "Status:    new" in body


def test_agent_reply_with_command_reaches_customer_without_it(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    body = (
        "#priority high\n\nPlease switch it off and on again.\n\n"
        "On Mon, 23 Nov 2026 at 10:00, Example Support <support@example.com> wrote:\n"
        "> It prints nothing.\n"
    )
    ingest(reply_to(opened, "anna@example.com", body))
    t = ticket(db)
    assert (t.priority, t.status, t.assignee) == ("high", "open", "anna@example.com")
    assert t.first_response_at is not None
    ((row, msg),) = mails(db, "agent-reply")
    assert row.recipients == "customer@example.org,boss@example.org"
    assert said(msg) == "Please switch it off and on again."
    assert msg["Subject"] == "[Support #1] Printer is broken"
    assert msg["In-Reply-To"] == "<c1@client.example.org>"
    assert (
        "Auto-Submitted" not in msg and msg["From"].addresses[0].addr_spec == "support@example.com"
    )
    assert "priority" in events(db)
    # The full original stays stored.
    with db.session() as s:
        stored = s.scalar(
            select(Message).where(
                Message.from_addr == "anna@example.com", Message.direction == "in"
            )
        )
        assert stored is not None and "#priority high" in stored.text and "> It" in stored.text


@pytest.mark.usefixtures("opened")
def test_forged_agent_reply_changes_nothing(
    db: Database, ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent's From without proof is a stranger to the request (issue 9, item 7)."""
    forged = make_mail(
        "Re: [Support #1] Printer is broken",
        sender="anna@example.com",
        body="#status closed\n#priority urgent\nYou are on your own.",
    )
    ingest(forged)
    t = ticket(db)
    # Not added to #1 as the customer's reply: #1 stays new, untouched.
    assert (t.status, t.priority, t.assignee) == ("new", "normal", None)
    assert mails(db, "agent-reply") == []
    with db.session() as s:
        found = [
            (m.kind, m.ticket_id)
            for m in s.scalars(
                select(Message).where(
                    Message.from_addr == "anna@example.com", Message.direction == "in"
                )
            )
        ]
    # A new request linked to #1, as for any stranger who copies a tag.
    assert found == [("customer", 2)]
    linked = ticket(db, 2)
    assert (linked.parent_id, linked.requester, linked.status) == (1, "anna@example.com", "new")
    assert "linked" in events(db, 1) and "customer-reply" not in events(db, 1)
    assert "ALERT" in caplog.text
    # Both agents hear about it, with a warning.
    assert "no proof" in text_of(notification(db, "boris@example.com", ticket=2))


def test_reply_with_someone_elses_notification_is_no_proof(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    ingest(reply_to(opened, "boris@example.com", "#status solved\nDone."))
    assert ticket(db).status != "solved"
    assert mails(db, "agent-reply") == []


@pytest.mark.usefixtures("opened")
@pytest.mark.parametrize(
    ("authres", "proven"),
    [
        ("mx.example.com; dkim=pass header.d=example.com header.s=s1; spf=pass", True),
        ("mx.evil.example; dkim=pass header.d=example.com", False),
        ("mx.example.com; dkim=fail header.d=example.com", False),
        ("mx.example.com; dkim=pass header.d=evil.example", False),
    ],
)
def test_dkim_pass_from_a_trusted_server_proves_an_agent(
    db: Database, ingest: Ingest, authres: str, proven: bool
) -> None:
    raw = make_mail(
        "Re: [Support #1] Printer is broken",
        sender="anna@example.com",
        body="#priority urgent\nOn it.",
        extra=f"Authentication-Results: {authres}\r\n",
    )
    ingest(raw)
    assert (ticket(db).priority == "urgent") is proven
    assert bool(mails(db, "agent-reply")) is proven


@pytest.mark.parametrize(
    "fixture",
    [
        "reply_outlook_en.eml",
        "reply_outlook_ru.eml",
        "reply_gmail_en.eml",
        "reply_thunderbird_ru.eml",
        "reply_apple_mail.eml",
        "reply_mobile_iphone.eml",
    ],
)
def test_agent_replies_from_every_client_are_stripped(
    db: Database, ingest: Ingest, opened: EmailMessage, fixture: str
) -> None:
    raw = fixture_bytes(fixture).replace(b"customer@example.org", b"anna@example.com")
    mid = opened["Message-ID"].encode()
    raw = re.sub(rb"(?m)^(In-Reply-To|References):.*$", rb"\1: " + mid, raw)
    original = message_from_bytes(raw, policy=default)
    ingest(raw)
    ((_, msg),) = mails(db, "agent-reply")
    sent = said(msg)
    full = text_of(original)  # type: ignore[arg-type]
    assert sent.strip() and len(sent) < len(full)
    assert not any(line.startswith(">") for line in sent.splitlines())
    for marker in ("wrote:", "пишет:", "From:", "От:", "Sent from my iPhone"):
        assert marker not in sent


def test_note_never_reaches_the_customer(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    ingest(reply_to(opened, "anna@example.com", "#note\nCustomer is on the old firmware."))
    assert mails(db, "agent-reply") == []
    with db.session() as s:
        note = s.scalar(select(Message).where(Message.kind == "note"))
        assert note is not None and "old firmware" in note.text
    assert "note" in events(db)
    assert ticket(db).first_response_at is None


def test_unknown_command_executes_nothing_and_answers_the_agent(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    ingest(reply_to(opened, "anna@example.com", "#priority high\n#frobnicate now\nHello"))
    assert ticket(db).priority == "normal"
    assert mails(db, "agent-reply") == []
    ((row, msg),) = mails(db, "command-error")
    assert row.recipients == "anna@example.com"
    body = text_of(msg)
    assert "#frobnicate" in body and "#status new|open|pending|hold|solved|closed" in body
    # The error mail has a signed id: replying to it with a fix works.
    ingest(reply_to(msg, "anna@example.com", "#priority high\nHello"))
    assert ticket(db).priority == "high"


def test_assign_cc_type_category_and_solved(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    body = (
        "#assign boris@example.com\n#type incident\n#category printers\n"
        "#cc add it@example.org\n#status solved\n\nFixed: new toner."
    )
    ingest(reply_to(opened, "anna@example.com", body))
    t = ticket(db)
    assert (t.assignee, t.type, t.category, t.status) == (
        "boris@example.com",
        "incident",
        "printers",
        "solved",
    )
    assert t.survey_due_at is not None
    ((row, msg),) = mails(db, "agent-reply")
    assert "it@example.org" in row.recipients
    text = text_of(msg)
    assert text.startswith("Fixed: new toner.") and "is solved" in text
    # A customer reply re-opens and cancels the survey; the assignee alone is notified.
    before = len(mails(db, "notify"))
    ingest(make_mail("Re: [Support #1] Printer is broken", body="It broke again."))
    t = ticket(db)
    assert t.status == "open" and t.survey_due_at is None
    new = mails(db, "notify")[before:]
    assert [r.recipients for r, _ in new] == ["boris@example.com"]
    assert "reopened" in events(db)


def test_reply_to_closed_request_starts_a_follow_up(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    ingest(reply_to(opened, "anna@example.com", "#status closed\nClosing."))
    ingest(make_mail("Re: [Support #1] Printer is broken", body="Me again."))
    follow = ticket(db, 2)
    assert follow.parent_id == 1 and follow.requester == "customer@example.org"
    ack = next(m for r, m in mails(db, "ack") if r.ticket_id == 2)
    assert "#1" in text_of(ack)


def test_agents_own_reply_is_not_echoed_back(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    before = len(mails(db, "notify"))
    ingest(reply_to(opened, "anna@example.com", "Looking into it."))
    assert len(mails(db, "notify")) == before


@pytest.fixture
def at(db: Database, config: Config) -> Iterator[Callable[[str, bytes], None]]:
    def ingest_at(when: str, raw: bytes) -> None:
        moment = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo("Europe/Moscow"))
        stored = store_raw(db, raw, source="test")
        Pipeline(config, db, clock=fixed_clock(moment)).process(ids=[stored.ident])

    yield ingest_at


@pytest.mark.parametrize(
    ("when", "expect"),
    [
        ("2026-11-24T11:00", "by the end of the day or tomorrow"),  # Tuesday morning
        ("2026-11-24T18:30", "As it is evening already, we will come back with an answer tomorrow"),
        ("2026-11-27T17:30", "first working day, Monday 30 November"),  # Friday evening
        ("2026-11-28T12:00", "first working day, Monday 30 November"),  # Saturday
    ],
)
def test_escalate_promises_by_the_hour(
    db: Database, at: Callable[[str, bytes], None], when: str, expect: str
) -> None:
    at(when, make_mail("Invoice is wrong", message_id="<inv@client.example.org>"))
    anna = notification(db, "anna@example.com")
    at(
        when,
        reply_to(
            anna, "anna@example.com", "#escalate billing please check invoice 42\nWe asked billing."
        ),
    )
    t = ticket(db)
    assert (t.status, t.hold_department) == ("hold", "billing")
    ((row, dept_mail),) = mails(db, "escalation")
    assert row.recipients == "billing@example.com"
    assert "please check invoice 42" in text_of(dept_mail)
    assert "It prints nothing." in text_of(dept_mail)
    ((_, interim),) = mails(db, "hold-interim")
    text = " ".join(text_of(interim).split())
    assert text.startswith("We asked billing.") and expect in text, text
    # The department answers the escalation mail: an internal note, the assignee is told.
    at(when, reply_to(dept_mail, "billing@example.com", "Invoice 42 is corrected."))
    with db.session() as s:
        kinds = [
            m.kind
            for m in s.scalars(select(Message).where(Message.from_addr == "billing@example.com"))
        ]
    assert kinds == ["department"]
    notes = [r.recipients for r, m in mails(db, "notify") if "billing" in text_of(m)]
    assert notes == ["anna@example.com"]
    assert len(mails(db, "agent-reply")) == 0


def test_escalate_to_unknown_department_is_an_error(
    db: Database, ingest: Ingest, opened: EmailMessage
) -> None:
    ingest(reply_to(opened, "anna@example.com", "#escalate legal\nHi"))
    assert ticket(db).status == "new"
    ((_, msg),) = mails(db, "command-error")
    assert "unknown department" in text_of(msg)


def test_russian_escalation_promise(db: Database, config: Config) -> None:
    moment = datetime(2026, 11, 27, 18, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    pipe = Pipeline(config, db, clock=fixed_clock(moment))
    pipe.process(
        ids=[store_raw(db, make_mail("Не приходит счёт", body="Где счёт?"), source="t").ident]
    )
    anna = notification(db, "anna@example.com")
    pipe.process(
        ids=[
            store_raw(db, reply_to(anna, "anna@example.com", "#escalate billing"), source="t").ident
        ]
    )
    ((_, interim),) = mails(db, "hold-interim")
    assert "первый рабочий день — понедельник, 30 ноября" in text_of(interim)


def test_end_to_end_over_smtp(
    make_config: Callable[..., Config],
    db: Database,
    smtp_sink: tuple[object, object],
    running: Callable[..., object],
) -> None:
    """Customer -> notification -> the agent answers from her mail client -> customer."""
    from conftest import wait_for

    sink, controller = smtp_sink
    cfg = make_config(outbound={"url": f"smtp://127.0.0.1:{controller.port}"})  # type: ignore[attr-defined]
    d = running(cfg)
    d.send(make_mail("Printer is broken", message_id="<e2e@client.example.org>"))  # type: ignore[attr-defined]

    def delivered(rcpt: str) -> list[EmailMessage]:
        return [
            message_from_bytes(raw, policy=default)  # type: ignore[misc]
            for _, rcpts, raw in sink.messages
            if rcpt in rcpts
        ]  # type: ignore[attr-defined]

    (note,) = wait_for(lambda: delivered("anna@example.com"))
    d.send(
        reply_to(note, "anna@example.com", "#priority high\nTry the other tray.\n\n> quoted"),  # type: ignore[attr-defined]
        sender="anna@example.com",
    )
    answer = wait_for(
        lambda: [m for m in delivered("customer@example.org") if "Auto-Submitted" not in m]
    )
    text = text_of(answer[0])
    assert said(answer[0]) == "Try the other tray." and "#priority" not in text
    assert ticket(db).priority == "high"


def test_task_deadline_by_command(db: Database, ingest: Ingest, opened: EmailMessage) -> None:
    ingest(reply_to(opened, "anna@example.com", "#type task\n#due 2026-12-01\n#note\nplanned"))
    t = ticket(db)
    assert t.type == "task"
    due = t.due_at.replace(tzinfo=ZoneInfo("UTC")) if t.due_at.tzinfo is None else t.due_at  # type: ignore[union-attr]
    assert due.astimezone(ZoneInfo("Europe/Moscow")).isoformat() == "2026-12-01T18:00:00+03:00"
    ingest(reply_to(opened, "anna@example.com", "#due 2026-12-02T10:30\n#note\nmoved"))
    t = ticket(db)
    due = t.due_at.replace(tzinfo=ZoneInfo("UTC")) if t.due_at.tzinfo is None else t.due_at  # type: ignore[union-attr]
    assert due.astimezone(ZoneInfo("Europe/Moscow")).hour == 10
    ingest(reply_to(opened, "anna@example.com", "#due tomorrow\n#note\nx"))
    assert mails(db, "command-error")


def test_departments_answer_ends_the_hold_reminders_until_a_new_escalation(
    db: Database, config: Config
) -> None:
    def at(moment: datetime, raw: bytes) -> None:  # UTC, as the daemon's clock is
        stored = store_raw(db, raw, source="test")
        Pipeline(config, db, clock=fixed_clock(moment)).process(ids=[stored.ident])

    day, mon = timedelta(days=1), datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 11:00 in Moscow
    at(mon, make_mail("Invoice is wrong", message_id="<inv@client.example.org>"))
    anna = notification(db, "anna@example.com")
    at(mon, reply_to(anna, "anna@example.com", "#escalate billing\nWe asked billing."))
    ((_, dept_mail),) = mails(db, "escalation")
    assert sweep_hold(db, config, mon + day) == 1  # not answered yet: reminded
    at(mon + 1.2 * day, reply_to(dept_mail, "billing@example.com", "Invoice 42 is corrected."))
    for n in range(2, 10):  # it answered: nobody is told "still waiting" any more
        assert sweep_hold(db, config, mon + n * day) == 0
    assert len(mails(db, "hold_department_reminder")) == len(mails(db, "hold_customer")) == 1
    # Anna asks billing again (answering the note it sent her): reminders start afresh.
    note = notification(db, "anna@example.com")
    at(mon + 9.5 * day, reply_to(note, "anna@example.com", "#escalate billing\nStill wrong."))
    assert ticket(db).status == "hold"
    assert sweep_hold(db, config, mon + 10.5 * day) == 1
    assert len(mails(db, "hold_department_reminder")) == 2
