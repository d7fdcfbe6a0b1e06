"""The parse step on raw .eml fixtures: charsets, senders, HTML, attachment names, limits."""

from __future__ import annotations

import time

import pytest
from conftest import CORPUS, fixture_bytes

from maild.core.errors import LimitExceeded, QuarantineError
from maild.ingest.headers import decode_bytes, decode_value, safe_filename
from maild.ingest.html2text import html_to_text
from maild.ingest.parse import Limits, parse_mail

IVANOV = "=?utf-8?B?0JjQstCw0L3QvtCyLCDQmNCy0LDQvQ==?="  # "Иванов, Иван": a comma inside
EVE_CRLF = "=?utf-8?q?Eve=0D=0ABcc=3A_x=40evil.example?="  # "Eve\r\nBcc: x@evil.example"


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("new_koi8r_subject.eml", "Не приходит почта с сайта"),
        ("new_cp1251_subject.eml", "Нет доступа к папке"),
        ("new_plain_ru_utf8.eml", "Не работает принтер"),
        ("reply_outlook_ru.eml", "Ответ: [Support #1] Не работает принтер"),
        ("reply_thunderbird_ru.eml", "Re: НА: [Support #1] Не работает принтер"),
        ("autoreply_ru.eml", "Автоответ: [Support #1] Не работает принтер"),
        ("attachment_filename_rfc2231_ru.eml", "Счёт на оплату"),
        ("reply_outlook_en.eml", "RE: [Support #1] Printer is broken"),
        ("empty_subject.eml", ""),
    ],
)
def test_subject_decoded(name: str, subject: str) -> None:
    assert parse_mail(fixture_bytes(name)).subject == subject


@pytest.mark.parametrize(
    ("name", "from_name", "from_addr"),
    [
        ("new_koi8r_subject.eml", "Ирина Клиентова", "customer@example.org"),
        ("new_cp1251_subject.eml", "Ирина", "customer@example.org"),
        ("new_plain_ru_utf8.eml", "Ирина Клиентова", "customer@example.org"),
        ("new_plain_en.eml", "Carol Customer", "customer@example.org"),
        ("bounce_qmail.eml", "", "mailer-daemon@mail.example.net"),
        ("bounce_dsn_postfix.eml", "Mail Delivery System", "mailer-daemon@mx.example.com"),
    ],
)
def test_from_parsed(name: str, from_name: str, from_addr: str) -> None:
    mail = parse_mail(fixture_bytes(name))
    assert (mail.from_name, mail.from_addr) == (from_name, from_addr)


@pytest.mark.parametrize(
    ("value", "name", "addr"),
    [
        # The name is decoded after the address is found: a comma inside it splits nothing.
        (f"{IVANOV} <ivan@example.org>", "Иванов, Иван", "ivan@example.org"),
        ("Big Bug bb@bug.com", "Big Bug", "bb@bug.com"),
        ("tim@example.com concierge@example.com", "", "tim@example.com"),
        ('"Carol" <Carol.Customer@Example.ORG>', "Carol", "carol.customer@example.org"),
        (f"{EVE_CRLF} <eve@example.net>", "Eve Bcc: x@evil.example", "eve@example.net"),
        ("undisclosed-recipients:;", "", ""),
        # An encoded word hiding ":" or "<...>" never turns into a group or an address.
        ("=?utf-8?q?Carol=00=0ABcc:_evil@example.net?= <c@example.org>", None, "c@example.org"),
        (
            "=?utf-8?q?Eve_<evil@example.net>?= <c@example.org>",
            "Eve <evil@example.net>",
            "c@example.org",
        ),
        ("=?utf-8?q?x_evil@example.net?=", "", ""),
        ("maildEW7x <c@example.org>", "maildEW7x", "c@example.org"),
    ],
)
def test_from_variants(value: str, name: str | None, addr: str) -> None:
    raw = f"From: {value}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    mail = parse_mail(raw)
    assert mail.from_addr == addr
    if name is not None:
        assert mail.from_name == name
    assert "\r" not in mail.from_name and "\n" not in mail.from_name


