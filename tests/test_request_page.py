"""The customer's request page (issue 14) over real HTTP, and opened in headless Chromium."""

from __future__ import annotations

import asyncio
import html as html_lib
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from browser import dom, need_chromium, screenshot
from clockkit import deliver_at, events, outbox
from customerkit import PAGE, customer_mails, desk_config, notification, plain
from sqlalchemy import func, select

from maild.config import Config
from maild.core.clock import as_utc, system_clock
from maild.security.signing import page_token
from maild.store.db import Database
from maild.store.models import Attachment, Event, Message, Outbox, Ticket
from maild.web.app import start_web
from maild.web.survey import HEADERS

NOW = system_clock()
EARLIER = NOW - timedelta(hours=2)
SECRET_NOTE = "internal: the customer is difficult"
DEPT_TEXT = "Department says: driver 5.1 is broken"


class Server:
    """The daemon's real aiohttp app on a private loop in a thread."""

    def __init__(self, db: Database, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = asyncio.run_coroutine_threadsafe(
            start_web(db, "127.0.0.1", 0, config), self._start()
        ).result(30)
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def _start(self) -> asyncio.AbstractEventLoop:
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        return self.loop

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _mail(sender: str, subject: str, body: str, **kw: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", subject
    msg["Message-ID"] = make_msgid(domain="client.example.org")
    for name, value in kw.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def _with_file(msg: EmailMessage, name: str, data: bytes) -> bytes:
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def _answer(db: Database, config: Config, number: int, sender: str, body: str, **kw: bytes) -> None:
    """An answer to the mail ``sender`` got about ``number`` (notification or escalation)."""
    kind = "notify" if sender.startswith("anna") else "escalation"
    row = [r for r in outbox(db, kind) if r.ticket_id == number and r.recipients == sender][-1]
    parent = notification(db, number) if kind == "notify" else None
    mid = parent["Message-ID"] if parent is not None else row.message_id
    msg = _mail(sender, f"Re: [Support #{number}] x", body, In_Reply_To=mid, References=mid)
    raw = _with_file(msg, *next(iter(kw.items()))) if kw else msg.as_bytes()
    deliver_at(db, config, raw, EARLIER + timedelta(minutes=30))


def conversation(db: Database, config: Config, language: str) -> tuple[int, str]:
    """A request with everything a page must show, and everything it must never show."""
    subject, body = (
        ("Не печатает принтер", "Принтер совсем ничего не печатает. Счёт во вложении.")
        if language == "ru"
        else ("Printer is broken", "It prints nothing at all. The invoice is attached.")
    )
    raw = _with_file(_mail("customer@example.org", subject, body), "счёт.pdf", b"%PDF-1.4 bill")
    deliver_at(db, config, raw, EARLIER)
    with db.session() as s:
        number = int(s.scalar(select(func.max(Ticket.id))) or 0)
    _answer(db, config, number, "anna@example.com", "Try this driver.", **{"fix.txt": b"driver"})
    _answer(db, config, number, "anna@example.com", f"#note\n{SECRET_NOTE}")
    _answer(db, config, number, "anna@example.com", "#frobnicate\nnever sent")
    _answer(db, config, number, "anna@example.com", "#escalate tech check the driver\nChecking.")
    _answer(db, config, number, "tech@example.com", DEPT_TEXT, **{"dept.log": b"secret log"})
    link = PAGE.search(plain(customer_mails(db, number)[-1]))
    assert link, "no page link in the last mail to the customer"
    return number, link.group(1)


@pytest.fixture
def served(db: Database, tmp_path: Path, db_url: str) -> Iterator[tuple[Server, Config]]:
    config = desk_config(db_url, tmp_path)
    server = Server(db, config)
    yield server, config
    server.stop()


def _state(db: Database) -> tuple[int, ...]:
    with db.session() as s:
        counts = tuple(
            int(s.scalar(select(func.count()).select_from(m)) or 0)
            for m in (Event, Outbox, Message, Attachment)
        )
        stamps = tuple(t.updated_at.timestamp() for t in s.scalars(select(Ticket)))
    return counts + tuple(int(x) for x in stamps)


@pytest.mark.parametrize(
    ("language", "shown"),
    [
        (
            "ru",
            (
                "Не печатает принтер",
                "Статус: передан в другой отдел",
                "Мы подключили технического инженера",
                "Вы",
                "Anna",
                "Try this driver.",
                "fix.txt",
                "счёт.pdf",
                "Чтобы добавить комментарий, просто ответьте",
            ),
        ),
        (
            "en",
            (
                "Printer is broken",
                "Status: passed to another department",
                "We brought in технического инженера",
                "You",
                "Anna",
                "Try this driver.",
                "fix.txt",
                "счёт.pdf",
                "To add a comment, just reply",
            ),
        ),
    ],
)
def test_page_shows_the_public_conversation_only(
    db: Database, served: tuple[Server, Config], language: str, shown: tuple[str, ...]
) -> None:
    server, config = served
    _, path = conversation(db, config, language)
    before = _state(db)
    status, headers, body = server.get(path)
    page = body.decode()
    assert status == 200
    for name, value in HEADERS.items():
        assert headers[name] == value
    text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    for words in shown:
        assert words in text, words
    for secret in (SECRET_NOTE, DEPT_TEXT, "dept.log", "frobnicate", "tech@example.com"):
        assert secret not in page, secret
    assert _state(db) == before  # GET changed nothing
    assert server.get(path, "POST")[0] == 405


def test_attachments_download_through_the_signed_link_only(
    db: Database, served: tuple[Server, Config]
) -> None:
    server, config = served
    _, path = conversation(db, config, "en")
    with db.session() as s:
        ids = {a.filename: a.id for a in s.scalars(select(Attachment))}
    status, headers, data = server.get(f"{path}/a/{ids['fix.txt']}")
    assert (status, data) == (200, b"driver")
    assert headers["Content-Disposition"].startswith('attachment; filename="fix.txt"')
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert server.get(f"{path}/a/{ids['счёт.pdf']}")[2] == b"%PDF-1.4 bill"
    assert server.get(f"{path}/a/{ids['dept.log']}")[0] == 404  # the department's own file
    other, _ = conversation(db, config, "ru")
    mine_on_other = f"/r/{other}/{path.rsplit('/', 1)[1]}/a/{ids['fix.txt']}"
    assert server.get(mine_on_other)[0] == 403  # the token is this request's only


def test_forged_altered_and_expired_tokens_are_refused(
    db: Database, served: tuple[Server, Config]
) -> None:
    server, config = served
    number, path = conversation(db, config, "en")
    token = path.rsplit("/", 1)[1]
    expires, sig = token.split(".")
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert server.get(f"/r/{number}/{expires}.{flipped}")[0] == 403
    assert server.get(f"/r/{number}/{int(expires) + 1}.{sig}")[0] == 403
    assert server.get(f"/r/{number + 1}/{token}")[0] == 403
    past = int((NOW - timedelta(minutes=1)).timestamp())
    status, _, body = server.get(f"/r/{number}/{page_token(config.secret_key, number, past)}")
    assert status == 410 and b"expired" in body.lower()  # an English request: English page
    assert server.get(f"/r/{number}/nonsense")[0] == 404


def test_page_link_lives_page_days(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk_config(db_url, tmp_path, web={"page_days": 10})
    number, path = conversation(db, config, "en")
    expires = int(path.rsplit("/", 1)[1].split(".")[0])
    sent = as_utc(customer_mails(db, number)[-1].created_at)
    assert abs(expires - (sent.timestamp() + 10 * 86400)) < 5
    # Agents and departments never get the customer's link.
    for row in outbox(db):
        if row.kind in ("notify", "escalation", "command-error"):
            assert b"/r/" not in row.raw
    assert events(db, number, "escalated")


@pytest.mark.parametrize("language", ["ru", "en"])
def test_page_in_headless_chromium(
    db: Database, served: tuple[Server, Config], language: str
) -> None:
    need_chromium()
    server, config = served
    _, path = conversation(db, config, language)
    built = dom(server.base + path)
    assert "Try this driver." in built and "fix.txt" in built
    assert SECRET_NOTE not in built
    assert ("передан в другой отдел" if language == "ru" else "passed to another") in built
    shot = screenshot(server.base + path, f"request-page-{language}")
    assert shot.stat().st_size > 10_000
