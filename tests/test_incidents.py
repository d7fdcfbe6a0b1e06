"""Mass incidents (issue 12): alike requests from many customers make one problem."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import select
from test_agents import mails, text_of

from maild.config import Config
from maild.store.db import Database
from maild.store.models import Event, Inbound, Message, Outbox, Ticket

Ingest = Callable[..., int]
LEAD = "lead@example.com"
SHIFT = "duty@example.com"

VARIANTS = [
    "Hello,\n\nI get 403 Forbidden when I log in to the portal since this morning.\n\n-- \nJohn",
    "Hi team,\nLogin to the portal gives 403 Forbidden since this morning, user id 88123.\n",
    "Good morning\n\nI get 403 Forbidden when I log in to the portal since this morning!\n",
    "Dear support,\nsince this morning I get a 403 Forbidden when I log in to the portal\n",
    "I get 403 Forbidden when I log in to the portal since this morning. Ticket ID 5521\n",
]


@pytest.fixture
def config(make_config: Callable[..., Config], db: Database) -> Config:  # noqa: ARG001 (set up before this fixture)
    return make_config(desk={"lead": LEAD}, incident={"notify": [SHIFT]})


def alike(n: int) -> bytes:
    body = VARIANTS[n % len(VARIANTS)]
    return make_mail("403 Forbidden on login", sender=f"user{n}@client{n}.example.org", body=body)


def tickets(db: Database) -> list[Ticket]:
    with db.session() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def outbox(db: Database, kind: str) -> list[tuple[Outbox, EmailMessage]]:
    return mails(db, kind)


def test_five_customers_make_a_problem(db: Database, ingest: Ingest) -> None:
    for n in range(4):
        ingest(alike(n))
    assert [t.type for t in tickets(db)] == ["question"] * 4
    ingest(alike(4))
    rows = tickets(db)
    problem = rows[-1]
    assert problem.type == "problem" and problem.subject == "403 Forbidden on login"
    assert [t.type for t in rows[:5]] == ["incident"] * 5
    assert {t.problem_id for t in rows[:5]} == {problem.id}
    alerts = outbox(db, "incident-alert")
    assert sorted(r.recipients for r, _ in alerts) == [SHIFT, LEAD]
    body = text_of(alerts[0][1])
    assert "5 customers" in body and "#1, #2, #3, #4, #5" in body
    assert "403 Forbidden when I log in" in body  # a sample text
    assert alerts[0][1]["Subject"] == f"Problem: [Support #{problem.id}] 403 Forbidden on login"
    notes = [r for r, _ in outbox(db, "notify") if r.ticket_id == problem.id]
    assert sorted(r.recipients for r in notes) == ["anna@example.com", "boris@example.com"]
    known = outbox(db, "incident-ack")
    assert [r.ticket_id for r, _ in known] == [5]
    assert "already know about this problem" in text_of(known[0][1])


def test_new_alike_requests_join_at_once(db: Database, ingest: Ingest) -> None:
    for n in range(5):
        ingest(alike(n))
    before = len(outbox(db, "notify"))
    ingest(alike(5))
    joined = tickets(db)[-1]
    assert joined.type == "incident" and joined.problem_id == 6
    assert len(outbox(db, "notify")) == before  # no notification per joining incident
    ack = [m for r, m in outbox(db, "incident-ack") if r.ticket_id == joined.id]
    assert ack and f"#{joined.id}" in text_of(ack[0]) and "#6" not in ack[0]["Subject"]
    assert not [r for r, _ in outbox(db, "ack") if r.ticket_id == joined.id]


def test_one_customer_five_times_is_no_problem(db: Database, ingest: Ingest) -> None:
    for n in range(6):
        body = VARIANTS[n % len(VARIANTS)]
        ingest(make_mail("403 Forbidden on login", sender="same@client.example.org", body=body))
    assert {t.type for t in tickets(db)} == {"question"}
    assert not outbox(db, "incident-alert")


def test_different_texts_do_not_group(db: Database, ingest: Ingest) -> None:
    texts = [
        ("Invoice for November", "Please send me the invoice for November."),
        ("Printer is broken", "It prints nothing at all."),
        ("Password reset", "How do I reset my password?"),
        ("Feature request", "Could you add a dark theme to the dashboard?"),
        ("Refund", "I want my money back for the double charge."),
        ("Login slow", "The login page takes a minute to open."),
    ]
    for n, (subject, body) in enumerate(texts):
        ingest(make_mail(subject, sender=f"u{n}@c{n}.example.org", body=body))
    assert {t.type for t in tickets(db)} == {"question"}


def test_russian_requests_group(db: Database, ingest: Ingest) -> None:
    body = "Добрый день!\n\nНе могу войти в личный кабинет, пишет ошибка 403 доступ запрещён.\n"
    for n in range(5):
        ingest(make_mail("Ошибка 403 при входе", sender=f"k{n}@c{n}.example.ru", body=body))
    rows = tickets(db)
    assert rows[-1].type == "problem"
    known = outbox(db, "incident-ack")
    assert "Мы уже знаем об этой проблеме" in text_of(known[0][1])


def test_sla_sweep_skips_incidents(db: Database, ingest: Ingest, config: Config) -> None:
    from datetime import timedelta

    from maild.scheduler.jobs import run_all

    for n in range(5):
        ingest(alike(n))
    later = tickets(db)[0].created_at + timedelta(days=5)
    run_all(db, config, later)
    breaches = outbox(db, "sla_breach")
    assert [r.ticket_id for r, _ in breaches] == [6]  # the problem only
    with db.session() as s:
        kinds = [e.kind for e in s.scalars(select(Event).where(Event.ticket_id == 6))]
    assert "problem-opened" in kinds


def test_one_answer_goes_to_every_customer_and_solves_all(db: Database, ingest: Ingest) -> None:
    from test_agents import notification, reply_to

    ids = []
    for n in range(5):
        extra = "Cc: boss0@client0.example.org\r\n" if n == 0 else ""
        body = VARIANTS[n]
        mid = f"<c{n}@client{n}.example.org>"
        ids.append(mid)
        raw = make_mail(
            "403 Forbidden on login",
            sender=f"user{n}@client{n}.example.org",
            body=body,
            message_id=mid,
            extra=extra,
        )
        ingest(raw)
    note = notification(db, "anna@example.com", ticket=6)
    assert "Problem #6" in text_of(note) and "#1  user0@client0.example.org" in text_of(note)
    ingest(reply_to(note, "anna@example.com", "#status solved\n\nWe fixed the login, sorry!"))
    sent = outbox(db, "agent-reply")
    assert sorted(r.ticket_id or 0 for r, _ in sent) == [1, 2, 3, 4, 5]
    assert len({m["Message-ID"] for _, m in sent}) == 5
    for row, msg in sent:
        n = (row.ticket_id or 0) - 1
        assert msg["Subject"] == f"[Support #{n + 1}] 403 Forbidden on login"
        assert msg["In-Reply-To"] == ids[n]
        assert row.recipients.split(",")[0] == f"user{n}@client{n}.example.org"
        assert "We fixed the login, sorry!" in text_of(msg)
    assert sent[0][0].recipients == "user0@client0.example.org,boss0@client0.example.org"
    rows = tickets(db)
    assert [t.status for t in rows] == ["solved"] * 6
    assert all(t.survey_due_at is not None for t in rows[:5]) and rows[5].survey_due_at is None
    # A customer's reply to one incident re-opens only that incident.
    first = sent[0][1]
    ingest(reply_to(first, "user0@client0.example.org", "Still 403 for me."))
    assert [t.status for t in tickets(db)] == ["open"] + ["solved"] * 5


def test_digest_instead_of_notifications(db: Database, ingest: Ingest, config: Config) -> None:
    from datetime import timedelta

    from maild.scheduler.jobs import run_all

    for n in range(8):
        ingest(alike(n))
    assert not outbox(db, "incident-digest")  # joined within digest_minutes of the notice
    later = tickets(db)[-1].created_at + timedelta(minutes=16)
    run_all(db, config, later)
    digests = outbox(db, "incident-digest")
    assert sorted(r.recipients for r, _ in digests) == ["anna@example.com", "boris@example.com"]
    body = text_of(digests[0][1])
    assert "3 more customers joined the problem #6" in body and "#9  user7" in body
    run_all(db, config, later + timedelta(minutes=30))
    assert len(outbox(db, "incident-digest")) == 2  # nothing new: no second digest


def test_issue_scenario_fifteen_customers(
    db: Database, ingest: Ingest, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's scenario: 15 alike "403 Forbidden" mails from 15 customers, then one
    answer on the problem. Prints the figures for the closing note."""
    from datetime import timedelta

    from test_agents import notification, reply_to

    from maild.scheduler.jobs import run_all

    for n in range(15):
        ingest(alike(n))
    rows = tickets(db)
    problems = [t for t in rows if t.type == "problem"]
    run_all(db, config, rows[0].created_at + timedelta(days=2))  # SLA sweep, digests
    lead = [r for r, _ in outbox(db, "incident-alert") if r.recipients == LEAD]
    per_agent = {
        a: dict(Counter(r.kind for r, _ in mails(db) if r.recipients == a))
        for a in ("anna@example.com", "boris@example.com")
    }
    breaches = outbox(db, "sla_breach")
    before = len(mails(db))
    note = notification(db, "anna@example.com", ticket=problems[0].id)
    ingest(reply_to(note, "anna@example.com", "#status solved\n\nFixed, please log in again."))
    answer = len(mails(db)) - before
    with capsys.disabled():
        print(
            f"\nrequests {len(rows) - len(problems)}, problems {len(problems)}, "
            f"incidents {sum(t.type == 'incident' for t in rows)}, mails to the lead "
            f"{len(lead)}, breach mails {len(breaches)}, mails per agent {per_agent}, "
            f"acks {len(outbox(db, 'ack'))} + known {len(outbox(db, 'incident-ack'))}, "
            f"mails when the agent answers once {answer}"
        )
    assert len(problems) == 1 and len(rows) == 16
    assert len(lead) == 2  # the alert at 5, the update at 10
    assert [r.ticket_id for r, _ in breaches] == [problems[0].id]
    # 4 before the problem, 1 for it; one digest of the 10 that joined; the problem's warning
    each = {"notify": 5, "incident-digest": 1, "sla_warning": 1}
    assert per_agent == {"anna@example.com": each, "boris@example.com": each}
    assert answer == 15
    assert {t.status for t in tickets(db)} == {"solved"}


