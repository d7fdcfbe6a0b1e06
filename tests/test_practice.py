"""The practice's request types and key clients (issue 14): category clocks and routing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from clockkit import create_at, msk, outbox, ticket
from customerkit import RU_BODY, agent_says, customer_mails, desk_config, plain

from maild.config import Config
from maild.core.errors import ConfigError
from maild.store.db import Database

MONDAY_10 = msk(2026, 11, 23, 10, 0)
KEY_CLIENTS = [
    {"match": "@bigclient.ru", "assignee": "anna@example.com", "priority": "high"},
    {"match": "ceo@vip.example.org", "assignee": "boris@example.com", "type": "incident"},
]


def due(db: Database, number: int) -> Any:
    value = ticket(db, number).due_at
    assert value is not None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@pytest.mark.parametrize(
    ("category", "hours_later"),
    [("registration", msk(2026, 11, 23, 12, 0)), ("suggestion", msk(2026, 11, 24, 17, 0))],
)
def test_category_sets_the_clock(
    db: Database, tmp_path: Path, db_url: str, category: str, hours_later: Any
) -> None:
    config = desk_config(db_url, tmp_path)
    number = create_at(db, config, MONDAY_10, "Registration of my device")
    assert due(db, number) == msk(2026, 11, 23, 14, 0)  # a question: 4 h
    agent_says(db, config, number, f"#category {category}\n#note\nfiled", MONDAY_10)
    assert ticket(db, number).category == category
    assert due(db, number) == hours_later  # registration 2 h, suggestion 16 h
    assert not outbox(db, "command-error")


def test_sla_categories_table_sets_hours(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk_config(db_url, tmp_path, sla={"categories": {"registration": 1, "billing": 3}})
    assert config.sla.categories == {"suggestion": 16.0, "registration": 1.0, "billing": 3.0}
    number = create_at(db, config, MONDAY_10)
    agent_says(db, config, number, "#category Billing\n#note\nx", MONDAY_10)
    assert due(db, number) == msk(2026, 11, 23, 13, 0)


def test_key_client_is_assigned_at_once_and_the_ack_names_the_manager(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path, routing=KEY_CLIENTS)  # type: ignore[arg-type]
    ru = create_at(
        db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY, sender="i@bigclient.ru"
    )
    en = create_at(db, config, MONDAY_10, "Outage", body="All down.", sender="CEO@vip.example.org")
    other = create_at(
        db, config, MONDAY_10, "Printer", body="Broken.", sender="x@bigclient.ru.evil"
    )
    t = ticket(db, ru)
    assert (t.assignee, t.priority, t.type) == ("anna@example.com", "high", "question")
    t = ticket(db, en)
    assert (t.assignee, t.priority, t.type) == ("boris@example.com", "normal", "incident")
    assert ticket(db, other).assignee is None
    ack_ru = plain(customer_mails(db, ru, "ack")[0])
    assert "Вашим запросом занимается ваш менеджер по работе с клиентами — Anna." in ack_ru
    ack_en = plain(customer_mails(db, en, "ack")[0])
    assert "Your request is in the hands of your customer-success manager, Boris." in ack_en
    assert "manager" not in plain(customer_mails(db, other, "ack")[0])
    # Only the manager is told about the new request.
    assert [r.recipients for r in outbox(db, "notify") if r.ticket_id == ru] == ["anna@example.com"]


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"routing": [{"match": "bigclient.ru", "assignee": "a@b.org"}]}, "routing[0].match"),
        ({"routing": [{"match": "@big.ru", "assignee": "nobody"}]}, "routing[0].assignee"),
        (
            {"routing": [{"match": "@big.ru", "assignee": "a@b.org", "priority": "max"}]},
            "routing[0].priority",
        ),
        (
            {"routing": [{"match": "@big.ru", "assignee": "a@b.org", "type": "suggestion"}]},
            "routing[0].type",
        ),
        ({"routing": [{"match": "@big.ru", "assignee": "a@b.org", "x": 1}]}, "routing[0].x"),
        ({"sla": {"categories": {"registration": -2}}}, "sla.categories.registration"),
        ({"sla": {"tell_customer": "yes"}}, "sla.tell_customer"),
        ({"web": {"page_days": 0}}, "web.page_days"),
        ({"desk": {"name_in": "a\nb"}}, "desk.name_in"),
    ],
)
def test_new_keys_are_checked_at_start_up(
    make_config: Callable[..., Config], sections: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(**sections)
    assert err.value.key == key, str(err.value)


def test_department_title_is_checked(make_config: Callable[..., Config]) -> None:
    bad = [{"name": "tech", "email": "t@example.com", "title": "a\nb"}]
    with pytest.raises(ConfigError) as err:
        make_config(departments=bad)
    assert err.value.key == "departments[0].title"
