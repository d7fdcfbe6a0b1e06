"""The read-only board by magic link: valid, expired and tampered links, the session cookie,
filters, one request in full, figures, escaping; and a headless Chromium that opens it."""

from __future__ import annotations

import asyncio
import http.cookiejar
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import aiohttp
import pytest
from chromium import CHROMIUM, chromium, new_page
from conftest import RunningDaemon, make_mail
from sqlalchemy import select, update

from maild.config import Config
from maild.security.signing import LINK, SESSION, LinkError, board_url, make_token, read_token
from maild.store.db import Database
from maild.store.models import Outbox, Ticket

KEY = "test-secret-key-0123456789"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_link_valid_expired_tampered_and_no_session_as_link() -> None:
    url = board_url("http://desk.example.com/", KEY, "Anna@example.com", NOW, 12)
    assert url.startswith("http://desk.example.com/board/login/")
    token = url.rsplit("/", 1)[1]
    assert read_token(KEY, LINK, token, NOW + timedelta(hours=11))[0] == "anna@example.com"
    with pytest.raises(LinkError, match="expired"):
        read_token(KEY, LINK, token, NOW + timedelta(hours=12))
    other = make_token(KEY, LINK, "boris@example.com", NOW + timedelta(hours=12))
    forged = other.split(".")[0] + "." + ".".join(token.split(".")[1:])
    for bad in (forged, token[:-2] + "AA", token.replace(".", "x", 1), "", "a.b.c"):
        with pytest.raises(LinkError, match="invalid"):
            read_token(KEY, LINK, bad, NOW)
    with pytest.raises(LinkError, match="invalid"):  # a cookie is never a link, nor the reverse
        read_token(KEY, LINK, make_token(KEY, SESSION, "anna@example.com", NOW + timedelta(1)), NOW)
    with pytest.raises(LinkError, match="invalid"):
        read_token("another-secret-key-0000", LINK, token, NOW)


@pytest.fixture
def board(
    make_config: Callable[..., Config],  # noqa: ARG001 (set up before this fixture)
    db: Database,
    ingest: Callable[..., int],
    running: Callable[..., RunningDaemon],
) -> tuple[RunningDaemon, str]:
    ingest(make_mail("Printer <script>alert(1)</script>", "ann@client.org", "It prints nothing."))
    ingest(make_mail("VPN drops", "bob@client.org", "Every hour."))
    notice = _notification(db)
    mid = notice["Message-ID"]
    note = make_mail(
        "Re: note",
        sender="anna@example.com",
        body="#note\nCustomer is a <b>VIP</b>, be gentle.",
        extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n",
    )
    ingest(note)
    with db.write() as s:
        s.execute(update(Ticket).where(Ticket.id == 2).values(priority="urgent", type="incident"))
    daemon = running()
    assert daemon.daemon is not None
    return daemon, f"http://127.0.0.1:{daemon.daemon.web_port}"


