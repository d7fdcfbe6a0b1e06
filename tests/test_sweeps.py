"""The sweeps with the clock frozen and moved: survey, auto-close, pending, hold, two sweepers."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clockkit import (
    build_config,
    create_at,
    deliver_at,
    events,
    mail,
    maild,
    mapping,
    msk,
    outbox,
    set_status,
    text,
    ticket,
    update,
    write_toml,
)
from conftest import make_mail
from sqlalchemy import func, select

from maild.config import Config
from maild.core.clock import fixed_clock
from maild.scheduler.jobs import (
    run_all,
    sweep_autoclose,
    sweep_hold,
    sweep_pending,
    sweep_survey,
)
from maild.scheduler.runner import SweepScheduler
from maild.security.signing import verify, verify_message_ids
from maild.store.db import Database
from maild.store.models import Message, Outbox

T0 = msk(2026, 11, 23, 11, 0)  # Monday 11:00 in Moscow
LINK = re.compile(r"http://desk\.example\.com/rate/(\d+)/(good|bad)/(\d+)/([A-Za-z0-9_-]+)")


def solved_request(db: Database, config: Config, at: datetime = T0, **kw: object) -> int:
    number = create_at(db, config, at - timedelta(hours=2), **kw)  # type: ignore[arg-type]
    set_status(db, config, number, "solved", at)
    return number


def test_survey_comes_24_hours_after_solved_and_not_before(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = solved_request(db, config)
    assert sweep_survey(db, config, T0 + timedelta(hours=23, minutes=59)) == 0
    assert outbox(db, "survey") == []
    assert sweep_survey(db, config, T0 + timedelta(hours=24)) == 1
    assert sweep_survey(db, config, T0 + timedelta(hours=25)) == 0
    [row] = outbox(db, "survey")
    msg = mail(row)
    assert row.recipients == "customer@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == "How did we do? [Support #1] Printer is broken"
    links = LINK.findall(text(row))
    assert [r for _, r, _, _ in links] == ["good", "bad"]
    now = T0 + timedelta(hours=24)
    for t, r, e, s in links:
        assert verify(config.secret_key, t, r, e, s, now).ticket_id == number
    expires = datetime.fromtimestamp(int(links[0][2]), UTC)
    assert expires == now + timedelta(days=config.clock.survey_valid_days)
    html = msg.get_body(("html",))
    assert html is not None and links[0][3] in html.get_content()  # type: ignore[attr-defined]
    assert ticket(db, number).survey_sent_at is not None
    assert len(events(db, number, "survey-sent")) == 1


def test_survey_is_in_the_customers_language(db: Database, tmp_path: Path, db_url: str) -> None:
    config = build_config(db_url, tmp_path)
    solved_request(db, config, subject="Принтер", body="Принтер совсем не печатает.")
    sweep_survey(db, config, T0 + timedelta(days=1))
    [row] = outbox(db, "survey")
    assert "Как мы справились?" in text(row) and "Хорошо:" in text(row)


def test_survey_is_cancelled_when_the_request_reopens(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = solved_request(db, config)
    set_status(db, config, number, "open", T0 + timedelta(hours=3))
    assert ticket(db, number).survey_due_at is None
    assert sweep_survey(db, config, T0 + timedelta(days=2)) == 0
    assert outbox(db, "survey") == []


def test_survey_by_maild_sweep_now(db: Database, tmp_path: Path, db_url: str) -> None:
    config_path = write_toml(mapping(db_url, tmp_path), tmp_path / "config.toml")
    config = build_config(db_url, tmp_path)
    solved_request(db, config)
    early = maild(config_path, "sweep", "--now", "2026-11-24T10:59:00+03:00")
    assert early.returncode == 0, early.stderr
    assert "survey=0" in early.stdout and outbox(db, "survey") == []
    due = maild(config_path, "sweep", "--now", "2026-11-24T11:00:00+03:00", "--json")
    assert due.returncode == 0, due.stderr
    assert '"survey": 1' in due.stdout and len(outbox(db, "survey")) == 1
    again = maild(config_path, "sweep", "--now", "2026-11-24T12:00:00+03:00")
    assert "survey=0" in again.stdout and len(outbox(db, "survey")) == 1


def test_solved_request_closes_after_autoclose_days(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path, autoclose={"days": 7})
    number = solved_request(db, config)
    assert run_all(db, config, T0 + timedelta(days=1))["survey"] == 1
    assert sweep_autoclose(db, config, T0 + timedelta(days=7) - timedelta(minutes=1)) == 0
    assert ticket(db, number).status == "solved"
    assert sweep_autoclose(db, config, T0 + timedelta(days=7)) == 1
    t = ticket(db, number)
    assert t.status == "closed" and t.closed_at is not None
    [change] = events(db, number, "status-changed")
    assert '"closed"' in change.detail and "autoclose" in change.detail
    assert sweep_autoclose(db, config, T0 + timedelta(days=30)) == 0


def test_autoclose_before_survey_cancels_it(db: Database, tmp_path: Path, db_url: str) -> None:
    config = build_config(db_url, tmp_path)
    number = solved_request(db, config)
    done = run_all(db, config, T0 + timedelta(days=10))  # the daemon was down all along
    assert done["autoclose"] == 1 and done["survey"] == 0
    assert ticket(db, number).status == "closed" and outbox(db, "survey") == []


def test_pending_reminder_then_auto_solve(db: Database, tmp_path: Path, db_url: str) -> None:
    config = build_config(db_url, tmp_path, pending={"remind_days": 3, "solve_days": 7})
    number = create_at(db, config, T0 - timedelta(hours=1))
    set_status(db, config, number, "pending", T0)
    assert sweep_pending(db, config, T0 + timedelta(days=3) - timedelta(minutes=1)) == 0
    assert sweep_pending(db, config, T0 + timedelta(days=3)) == 1
    assert sweep_pending(db, config, T0 + timedelta(days=4)) == 0
    [reminder] = outbox(db, "pending_reminder")
    assert reminder.recipients == "customer@example.org"
    assert "waiting for your answer" in text(reminder)
    assert mail(reminder)["Auto-Submitted"] == "auto-generated"
    assert ticket(db, number).status == "pending"
    assert sweep_pending(db, config, T0 + timedelta(days=7)) == 1
    [solved] = outbox(db, "pending_autosolved")
    assert "consider it solved" in text(solved)
    t = ticket(db, number)
    assert t.status == "solved" and t.survey_due_at is not None
    assert sweep_pending(db, config, T0 + timedelta(days=9)) == 0
    assert sweep_survey(db, config, T0 + timedelta(days=8)) == 1
    assert len(outbox(db, "pending_reminder")) == 1


def test_pending_too_long_is_solved_without_a_reminder_first(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = create_at(db, config, T0 - timedelta(hours=1))
    set_status(db, config, number, "pending", T0)
    assert sweep_pending(db, config, T0 + timedelta(days=8)) == 1
    assert outbox(db, "pending_reminder") == [] and len(outbox(db, "pending_autosolved")) == 1
    assert ticket(db, number).status == "solved"


def _hold(db: Database, config: Config) -> int:
    number = create_at(db, config, T0 - timedelta(hours=1))
    set_status(db, config, number, "hold", T0, department="billing")
    return number


def test_hold_reminds_the_department_and_tells_the_customer_once_a_day(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = _hold(db, config)
    assert sweep_hold(db, config, T0 + timedelta(hours=23)) == 0
    assert sweep_hold(db, config, T0 + timedelta(hours=24)) == 1
    [dept] = outbox(db, "hold_department_reminder")
    [cust] = outbox(db, "hold_customer")
    assert dept.recipients == "billing@example.com"
    assert "waiting for" in text(dept) and "#1" in text(dept)
    # The department's reply to it is proven by its signed Message-ID.
    proven = verify_message_ids(
        config.secret_key, "e", [dept.message_id], "billing@example.com", "example.com"
    )
    assert proven == number
    assert cust.recipients == "customer@example.org"
    assert "I have already reminded them of the urgency" in text(cust)
    assert sweep_hold(db, config, T0 + timedelta(hours=47)) == 0
    assert sweep_hold(db, config, T0 + timedelta(hours=48)) == 1
    assert len(outbox(db, "hold_customer")) == 2
    assert len(events(db, number, "hold-reminded")) == 2


def test_the_departments_answer_ends_the_hold_reminders(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = _hold(db, config)
    with db.write() as s:
        s.add(
            Message(
                ticket_id=number,
                direction="in",
                kind="department",
                from_addr="billing@example.com",
                created_at=T0 + timedelta(hours=20),
            )
        )
    for day in range(1, 10):  # it had answered: nobody is told "still waiting" any more
        assert sweep_hold(db, config, T0 + timedelta(days=day, hours=1)) == 0
    assert outbox(db, "hold_department_reminder") == outbox(db, "hold_customer") == []


def test_two_sweepers_send_each_survey_exactly_once(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    numbers = [solved_request(db, config) for _ in range(40)]
    now = T0 + timedelta(days=1, hours=1)
    start = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        own = Database(db_url)  # a second process would have its own engine and pool
        try:
            start.wait()
            counts.append(sum(sweep_survey(own, config, now) for _ in range(3)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(counts) == len(numbers)
    with db.session() as s:
        per_ticket = dict(
            s.execute(
                select(Outbox.ticket_id, func.count())
                .where(Outbox.kind == "survey")
                .group_by(Outbox.ticket_id)
            ).all()
        )
    assert per_ticket == dict.fromkeys(numbers, 1)


def test_one_broken_request_does_not_stop_the_sweep(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    broken = solved_request(db, config)
    fine = solved_request(db, config)
    update(db, broken, requester="evil@example.org\r\nBcc: victim@example.net")
    assert sweep_survey(db, config, T0 + timedelta(days=1)) == 1
    assert [row.ticket_id for row in outbox(db, "survey")] == [fine]
    assert ticket(db, broken).survey_sent_at is None  # rolled back, tried again next run


def test_scheduler_runs_each_sweep_as_a_coalesced_single_instance_job(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = solved_request(db, config)
    woken: list[bool] = []

    async def main() -> None:
        clock = fixed_clock(T0 + timedelta(days=1))
        runner = SweepScheduler(db, config, clock, lambda: woken.append(True), interval=3600)
        runner.start()
        assert runner.scheduler is not None
        jobs = runner.scheduler.get_jobs()
        assert sorted(j.id for j in jobs) == [
            "autoclose",
            "hold",
            "incident-digest",
            "pending",
            "sla",
            "survey",
        ]
        assert all(j.coalesce and j.max_instances == 1 for j in jobs)
        for _ in range(1200):
            if ticket(db, number).survey_sent_at is not None:
                break
            await asyncio.sleep(0.05)
        await runner.stop()

    asyncio.run(main())
    assert [row.ticket_id for row in outbox(db, "survey")] == [number]
    assert woken == [True]


def test_customer_reply_to_solved_reopens_and_cancels_the_survey(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = solved_request(db, config)
    reply = make_mail(f"Re: [Support #{number}] Printer is broken", body="Still broken, sorry.")
    deliver_at(db, config, reply, T0 + timedelta(hours=5))
    t = ticket(db, number)
    assert t.status == "open" and t.survey_due_at is None
    assert run_all(db, config, T0 + timedelta(days=2))["survey"] == 0
    assert outbox(db, "survey") == []


def test_reply_to_an_autoclosed_request_starts_a_follow_up(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    number = solved_request(db, config)
    assert run_all(db, config, T0 + timedelta(days=8))["autoclose"] == 1
    reply = make_mail(f"Re: [Support #{number}] Printer is broken", body="It broke again.")
    deliver_at(db, config, reply, T0 + timedelta(days=9))
    follow_up = ticket(db, number + 1)
    assert follow_up.parent_id == number and follow_up.status == "new"
    assert ticket(db, number).status == "closed"
    ack = [row for row in outbox(db, "ack") if row.ticket_id == follow_up.id]
    assert f"#{number}" in text(ack[0])


def test_scheduler_stop_waits_for_the_sweep_in_hand(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = build_config(db_url, tmp_path)
    started, finished = threading.Event(), threading.Event()

    def slow(_db: Database, _config: Config, _now: datetime) -> int:
        started.set()
        time.sleep(0.5)
        finished.set()
        return 0

    async def main() -> None:
        runner = SweepScheduler(db, config, fixed_clock(T0), sweeps=(("slow", slow),))
        runner.start()
        while not started.is_set():
            await asyncio.sleep(0.01)
        await runner.stop()
        assert finished.is_set()

    asyncio.run(main())


def test_sweep_now_later_queues_mail_due_at_once_and_dated_now(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    """`maild sweep --now` judges what is due at that time; the mail is for today."""
    config_path = write_toml(mapping(db_url, tmp_path), tmp_path / "config.toml")
    solved_request(db, build_config(db_url, tmp_path), datetime.now(UTC) - timedelta(hours=1))
    later = datetime.now(UTC) + timedelta(days=2)  # the survey is due then, autoclose is not
    before = datetime.now(UTC).replace(microsecond=0)
    done = maild(config_path, "sweep", "--now", later.isoformat())
    assert done.returncode == 0, done.stderr
    [survey] = outbox(db, "survey")
    after = datetime.now(UTC)
    due = survey.next_attempt_at.replace(tzinfo=UTC)
    assert before <= due <= after  # the running daemon sends it now, not in 60 days
    assert before <= mail(survey)["Date"].datetime <= after