def test_notification_lists_related_open_requests(db: Database, ingest: Ingest) -> None:
    from test_agents import notification

    ingest(make_mail("Invoice for November", sender="same@client.example.org", body="Where?"))
    ingest(make_mail("Printer is broken", sender="other@c.example.org", body="It prints nothing."))
    ingest(make_mail("Printer broken", sender="third@d.example.org", body="It prints nothing!"))
    ingest(make_mail("Also the printer", sender="same@client.example.org", body="Dead printer."))
    third = text_of(notification(db, "anna@example.com", ticket=3))
    assert "Related open requests (check them first):" in third
    assert "#2  other@c.example.org  Printer is broken" in third
    fourth = text_of(notification(db, "anna@example.com", ticket=4))
    assert "#1  same@client.example.org  Invoice for November" in fourth
    first = text_of(notification(db, "anna@example.com", ticket=1))
    assert "Related open requests" not in first


@pytest.mark.usefixtures("db")
def test_show_json_and_tickets_list(
    ingest: Ingest, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from maild.cli import main

    for n in range(5):
        ingest(alike(n))
    ingest(make_mail("Printer is broken", sender="user0@client0.example.org", body="Dead."))
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[desk]\nname = "Desk"\naddress = "support@example.com"\n[storage]\nurl = "{db_url}"\n'
        '[security]\nsecret_key = "test-secret-key-0123456789"\n'
        f'[outbound]\nurl = "maildir:{tmp_path / "out"}"\n'
    )
    capsys.readouterr()
    assert main(["--config", str(path), "show", "6", "--json"]) == 0
    problem = json.loads(capsys.readouterr().out)
    assert problem["type"] == "problem" and problem["problem"] is None
    assert problem["incidents"] == [1, 2, 3, 4, 5] and problem["merged_into"] is None
    assert main(["--config", str(path), "show", "1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["problem"] == 6 and first["incidents"] == [] and first["related"][0] == 7
    assert set(first["related"]) <= {2, 3, 4, 5, 7} and len(first["related"]) == 3
    assert main(["--config", str(path), "tickets"]) == 0
    listing = capsys.readouterr().out
    (line,) = [x for x in listing.splitlines() if x.startswith("#6 ")]
    assert line.endswith("[problem: 5 incidents]")


def _open_three(ingest: Ingest) -> None:
    ingest(make_mail("Printer is broken", sender="a@a.example.org", body="It prints nothing."))
    ingest(make_mail("Scanner jams", sender="b@b.example.org", body="Paper stuck again."))
    ingest(make_mail("Invoice", sender="c@c.example.org", body="Please resend the invoice."))


def test_link_unlink_problem(db: Database, ingest: Ingest) -> None:
    from test_agents import notification, reply_to

    _open_three(ingest)
    ingest(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", "#link 1"))
    rows = tickets(db)
    assert rows[0].type == "problem" and (rows[1].type, rows[1].problem_id) == ("incident", 1)
    ingest(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", "#unlink"))
    assert (tickets(db)[1].type, tickets(db)[1].problem_id) == ("question", None)
    ingest(reply_to(notification(db, "anna@example.com", 3), "anna@example.com", "#problem"))
    assert tickets(db)[2].type == "problem"
    for bad, said in (("#link 99", "#link 99: no such request"), ("#link 2", "this request")):
        ingest(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", bad))
        error = text_of(outbox(db, "command-error")[-1][1])
        assert said in error
    ingest(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", "#unlink"))
    assert "not an incident of a problem" in text_of(outbox(db, "command-error")[-1][1])


def test_merge(db: Database, ingest: Ingest) -> None:
    from test_agents import notification, reply_to

    _open_three(ingest)
    ingest(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", "#merge 1"))
    rows = tickets(db)
    assert rows[1].status == "closed" and rows[1].merged_into == 1
    with db.session() as s:
        first = s.get(Ticket, 1)
        assert first is not None and [c.email for c in first.ccs] == ["b@b.example.org"]
    told = outbox(db, "merged")
    assert [r.recipients for r, _ in told] == ["b@b.example.org"]
    body = text_of(told[0][1]).replace("\r\n", "\n")
    assert 'continues as request #1\n"Printer is broken"' in body
    with db.session() as s:
        from maild.ops.views import ticket_detail

        first = s.get(Ticket, 1)
        assert first is not None
        texts = [m["text"] for m in ticket_detail(s, first)["messages"]]
    assert any("Paper stuck again." in t for t in texts)  # the merged request's mail, on #1


def test_merge_tells_in_russian(make_config: Callable[..., Config], db: Database) -> None:
    from test_agents import notification, reply_to

    from maild.ingest.accept import store_raw
    from maild.pipeline.runner import Pipeline

    pipeline = Pipeline(make_config(desk={"language": "ru"}), db)

    def run(raw: bytes) -> None:
        pipeline.process(ids=[store_raw(db, raw, source="test", envelope_from=None).ident])

    run(make_mail("Принтер", sender="a@a.example.ru", body="Принтер не печатает совсем."))
    run(make_mail("Сканер", sender="b@b.example.ru", body="Сканер зажевал бумагу."))
    run(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", "#merge 1"))
    body = text_of(outbox(db, "merged")[0][1])
    assert "Ваш запрос #2 «Сканер» продолжается как запрос #1" in body


def test_two_workers_open_one_problem(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    """Two worker processes share the mail by thread: one problem all the same."""
    from sqlalchemy import func

    d = running(make_config(desk={"lead": LEAD}, pipeline={"workers": 2}))
    for n in range(15):
        d.send(alike(n), sender=f"user{n}@client{n}.example.org")
    done = select(func.count()).select_from(Inbound).where(Inbound.state == "done")

    def all_done() -> bool:
        with db.session() as s:
            return s.scalar(done) == 15

    wait_for(all_done, timeout=60)
    rows = tickets(db)
    problems = [t.id for t in rows if t.type == "problem"]
    assert len(problems) == 1 and len(rows) == 16
    assert {t.problem_id for t in rows if t.type != "problem"} == set(problems)
    assert len([r for r, _ in outbox(db, "incident-alert") if r.recipients == LEAD]) == 2


def test_russian_desk_alert_and_notification(
    make_config: Callable[..., Config], db: Database
) -> None:
    from maild.ingest.accept import store_raw
    from maild.pipeline.runner import Pipeline

    cfg = make_config(desk={"language": "ru", "lead": LEAD})
    pipeline = Pipeline(cfg, db)
    body = "Здравствуйте!\n\nНе могу войти в личный кабинет, ошибка 403 доступ запрещён.\n"
    for n in range(5):
        raw = make_mail("Ошибка 403 при входе", sender=f"k{n}@c{n}.example.ru", body=body)
        pipeline.process(ids=[store_raw(db, raw, source="test", envelope_from=None).ident])
    alert = outbox(db, "incident-alert")[0][1]
    assert alert["Subject"] == "Проблема: [Support #6] Ошибка 403 при входе"
    text = text_of(alert)
    assert "Новая проблема #6: клиентов, написавших об одном и том же с" in text
    assert "Запросы:   #1, #2, #3, #4, #5" in text and "Два из них:" in text
    note = next(m for r, m in outbox(db, "notify") if r.ticket_id == 6)
    assert "Проблема #6: многие клиенты пишут об одном и том же" in text_of(note)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"similarity": 1.5}, "incident.similarity"),
        ({"threshold": 1}, "incident.threshold"),
        ({"notify": ["not an address"]}, "incident.notify"),
        ({"window_minutes": 0}, "incident.window_minutes"),
        ({"digest_minutes": "15"}, "incident.digest_minutes"),
        ({"treshold": 5}, "incident.treshold"),
    ],
)
def test_bad_incident_config_names_the_key(
    make_config: Callable[..., Config], values: dict[str, object], key: str
) -> None:
    from maild.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        make_config(incident=values)
    assert err.value.key == key and str(err.value).startswith(f"config error: {key}: ")


def test_reply_to_a_merged_request_lands_on_the_one_that_continues(
    db: Database, ingest: Ingest
) -> None:
    from test_agents import notification, reply_to

    _open_three(ingest)
    ingest(reply_to(notification(db, "anna@example.com", 2), "anna@example.com", "#merge 1"))
    told = outbox(db, "merged")[0][1]
    ingest(reply_to(told, "b@b.example.org", "Any news on the scanner?"))
    assert len(tickets(db)) == 3  # no follow-up request
    with db.session() as s:
        last = s.scalars(select(Message).order_by(Message.id.desc()).limit(5)).all()
        landed = [m.ticket_id for m in last if m.direction == "in" and "Any news" in m.text]
    assert landed == [1] and tickets(db)[0].status == "open"


def test_another_workers_requests_are_read_ahead_of_the_transaction(
    config: Config, db: Database
) -> None:
    """A worker reads what the other committed into its index before its write transaction
    (out of SQLite's write lock); the transaction then reads only what came after, and the
    problem is opened all the same."""
    from maild.ingest.accept import store_raw
    from maild.pipeline.incident import Incident
    from maild.pipeline.runner import Pipeline

    first, second = Pipeline(config, db), Pipeline(config, db)
    index = next(s for s in second.stages if isinstance(s, Incident)).index

    def run(pipeline: Pipeline, n: int) -> None:
        pipeline.process(ids=[store_raw(db, alike(n), source="test", envelope_from=None).ident])

    for n in range(3):
        run(first, n)
    assert len(index) == 0
    second._ahead()
    assert sorted(index.entries) == [1, 2, 3]  # before any transaction of its own
    run(first, 3)
    run(second, 4)  # #4 was read in its transaction, #1-#3 were not read again
    rows = tickets(db)
    assert [t.type for t in rows] == ["incident"] * 5 + ["problem"]


def test_a_rolled_back_request_leaves_no_trace_in_the_index(
    make_config: Callable[..., Config], db: Database, tmp_path: Path
) -> None:
    """A transaction rolled back after the incident stage indexed its new request: the number
    goes to another worker's request next, and this worker's index holds that one, not the
    rolled-back words under its number."""
    from maild.ingest.accept import store_raw
    from maild.pipeline.incident import Incident
    from maild.pipeline.runner import Pipeline
    from maild.tickets.incidents import words

    override = tmp_path / "templates" / "en"
    override.mkdir(parents=True)
    (override / "ack.txt.j2").write_text(  # a broken template, for one subject only
        "{% if 'boom' in ticket.subject %}{{ no_such_value }}{% endif %}#{{ ticket.id }}\n"
    )
    failing = Pipeline(make_config(desk={"templates": str(override.parent)}), db)
    other = Pipeline(make_config(), db)
    stage = next(s for s in failing.stages if isinstance(s, Incident))

    def run(pipeline: Pipeline, subject: str, body: str, n: int) -> int:
        raw = make_mail(subject, sender=f"user{n}@client{n}.example.org", body=body)
        return pipeline.process(ids=[store_raw(db, raw, source="test", envelope_from=None).ident])

    boom = "The boom printer on floor two prints only blank pages since the toner change"
    run(failing, "boom printer blank pages", boom, 1)  # quarantined: the ack cannot be written
    assert tickets(db) == []
    run(other, "403 Forbidden on login", VARIANTS[0], 2)
    assert [t.id for t in tickets(db)] == [1]  # the number the rolled-back request had
    failing._ahead()
    stamped = stage.index.entries[1].words
    assert stamped == words("403 Forbidden on login", VARIANTS[0])
    assert stamped != words("boom printer blank pages", boom)