def _notification(db: Database) -> EmailMessage:
    with db.session() as s:
        raw = s.scalar(
            select(Outbox.raw).where(
                Outbox.kind == "notify", Outbox.recipients == "anna@example.com"
            )
        )
    assert raw is not None
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def _link(base: str, agent: str = "anna@example.com", hours: float = 12) -> str:
    return board_url(base, KEY, agent, datetime.now(UTC), hours)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def _status(opener: urllib.request.OpenerDirector, url: str) -> int:
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_board_by_link_sets_a_strict_cookie_then_shows_queue_request_and_figures(
    board: tuple[RunningDaemon, str],
) -> None:
    _, base = board
    opener = _opener()
    assert _status(opener, base + "/board") == 401  # no password form, no session
    with opener.open(_link(base), timeout=10) as response:
        page = response.read().decode()
        cookie = response.headers["Set-Cookie"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert 'http-equiv="refresh" content="0; url=/board"' in page
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/board" in cookie
    assert "Secure" not in cookie  # base_url is http here
    with opener.open(base + "/board", timeout=10) as response:
        queue = response.read().decode()
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "#1" in queue and "#2" in queue and "VPN drops" in queue
    assert "<script>alert(1)</script>" not in queue and "&lt;script&gt;" in queue
    urgent = opener.open(base + "/board?priority=urgent&type=incident", timeout=10).read()
    assert b"VPN drops" in urgent and b"#1<" not in urgent
    found = opener.open(base + "/board?q=hour&status=any", timeout=10).read()
    assert b"VPN drops" in found and b"Printer" not in found
    mine = opener.open(base + "/board?assignee=anna%40example.com", timeout=10).read()
    assert b"Nothing here." in mine
    one = opener.open(base + "/board/request/1", timeout=10).read().decode()
    assert "(internal)" in one and "Customer is a &lt;b&gt;VIP&lt;/b&gt;" in one
    assert "History" in one and "created" in one and "note" in one
    assert _status(opener, base + "/board/request/99") == 404
    figures = opener.open(base + "/board/stats", timeout=10).read().decode()
    assert "2 requests." in figures


def test_expired_tampered_and_stranger_links_open_nothing(
    board: tuple[RunningDaemon, str],
) -> None:
    _, base = board
    expired = board_url(base, KEY, "anna@example.com", datetime.now(UTC) - timedelta(hours=13), 12)
    opener = _opener()
    assert _status(opener, expired) == 410
    valid = _link(base)
    assert _status(opener, valid[:-3] + "AAA") == 403
    assert _status(opener, _link(base, "stranger@example.org")) == 403
    assert _status(opener, base + "/board") == 401  # none of them left a session


@pytest.mark.usefixtures("db")
def test_cookie_is_secure_when_base_url_is_https(
    make_config: Callable[..., Config], running: Callable[..., RunningDaemon]
) -> None:
    daemon = running(make_config(web={"base_url": "https://desk.example.com"}))
    assert daemon.daemon is not None
    base = f"http://127.0.0.1:{daemon.daemon.web_port}"
    with urllib.request.urlopen(_link(base), timeout=10) as response:
        assert "Secure" in response.headers["Set-Cookie"]


def test_digest_carries_a_board_link_that_opens(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    from maild.scheduler.digest import sweep_digest

    daemon = running()
    assert daemon.daemon is not None
    base = f"http://127.0.0.1:{daemon.daemon.web_port}"
    config = make_config(digest={"at": "00:00"}, web={"base_url": base, "board_hours": 2})
    # A working day at 10:00 desk time, today, so that the link's two hours are still ahead.
    now = datetime.now(UTC)
    assert sweep_digest(db, config, now) in (0, 2)  # 0 on a day off in Moscow
    with db.session() as s:
        raw = s.scalar(select(Outbox.raw).where(Outbox.kind == "digest"))
    if raw is None:
        pytest.skip("today is not a working day at the desk")
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "the link works for 2 hours" in text
    link = next(w for w in text.split() if w.startswith(base + "/board/login/"))
    opener = _opener()
    assert _status(opener, link) == 200 and _status(opener, base + "/board") == 200


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium")
def test_headless_chromium_opens_the_board_and_a_request(
    board: tuple[RunningDaemon, str], tmp_path: Path
) -> None:
    _, base = board
    link = _link(base)

    async def browse(devtools: str) -> tuple[str, str, str]:
        async with aiohttp.ClientSession() as session:
            page = await new_page(session, devtools)
            await page.call("Page.enable")
            queue = await page.open(link, "/board")
            url = await page.evaluate("location.href")
            one = await page.open(base + "/board/request/1", "/board/request/1")
            cookie_js = await page.evaluate("document.cookie")
            await page.ws.close()
            return queue, one, f"{url}|{cookie_js}"

    with chromium(tmp_path / "profile") as devtools:
        queue, one, seen = asyncio.run(browse(devtools))
    url, cookie_js = seen.split("|", 1)
    assert url == base + "/board"  # the token is gone from the address bar
    assert cookie_js == ""  # HttpOnly: scripts cannot read the session
    assert "VPN drops" in queue and "Printer <script>alert(1)</script>" in queue  # as text
    assert "Customer is a <b>VIP</b>, be gentle." in one and "(internal)" in one