def test_encoded_word_never_adds_a_recipient() -> None:
    raw = (
        b"From: c@example.org\r\nTo: =?utf-8?q?a=2C_evil@example.net_<x@evil.example>?="
        b" <support@example.com>\r\nCc: =?utf-8?q?b:_evil@example.net;?= <b@example.org>\r\n"
        b"\r\nx\r\n"
    )
    mail = parse_mail(raw)
    assert (mail.to, mail.cc) == (("support@example.com",), ("b@example.org",))


def test_to_and_cc_lists() -> None:
    raw = (
        f"From: a@example.org\r\nTo: {IVANOV} <IVAN@example.org>, support@example.com\r\n"
        "Cc: undisclosed-recipients:;, b@example.org\r\n\r\nx\r\n"
    ).encode()
    mail = parse_mail(raw)
    assert mail.to == ("ivan@example.org", "support@example.com")
    assert mail.cc == ("b@example.org",)


def test_html_only_mail_gives_text_and_keeps_html_as_received() -> None:
    mail = parse_mail(fixture_bytes("html_only.eml"))
    assert "I cannot log in to the portal since the update." in mail.text
    assert "Regards,\nCarol" in mail.text
    for bad in ("document.cookie", "evil.example.net", "alert(", "font-family"):
        assert bad not in mail.text
    # Nothing renders it: it is kept as received, to be sanitised wherever it ever is.
    assert mail.html is not None and "<script" in mail.html.lower()
    assert "cannot log in" in mail.html


def test_html_to_text_blocks_and_entities() -> None:
    text = html_to_text("<div>One&nbsp;&amp; two</div><p>three<br>four</p><style>x{}</style>")
    assert text == "One & two\n\nthree\nfour"


def test_multipart_alternative_prefers_plain_text() -> None:
    mail = parse_mail(fixture_bytes("reply_gmail_en.eml"))
    assert mail.text.startswith("Thanks, the new driver fixed it.")
    assert mail.html is not None and '<blockquote class="gmail_quote"' in mail.html
    assert "\r" not in mail.text


def test_cp1251_quoted_printable_body() -> None:
    mail = parse_mail(fixture_bytes("new_cp1251_subject.eml"))
    assert "Прошу восстановить доступ к общей папке «Бухгалтерия»." in mail.text


def test_koi8r_8bit_body() -> None:
    assert "Добрый день." in parse_mail(fixture_bytes("new_koi8r_subject.eml")).text


def test_rfc2231_cyrillic_attachment_name() -> None:
    (att,) = parse_mail(fixture_bytes("attachment_filename_rfc2231_ru.eml")).attachments
    assert att.filename == "Счёт на оплату №17.pdf"
    assert att.content_type == "application/pdf"
    assert att.data.startswith(b"%PDF-1.4")


def test_attachment_path_reduced_to_base_name() -> None:
    mail = parse_mail(fixture_bytes("with_attachment_pdf.eml"))
    (att,) = mail.attachments
    assert att.filename == "passwd.pdf"
    assert att.data.startswith(b"%PDF")
    assert "Hello, the attached invoice does not match order 4711." in mail.text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\windows\\system32\\evil.exe", "evil.exe"),
        ("/etc/shadow", "shadow"),
        ("..", "attachment"),
        ("...hidden", "hidden"),
        ("", "attachment"),
        (None, "attachment"),
        ("a\x00b\r\nc.txt", "a b c.txt"),
        ("=?utf-8?B?Li4vLi4v0YTQsNC50LsudHh0?=", "файл.txt"),
        ("x" * 400 + ".pdf", "x" * 255),
    ],
)
def test_safe_filename(name: str | None, expected: str) -> None:
    result = safe_filename(name)
    assert result == expected
    assert "/" not in result and "\\" not in result and not result.startswith(".")


