"""Survey links against the real aiohttp server of a running daemon, with a real HTTP client."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clockkit import build_config, create_at, events, outbox, set_status, text, ticket, update
from conftest import wait_for

from maild.config import Config
from maild.core.clock import system_clock
from maild.security.signing import rating_path
from maild.store.db import Database

LINK = re.compile(r"http://desk\.example\.com(/rate/\d+/(?:good|bad)/\d+/[A-Za-z0-9_-]+)")


class Desk:
    """A running daemon and what a customer's browser does with it."""

    def __init__(self, db: Database, config: Config, running: Callable[..., Any]) -> None:
        self.db, self.config, self.running = db, config, running
        self.base = ""

    def start(self) -> None:
        """Start the daemon; its scheduler sweeps at once, so set requests up before."""
        daemon = self.running(self.config).daemon
        assert daemon is not None
        self.base = f"http://127.0.0.1:{daemon.web_port}"

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def survey_links(self, number: int) -> dict[str, str]:
        """The links of the survey the daemon's own scheduler sent for request ``number``."""
        rows = wait_for(lambda: [r for r in outbox(self.db, "survey") if r.ticket_id == number])
        paths = LINK.findall(text(rows[0]))
        return {"good": paths[0], "bad": paths[1]}


@pytest.fixture
def desk(
    db: Database, tmp_path: Path, db_url: str, running: Callable[..., Any]
) -> tuple[Desk, Config]:
    config = build_config(db_url, tmp_path)
    return Desk(db, config, running), config


def solved_yesterday(db: Database, config: Config, **kw: Any) -> int:
    now = system_clock()
    number = create_at(db, config, now - timedelta(days=2), **kw)
    set_status(db, config, number, "solved", now - timedelta(hours=25))
    return number


