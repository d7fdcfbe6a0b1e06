"""The business-hours clock: due times, the promise in the ack, the 80 % warning, the breach."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
from clockkit import (
    build_config,
    create_at,
    mail,
    maild,
    mapping,
    msk,
    outbox,
    text,
    ticket,
    update,
    write_toml,
)

from maild.config import Config
from maild.scheduler.elapsed import business_hours_between, sla_progress
from maild.scheduler.jobs import sweep_sla
from maild.security.signing import verify_message_ids
from maild.store.db import Database
from maild.tickets.sla import BusinessHours, add_business_hours

CAL = BusinessHours("Europe/Moscow")
FRIDAY_1730 = msk(2026, 11, 27, 17, 30)  # Friday 27 November 2026, 17:30 in Moscow


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        (FRIDAY_1730, 4, msk(2026, 11, 30, 12, 30)),  # the Friday-evening case
        (msk(2026, 11, 27, 10, 0), 4, msk(2026, 11, 27, 14, 0)),  # within one day
        (msk(2026, 11, 28, 15, 0), 4, msk(2026, 11, 30, 13, 0)),  # Saturday: from Monday 09:00
        (msk(2026, 11, 30, 7, 0), 6, msk(2026, 11, 30, 15, 0)),  # before opening
        (msk(2026, 11, 30, 18, 0), 1, msk(2026, 12, 1, 10, 0)),  # exactly at closing
        (FRIDAY_1730, 16, msk(2026, 12, 1, 15, 30)),  # a suggestion: 0.5 + 9 + 6.5
        (FRIDAY_1730, 2, msk(2026, 11, 30, 10, 30)),  # urgent incident: half of 4 h
    ],
)
def test_due_time_in_business_hours(start: datetime, hours: float, due: datetime) -> None:
    assert add_business_hours(start, hours, CAL) == due


def test_holidays_are_skipped() -> None:
    monday_off = BusinessHours("Europe/Moscow", holidays=frozenset({date(2026, 11, 30)}))
    assert add_business_hours(FRIDAY_1730, 4, monday_off) == msk(2026, 12, 1, 12, 30)
    new_year = BusinessHours(
        "Europe/Moscow", holidays=frozenset(date(2027, 1, d) for d in range(1, 9))
    )
    assert add_business_hours(msk(2026, 12, 31, 17, 0), 2, new_year) == msk(2027, 1, 11, 10, 0)


def test_other_hours_and_days() -> None:
    six_days = BusinessHours("UTC", frozenset(range(6)), time(10, 0), time(14, 0))
    start = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # Friday 13:00
    assert add_business_hours(start, 3, six_days) == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        (FRIDAY_1730, msk(2026, 11, 30, 12, 30), 4.0),
        (FRIDAY_1730, msk(2026, 11, 29, 23, 0), 0.5),  # the weekend does not count
        (msk(2026, 11, 30, 12, 0), msk(2026, 11, 30, 11, 0), 0.0),
        (msk(2026, 11, 30, 8, 0), msk(2026, 12, 2, 20, 0), 27.0),
    ],
)
def test_business_hours_between(start: datetime, end: datetime, hours: float) -> None:
    assert business_hours_between(start, end, CAL) == pytest.approx(hours)


def test_progress_is_the_share_of_working_time() -> None:
    due = msk(2026, 11, 30, 12, 30)
    assert sla_progress(FRIDAY_1730, due, msk(2026, 11, 29, 23, 0), CAL) == pytest.approx(0.125)
    assert sla_progress(FRIDAY_1730, due, msk(2026, 11, 30, 11, 42), CAL) == pytest.approx(0.8)
    assert sla_progress(FRIDAY_1730, due, due, CAL) == pytest.approx(1.0)
    assert sla_progress(FRIDAY_1730, due, msk(2026, 11, 30, 13, 30), CAL) == pytest.approx(1.25)


def test_friday_evening_request_is_due_monday_and_the_ack_says_so(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    en = create_at(db, config, FRIDAY_1730, "Printer is broken", body="It prints nothing at all.")
    ru = create_at(
        db,
        config,
        FRIDAY_1730,
        "Не печатает принтер",
        body="Принтер совсем ничего не печатает.",
        sender="klient@example.ru",
    )
    for number in (en, ru):
        assert ticket(db, number).due_at is not None
        due = ticket(db, number).due_at
        assert due is not None and due.replace(tzinfo=UTC) == msk(2026, 11, 30, 12, 30)
    acks = {row.ticket_id: text(row) for row in outbox(db, "ack")}
    assert "We will answer on Monday by 12:30 MSK." in acks[en]
    assert "Мы ответим в понедельник до 12:30 MSK." in acks[ru]


def test_ack_skips_a_holiday(db: Database, tmp_path: Path, db_url: str) -> None:
    config = build_config(db_url, tmp_path, hours={"holidays": ["2026-11-30"]})
    number = create_at(db, config, FRIDAY_1730)
    assert "on Tuesday by 12:30 MSK" in text(outbox(db, "ack")[0])
    due = ticket(db, number).due_at
    assert due is not None and due.replace(tzinfo=UTC) == msk(2026, 12, 1, 12, 30)


def _staff_mail(db: Database, kind: str) -> list[tuple[str, str]]:
    return [(row.recipients, str(mail(row)["Subject"])) for row in outbox(db, kind)]


def test_warning_at_80_percent_then_breach_to_the_lead(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = create_at(db, config, FRIDAY_1730)
    # Sunday night is 1/8 of the target in working time, though most of it in wall time.
    assert sweep_sla(db, config, msk(2026, 11, 29, 23, 0)) == 0
    assert sweep_sla(db, config, msk(2026, 11, 30, 11, 40)) == 0
    assert sweep_sla(db, config, msk(2026, 11, 30, 11, 43)) == 1
    warnings = _staff_mail(db, "sla_warning")
    assert sorted(r for r, _ in warnings) == ["anna@example.com", "boris@example.com"]
    assert all(s.startswith("SLA warning: [Support #1]") for _, s in warnings)
    body = text(outbox(db, "sla_warning")[0])
    assert "80%" in body and "2026-11-30 12:30 MSK" in body
    # Each agent's copy carries a Message-ID signed for them: their reply is proof.
    for row in outbox(db, "sla_warning"):
        assert (
            verify_message_ids(
                config.secret_key, "n", [row.message_id], row.recipients, "example.com"
            )
            == number
        )
    assert sweep_sla(db, config, msk(2026, 11, 30, 12, 29)) == 0
    assert outbox(db, "sla_breach") == []
    assert sweep_sla(db, config, msk(2026, 11, 30, 12, 31)) == 1
    assert [r for r, _ in _staff_mail(db, "sla_breach")] == ["lead@example.com"]
    assert "breached" in text(outbox(db, "sla_breach")[0])
    assert sweep_sla(db, config, msk(2026, 12, 2, 12, 0)) == 0
    assert len(outbox(db, "sla_warning")) == 2 and len(outbox(db, "sla_breach")) == 1
    t = ticket(db, number)
    assert t.sla_warned_at is not None and t.sla_breached_at is not None


def test_warning_goes_to_the_assignee_only(db: Database, tmp_path: Path, db_url: str) -> None:
    config = build_config(db_url, tmp_path)
    number = create_at(db, config, FRIDAY_1730)
    update(db, number, assignee="boris@example.com")
    assert sweep_sla(db, config, msk(2026, 11, 30, 12, 0)) == 1
    assert [r for r, _ in _staff_mail(db, "sla_warning")] == ["boris@example.com"]


def test_answered_or_solved_requests_are_not_chased(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    answered = create_at(db, config, FRIDAY_1730)
    solved = create_at(db, config, FRIDAY_1730)
    update(db, answered, first_response_at=msk(2026, 11, 30, 9, 5))
    update(db, solved, status="solved")
    assert sweep_sla(db, config, msk(2026, 12, 7, 12, 0)) == 0
    assert outbox(db, "sla_warning") == [] and outbox(db, "sla_breach") == []


def test_a_late_sweep_sends_warning_and_breach_at_once(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path, sla={"question": 2})
    create_at(db, config, FRIDAY_1730)
    assert sweep_sla(db, config, msk(2026, 12, 1, 9, 0)) == 1
    assert len(outbox(db, "sla_warning")) == 2 and len(outbox(db, "sla_breach")) == 1


def test_breach_mail_by_maild_sweep_now(db: Database, tmp_path: Path, db_url: str) -> None:
    config_path = write_toml(mapping(db_url, tmp_path), tmp_path / "config.toml")
    config: Config = build_config(db_url, tmp_path)
    create_at(db, config, FRIDAY_1730)
    before = maild(config_path, "sweep", "--now", "2026-11-30T12:29:00+03:00")
    assert before.returncode == 0, before.stderr
    assert "sla=1" in before.stdout  # the warning
    assert outbox(db, "sla_breach") == []
    after = maild(config_path, "sweep", "--now", (msk(2026, 11, 30, 12, 31)).isoformat())
    assert after.returncode == 0, after.stderr
    breach = outbox(db, "sla_breach")
    assert [row.recipients for row in breach] == ["lead@example.com"]
    assert mail(breach[0])["Auto-Submitted"] == "auto-generated"
    again = maild(config_path, "sweep", "--now", "2026-12-01T12:00:00")
    assert again.returncode == 0 and "sla=0" in again.stdout
    assert len(outbox(db, "sla_breach")) == 1


@pytest.mark.usefixtures("db")
def test_sweep_refuses_a_bad_time(tmp_path: Path, db_url: str) -> None:
    config_path = write_toml(mapping(db_url, tmp_path), tmp_path / "config.toml")
    result = maild(config_path, "sweep", "--now", "next tuesday")
    assert result.returncode == 64 and "ISO-8601" in result.stderr
