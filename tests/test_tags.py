"""Table tests for subject tags and reply prefixes (maild.threading.tags)."""

from __future__ import annotations

import email
import email.header
import email.policy
from pathlib import Path

import pytest

from maild.threading.tags import (
    find_ticket_number,
    strip_reply_prefixes,
    strip_tag,
    tagged_subject,
)

MAIL = Path(__file__).parent / "mail"


def decoded_subject(name: str) -> str:
    """The RFC 2047-decoded Subject of a fixture."""
    msg = email.message_from_bytes((MAIL / name).read_bytes(), policy=email.policy.compat32)
    parts = []
    for chunk, charset in email.header.decode_header(msg.get("Subject", "")):
        if isinstance(chunk, str):
            parts.append(chunk)
        else:
            parts.append(chunk.decode(charset or "ascii", errors="replace"))
    return "".join(parts)


@pytest.mark.parametrize(
    ("subject", "tag", "expected"),
    [
        ("[Support #12] Printer", "Support", 12),
        ("[support #12]", "Support", 12),
        ("[Support#12]", "Support", 12),
        ("[ SUPPORT #12 ]", "Support", 12),
        ("[Support # 12]", "Support", 12),
        ("[Support\t#\t12]", "Support", 12),
        ("Re: [Support #1] Printer is broken", "Support", 1),
        ("Re: Ответ: Fwd: [Support #12] Принтер", "Support", 12),
        ("Printer is broken [Support #7]", "Support", 7),
        ("[Support #3] [Support #4]", "Support", 3),
        ("[Support #007] leading zeros", "Support", 7),
        ("[Support #1000000000000]", "Support", 10**12),
        ("[Support #1000000000001]", "Support", None),
        ("[Support #99999999999999999999999999999999]", "Support", None),
        ("[Support #0]", "Support", None),
        ("[Support #0] [Support #5]", "Support", 5),
        ("[Support #-3]", "Support", None),
        ("[Support #12a]", "Support", None),
        ("[Support 12]", "Support", None),
        ("Support #12", "Support", None),
        ("[Sales #12]", "Support", None),
        ("[Supportx #12]", "Support", None),
        ("[Other Support #12]", "Support", None),
        ("", "Support", None),
        ("[Help Desk #42] x", "Help Desk", 42),
        ("[help   desk #42] x", "Help Desk", 42),
        ("[IT.Help (1st) #9] x", "IT.Help (1st)", 9),
        ("[ITxHelp (1st) #9] x", "IT.Help (1st)", None),
        ("[C++ #5]", "C++", 5),
        ("[Поддержка #15] Не работает", "Поддержка", 15),
        ("[ПОДДЕРЖКА #15]", "поддержка", 15),
        ("[Support #١٢]", "Support", None),
        ("[Support #12]", "", None),
    ],
)
def test_find_ticket_number(subject: str, tag: str, expected: int | None) -> None:
    assert find_ticket_number(subject, tag) == expected


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("reply_outlook_en.eml", 1),
        ("reply_outlook_ru.eml", 1),
        ("reply_gmail_en.eml", 1),
        ("reply_thunderbird_ru.eml", 1),
        ("reply_apple_mail.eml", 1),
        ("reply_mobile_iphone.eml", 1),
        ("autoreply_exchange.eml", 1),
        ("autoreply_ru.eml", 1),
        ("new_plain_en.eml", None),
        ("new_koi8r_subject.eml", None),
        ("hostile_headers.eml", None),
        ("empty_subject.eml", None),
    ],
)
def test_find_ticket_number_in_fixtures(fixture: str, expected: int | None) -> None:
    assert find_ticket_number(decoded_subject(fixture), "Support") == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Printer", "Printer"),
        ("RE: Printer", "Printer"),
        ("re:Printer", "Printer"),
        ("Fwd: Printer", "Printer"),
        ("FWD: Printer", "Printer"),
        ("Fw: Printer", "Printer"),
        ("FW: Printer", "Printer"),
        ("AW: Drucker", "Drucker"),
        ("WG: Drucker", "Drucker"),
        ("SV: Skrivare", "Skrivare"),
        ("VS: Tulostin", "Tulostin"),
        ("Antw: Printer", "Printer"),
        ("Ответ: Принтер", "Принтер"),
        ("Отв: Принтер", "Принтер"),
        ("НА: Принтер", "Принтер"),
        ("на: Принтер", "Принтер"),
        ("Пересл: Принтер", "Принтер"),
        ("Перес: Принтер", "Принтер"),
        ("Re[2]: Printer", "Printer"),
        ("Re(3): Printer", "Printer"),
        ("Re [2] : Printer", "Printer"),
        ("Re^2: Printer", "Printer"),
        ("RE: RE:RE: Printer", "Printer"),
        ("Re: Ответ: Fwd: [Support #12] Принтер", "[Support #12] Принтер"),
        ("Re : Printer", "Printer"),
        ("Re：Printer", "Printer"),
        ("Ответ： Принтер", "Принтер"),
        ("  Re:   Fwd:\tPrinter   is\r\n  broken  ", "Printer is broken"),
        ("Re:", ""),
        ("Re: Re:", ""),
        ("", ""),
        # Not prefixes: words that merely start like one, or a prefix in the middle.
        ("Regarding: Printer", "Regarding: Printer"),
        ("Report: Q1", "Report: Q1"),
        ("Reply needed", "Reply needed"),
        ("Nachricht: test", "Nachricht: test"),
        ("Наличие: товара", "Наличие: товара"),
        ("Printer Re: broken", "Printer Re: broken"),
        ("[Support #1] Re: Printer", "[Support #1] Re: Printer"),
    ],
)
def test_strip_reply_prefixes(subject: str, expected: str) -> None:
    assert strip_reply_prefixes(subject) == expected


