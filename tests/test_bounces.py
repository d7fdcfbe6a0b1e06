"""Bounces and machine mail without machine headers (issue 9, item 5).

List-manager notices, abuse complaints with the message attached, carrier gateways writing
from post_master-like addresses and Outlook's TNEF read receipts draw no acknowledgement; a
bounce of the desk's own mail lands on its request and stops mail to the failed address
until that address writes again. Ordinary customer mail stays a customer's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MAIL, fixture_bytes, make_mail
from sqlalchemy import select
from test_agents import notification, reply_to
from test_deliver import deliver, write_config

from maild.config import Config
from maild.ingest.accept import store_raw
from maild.ingest.parse import parse_mail
from maild.ops.views import ticket_detail
from maild.pipeline import runner
from maild.pipeline.classify import machine_input
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Event, Message, Outbox, Ticket, Undeliverable
from maild.tickets.bounces import MachineInput, machine_verdict, robot_local
from maild.tickets.loops import LoopInput, classify

Ingest = Callable[..., int]
FAMILIES = [
    ("list_owner_loop_alert.eml", "list"),
    ("list_admin_not_member.eml", "list"),
    ("abuse_complaint_rfc822.eml", "bounce"),
    ("carrier_postmaster_re.eml", "bounce"),
]


def verdict_of(raw: bytes) -> tuple[str, str]:
    """The classify stage's verdict on raw mail: the loop rules, then the machine rules."""
    parsed = parse_mail(raw)
    inp = LoopInput(
        headers=parsed.headers,
        subject=parsed.subject,
        from_addr=parsed.from_addr,
        envelope_from="sender@example.net",
        content_type=parsed.content_type,
        report_type=parsed.report_type,
        desk_addresses=frozenset({"support@example.com"}),
        loop_name="support@example.com",
    )
    verdict = classify(inp)
    if not verdict.automatic:
        verdict = machine_verdict(machine_input(parsed)) or verdict
    return verdict.kind, verdict.reason


@pytest.mark.parametrize(("name", "kind"), FAMILIES)
def test_machine_families_are_automatic(name: str, kind: str) -> None:
    assert verdict_of(fixture_bytes(name))[0] == kind


@pytest.mark.parametrize(
    "name", sorted(p.name for p in MAIL.glob("*.eml") if p.name.startswith(("new_", "reply_")))
)
def test_ordinary_fixtures_stay_human(name: str) -> None:
    assert verdict_of(fixture_bytes(name)) == ("human", "")


MAILED = ("multipart/mixed", "text/plain", "message/rfc822")


@pytest.mark.parametrize(
    ("sender", "subject", "text", "parts", "kind"),
    [
        ("l-owner@lists.example", "Loop Alert", "", ("text/plain",), "list"),
        ("owner-l@lists.example", "Re: x", "You are not a member of l.", ("text/plain",), "list"),
        ("l-request@lists.example", "Welcome to the l mailing list", "", ("text/plain",), "list"),
        ("l-bounces@lists.example", "Bounce action notification", "", ("text/plain",), "list"),
        ("l-admin@lists.example", "x", "Your message to l@lists.example is being held", (), "list"),
        ("majordomo@lists.example", "Majordomo results", "", ("text/plain",), "list"),
        ("staff@isp.example", "complaint about message from [192.0.2.1]", "", MAILED, "bounce"),
        ("staff@isp.example", "Complaint about message from mx.example.com", "", MAILED, "bounce"),
        ("abuse@isp.example", "Spam report", "", MAILED, "bounce"),
        ("abuse@isp.example", "Spam report", "", ("text/plain",), None),
        ("staff@isp.example", "complaint about message from 192.0.2.1", "", ("text/plain",), None),
        ("gw@sms.example", "Re: hi", "", ("text/plain",), None),
        ("Post.Master@sms.example", "Re: hi", "", ("text/plain",), "bounce"),
    ],
)
def test_machine_rules(
    sender: str, subject: str, text: str, parts: tuple[str, ...], kind: str | None
) -> None:
    content_type = parts[0] if parts else "text/plain"
    verdict = machine_verdict(MachineInput(sender.lower(), subject, content_type, parts, text))
    assert (verdict.kind if verdict else None) == kind