def test_rfc2047_and_8bit_attachment_names() -> None:
    raw = (
        "From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nСм. вложения\r\n"
        '--b\r\nContent-Type: application/pdf; name="=?utf-8?B?0JDQutGCLnBkZg==?="\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
        "--b\r\nContent-Type: text/plain\r\n"
        'Content-Disposition: attachment; filename="../Отчёт.txt"\r\n'
        "\r\nreport\r\n--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "iVBORw0KGgo=\r\n--b--\r\n"
    ).encode()
    mail = parse_mail(raw)
    assert [a.filename for a in mail.attachments] == ["Акт.pdf", "Отчёт.txt", "attachment.png"]
    assert mail.attachments[1].data == b"report"
    assert mail.text == "См. вложения"


def test_attached_message_is_one_attachment_and_not_body() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attached mail.\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
        b"From: x@example.net\r\nSubject: inner\r\n\r\nInner text.\r\n--b--\r\n"
    )
    mail = parse_mail(raw)
    assert mail.text == "See the attached mail."
    (att,) = mail.attachments
    assert (att.filename, att.content_type) == ("message.eml", "message/rfc822")
    assert b"Inner text." in att.data


def test_many_parts_over_lowered_limit() -> None:
    raw = fixture_bytes("many_parts.eml")
    with pytest.raises(LimitExceeded, match="too many MIME parts"):
        parse_mail(raw, Limits(max_parts=1000))
    assert len(parse_mail(raw, Limits(max_parts=5000)).attachments) == 1500


def test_deep_nesting_over_limit() -> None:
    raw = fixture_bytes("deep_nesting.eml")
    with pytest.raises(LimitExceeded, match="nesting too deep"):
        parse_mail(raw, Limits(max_depth=10))
    assert parse_mail(raw).text == "The real text sits 40 levels down."


def test_header_over_limit() -> None:
    raw = b"From: a@example.org\r\nX-Junk: " + b"a" * 5000 + b"\r\n\r\nbody\r\n"
    with pytest.raises(LimitExceeded, match="header is"):
        parse_mail(raw, Limits(max_header_bytes=4096))
    assert parse_mail(raw).text == "body"


def test_limit_exceeded_is_a_quarantine_reason() -> None:
    assert issubclass(LimitExceeded, QuarantineError)


def test_flanker_3043_parts_refused_before_parsing() -> None:
    path = CORPUS / "mailgun-flanker" / "tests__fixtures__messages__enclosed-endless.eml"
    if not path.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match=r"too many MIME parts \(3043 > 1000\)"):
        parse_mail(path.read_bytes())
    assert time.monotonic() - started < 0.5


def test_unknown_charset_does_not_raise() -> None:
    mail = parse_mail(fixture_bytes("unknown_charset.eml"))
    assert mail.subject == "Strange charset"
    assert mail.text.startswith("Café menu printer")


def test_broken_base64_does_not_raise() -> None:
    mail = parse_mail(fixture_bytes("broken_base64.eml"))
    assert mail.text.startswith("Hello, the scanner is broken.")
    (att,) = mail.attachments
    assert att.filename == "data.bin"
    assert att.data == bytes(range(10))


def test_base64_with_bad_padding_does_not_raise() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: pad\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/pdf; name=x.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK=\r\nA\r\n--b--\r\n"
    )
    (att,) = parse_mail(raw).attachments
    assert att.data.startswith(b"%PDF-1.4")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Счёт на оплату".encode("windows-1251"), "Счёт на оплату"),
        ("Не приходит почта".encode("koi8-r"), "Не приходит почта"),
        ("Re: Не работает принтер".encode(), "Re: Не работает принтер"),
        ("Die Hasen und die Frösche".encode("latin-1"), "Die Hasen und die Frösche"),
    ],
)
def test_raw_8bit_subject_decoded(header: bytes, expected: str) -> None:
    raw = b"From: a@example.org\r\nSubject: " + header + b"\r\n\r\nbody\r\n"
    assert parse_mail(raw).subject == expected


