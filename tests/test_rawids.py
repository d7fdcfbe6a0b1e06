"""Message-IDs read from raw bytes (maild/threading/rawids.py): bytes in, ids out."""

from __future__ import annotations

import email
import email.policy

import pytest

from maild.threading.rawids import header_block, message_id, parent_ids, thread_key
from maild.threading.refs import parse_msgid_list


def raw(*headers: str, body: str = "body") -> bytes:
    return ("\r\n".join([*headers, "Subject: x"]) + "\r\n\r\n" + body + "\r\n").encode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <a@b.example>", "<a@b.example>"),
        ("Message-Id:<a@b.example>", "<a@b.example>"),
        ("MESSAGE-ID:   <a@b.example>  (comment)", "<a@b.example>"),
        ("Message-ID: <a.very.long.id\r\n @b.example>", "<a.very.long.id@b.example>"),  # folded
        ("Message-ID: a@b.example", "<a@b.example>"),  # no brackets
        ("Message-ID: no id at all", "noidatall"),  # kept as written, so it still has one
        ("X-Other: <a@b.example>", None),
    ],
)
def test_message_id(header: str, expected: str | None) -> None:
    assert message_id(raw(header)) == expected


def test_only_the_header_block_is_read() -> None:
    mail = raw("From: a@example.org", body="Message-ID: <in-body@x>\r\nReferences: <r@x>")
    assert header_block(mail).endswith(b"\r\n\r\n")
    assert message_id(mail) is None and parent_ids(mail) == ()
    lf = b"Subject: x\nMessage-ID: <lf@x>\n\nMessage-ID: <body@x>\n"
    assert message_id(lf) == "<lf@x>"


def test_parent_ids_nearest_first() -> None:
    mail = raw(
        "In-Reply-To: <c@x>",
        "References: <a@x> <b@x>\r\n <c@x>",
    )
    assert parent_ids(mail) == ("<c@x>", "<b@x>", "<a@x>")


def test_parent_ids_are_capped() -> None:
    refs = " ".join(f"<r{n}@x>" for n in range(50))
    ids = parent_ids(raw(f"References: {refs}"))
    assert len(ids) == 20 and ids[0] == "<r49@x>"


@pytest.mark.parametrize(
    "headers",
    [
        ("References: <root@x> <mid@x>",),
        ("In-Reply-To: <root@x>",),
        ("References: <root\r\n @x>",),  # folded inside the id, as some clients write it
        ("References: junk <root@x> more junk",),
    ],
)
def test_a_reply_shares_the_thread_key_of_its_root(headers: tuple[str, ...]) -> None:
    root = raw("Message-ID: <root@x>")
    assert thread_key(raw(*headers)) == thread_key(root)


def test_thread_key_without_ids_is_stable() -> None:
    mail = b"Subject: none\r\n\r\nbody"
    assert thread_key(mail) == thread_key(mail) >= 0


def test_ids_read_the_way_the_matching_stage_reads_them() -> None:
    """Sharding (raw bytes) and matching (the parsed header) give the same ids."""
    mail = raw(
        "Message-ID: <own\r\n .part@c.example>",
        "In-Reply-To: <b@x>",
        "References: <a@x>\r\n\t<b@x> (comment)",
    )
    parsed = email.message_from_bytes(mail, policy=email.policy.compat32)
    assert message_id(mail) == parse_msgid_list(parsed["Message-ID"])[0]
    refs = parse_msgid_list(str(parsed["References"]))
    assert list(parent_ids(mail)) == ["<b@x>", *reversed([r for r in refs if r != "<b@x>"])]
