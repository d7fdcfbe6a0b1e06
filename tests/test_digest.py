"""The morning digest (timing with --now, content, once a day) and `#list`/`#search` by mail."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from clockkit import (
    build_config,
    create_at,
    deliver_at,
    mail,
    maild,
    mapping,
    msk,
    outbox,
    update,
    write_toml,
)
from clockkit import text as body_of
from conftest import make_mail

from maild.config import Config
from maild.scheduler.digest import sweep_digest
from maild.store.db import Database
from maild.store.models import Ticket

MON_0830 = msk(2026, 11, 23, 8, 30)  # Monday, before the digest
MON_0900 = msk(2026, 11, 23, 9, 0)
SAT_1000 = msk(2026, 11, 28, 10, 0)


def desk(db_url: str, tmp_path: Path, **sections: dict[str, object]) -> Config:
    return build_config(db_url, tmp_path, **{"digest": {"at": "09:00"}, **sections})


def queue_with_three(db: Database, config: Config) -> None:
    """#1 Anna's (soon due), #2 unassigned, #3 Anna's (later), #4 solved (never listed)."""
    friday = msk(2026, 11, 20, 10, 0)
    create_at(db, config, friday, "Printer is broken", sender="ann@client.org")
    create_at(db, config, friday + timedelta(hours=1), "VPN drops", sender="bob@client.org")
    create_at(db, config, friday + timedelta(hours=2), "Invoice copy", sender="cid@client.org")
    create_at(db, config, friday + timedelta(hours=3), "Old thing", sender="dan@client.org")
    update(db, 1, assignee="anna@example.com", status="open")
    update(db, 3, assignee="anna@example.com", status="pending", due_at=MON_0900 + timedelta(5))
    update(db, 4, status="solved")