def test_raw_8bit_subject_follows_body_charset() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: "
        + "Прошу помочь".encode("koi8-r")
        + b"\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n"
        + "Добрый день".encode("koi8-r")
        + b"\r\n"
    )
    mail = parse_mail(raw)
    assert (mail.subject, mail.text) == ("Прошу помочь", "Добрый день")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=?koi8-r?B?7sUg0NLJyM/EydQ=?=", "Не приходит"),
        ("=?windows-1251?Q?=CD=E5=F2_=E4=EE=F1=F2=F3=EF=E0?=", "Нет доступа"),
        ("=?UTF-8?B?0J/RgNC40LLQtdGC?= =?UTF-8?B?INC80LjRgA==?=", "Привет мир"),
        # a multi-byte character split across two encoded words
        ("=?utf-8?B?0J/RgNC4?= =?utf-8?B?0LI=?=", "Прив"),
        ("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "café"),
        ("Re: =?utf-8?q?caf=C3=A9?= ok", "Re: café ok"),
        ("=?iso-8859-1?Q?Die_Hasen_und_die_Fr\udcf6sche?=", "Die Hasen und die Frösche"),
        ("=?gb2312?B?1tDOxA==?=", "中文"),
        ("=?x-unknown?Q?Strange_charset?=", "Strange charset"),
        ("=?utf-8*ru?B?0JTQsA==?=", "Да"),
        ("=?utf-8?B?bm8gcGFkZGluZw?=", "no padding"),
        ("=?bogus-charset?Q?plain?=", "plain"),
        ("=?utf-8?q?hi=0D=0ABcc:_evil@example.net?=", "hi Bcc: evil@example.net"),
        ("folded\r\n\tvalue", "folded\tvalue".replace("\t", " ")),
        ("", ""),
    ],
)
def test_decode_value(value: str, expected: str) -> None:
    assert decode_value(value) == expected


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("Привет".encode("koi8-r"), "koi8-r", "Привет"),
        ("Привет".encode(), "us-ascii", "Привет"),
        ("Привет".encode("windows-1251"), None, "Привет"),
        ("Frösche".encode("latin-1"), "utf-8", "Frösche"),
        ("中文".encode("gbk"), "gb2312", "中文"),
        (b"plain", "no-such-charset", "plain"),
        (b"plain", "base64", "plain"),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


def test_folded_boundary_finds_the_parts() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed;\r\n    boundary="----=_NextPart\r\n _000_0002"\r\n\r\n'
        b"------=_NextPart _000_0002\r\nContent-Type: text/plain\r\n\r\n"
        b"The Hare and the Tortoise\r\n"
        b"------=_NextPart _000_0002--\r\n"
    )
    assert parse_mail(raw).text == "The Hare and the Tortoise"


def test_leading_blank_line_and_bom_tolerated() -> None:
    raw = b"\xef\xbb\xbf   \r\nFrom: a@example.org\r\nSubject: padded\r\n\r\nbody\r\n"
    mail = parse_mail(raw)
    assert (mail.subject, mail.from_addr, mail.text) == ("padded", "a@example.org", "body")


def test_no_surrogates_or_nul_reach_the_result() -> None:
    raw = (
        b"From: J\xf6hn <j\xf6hn@example.org>\r\nTo: \xff@example.org, ok@example.org\r\n"
        b"Subject: \xff\xfe\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnul\x00here\r\n"
    )
    mail = parse_mail(raw)
    for value in (mail.subject, mail.from_name, mail.from_addr, mail.text, *mail.to):
        value.encode("utf-8")  # raises on a lone surrogate
    assert mail.text == "nulhere"
    assert "ok@example.org" in mail.to


def test_message_id_and_references() -> None:
    mail = parse_mail(fixture_bytes("reply_gmail_en.eml"))
    assert mail.message_id and mail.message_id.startswith("<")
    assert "<ack-1@support.example.com>" in mail.in_reply_to + mail.references
    assert parse_mail(fixture_bytes("no_message_id.eml")).message_id is None


def test_report_type() -> None:
    mail = parse_mail(fixture_bytes("bounce_dsn_postfix.eml"))
    assert (mail.content_type, mail.report_type) == ("multipart/report", "delivery-status")