@pytest.mark.parametrize(
    ("subject", "tag", "expected"),
    [
        ("[Support #12] Printer", "Support", "Printer"),
        ("Re: [support#12] Printer", "Support", "Re: Printer"),
        ("Printer [ SUPPORT #12 ] broken", "Support", "Printer broken"),
        ("[Support #1] [Support #2] x", "Support", "x"),
        ("[Sales #3] [Support #1] x", "Support", "[Sales #3] x"),
        ("No tag here", "Support", "No tag here"),
        ("[Help Desk #4] x", "Help Desk", "x"),
        ("[Support #1]", "Support", ""),
        ("[Support #1] x", "", "[Support #1] x"),
    ],
)
def test_strip_tag(subject: str, tag: str, expected: str) -> None:
    assert strip_tag(subject, tag) == expected


@pytest.mark.parametrize(
    ("tag", "number", "subject", "expected"),
    [
        ("Support", 1, "Printer is broken", "[Support #1] Printer is broken"),
        ("Support", 1, "Re: [Support #1] Printer is broken", "[Support #1] Printer is broken"),
        ("Support", 12, "Re: Ответ: Fwd: [Support #12] Принтер", "[Support #12] Принтер"),
        ("Support", 5, "Re: [Support #1] Re: Printer", "[Support #5] Printer"),
        ("Support", 5, "[support #1] old", "[Support #5] old"),
        ("Support", 7, "", "[Support #7]"),
        ("Support", 7, "   ", "[Support #7]"),
        ("Support", 7, "Re: Fwd:", "[Support #7]"),
        ("Support", 8, "hi\r\nBcc: evil@example.net", "[Support #8] hi Bcc: evil@example.net"),
        ("Support", 8, "a\r\n\r\n\tb\nc\rd", "[Support #8] a b c d"),
        ("Support", 8, "a\x00b\u2028c", "[Support #8] a b c"),
        ("Sup\r\nport", 9, "x", "[Sup port #9] x"),
        ("Help Desk", 3, "[Help Desk #2] x", "[Help Desk #3] x"),
    ],
)
def test_tagged_subject(tag: str, number: int, subject: str, expected: str) -> None:
    result = tagged_subject(tag, number, subject)
    assert result == expected
    assert "\r" not in result and "\n" not in result


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("new_plain_en.eml", "[Support #3] Printer is broken"),
        ("new_koi8r_subject.eml", "[Support #3] Не приходит почта с сайта"),
        ("new_cp1251_subject.eml", "[Support #3] Нет доступа к папке"),
        ("reply_outlook_ru.eml", "[Support #3] Не работает принтер"),
        ("reply_thunderbird_ru.eml", "[Support #3] Не работает принтер"),
        ("hostile_headers.eml", "[Support #3] hi Bcc: evil@example.net"),
        ("empty_subject.eml", "[Support #3]"),
    ],
)
def test_tagged_subject_from_fixtures(fixture: str, expected: str) -> None:
    assert tagged_subject("Support", 3, decoded_subject(fixture)) == expected


def test_tagged_subject_round_trips() -> None:
    subject = tagged_subject("Support", 41, "Re: [Support #41] Printer")
    assert find_ticket_number(subject, "Support") == 41
    assert strip_tag(subject, "Support") == "Printer"