def test_digest_is_due_at_nine_on_working_days_once(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk(db_url, tmp_path)
    queue_with_three(db, config)
    assert sweep_digest(db, config, MON_0830) == 0  # too early
    assert sweep_digest(db, config, SAT_1000) == 0  # a day off
    assert sweep_digest(db, config, MON_0900) == 3  # Anna, Boris and the lead
    assert sweep_digest(db, config, MON_0900 + timedelta(hours=3)) == 0  # once a day
    assert sweep_digest(db, config, MON_0900 + timedelta(days=1)) == 3  # Tuesday's
    holiday = desk(db_url, tmp_path, hours={"holidays": ["2026-11-25"]})
    assert sweep_digest(db, holiday, msk(2026, 11, 25, 10, 0)) == 0
    off = desk(db_url, tmp_path, digest={"at": "off"})
    assert sweep_digest(db, off, msk(2026, 11, 26, 10, 0)) == 0


def test_agent_digest_lists_own_soonest_first_at_risk_marked_and_unassigned(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk(db_url, tmp_path)
    queue_with_three(db, config)
    sweep_digest(db, config, MON_0900)
    (anna,) = [r for r in outbox(db, "digest") if r.recipients == "anna@example.com"]
    msg = mail(anna)
    assert msg["Subject"] == "Your queue for Monday 23 November"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = body_of(anna)
    mine = text.split("Unassigned")[0]
    assert mine.index("#1 ") < mine.index("#3 ")  # #1 is due first (its SLA), #3 on Saturday
    assert "#2 " not in mine and "#4 " not in text
    # #1 came on Friday with a 4-hour target and nobody answered: at risk, marked "!".
    assert "! #1 " in mine and "! #3 " not in mine
    unassigned = text.split("Unassigned")[1]
    assert "#2 " in unassigned and "bob@client.org" in unassigned
    assert "#list mine" in text


def test_lead_gets_the_desk_summary_in_russian(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk(db_url, tmp_path, desk={"language": "ru"})
    queue_with_three(db, config)
    update(db, 2, sla_breached_at=msk(2026, 11, 20, 16, 0))
    update(db, 1, first_response_at=msk(2026, 11, 20, 12, 0), rating="good")
    update(db, 1, rated_at=msk(2026, 11, 20, 13, 0))
    sweep_digest(db, config, MON_0900)
    (lead,) = outbox(db, "digest-lead")
    assert lead.recipients == "lead@example.com"
    assert mail(lead)["Subject"] == "Сводка по службе на понедельник, 23 ноября"
    text = body_of(lead)
    assert "С пятница, 20 ноября" in text or "пятница, 20 ноября" in text
    assert "Нарушений SLA: 1" in text and "#2 " in text.split("Первых ответов")[0]
    assert "Первых ответов: 1, медиана 2.0 рабочих часов" in text
    assert "хороших 1, плохих 0; CSAT за всё время 100.0 %" in text
    oldest = text.split("Самые старые открытые запросы:")[1]
    assert oldest.index("#1 ") < oldest.index("#2 ") < oldest.index("#3 ")


@pytest.mark.usefixtures("db")
def test_maild_digest_now_sends_what_is_due_then(tmp_path: Path, db_url: str) -> None:
    data = mapping(db_url, tmp_path, digest={"at": "09:00"})
    path = write_toml(data, tmp_path / "config.toml")
    early = maild(path, "digest", "--now", MON_0830.isoformat())
    assert early.returncode == 0 and early.stdout.strip() == "digest=0"
    due = maild(path, "digest", "--now", "2026-11-23T09:05:00+03:00")
    assert due.returncode == 0 and due.stdout.strip() == "digest=3", due.stderr
    assert maild(path, "digest", "--now", "2026-11-23T12:00:00+03:00").stdout.strip() == "digest=0"
    bad = maild(path, "digest", "--now", "tomorrow")
    assert bad.returncode == 64


def _reply(parent: EmailMessage, sender: str, body: str) -> bytes:
    mid = parent["Message-ID"]
    return make_mail(
        "Re: list", sender=sender, body=body, extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n"
    )


def test_list_and_search_answer_proven_agents_only(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk(db_url, tmp_path)
    queue_with_three(db, config)
    sweep_digest(db, config, MON_0900)
    (digest,) = [mail(r) for r in outbox(db, "digest") if r.recipients == "boris@example.com"]
    at = MON_0900 + timedelta(minutes=5)
    # A bare From is no proof: nothing comes back, whatever it asks.
    deliver_at(db, config, make_mail("x", sender="boris@example.com", body="#list all"), at)
    assert outbox(db, "agent-query") == []
    deliver_at(db, config, _reply(digest, "boris@example.com", "#list unassigned\n"), at)
    (answer,) = outbox(db, "agent-query")
    assert answer.recipients == "boris@example.com"
    text = body_of(answer)
    # The unproven "#list all" became request #5, as any customer's mail would.
    assert text.startswith("Unassigned requests (2):") and "#1 " not in text
    assert "#2 " in text and "#5 " in text
    reply = mail(answer)
    assert reply["In-Reply-To"] is not None
    # A reply to the answer proves again: search every request, the solved one too.
    deliver_at(db, config, _reply(reply, "boris@example.com", "#search old thing"), at)
    found = body_of(outbox(db, "agent-query")[-1])
    assert "#4 " in found and "#1 " not in found
    deliver_at(db, config, _reply(reply, "boris@example.com", "#list everything"), at)
    assert "No list called" in body_of(outbox(db, "agent-query")[-1])
    # A reply to a list without a question says how to ask; it opens no request either.
    deliver_at(db, config, _reply(reply, "boris@example.com", "Thanks, that helps."), at)
    helped = body_of(outbox(db, "agent-query")[-1])
    assert helped.startswith("This address answers questions, one on the first line.")
    assert "#search words" in helped
    with db.session() as s:  # the proven questions opened no request (#5 is the unproven one)
        assert s.query(Ticket).count() == 5


def test_list_mine_and_breaching(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk(db_url, tmp_path)
    queue_with_three(db, config)
    update(db, 2, sla_breached_at=msk(2026, 11, 20, 16, 0))
    sweep_digest(db, config, MON_0900)
    (digest,) = [mail(r) for r in outbox(db, "digest") if r.recipients == "anna@example.com"]
    at = MON_0900 + timedelta(minutes=5)
    deliver_at(db, config, _reply(digest, "anna@example.com", "#list"), at)
    mine = body_of(outbox(db, "agent-query")[-1])
    assert "#1 " in mine and "#3 " in mine and "#2 " not in mine
    deliver_at(db, config, _reply(digest, "anna@example.com", "#LIST breaching"), at)
    breaching = body_of(outbox(db, "agent-query")[-1])
    assert "#1 " in breaching and "#2 " in breaching and "#3 " not in breaching


def test_two_instances_at_once_send_each_digest_once(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    import threading

    config = desk(db_url, tmp_path)
    queue_with_three(db, config)
    others = [Database(db_url) for _ in range(3)]
    counts: list[int] = []
    start = threading.Barrier(3)

    def run(database: Database) -> None:
        start.wait()
        counts.append(sweep_digest(database, config, MON_0900))

    threads = [threading.Thread(target=run, args=(d,)) for d in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for d in others:
        d.dispose()
    assert sum(counts) == 3
    assert len(outbox(db, "digest")) == 2 and len(outbox(db, "digest-lead")) == 1
