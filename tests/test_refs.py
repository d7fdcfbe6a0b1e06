"""Table tests for Message-ID list parsing (maild.threading.refs)."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from maild.threading.refs import (
    MAX_IDS,
    is_own_msgid,
    msgid_domain,
    normalize_msgid,
    parse_msgid_list,
)

MAIL = Path(__file__).parent / "mail"
ACK = "<ack-1@support.example.com>"
LONG_ID = "<" + "a" * 990 + "@x.example>"  # 1,002 characters: over the limit
EDGE_ID = "<" + "a" * 986 + "@x.example>"  # exactly 998 characters


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("   ", []),
        ("<a@x>", ["<a@x>"]),
        ("  <a@x>  ", ["<a@x>"]),
        ("<a@x> <b@y>", ["<a@x>", "<b@y>"]),
        ("<a@x>\r\n <b@y>\r\n\t<c@z>", ["<a@x>", "<b@y>", "<c@z>"]),
        ("<a@x><b@y>", ["<a@x>", "<b@y>"]),
        ("<a@x>,<b@y>", ["<a@x>", "<b@y>"]),
        ("<a@x> <b@y> <a@x>", ["<a@x>", "<b@y>"]),
        ("<a@x> <a@X>", ["<a@x>", "<a@X>"]),
        # Folding whitespace inside one id (broken mailers fold anywhere).
        ("<very-long-id@\r\n mail.example.org>", ["<very-long-id@mail.example.org>"]),
        # Junk around ids: comments, prose, old-style In-Reply-To text.
        ("<a@x> (Carol's message of Tue)", ["<a@x>"]),
        ('Your message of "Tue, 12 Mar 2024" <a@x>', ["<a@x>"]),
        ("garbage <a@x> more garbage <b@y> ;", ["<a@x>", "<b@y>"]),
        ("<> <a@x> < >", ["<a@x>"]),
        ("<a@x", []),
        ("a@x>", []),
        ("<<a@x>>", ["<a@x>"]),
        ("<bad id@x> <ok@x>", ["<badid@x>", "<ok@x>"]),
        ('<"quoted"@x> <ok@x>', ["<ok@x>"]),
        ("<a@[192.0.2.1]>", ["<a@[192.0.2.1]>"]),
        ("<no-at-sign>", ["<no-at-sign>"]),
        ("<тест@пример.рф>", ["<тест@пример.рф>"]),
        # A single bare id without angle brackets.
        ("a@x", ["<a@x>"]),
        ("  ack-1@support.example.com  ", ["<ack-1@support.example.com>"]),
        ("ack-1@support.example.com (comment)", ["<ack-1@support.example.com>"]),
        ("no-at-sign", []),
        ("a@x b@y", []),
        ("message from customer@example.org", []),
        # Length limit.
        (LONG_ID, []),
        (f"{LONG_ID} <ok@x>", ["<ok@x>"]),
        (EDGE_ID, [EDGE_ID]),
    ],
)
def test_parse_msgid_list(value: str | None, expected: list[str]) -> None:
    assert parse_msgid_list(value) == expected


def test_keeps_last_hundred_references() -> None:
    value = " ".join(f"<id{i}@x>" for i in range(250))
    ids = parse_msgid_list(value)
    assert len(ids) == MAX_IDS == 100
    assert ids[0] == "<id150@x>"
    assert ids[-1] == "<id249@x>"


def test_dedupe_happens_before_the_cut() -> None:
    value = " ".join(["<root@x>"] * 300 + ["<parent@x>"])
    assert parse_msgid_list(value) == ["<root@x>", "<parent@x>"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("<>", None),
        ("<a@x>", "<a@x>"),
        ("  <a@x>\r\n", "<a@x>"),
        ("a@x", "<a@x>"),
        (" a@x ", "<a@x>"),
        ("<a@x> <b@y>", "<a@x>"),
        ("not an id", None),
        (LONG_ID, None),
    ],
)
def test_normalize_msgid(value: str | None, expected: str | None) -> None:
    assert normalize_msgid(value) == expected


@pytest.mark.parametrize(
    ("fixture", "header", "expected"),
    [
        ("reply_gmail_en.eml", "In-Reply-To", [ACK]),
        (
            "reply_gmail_en.eml",
            "References",
            ["<CAF3x1-printer-0001@mail.example.org>", ACK],
        ),
        ("reply_outlook_en.eml", "In-Reply-To", [ACK]),
        ("reply_outlook_ru.eml", "References", ["<1710231291.482913@mail.example.org>", ACK]),
        ("reply_thunderbird_ru.eml", "In-Reply-To", [ACK]),
        ("reply_apple_mail.eml", "In-Reply-To", [ACK]),
        ("reply_mobile_iphone.eml", "References", ["<CAF3x1-printer-0001@mail.example.org>", ACK]),
        ("new_plain_en.eml", "References", []),
        ("new_plain_en.eml", "Message-ID", ["<CAF3x1-printer-0001@mail.example.org>"]),
        ("no_message_id.eml", "Message-ID", []),
    ],
)
def test_fixture_headers(fixture: str, header: str, expected: list[str]) -> None:
    msg = email.message_from_bytes((MAIL / fixture).read_bytes(), policy=email.policy.compat32)
    assert parse_msgid_list(msg.get(header)) == expected


def test_msgid_domain_helpers() -> None:
    assert msgid_domain("<a.b@Example.COM>") == "example.com"
    assert msgid_domain("<nodomain>") == ""
    assert is_own_msgid("<ack.1@example.com>", "example.com")
    assert not is_own_msgid("<ack.1@sub.example.com>", "example.com")
    assert not is_own_msgid("<ack.1@example.com.evil.test>", "example.com")