PERSON_LOOKALIKES = [
    # A person at an admin or owner mailbox writes about lists, members, subscriptions.
    ("it-admin@corp.example", "Mailing list export", "How do I export my mailing list?"),
    ("shop-owner@corp.example", "Subscription renewal failed", "I am not a member any more?"),
    ("forum-admin@corp.example", "Moderation tools", "The moderator queue is empty."),
    ("sales-request@corp.example", "Re: quote", "Please unsubscribe Bob from the newsletter."),
    # "complaint about message from" a person, not a host.
    ("mary@corp.example", "Complaint about message from your agent", "He was rude."),
    ("postmistress@corp.example", "Hello", "Are you open on Sunday?"),
    ("mary@corp.example", "Read: the manual", "I did, and it does not help."),
]


@pytest.mark.parametrize(("sender", "subject", "body"), PERSON_LOOKALIKES)
def test_people_who_look_a_little_like_machines_stay_human(
    sender: str, subject: str, body: str
) -> None:
    assert verdict_of(make_mail(subject, sender=sender, body=body)) == ("human", "")


def test_customer_forwarding_our_mail_with_a_complaint_stays_human() -> None:
    raw = (
        b"From: mary@corp.example\r\nTo: support@example.com\r\n"
        b"Subject: Complaint about message from Anna\r\nMessage-ID: <fw1@corp.example>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attached mail. Rude!\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: anna@example.com\r\nSubject: x\r\nMessage-ID: <a1@example.com>\r\n\r\nhi\r\n"
        b"--b--\r\n"
    )
    assert verdict_of(raw) == ("human", "")


@pytest.mark.parametrize(
    ("address", "word"),
    [
        ("Post_Master@sms.carrier.example", "postmaster"),
        ("post.master@x.example", "postmaster"),
        ("sms-postmaster@x.example", "postmaster"),
        ("MAILER_DAEMON@x.example", "mailerdaemon"),
        ("mail-daemon2@x.example", "mailerdaemon"),
        ("postman@x.example", ""),
        ("master@x.example", ""),
        ("daemon.fan@x.example", ""),
    ],
)
def test_robot_local_parts(address: str, word: str) -> None:
    assert robot_local(address) == word


def test_detectors_run_only_on_mail_that_looks_like_a_bounce() -> None:
    assert parse_mail(fixture_bytes("new_plain_en.eml")).bounce is None
    report = parse_mail(fixture_bytes("bounce_qmail.eml")).bounce
    assert report is not None and report.permanent == ("nobody@example.net",)
    assert report.quoted_ids == ("<ack-1@support.example.com>",)
    # A bounce's words, but 300 KB: the detectors would read every line; not scanned.
    assert parse_mail(make_mail("Delivery failed", body="x\r\n" * 100_000)).bounce is None


def _outbox(db: Database, kind: str) -> list[Outbox]:
    with db.session() as s:
        return list(s.scalars(select(Outbox).where(Outbox.kind == kind).order_by(Outbox.id)))


@pytest.mark.parametrize(("name", "kind"), FAMILIES)
def test_machine_families_draw_no_acknowledgement(
    db: Database, ingest: Ingest, name: str, kind: str
) -> None:
    ingest(fixture_bytes(name), envelope_from="robot@lists.example.net")
    assert _outbox(db, "ack") == []
    assert _outbox(db, "notify") == []
    with db.session() as s:
        assert s.scalars(select(Ticket)).all() == []
        assert [m.kind for m in s.scalars(select(Message))] == [kind]


# --- a bounce of our own mail -------------------------------------------------------


def _open_request(db: Database, ingest: Ingest) -> str:
    """Request #1 from customer@example.org with a CC; returns the ack's Message-ID."""
    ingest(
        make_mail("Printer is broken", extra="Cc: colleague@example.org\r\n"),
        envelope_from="customer@example.org",
    )
    (ack,) = _outbox(db, "ack")
    return ack.message_id


