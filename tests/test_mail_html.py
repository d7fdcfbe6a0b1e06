"""Every customer mail's HTML part in the desk's layout, rendered by headless Chromium (issue 14).

The screenshots stay in var/screenshots/ (or $MAILD_SCREENSHOTS) as artefacts of the run.
"""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta
from pathlib import Path

import pytest
from browser import SHOTS, dom, need_chromium, screenshot
from clockkit import create_at, msk
from customerkit import PAGE, RU_BODY, agent_says, customer_mails, desk_config, html, plain

from maild.replies.render import Renderer
from maild.replies.scheduled import Notices
from maild.store.db import Database
from maild.store.models import Ticket

MONDAY_10 = msk(2026, 11, 23, 10, 0)
SCHEDULED = ("hold_customer", "pending_reminder", "pending_autosolved", "survey", "sla_delay")
KINDS = ("ack", "agent-reply", "hold-interim", *SCHEDULED)
READS = {
    "ru": ("Запрос #{n}", "Статус:", "Открыть запрос на сайте", "Чтобы добавить комментарий"),
    "en": ("Request #{n}", "Status:", "Open your request", "To add a comment"),
}


def _every_kind(db: Database, config: object, language: str) -> int:
    subject, body = (
        ("Не печатает принтер", RU_BODY) if language == "ru" else ("Printer", "Prints nothing.")
    )
    number = create_at(db, config, MONDAY_10, subject, body=body)  # type: ignore[arg-type]
    agent_says(db, config, number, "#status solved\nReinstalled the driver.", MONDAY_10)  # type: ignore[arg-type]
    agent_says(db, config, number, "#escalate tech", MONDAY_10 + timedelta(hours=1))  # type: ignore[arg-type]
    notices = Notices(config, Renderer(), MONDAY_10 + timedelta(hours=2))  # type: ignore[arg-type]
    extra = {
        "pending_autosolved": {"days": 7},
        "survey": {"good_url": "https://x/good", "bad_url": "https://x/bad", "expires": MONDAY_10},
        "sla_delay": {"new_time": "завтра до 12:00 MSK" if language == "ru" else "tomorrow"},
    }
    with db.write() as s:
        t = s.get(Ticket, number)
        assert t is not None
        for kind in SCHEDULED:
            notices.to_customer(s, t, kind, **extra.get(kind, {}))
    return number


def _visible(markup: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


@pytest.mark.parametrize("language", ["ru", "en"])
def test_each_customer_mail_in_the_layout_rendered_by_chromium(
    db: Database, tmp_path: Path, db_url: str, language: str
) -> None:
    need_chromium()
    config = desk_config(db_url, tmp_path)
    number = _every_kind(db, config, language)
    rows = {r.kind: r for r in customer_mails(db, number)}
    assert set(KINDS) <= set(rows), sorted(rows)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        markup, text = html(rows[kind]), plain(rows[kind])
        assert "<style" not in markup and "font-family:-apple-system" in markup  # inline CSS
        assert 'name="viewport"' in markup and "max-width:600px" in markup  # phone-readable
        seen = _visible(markup)
        for words in (config.desk.name, *READS[language]):
            assert words.format(n=number) in seen, (kind, words)
        link = PAGE.search(text)  # the text part is complete on its own: the same link
        assert link and f'href="http://desk.example.com{link.group(1)}"' in markup, kind
        page = SHOTS / f"mail-{language}-{kind}.html"
        page.write_text(markup, encoding="utf-8")
        screenshot(page.as_uri(), f"mail-{language}-{kind}")
    # What Chromium built keeps the button and the status in words.
    built = dom((SHOTS / f"mail-{language}-ack.html").as_uri())
    assert READS[language][2] in built
    assert ("передан в другой отдел" if language == "ru" else "passed to another") in _visible(
        html(rows["hold_customer"])
    )
