"""Tests for maild.replies.quotes: quote, signature and footer stripping of reply bodies."""

from __future__ import annotations

import email
import email.policy
import os
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from maild.replies.quotes import split_signature, strip_quoted

CORPUS = Path(
    os.environ.get("MAILD_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
ZAPIER = CORPUS / "zapier-email-reply-parser-BODIES"
TALON = CORPUS / "mailgun-talon"

# (name, input, exact expected output)
CASES: list[tuple[str, str, str]] = [
    ("plain-text", "Hello,\nmy printer is broken.\n", "Hello,\nmy printer is broken."),
    (
        "gmail-en",
        "Thanks, it works now.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <megan@example.com>"
        " wrote:\n\n> Please try again.\n",
        "Thanks, it works now.",
    ),
    (
        "gmail-wrapped-2-lines",
        ":+1:\n\nOn Tue, Sep 25, 2012 at 8:59 AM, Chris Wanstrath\n<notifications@example.com>"
        "wrote:\n\n> Steps 0-2 are in prod.\n",
        ":+1:",
    ),
    (
        "gmail-wrapped-3-lines",
        "Same here.\n\nOn Dec 16, 2011, at 12:47 PM, Corey Donohoe\n<reply@example.com>\nwrote:"
        "\n\n> Was this caching related?\n",
        "Same here.",
    ),
    (
        "apple-mail",
        "Hello\n\nOn Apr 3, 2012, at 4:19 PM, bob wrote:\n\n> Hi\n",
        "Hello",
    ),
    (
        "apple-mail-quoted-header",
        "Hello\n> On 22 Aug 2015, at 19:21, Adam <adam@example.com> wrote:\n>\n> Hi there!\n\n",
        "Hello",
    ),
    (
        "iphone",
        "Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob <bob@example.com>"
        " wrote:\n\n> Hi\n",
        "Hello",
    ),
    (
        "android-en",
        "Will do.\n\nSent from my Android\n\nOn Mon, 2 Apr 2012, 18:26 Bob <bob@example.com>"
        " wrote:\n> Can you check?\n",
        "Will do.",
    ),
    (
        "android-ru-wrapped",
        'Привет\n02.04.2012 14:20 пользователь "bob@example.com" <\nbob@example.com> написал:'
        "\n\n> Hi\n>\n\n",
        "Привет",
    ),
    (
        "thunderbird-ru",
        "Спасибо, всё работает.\n\n01.02.2020 12:34, Иван Иванов пишет:\n> Попробуйте ещё раз.\n",
        "Спасибо, всё работает.",
    ),
    (
        "thunderbird-en",
        "Fixed, thanks.\n\nOn 04/02/2012 06:26 PM, Megan One wrote:\n> Hi\n",
        "Fixed, thanks.",
    ),
    (
        "yandex",
        'Да, заказ 1234.\n\n12.03.2021, 10:15, "Иван Петров" <ivan@yandex.ru>:\n> Какой номер?\n',
        "Да, заказ 1234.",
    ),
    (
        "mail-ru-mobile",
        "Получил, спасибо.\n\nОтправлено из мобильной Почты Mail.ru\n\n"
        "Среда, 15 января 2020, 12:00 +03:00 от Иван Петров <ivan@mail.ru>:\n\n> Отправили.\n",
        "Получил, спасибо.",
    ),
    (
        "gmail-ru",
        "Да.\n\nпн, 2 мар. 2020 г. в 10:00, Иван Петров <ivan@example.com>:\n\n> Удобно?\n",
        "Да.",
    ),
    (
        "undated-ru-with-address",
        "Принято.\n\nИван Петров <ivan@example.com> написал(а):\n> Вопрос\n",
        "Принято.",
    ),
    (
        "german",
        "Danke!\n\nAm 02.04.2012 um 18:26 schrieb Bob <bob@example.com>:\n\n> Hallo\n",
        "Danke!",
    ),
    (
        "french",
        "Merci.\n\nLe 2 avr. 2012 à 18:26, Bob <bob@example.com> a écrit :\n\n> Bonjour\n",
        "Merci.",
    ),
    (
        "outlook-en-underscores",
        "Reply above the line\n________________________________________\nFrom: CRM"
        " [crm@example.com]\nSent: Friday, 23 March 2012 5:08 p.m.\nTo: John\nSubject: Hi\n\nOld",
        "Reply above the line",
    ),
    (
        "outlook-en-no-separator",
        "And another reply!\n\nFrom: Dan Watson [mailto:user@example.com]\nSent: Monday, November"
        " 26, 2012 10:48 AM\nTo: Watson, Dan\nSubject: Re: New Issue\n\nA reply\n",
        "And another reply!",
    ),
    (
        "outlook-bold-dash-separator",
        "Outlook with a reply\n\n\n ------------------------------\n\n*From:* Sync Team"
        " [mailto:noreply@example.com]\n*Sent:* Thursday, February 09, 2012 1:36 PM\n*To:*"
        " jow@example.com\n\nDear user,\n",
        "Outlook with a reply",
    ),
    (
        "outlook-ru",
        "Добрый день, проверили.\n\nОт: Иван Петров [mailto:ivan@example.com]\nОтправлено:"
        " 2 марта 2020 г. 10:00\nКому: support@example.com\nТема: Заказ\n\nСтарый текст\n",
        "Добрый день, проверили.",
    ),
    (
        "outlook-ru-underscores",
        "Готово.\n\n________________________________\nОт: Иван Петров\nОтправлено: 2 марта 2020"
        " г. 10:00\nКому: support@example.com\nТема: Заказ\n\nСтарый текст\n",
        "Готово.",
    ),
    (
        "original-message-aol",
        "Hello\n\n\n\n-----Original Message-----\nFrom: bob <bob@example.com>\nTo: x\nSent: Mon,"
        " Apr 2, 2012 5:49 pm\nSubject: Test\n\n\nHi\n",
        "Hello",
    ),
    (
        "original-message-thunderbird",
        "Ok\n\n-------- Original Message --------\nSubject: Test\nDate: Mon, 2 Apr 2012\n\nHi\n",
        "Ok",
    ),
    (
        "forwarded-ru",
        "Смотрите ниже.\n\n-------- Пересылаемое сообщение --------\n02.04.2020, 10:00,"
        ' "Иван" <ivan@example.com>:\nТекст\n',
        "Смотрите ниже.",
    ),
    (
        "begin-forwarded-message",
        "FYI\n\nBegin forwarded message:\n\nFrom: Bob <bob@example.com>\nDate: 2 April 2012\n\nHi",
        "FYI",
    ),
    (
        "trailing-quotes-without-header",
        "Hello\n\n> Subject: Test\n> From: bob@example.com\n> \n> Hi\n \t\t \t\n",
        "Hello",
    ),
    (
        "interleaved-top-header",
        "On Tue, Apr 29, 2014 at 4:22 PM, Dev <dev@example.com> wrote:\n\n> First question?\n\n"
        "First answer.\n\n> Second question?\n\nSecond answer.\n\n> Bye\n> -- Tim\n",
        "> First question?\n\nFirst answer.\n\n> Second question?\n\nSecond answer.",
    ),
    (
        "interleaved-after-greeting",
        "Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Ann wrote:\n> How do I clear a bucket?\n\n"
        "List the keys and delete each.\n\n> \n> -Ann\n",
        "Hi,\n> How do I clear a bucket?\n\nList the keys and delete each.",
    ),
    (
        "bottom-post",
        "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi \nHello",
        "> Hi \nHello",
    ),
    (
        "top-post-signature-below-quote",
        "Thanks\n\nOn 04/02/2012 06:26 PM, Megan One wrote:\n> Hi\n\n-- \nJohn Smith\nACME\n",
        "Thanks",
    ),
    (
        "signature-dash-dash-space",
        "this is an email with a correct -- signature.\n\n-- \nrick\n",
        "this is an email with a correct -- signature.",
    ),
    (
        "signature-dash-dash-then-quote",
        "I will reply here.\n\n--\nHey there, this is my signature\n\n> old text\n",
        "I will reply here.",
    ),
    (
        "wrote-in-sentence",
        "I wrote the patch yesterday.\nHere is what Bob wrote:\nplease check the logs.\n",
        "I wrote the patch yesterday.\nHere is what Bob wrote:\nplease check the logs.",
    ),
    (
        "on-without-date",
        "On Monday, the team wrote:\nwe ship on Friday.\n",
        "On Monday, the team wrote:\nwe ship on Friday.",
    ),
    (
        "on-sentence-with-colon",
        "On your remote host you can run:\n\n    telnet 127.0.0.1 52698\n",
        "On your remote host you can run:\n\n    telnet 127.0.0.1 52698",
    ),
    (
        "from-in-text",
        "From: the first day, the export has failed.\nTo: be honest, I am tired.\nPlease help.\n",
        "From: the first day, the export has failed.\nTo: be honest, I am tired.\nPlease help.",
    ),
    (
        "crlf",
        "Line one\r\n\r\nLine two\r\n\r\nOn Mon, Apr 2, 2012 at 6:26 PM, A <a@example.com>"
        " wrote:\r\n> old\r\n",
        "Line one\n\nLine two",
    ),
    (
        "all-quoted",
        "\n> only quoted\n> text\n\n",
        "> only quoted\n> text",
    ),
    (
        "header-and-quote-only",
        "On Mon, Apr 2, 2012 at 6:26 PM, A <a@example.com> wrote:\n> old\n",
        "On Mon, Apr 2, 2012 at 6:26 PM, A <a@example.com> wrote:\n> old",
    ),
    ("only-signature", "-- \nrick\n", "-- \nrick"),
    ("get-outlook-ios", "Sure.\n\nGet Outlook for iOS\n", "Sure."),
    ("ru-iphone-footer", "Хорошо.\n\nОтправлено с iPhone\n", "Хорошо."),
    (
        "sent-from-my-sentence-kept",
        "Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
        "Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
    ),
    (
        "blank-lines",
        "\n\n  \nFirst paragraph.\n\n\nSecond paragraph.\n\n\n\n",
        "First paragraph.\n\n\nSecond paragraph.",
    ),
    (
        "mailing-list-footer",
        "Hi folks\n\n-Abhishek\n\n\n_______________________________________________\n"
        "riak-users mailing list\nriak-users@example.com\nhttp://lists.example.com/listinfo\n",
        "Hi folks\n\n-Abhishek",
    ),
    (
        "dash-dash-mid-line-kept",
        "And here is a fix -- this is not a signature.\n\nkthxbai",
        "And here is a fix -- this is not a signature.\n\nkthxbai",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_strip_quoted_cases(text: str, expected: str) -> None:
    assert strip_quoted(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Body\n\n-- \nJohn\nACME\n\n", ("Body", "John\nACME")),
        ("Body\r\n--\r\nJohn\r\n", ("Body", "John")),
        ("No delimiter here -- at all\n", ("No delimiter here -- at all", "")),
        ("A\n--\nnot sig?\n-- \nReal sig\n", ("A\n--\nnot sig?", "Real sig")),
        ("-- \nonly\n", ("", "only")),
        ("", ("", "")),
    ],
)
def test_split_signature(text: str, expected: tuple[str, str]) -> None:
    assert split_signature(text) == expected


@pytest.mark.parametrize(
    "hostile",
    [
        " " * 1_000_000,
        "@" * 1_000_000 + ":",
        "a " * 500_000 + "wrote:",
        "On 1 May\n" * 100_000,
        "From: x\nSent: y\n" * 60_000,
        "On 1 May, a <a@b.c> wrote:\n> q\nanswer\n" * 25_000,
        "--\n" * 300_000,
        ("_" * 30 + "\nmailing list\n") * 25_000,
        "x\r" * 500_000,
    ],
    ids=["spaces", "at", "a-space", "on", "outlook", "interleaved", "sig", "list", "cr"],
)
def test_linear_time_on_hostile_input(hostile: str) -> None:
    started = time.perf_counter()
    strip_quoted(hostile)
    split_signature(hostile)
    assert time.perf_counter() - started < 5.0


def _corpus_files(folder: Path) -> list[Path | None]:
    """The folder's files, or [None] so the test reports a skip with its reason."""
    if not folder.is_dir():
        return [None]
    return [p for p in sorted(folder.iterdir()) if p.is_file()]


def _skip_if_absent(path: Path | None) -> Path:
    if path is None:
        pytest.skip(f"mail corpus not found at {CORPUS} (set MAILD_CORPUS to its folder)")
    return path


def _plain_body(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("plain",))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _check_sane(text: str, result: str) -> None:
    assert result.strip()
    assert len(result) <= len(text)
    assert not result.splitlines()[-1].startswith(">")


# Whole expected results for bodies inspected by hand (file name suffix -> result).
ZAPIER_EXPECTED = {
    "correct_sig.txt": "this is an email with a correct -- signature.",
    "email_1_3.txt": "Oh thanks.\n\nHaving the function would be great.\n\n-Abhishek Kona",
    "email_1_4.txt": "Awesome! I haven't had another problem with it.",
    "email_1_7.txt": ":+1:",
    "email_2_1.txt": "Outlook with a reply",
    "email_2_2.txt": "Outlook with a reply directly above line",
    "email_2_3.txt": "Outlook with a reply above headers using unusual format",
    "email_BlackBerry.txt": "Here is another email",
    "email_gmail.txt": "This is a test for inbox replying to a github message.",
    "email_headers_no_delimiter.txt": "And another reply!",
    "email_iPhone.txt": "Here is another email",
    "email_multi_word_sent_from_my_mobile_device.txt": "Here is another email",
}
# Expected first and last lines for longer ones.
ZAPIER_ENDS = {
    "email_1_1.txt": ("Hi folks", "-Abhishek Kona"),
    "email_1_2.txt": ("Hi,", 'the keys in a bucket, you’ll need to delete them all individually."'),
    "email_1_8.txt": ("> okay.  Well, here's some stuff I can write.", "and under this."),
    "email_bullets.txt": ("test 2 this should list second", "   - and another"),
    "email_one_is_not_on.txt": (
        "Thank, this is really helpful.",
        "Locally (on development), when I run...",
    ),
    "greedy_on.txt": ("On your remote host you can run:", "fails, the tunnel is not working."),
    "pathological.txt": (
        "I think you're onto something. I will try to fix the problem as soon as I",
        "get back to a computer.",
    ),
}


@pytest.mark.parametrize(
    "path", _corpus_files(ZAPIER), ids=lambda p: p.name.split("__")[-1] if p else "absent"
)
def test_zapier_bodies(path: Path | None) -> None:
    path = _skip_if_absent(path)
    text = path.read_text(encoding="utf-8")
    result = strip_quoted(text)
    _check_sane(text, result)
    name = path.name.split("__")[-1]
    if name in ZAPIER_EXPECTED:
        assert result == ZAPIER_EXPECTED[name]
    if name in ZAPIER_ENDS:
        lines = result.splitlines()
        assert (lines[0], lines[-1]) == ZAPIER_ENDS[name]


@pytest.mark.parametrize(
    "path", _corpus_files(TALON), ids=lambda p: p.name.split("__")[-1] if p else "absent"
)
def test_talon_messages(path: Path | None) -> None:
    path = _skip_if_absent(path)
    text = _plain_body(path)
    result = strip_quoted(text)
    _check_sane(text, result)
    if path.name.endswith("thunderbird.eml"):  # bottom-posted: the quote is answered below
        assert result == "> Hi \nHello"
    else:
        assert result == "Hello"
