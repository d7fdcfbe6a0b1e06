"""Knowledge from the command line (issue 13): `maild search`, `maild kb`, and `maild init`
building the index for mail stored before the knowledge migration."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from clockkit import maild, mapping, write_toml
from conftest import make_mail
from sqlalchemy import text
from test_knowledge import answer

from maild.knowledge.search import search
from maild.store.db import Database
from maild.store.migrate import upgrade

Ingest = Callable[..., int]


def test_search_and_kb_commands(db: Database, ingest: Ingest, db_url: str, tmp_path: Path) -> None:
    ingest(make_mail("Ошибка загрузки", body="Не получается загрузить файл."))
    answer(db, ingest, 1, "#kb Загрузка файлов\n\nСожмите файл до 10 МБ и загрузите снова.")
    answer(db, ingest, 1, "#kb 1\n\nСожмите файл до 10 МБ, затем загрузите снова.")
    config_path = write_toml(mapping(db_url, tmp_path), tmp_path / "config.toml")
    result = maild(config_path, "search", "загрузка", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [(h["kind"], h["number"]) for h in hits] == [("article", 1), ("request", 1)]
    assert all(h["score"] > 0 and h["snippet"] for h in hits)
    assert "загруз" in hits[1]["snippet"] and "#kb" not in hits[1]["snippet"]
    plain = maild(config_path, "search", "загрузить")
    assert "#1" in plain.stdout and "kb 1" in plain.stdout
    listed = json.loads(maild(config_path, "kb", "list", "--json").stdout)
    assert [(a["number"], a["title"], a["version"]) for a in listed] == [(1, "Загрузка файлов", 2)]
    shown = json.loads(maild(config_path, "kb", "show", "1", "--json").stdout)
    assert [v["version"] for v in shown["history"]] == [1, 2]
    assert shown["history"][0]["body"].startswith("Сожмите файл до 10 МБ и")
    exported = json.loads(maild(config_path, "kb", "export").stdout)
    assert exported[0]["body"] == "Сожмите файл до 10 МБ, затем загрузите снова."
    assert maild(config_path, "kb", "show", "9").returncode == 66


def test_init_indexes_mail_stored_before(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db, "0003")
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    with db.write() as s:
        s.execute(
            text(
                "INSERT INTO tickets (id, subject, requester, requester_name, status, type, "
                "priority, language, created_at, updated_at) VALUES (7, 'Загрузки нет', "
                "'c@example.org', '', 'solved', 'question', 'normal', 'ru', :now, :now)"
            ),
            {"now": now},
        )
        s.execute(
            text(
                "INSERT INTO messages (ticket_id, direction, kind, from_addr, from_name, to_addrs, "
                "cc_addrs, subject, text, created_at) VALUES (7, 'in', 'customer', "
                "'c@example.org', '', '', '', 'Загрузки нет', 'Файлы не загружаются', :now)"
            ),
            {"now": now},
        )
    upgrade(db)
    with db.session() as s:
        hits = search(s.connection(), "загрузка")
    assert [(h.kind, h.number) for h in hits] == [("request", 7)]
    db.dispose()