def dsn(quoted_id: str, failed: str = "customer@example.org") -> bytes:
    """Postfix's bounce of our acknowledgement ``quoted_id`` to ``failed``."""
    raw = fixture_bytes("bounce_dsn_postfix.eml")
    return raw.replace(b"<ack-1@support.example.com>", quoted_id.encode()).replace(
        b"nobody@example.net", failed.encode()
    )


def _state(db: Database) -> tuple[list[str], list[str], dict[str, object]]:
    with db.session() as s:
        marked = sorted(s.scalars(select(Undeliverable.address)))
        kinds = [e.kind for e in s.scalars(select(Event).where(Event.ticket_id == 1))]
        t = s.get(Ticket, 1)
        assert t is not None
        detail = ticket_detail(s, t)
    return marked, kinds, detail


def test_bounce_of_our_ack_lands_on_the_request_and_marks_the_address(
    db: Database, ingest: Ingest
) -> None:
    ack_id = _open_request(db, ingest)
    ingest(dsn(ack_id), envelope_from="")
    marked, kinds, detail = _state(db)
    assert marked == ["customer@example.org"]
    assert "bounced" in kinds
    assert detail["undeliverable"] == ["customer@example.org"]
    bounce = [m for m in detail["messages"] if m["direction"] == "in"][-1]
    assert bounce["kind"] == "bounce" and bounce["from"] == "mailer-daemon@mx.example.com"
    event = next(e for e in detail["events"] if e["kind"] == "bounced")
    assert event["detail"]["undeliverable"] == ["customer@example.org"]
    with db.session() as s:
        assert s.scalar(select(Ticket.id).where(Ticket.id == 2)) is None
    assert len(_outbox(db, "ack")) == 1


def test_no_mail_to_an_undeliverable_address_until_it_writes_again(
    db: Database, ingest: Ingest
) -> None:
    ack_id = _open_request(db, ingest)
    anna = notification(db, "anna@example.com")
    ingest(dsn(ack_id), envelope_from="")
    ingest(reply_to(anna, "anna@example.com", "Please restart it."), envelope_from=None)
    (first,) = _outbox(db, "agent-reply")
    assert first.recipients == "colleague@example.org"  # the CC still gets it
    ingest(make_mail("Re: [Support #1] Printer is broken", body="Still broken."))
    marked, _, detail = _state(db)
    assert marked == [] and detail["undeliverable"] == []
    ingest(reply_to(anna, "anna@example.com", "Try again now."), envelope_from=None)
    second = _outbox(db, "agent-reply")[-1]
    assert second.recipients.split(",") == ["customer@example.org", "colleague@example.org"]


