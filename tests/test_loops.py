"""Table tests for loop, bounce, list and auto-reply classification (maild.tickets.loops)."""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
from dataclasses import replace
from pathlib import Path

import pytest

from maild.tickets.loops import LoopInput, Verdict, classify

MAIL = Path(__file__).parent / "mail"
DESK = frozenset({"support@example.com", "help@example.com"})
LOOP_NAME = "support@example.com"


def decode(value: str) -> str:
    """An RFC 2047 header value as text; unknown charsets fall back to latin-1."""
    parts = []
    for chunk, charset in email.header.decode_header(value):
        if isinstance(chunk, str):
            parts.append(chunk)
            continue
        try:
            parts.append(chunk.decode(charset or "ascii"))
        except (LookupError, UnicodeDecodeError):
            parts.append(chunk.decode("latin-1"))
    return "".join(parts)


def loop_input(raw: bytes, envelope_from: str | None = None) -> LoopInput:
    """Build a LoopInput from raw message bytes with the stdlib parser (compat32)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    headers = [(name, decode(str(value))) for name, value in msg.items()]
    from_addr = email.utils.parseaddr(decode(msg.get("From", "")))[1].lower()
    return LoopInput(
        headers=headers,
        subject=decode(msg.get("Subject", "")),
        from_addr=from_addr,
        envelope_from=envelope_from,
        content_type=msg.get_content_type().lower(),
        report_type=str(msg.get_param("report-type", "") or "").lower(),
        desk_addresses=DESK,
        loop_name=LOOP_NAME,
    )


def fixture_input(name: str, envelope_from: str | None = None) -> LoopInput:
    return loop_input((MAIL / name).read_bytes(), envelope_from)


def make(
    headers: list[tuple[str, str]] | None = None,
    *,
    subject: str = "Printer is broken",
    from_addr: str = "customer@example.org",
    envelope_from: str | None = "customer@example.org",
    content_type: str = "text/plain",
    report_type: str = "",
) -> LoopInput:
    """A hand-made LoopInput: an ordinary customer mail unless told otherwise."""
    return LoopInput(
        headers=[("From", from_addr), ("Subject", subject), *(headers or [])],
        subject=subject,
        from_addr=from_addr,
        envelope_from=envelope_from,
        content_type=content_type,
        report_type=report_type,
        desk_addresses=DESK,
        loop_name=LOOP_NAME,
    )


HUMAN = Verdict("human", "")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("new_plain_en.eml", HUMAN),
        ("new_plain_ru_utf8.eml", HUMAN),
        ("new_koi8r_subject.eml", HUMAN),
        ("new_cp1251_subject.eml", HUMAN),
        ("html_only.eml", HUMAN),
        ("with_attachment_pdf.eml", HUMAN),
        ("attachment_filename_rfc2231_ru.eml", HUMAN),
        ("reply_outlook_en.eml", HUMAN),
        ("reply_outlook_ru.eml", HUMAN),
        ("reply_gmail_en.eml", HUMAN),
        ("reply_thunderbird_ru.eml", HUMAN),
        ("reply_apple_mail.eml", HUMAN),
        ("reply_mobile_iphone.eml", HUMAN),
        ("hostile_headers.eml", HUMAN),
        ("no_message_id.eml", HUMAN),
        ("deep_nesting.eml", HUMAN),
        ("many_parts.eml", HUMAN),
        ("empty_subject.eml", HUMAN),
        ("unknown_charset.eml", HUMAN),
        ("broken_base64.eml", HUMAN),
        ("bounce_dsn_postfix.eml", Verdict("bounce", "Return-Path: <>")),
        ("bounce_exim_x_failed.eml", Verdict("bounce", "X-Failed-Recipients present")),
        ("bounce_qmail.eml", Verdict("bounce", "From local part mailer-daemon")),
        ("arf_complaint.eml", Verdict("bounce", "multipart/report; report-type=feedback-report")),
        (
            "mdn_read_receipt.eml",
            Verdict("auto-reply", "multipart/report; report-type=disposition-notification"),
        ),
        ("autoreply_rfc3834.eml", Verdict("auto-reply", "Auto-Submitted: auto-replied")),
        (
            "autoreply_apple_no_header.eml",
            Verdict("auto-reply", "Subject starts with 'Auto reply:'"),
        ),
        ("autoreply_exchange.eml", Verdict("auto-reply", "X-MS-Exchange-Inbox-Rules-Loop present")),
        ("autoreply_ru.eml", Verdict("auto-reply", "Subject starts with 'Автоответ'")),
        ("list_mail.eml", Verdict("list", "Precedence: list")),
        ("own_loop.eml", Verdict("loop", "X-Loop: support@example.com")),
    ],
)
def test_fixtures(fixture: str, expected: Verdict) -> None:
    verdict = classify(fixture_input(fixture))
    assert verdict == expected
    assert verdict.automatic is (expected.kind != "human")


@pytest.mark.parametrize(
    ("fixture", "envelope_from", "expected"),
    [
        ("new_plain_en.eml", "customer@example.org", HUMAN),
        ("new_plain_en.eml", "", Verdict("bounce", "null envelope sender <>")),
        ("bounce_qmail.eml", "", Verdict("bounce", "null envelope sender <>")),
        ("bounce_dsn_postfix.eml", None, Verdict("bounce", "Return-Path: <>")),
    ],
)
def test_envelope_sender(fixture: str, envelope_from: str | None, expected: Verdict) -> None:
    assert classify(fixture_input(fixture, envelope_from)) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Auto-Submitted (RFC 3834): anything but "no", parameters and comments allowed.
        ([("Auto-Submitted", "no")], HUMAN),
        ([("Auto-Submitted", "No (sent by a person)")], HUMAN),
        ([("Auto-Submitted", "")], HUMAN),
        (
            [("Auto-Submitted", "auto-replied")],
            Verdict("auto-reply", "Auto-Submitted: auto-replied"),
        ),
        (
            [("Auto-Submitted", "auto-generated")],
            Verdict("auto-reply", "Auto-Submitted: auto-generated"),
        ),
        (
            [("Auto-Submitted", 'Auto-Replied; owner-email="x@example.org"')],
            Verdict("auto-reply", "Auto-Submitted: auto-replied"),
        ),
        (
            [("auto-submitted", "(vacation) auto-notified")],
            Verdict("auto-reply", "Auto-Submitted: auto-notified"),
        ),
        # Precedence.
        ([("Precedence", "bulk")], Verdict("list", "Precedence: bulk")),
        ([("Precedence", "LIST")], Verdict("list", "Precedence: list")),
        ([("Precedence", "junk")], Verdict("auto-reply", "Precedence: junk")),
        ([("Precedence", "auto_reply")], Verdict("auto-reply", "Precedence: auto_reply")),
        ([("Precedence", "first-class")], HUMAN),
        ([("Precedence", "normal")], HUMAN),
        # Mailing-list headers.
        ([("List-Id", "<announce.lists.example.net>")], Verdict("list", "List-Id present")),
        ([("List-Post", "<mailto:l@example.net>")], Verdict("list", "List-Post present")),
        ([("List-Unsubscribe", "<mailto:u@x>")], Verdict("list", "List-Unsubscribe present")),
        ([("List-Archive", "<https://x>")], HUMAN),
        # Null Return-Path.
        ([("Return-Path", "<>")], Verdict("bounce", "Return-Path: <>")),
        ([("Return-Path", " < > ")], Verdict("bounce", "Return-Path: <>")),
        ([("Return-Path", "<customer@example.org>")], HUMAN),
        # Auto-responder headers.
        ([("X-Autoreply", "yes")], Verdict("auto-reply", "X-Autoreply present")),
        ([("X-Autorespond", "Auto reply")], Verdict("auto-reply", "X-Autorespond present")),
        ([("X-AutoResponder", "")], Verdict("auto-reply", "X-Autoresponder present")),
        ([("X-Autoreply", "no")], HUMAN),
        (
            [("X-MS-Exchange-Inbox-Rules-Loop", "customer@example.org")],
            Verdict("auto-reply", "X-MS-Exchange-Inbox-Rules-Loop present"),
        ),
        (
            [("X-MS-Exchange-Generated-Message-Source", "Mailbox Rules Agent")],
            Verdict("auto-reply", "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent"),
        ),
        ([("X-MS-Exchange-Generated-Message-Source", "Transport Rules Agent")], HUMAN),
        (
            [("X-Failed-Recipients", "nobody@example.net")],
            Verdict("bounce", "X-Failed-Recipients present"),
        ),
        # X-Auto-Response-Suppress alone is set by Outlook on ordinary mail too.
        ([("X-Auto-Response-Suppress", "All")], HUMAN),
        # Our own X-Loop (case-insensitive), not somebody else's.
        ([("X-Loop", "support@example.com")], Verdict("loop", "X-Loop: support@example.com")),
        ([("X-Loop", " SUPPORT@Example.COM ")], Verdict("loop", "X-Loop: support@example.com")),
        ([("X-Loop", "<support@example.com>")], Verdict("loop", "X-Loop: support@example.com")),
        ([("X-Loop", "helpdesk@example.net")], HUMAN),
        # Desk-internal markers a customer might forge mean nothing here.
        ([("X-Maild-Agent", "yes"), ("X-Maild-Ticket", "5")], HUMAN),
    ],
)
def test_header_rules(headers: list[tuple[str, str]], expected: Verdict) -> None:
    assert classify(make(headers)) == expected


@pytest.mark.parametrize(
    ("content_type", "report_type", "expected"),
    [
        (
            "multipart/report",
            "delivery-status",
            Verdict("bounce", "multipart/report; report-type=delivery-status"),
        ),
        (
            "multipart/report",
            "feedback-report",
            Verdict("bounce", "multipart/report; report-type=feedback-report"),
        ),
        (
            "multipart/report",
            "disposition-notification",
            Verdict("auto-reply", "multipart/report; report-type=disposition-notification"),
        ),
        (
            "multipart/report",
            "tlsrpt",
            Verdict("auto-reply", "multipart/report; report-type=tlsrpt"),
        ),
        ("multipart/report", "", Verdict("auto-reply", "multipart/report; report-type=(none)")),
        ("multipart/mixed", "delivery-status", HUMAN),
        ("text/plain", "", HUMAN),
    ],
)
def test_report(content_type: str, report_type: str, expected: Verdict) -> None:
    assert classify(make(content_type=content_type, report_type=report_type)) == expected


@pytest.mark.parametrize(
    ("from_addr", "expected"),
    [
        ("mailer-daemon@mx.example.net", Verdict("bounce", "From local part mailer-daemon")),
        ("MAILER-DAEMON@mx.example.net", Verdict("bounce", "From local part mailer-daemon")),
        ("postmaster@example.net", Verdict("bounce", "From local part postmaster")),
        ("bounce@example.net", Verdict("bounce", "From local part bounce")),
        ("bounces+x=y@example.net", Verdict("bounce", "From local part bounces")),
        ("no-reply@example.net", Verdict("auto-reply", "From local part no-reply")),
        ("noreply@example.net", Verdict("auto-reply", "From local part noreply")),
        ("NoReply-billing@example.net", Verdict("auto-reply", "From local part noreply")),
        ("no_reply@example.net", Verdict("auto-reply", "From local part no_reply")),
        ("do-not-reply@example.net", Verdict("auto-reply", "From local part do-not-reply")),
        ("donotreply@example.net", Verdict("auto-reply", "From local part donotreply")),
        (
            "support@example.com",
            Verdict("loop", "From is the desk's own address support@example.com"),
        ),
        ("HELP@example.com", Verdict("loop", "From is the desk's own address help@example.com")),
        ("support@example.org", HUMAN),
        ("noreplying@example.net", HUMAN),
        ("postmasters-fan@example.net", HUMAN),
        ("bouncer@example.net", HUMAN),
        ("anna@example.com", HUMAN),
        ("", HUMAN),
    ],
)
def test_from_rules(from_addr: str, expected: Verdict) -> None:
    assert classify(make(from_addr=from_addr)) == expected


@pytest.mark.parametrize(
    ("count", "limit", "expected"),
    [
        (50, 50, HUMAN),
        (51, 50, Verdict("loop", "51 Received headers (limit 50)")),
        (6, 5, Verdict("loop", "6 Received headers (limit 5)")),
        (5, 5, HUMAN),
    ],
)
def test_received_count(count: int, limit: int, expected: Verdict) -> None:
    received = [("Received", f"from hop{i}.example.net by hop{i + 1}") for i in range(count)]
    assert classify(make(received), max_received=limit) == expected


@pytest.mark.parametrize(
    ("subject", "expected_kind", "label"),
    [
        ("Auto reply: Printer", "auto-reply", "Auto reply:"),
        ("Automatic reply: [Support #1] Printer", "auto-reply", "Automatic reply:"),
        ("Autoreply: Printer", "auto-reply", "Auto reply:"),
        ("Auto-Reply: Printer", "auto-reply", "Auto reply:"),
        ("AUTO-REPLY : Printer", "auto-reply", "Auto reply:"),
        ("Out of Office: Printer", "auto-reply", "Out of Office"),
        ("Out of Office AutoReply: Printer", "auto-reply", "Out of Office"),
        ("Out of the office", "auto-reply", "Out of Office"),
        ("Abwesenheitsnotiz: Drucker", "auto-reply", "Abwesenheitsnotiz"),
        ("Automatische Antwort: Drucker", "auto-reply", "Automatische Antwort"),
        ("Réponse automatique : Imprimante", "auto-reply", "Réponse automatique"),
        ("Автоответ: Принтер", "auto-reply", "Автоответ"),
        ("Автоматический ответ: Принтер", "auto-reply", "Автоматический ответ"),
        ("Re: Automatic reply: Printer", "auto-reply", "Automatic reply:"),
        ("[EXTERNAL] Automatic reply: Printer", "auto-reply", "Automatic reply:"),
        ("[Support #1] Re: Auto reply: x", "auto-reply", "Auto reply:"),
        ("Undeliverable: Printer", "bounce", "Undeliverable:"),
        ("Undelivered Mail Returned to Sender", "bounce", "Undelivered Mail Returned to Sender"),
        ("Mail delivery failed: returning message to sender", "bounce", "Mail delivery failed"),
        ("Delivery Status Notification (Failure)", "bounce", "Delivery Status Notification"),
        ("Delivery Status Notification (Delay)", "bounce", "Delivery Status Notification"),
        ("Returned mail: see transcript for details", "bounce", "Returned mail:"),
        ("failure notice", "bounce", "failure notice"),
        ("Недоставленное сообщение", "bounce", "Недоставленное сообщение"),
        ("Не доставлено: Принтер", "bounce", "Не доставлено"),
    ],
)
def test_subject_rules(subject: str, expected_kind: str, label: str) -> None:
    assert classify(make(subject=subject)) == Verdict(
        expected_kind, f"Subject starts with {label!r}"
    )


@pytest.mark.parametrize(
    "subject",
    [
        "Question about auto reply settings",
        "How do I set up an Automatic reply: step by step?",
        "Re: auto reply settings",
        "Printer says: Out of Office mode",
        "Out of office tomorrow, please reassign my tickets",
        "Why did I get 'Undeliverable: ...' from you?",
        "Mail delivery failed for my account again",
        "Не доставлено оборудование",
        "Re: Ответ: Fwd: [Support #12] Принтер",
        "Re: [Support #1] Printer is broken",
        "Report: monthly failure notice statistics",
        "",
    ],
)
def test_human_subjects(subject: str) -> None:
    verdict = classify(make(subject=subject))
    assert verdict == HUMAN
    assert not verdict.automatic


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (
            "Printer (automatic reply)",
            Verdict("auto-reply", "X-Auto-Response-Suppress with an auto-reply subject"),
        ),
        (
            "Ich bin nicht im Büro - Abwesenheit",
            Verdict("auto-reply", "X-Auto-Response-Suppress with an auto-reply subject"),
        ),
        ("Printer is broken", HUMAN),
    ],
)
def test_auto_response_suppress_with_subject(subject: str, expected: Verdict) -> None:
    inp = make([("X-Auto-Response-Suppress", "DR, RN, NRN, OOF, AutoReply")], subject=subject)
    assert classify(inp) == expected


@pytest.mark.parametrize(
    ("inp", "expected"),
    [
        # Loop beats everything else.
        (
            make([("X-Loop", "support@example.com"), ("Auto-Submitted", "auto-replied")]),
            Verdict("loop", "X-Loop: support@example.com"),
        ),
        # A bounce from a list still counts as a bounce.
        (
            make([("List-Id", "<l.example.net>")], envelope_from=""),
            Verdict("bounce", "null envelope sender <>"),
        ),
        # An auto-reply sent through a list is an auto-reply.
        (
            make([("List-Id", "<l.example.net>"), ("Auto-Submitted", "auto-generated")]),
            Verdict("auto-reply", "Auto-Submitted: auto-generated"),
        ),
        # A DSN that also carries Auto-Submitted is a bounce.
        (
            make(
                [("Auto-Submitted", "auto-replied")],
                content_type="multipart/report",
                report_type="delivery-status",
            ),
            Verdict("bounce", "multipart/report; report-type=delivery-status"),
        ),
        # Auto-Submitted: no does not cancel other evidence.
        (
            make([("Auto-Submitted", "no"), ("Precedence", "bulk")]),
            Verdict("list", "Precedence: bulk"),
        ),
        # Envelope unknown (IMAP) and no other evidence: human.
        (make(envelope_from=None), HUMAN),
    ],
)
def test_most_specific_kind_wins(inp: LoopInput, expected: Verdict) -> None:
    assert classify(inp) == expected


def test_header_values_may_be_folded() -> None:
    inp = make([("Auto-Submitted", "auto-replied\r\n\t(vacation)")])
    assert classify(inp) == Verdict("auto-reply", "Auto-Submitted: auto-replied")


def test_empty_loop_name_never_matches() -> None:
    inp = LoopInput(
        headers=[("X-Loop", "")],
        subject="x",
        from_addr="customer@example.org",
        envelope_from=None,
        content_type="text/plain",
        report_type="",
        desk_addresses=frozenset(),
        loop_name="",
    )
    assert classify(inp) == HUMAN


def test_verdict_automatic() -> None:
    assert not Verdict("human", "").automatic
    for kind in ("auto-reply", "bounce", "list", "loop"):
        assert Verdict(kind, "x").automatic


def answering(subject: str, body: str, *, answers_desk: bool = True) -> LoopInput:
    """A mail answering one of the desk's (or not), with no automatic header at all."""
    return replace(make(subject=subject), body_start=body, answers_desk=answers_desk)


