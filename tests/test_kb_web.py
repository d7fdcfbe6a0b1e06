"""The public knowledge base pages (issue 13): /kb and /kb/N over real HTTP and in headless
Chromium; escaped, ru/en, the survey pages' headers, internal articles never shown."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from browser import dom, need_chromium, screenshot
from conftest import make_mail
from test_knowledge import answer
from test_request_page import Server

from maild.config import Config
from maild.store.db import Database
from maild.web.survey import HEADERS

Ingest = Callable[..., int]
HOSTILE = '<script>alert("kb")</script>'
SECRET = "The vault code is 4711"


@pytest.fixture
def served(db: Database, config: Config, ingest: Ingest) -> Iterator[Server]:
    ingest(make_mail("Не загружается отчёт", body="Отчёт не загружается."))
    answer(db, ingest, 1, f"#kb Загрузка <b>отчётов</b>\n\nСожмите отчёт. {HOSTILE}")
    ingest(make_mail("Vault", sender="v@example.org", body="Vault code?"))
    answer(db, ingest, 2, f"#kb Vault codes\n#note\n\n{SECRET}")
    server = Server(db, config)
    yield server
    server.stop()


def page(server: Server, path: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = server.get(path)
    return status, headers, body.decode()


def test_list_search_and_article(served: Server) -> None:
    status, headers, html = page(served, "/kb?lang=ru")
    assert status == 200
    assert {k: headers[k] for k in HEADERS} == HEADERS
    assert "База знаний" in html and "Загрузка &lt;b&gt;отчётов&lt;/b&gt;" in html
    assert "Vault" not in html  # internal articles are never listed
    status, _, html = page(served, "/kb?lang=ru&q=" + quote("загрузить"))
    assert status == 200 and 'href="/kb/1?lang=ru"' in html
    _, _, html = page(served, "/kb?lang=en&q=" + quote("vault code"))
    assert "No article matches" in html and "Vault codes" not in html
    _, _, html = page(served, "/kb?q=" + quote(HOSTILE))
    assert HOSTILE not in html and "&lt;script&gt;" in html
    status, headers, html = page(served, "/kb/1")
    assert (
        status == 200 and headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
    )
    assert "Сожмите отчёт." in html and HOSTILE not in html and "&lt;script&gt;" in html


def test_internal_and_unknown_articles_are_not_found(served: Server) -> None:
    for path in ("/kb/2", "/kb/99", "/kb/2?lang=ru"):
        status, headers, html = page(served, path)
        assert status == 404 and SECRET not in html and "Vault" not in html
        assert headers["Cache-Control"] == "no-store"
    assert page(served, "/kb/2?lang=en")[2].count("There is no such article.") == 1
    assert served.get("/kb", method="POST")[0] == 405


def test_language_follows_the_browser(served: Server) -> None:
    req = urllib.request.Request(served.base + "/kb", headers={"Accept-Language": "en-GB,en"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert "Knowledge base" in resp.read().decode()
    req = urllib.request.Request(served.base + "/kb", headers={"Accept-Language": "ru-RU"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert "База знаний" in resp.read().decode()


@pytest.mark.parametrize("language", ["ru", "en"])
def test_kb_pages_in_headless_chromium(served: Server, language: str) -> None:
    need_chromium()
    built = dom(served.base + f"/kb/1?lang={language}")
    assert "Сожмите отчёт." in built and "<script>alert" not in built
    assert ("Обновлено" if language == "ru" else "Updated") in built
    listed = dom(served.base + f"/kb?lang={language}&q=" + quote("отчёты"))
    assert "Загрузка &lt;b&gt;отчётов&lt;/b&gt;" in listed and "Vault" not in listed
    assert screenshot(served.base + f"/kb?lang={language}", f"kb-list-{language}").exists()
