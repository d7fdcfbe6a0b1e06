"""Hostile HTML (deep nesting, unclosed tags) is read in linear time by the parse step."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest

from maild.ingest.html2text import html_to_text
from maild.ingest.parse import parse_mail

SIZES = (20_000, 40_000, 80_000, 160_000)  # the old code: about 0.5, 2, 8 and 35 s and more


def nested(n: int) -> str:
    return "<html><body><p>before</p>" + "<div>" * n + "deep" + "</div>" * n + "</body></html>"


def unclosed(n: int) -> str:
    """Start tags that never end: Python's html.parser rescans the rest for each one."""
    return "<p>before</p>" + '<a b="' * n


def mail(html: str, *, alternative: bool) -> bytes:
    head = (
        "From: eve@example.org\r\nTo: support@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    )
    if not alternative:
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()
    return (
        head + 'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe plain text\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b--\r\n"
    ).encode()


def seconds(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


@pytest.mark.timeout(60)
@pytest.mark.parametrize("build", [nested, unclosed])
@pytest.mark.parametrize("alternative", [False, True])
def test_hostile_html_is_parsed_in_linear_time(
    build: Callable[[int], str], alternative: bool
) -> None:
    took = []
    for n in SIZES:
        raw = mail(build(n), alternative=alternative)
        took.append(seconds(partial(parse_mail, raw)))
    # Eight times the input, at most about eight times the time (and never long).
    assert took[-1] < 2.0, took
    assert took[-1] < 8 * 3 * took[0] + 0.3, took


def test_nested_html_keeps_text_before_the_depth_limit() -> None:
    parsed = parse_mail(mail(nested(150_000), alternative=False))
    assert parsed.text.startswith("before")
    assert parsed.html is not None and len(parsed.html) > 1_500_000  # kept as received


def test_ordinary_html_text() -> None:
    html = "<table><tr><td>a</td></tr><tr><td>b &lt;c&gt;</td></tr></table><!-- x -->end"
    assert html_to_text(html) == "a\n\nb <c>\n\nend"
    assert html_to_text("<!-- only a comment -->") == ""
    assert html_to_text("no markup & no tags") == "no markup & no tags"