@pytest.mark.parametrize(
    ("subject", "body", "reason"),
    [
        ("Thanks for your mail", "We will get back to you soon.", "thank you"),
        ("Thank you for your message", "Regards", "thank you"),
        ("Спасибо за ваше письмо", "Ответим позже.", "thank you"),
        ("Re: [Support #1] Printer", "I am out of the office until Monday.", "first line"),
        ("Re: [Support #1] Printer", "Hello,\n\nI'm currently on annual leave.", "first line"),
        ("Re: [Support #1] Printer", "Thanks for your email. I am away until 5 May.", "first"),
        ("Re: [Support #1] Printer", "This is an automatic reply.", "first line"),
        ("Re: [Support #1] Printer", "Autoreply: I will answer later", "first line"),
        ("Re: [Support #1] Printer", "Здравствуйте!\n\nЯ в отпуске до 10 декабря.", "first"),
        ("Re: [Support #1] Printer", "В настоящее время нахожусь в отпуске.", "first line"),
        ("Re: [Support #1] Printer", "Добрый день.\nЯ вне офиса до понедельника.", "first"),
        ("Re: [Support #1] Printer", "Это автоматический ответ.", "first line"),
        ("Re: [Support #1] Printer", "Автоответ: буду 3 декабря", "first line"),
        ("I am away", "", "subject"),
        ("Я в отпуске", "", "subject"),
        ("Вне офиса", "", "subject"),
    ],
)
def test_autoresponders_without_headers_answering_us(subject: str, body: str, reason: str) -> None:
    verdict = classify(answering(subject, body))
    assert verdict.kind == "auto-reply", verdict
    assert reason.split()[0] in verdict.reason


@pytest.mark.parametrize(
    ("subject", "body", "answers_desk"),
    [
        # A reply's subject is the request's: the customer's own words, never a verdict.
        ("Re: [Support #1] I am away and VPN fails", "It fails again.", True),
        ("Re: [Support #1] Вне офиса не работает VPN", "Опять не работает.", True),
        ("Re: [Support #1] Thanks for your mail", "It works now.", True),
        ("Re: [Support #1] Printer", "Thanks for your mail, it works now!", True),
        ("Re: [Support #1] Printer", "Hello,\nthe printer is away from the network.", True),
        # A new mail is never judged by its first line or a "thank you" subject.
        ("Thanks for your mail", "Can you also reset my password?", False),
        ("VPN", "I am on vacation and cannot log in. Help!", False),
        ("Карта", "Я в отпуске, а карта заблокирована.", False),
    ],
)
def test_people_answering_us_stay_human(subject: str, body: str, answers_desk: bool) -> None:
    assert classify(answering(subject, body, answers_desk=answers_desk)) == HUMAN