def test_in_one_transaction_a_mark_lifted_and_made_again_holds(
    db: Database, config: Config, ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer writes (the mark is lifted), a bounce marks the address again and an agent
    answers, all in one transaction (the slice made long enough): as one by one, the answer
    goes to the CC only."""
    ack_id = _open_request(db, ingest)
    anna = notification(db, "anna@example.com")
    monkeypatch.setattr(runner, "SLICE_SECONDS", 3600.0)
    again = make_mail("Re: [Support #1] Printer is broken", body="Still broken.")
    mails = [
        (again, "customer@example.org"),
        (dsn(ack_id), ""),
        (reply_to(anna, "anna@example.com", "Please restart it."), None),
    ]
    stored = [store_raw(db, raw, source="pipe", envelope_from=env) for raw, env in mails]
    assert Pipeline(config, db).process(ids=[s.ident for s in stored]) == 3
    assert _state(db)[0] == ["customer@example.org"]
    (answer,) = _outbox(db, "agent-reply")
    assert answer.recipients == "colleague@example.org"


def test_nobody_left_means_no_outbox_row_but_the_reply_is_kept(
    db: Database, ingest: Ingest
) -> None:
    ack_id = _open_request(db, ingest)
    anna = notification(db, "anna@example.com")
    ingest(dsn(ack_id), envelope_from="")
    ingest(dsn(ack_id, "colleague@example.org"), envelope_from="")
    assert _state(db)[0] == ["colleague@example.org", "customer@example.org"]
    ingest(reply_to(anna, "anna@example.com", "Please restart it."), envelope_from=None)
    assert _outbox(db, "agent-reply") == []
    with db.session() as s:
        kept = s.scalars(select(Message).where(Message.kind == "agent")).all()
        assert len(kept) == 2  # the agent's mail in, and the reply as it was meant to go out
        assert kept[1].note == "agent-reply; not sent: every recipient is undeliverable"


def test_forged_bounce_quoting_none_of_our_mail_marks_nothing(db: Database, ingest: Ingest) -> None:
    _open_request(db, ingest)
    ingest(dsn("<guess-1@support.example.com>"), envelope_from="")
    marked, _, detail = _state(db)
    assert marked == []
    event = next(e for e in detail["events"] if e["kind"] == "bounced")
    assert event["detail"]["proof"] == "quotes no mail the desk sent"
    assert event["detail"]["undeliverable"] == []


QMAIL_LIKE = """From: gateway@isp.example
To: support@example.com
Subject: Message status
Message-ID: <st-1@isp.example>

Hi. This is the qmail-send program at isp.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<customer@example.org>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Message-ID: {quoted}
From: Support <support@example.com>
Subject: [Support #1] Printer is broken

Dear customer,
"""


def test_flufl_recognises_a_bounce_of_our_mail_without_any_machine_sign(
    db: Database, ingest: Ingest
) -> None:
    ack_id = _open_request(db, ingest)
    raw = QMAIL_LIKE.format(quoted=ack_id).replace("\n", "\r\n").encode()
    assert verdict_of(raw)[0] == "human"  # no header, sender or subject gives it away
    ingest(raw, envelope_from="gateway@isp.example")
    assert _state(db)[0] == ["customer@example.org"]
    assert len(_outbox(db, "ack")) == 1


def test_a_customer_pasting_someone_elses_bounce_is_still_a_customer(
    db: Database, ingest: Ingest
) -> None:
    raw = QMAIL_LIKE.format(quoted="<theirs-1@corp.example>")
    raw = raw.replace("Subject: Message status", "Subject: Why did my mail fail?")
    raw = raw.replace("From: gateway@isp.example", "From: mary@corp.example")
    ingest(raw.replace("\n", "\r\n").encode(), envelope_from="mary@corp.example")
    (ack,) = _outbox(db, "ack")
    assert ack.recipients == "mary@corp.example"


def test_show_json_lists_undeliverable(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path, db_url)
    mail = make_mail("Printer is broken", extra="Cc: colleague@example.org\r\n")
    assert deliver(config, mail, "-f", "customer@example.org").returncode == 0
    db = Database(db_url)
    try:
        (ack,) = _outbox(db, "ack")
    finally:
        db.dispose()
    assert deliver(config, dsn(ack.message_id), "-f", "").returncode == 0
    cli = [sys.executable, "-m", "maild", "--config", str(config), "show", "1"]
    shown = subprocess.run([*cli, "--json"], capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["undeliverable"] == ["customer@example.org"]
    assert [e["kind"] for e in data["events"]].count("bounced") == 1
    text = subprocess.run(cli, capture_output=True, timeout=60).stdout.decode()
    assert "undeliverable (a bounce named them): customer@example.org" in text


def test_an_agent_pasting_a_bounce_of_our_mail_is_still_an_agent(
    db: Database, ingest: Ingest
) -> None:
    ack_id = _open_request(db, ingest)
    anna = notification(db, "anna@example.com")
    pasted = QMAIL_LIKE.format(quoted=ack_id).split("\n\n", 1)[1]
    ingest(reply_to(anna, "anna@example.com", f"#note it bounced:\n\n{pasted}"), envelope_from=None)
    with db.session() as s:
        kinds = [m.kind for m in s.scalars(select(Message).where(Message.direction == "in"))]
    assert kinds == ["customer", "note"]
    assert _state(db)[0] == []