def test_get_shows_a_confirm_page_and_records_nothing(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    d.start()
    links = d.survey_links(number)  # sent by the daemon's scheduler, not by the test
    for rating, label in (("good", "Good"), ("bad", "Bad")):
        status, page = d.request(links[rating])
        assert status == 200
        assert label in page and page.count('<form method="post">') == 1
        assert 'name="comment"' in page and "Confirm" in page
    t = ticket(d.db, number)
    assert t.rating is None and t.rated_at is None
    assert events(d.db, number, "rated") == []


def test_good_then_bad_the_last_one_wins_and_bad_tells_the_agents(
    desk: tuple[Desk, Config],
) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    d.start()
    links = d.survey_links(number)
    status, page = d.request(links["good"], {"comment": "Quick and kind"})
    assert status == 200 and "Thank you" in page
    t = ticket(d.db, number)
    assert (t.rating, t.rating_comment) == ("good", "Quick and kind")
    assert outbox(d.db, "bad_rating") == []
    status, _ = d.request(links["bad"], {"comment": "Actually it broke again"})
    assert status == 200
    t = ticket(d.db, number)
    assert (t.rating, t.rating_comment) == ("bad", "Actually it broke again")
    bad = outbox(d.db, "bad_rating")
    assert sorted(r.recipients for r in bad) == ["anna@example.com", "boris@example.com"]
    assert "Actually it broke again" in text(bad[0])
    # One rating per solve cycle: the later POST updated the event.
    (rated,) = events(d.db, number, "rated")
    assert json.loads(rated.detail) == {
        "rating": "bad",
        "comment": "Actually it broke again",
        "updates": 1,
    }


def test_bad_rating_goes_to_the_assignee(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    update(d.db, number, assignee="anna@example.com")
    d.start()
    status, _ = d.request(d.survey_links(number)["bad"], {"comment": ""})
    assert status == 200
    assert [r.recipients for r in outbox(d.db, "bad_rating")] == ["anna@example.com"]
    assert ticket(d.db, number).rating_comment is None


def _tampered(path: str) -> list[str]:
    _, rate, number, rating, expires, sig = path.split("/")
    other = "bad" if rating == "good" else "good"
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    later = str(int(expires) + 86400 * 365)
    return [
        f"/{rate}/{number}/{other}/{expires}/{sig}",  # the rating changed
        f"/{rate}/{int(number) + 1}/{rating}/{expires}/{sig}",  # another request
        f"/{rate}/{number}/{rating}/{later}/{sig}",  # a longer life
        f"/{rate}/{number}/{rating}/{expires}/{flipped}",  # the signature itself
        f"/{rate}/{number}/{rating}/{expires}/short",
    ]


def test_tampered_links_are_refused_on_get_and_post(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    solved_yesterday(d.db, config)  # request number + 1 exists too
    d.start()
    for path in _tampered(d.survey_links(number)["good"]):
        status, page = d.request(path)
        assert status == 403, path
        assert "not valid" in page
        status, _ = d.request(path, {"comment": "x"})
        assert status == 403, path
    assert ticket(d.db, number).rating is None
    assert ticket(d.db, number + 1).rating is None
    assert events(d.db, number, "rated") == []


def test_expired_link_is_refused(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    d.start()
    path = rating_path(config.secret_key, number, "good", system_clock() - timedelta(minutes=1))
    assert d.request(path)[0] == 410
    status, page = d.request(path, {"comment": ""})
    assert status == 410 and "expired" in page
    assert ticket(d.db, number).rating is None


def test_closed_request_can_no_longer_be_rated(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    d.start()
    links = d.survey_links(number)
    assert d.request(links["good"], {"comment": ""})[0] == 200
    set_status(d.db, config, number, "closed", system_clock())
    status, page = d.request(links["bad"], {"comment": "too late"})
    assert status == 410 and "closed" in page
    assert ticket(d.db, number).rating == "good"


def test_russian_page_escapes_and_limits(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(
        d.db, config, subject="<script>alert(1)</script>", body="Принтер совсем не печатает."
    )
    expires = system_clock() + timedelta(days=1)
    d.start()
    path = rating_path(config.secret_key, number, "bad", expires)
    status, page = d.request(path)
    assert status == 200 and "Плохо" in page and "Подтвердить" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    status, page = d.request(path, {"comment": "<b>плохо</b>\x00" + "я" * 5000})
    assert status == 200 and "Спасибо" in page
    comment = ticket(d.db, number).rating_comment
    assert comment is not None and comment.startswith("<b>плохо</b>я") and len(comment) == 2000


def test_unknown_request_is_404(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    d.start()
    path = rating_path(config.secret_key, 999, "good", datetime(2099, 1, 1).astimezone())
    assert d.request(path)[0] == 404
    assert d.request(path, {"comment": ""})[0] == 404


def test_reopened_request_refuses_the_old_link_and_bad_mails_once(
    desk: tuple[Desk, Config],
) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    d.start()
    links = d.survey_links(number)
    for comment in ("bad", "still bad", "really bad"):
        assert d.request(links["bad"], {"comment": comment})[0] == 200
    assert len(outbox(d.db, "bad_rating")) == 2  # one mail per agent, once per solve cycle
    set_status(d.db, config, number, "open", system_clock())
    status, _ = d.request(links["good"], {"comment": "changed my mind"})
    assert status == 410
    assert d.request(links["good"])[0] == 410
    assert ticket(d.db, number).rating == "bad"


def test_six_posts_make_one_rating_per_solve_cycle(desk: tuple[Desk, Config]) -> None:
    d, config = desk
    number = solved_yesterday(d.db, config)
    d.start()
    links = d.survey_links(number)
    for i in range(6):
        assert d.request(links["good"], {"comment": f"post {i}"})[0] == 200
    (rated,) = events(d.db, number, "rated")
    assert json.loads(rated.detail) == {"rating": "good", "comment": "post 5", "updates": 5}
    assert ticket(d.db, number).rating_comment == "post 5"
