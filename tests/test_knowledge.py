"""Knowledge (issue 13): search on both stores, similar solved requests, #kb articles,
articles offered in the acknowledgement."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from clockkit import outbox, text
from conftest import fixture_bytes, make_mail
from customerkit import customer_mails, notification, plain
from sqlalchemy import insert, select, update

from maild.knowledge.index import index_message
from maild.knowledge.search import search
from maild.knowledge.similar import similar_solved
from maild.store.db import Database
from maild.store.models import Counter, KbArticle, KbArticleVersion, Message, Ticket

Ingest = Callable[..., int]
ANNA = "anna@example.com"


def found(db: Database, words: str, kind: str = "request") -> list[int]:
    with db.session() as s:
        return [h.number for h in search(s.connection(), words) if h.kind == kind]


def answer(db: Database, ingest: Ingest, number: int, body: str) -> None:
    """Anna answers the notification of request ``number`` from her mail client."""
    note = notification(db, number)
    mid = note["Message-ID"]
    raw = make_mail(
        f"Re: {note['Subject']}",
        sender=ANNA,
        body=body,
        extra=f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n",
    )
    ingest(raw, envelope_from=ANNA)


def test_russian_word_forms_find_each_other(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Отчёт", body="Не могу загрузить отчёт в систему, кнопка серая."))
    ingest(make_mail("Ошибка загрузки", body="При загрузке файла пишет «ошибка 500»."))
    ingest(make_mail("Printer is broken", body="It prints nothing since Monday."))
    for form in ("загрузка", "загрузки", "загрузить", "ЗАГРУЗКОЙ"):
        assert sorted(found(db, form)) == [1, 2], form
    assert found(db, "printing") == [3]
    assert found(db, "загрузить printing") == []  # every word must match
    assert found(db, "отчеты") == [1]  # ё and е alike


def test_long_russian_words_meet_on_a_seven_letter_prefix(db: Database, ingest: Ingest) -> None:
    # Snowball stems «авторизации» авторизац and «авторизоваться» авторизова: a key one letter
    # short of each stem would not find the other; at most seven letters, both are «авториз».
    ingest(make_mail("Ошибка авторизации", body="Пишет «ошибка авторизации» после обновления."))
    ingest(make_mail("Не могу войти", body="Не получается авторизоваться в личном кабинете."))
    for form in ("авторизация", "авторизоваться", "авторизуюсь"):
        assert sorted(found(db, form)) == [1, 2], form
    assert found(db, "авторизации обновления") == [1]
    # … but not so short that another word is taken for it: перезаг is not перезап.
    ingest(make_mail("Перезапуск сервера", body="Перезапуск сервера не помог."))
    ingest(make_mail("Перезагрузка роутера", body="Нужна перезагрузка роутера."))
    assert found(db, "перезагрузка") == [4]
    if db.url.startswith("sqlite"):  # FTS5 keeps an index of each prefix length asked for
        with db.session() as s:
            ddl = s.connection().exec_driver_sql(
                "SELECT group_concat(sql) FROM sqlite_master WHERE name LIKE '%_fts'"
            )
            assert ddl.scalar().count("prefix='4 5 6 7'") == 2


def test_koi8r_and_cp1251_originals_are_searchable(db: Database, ingest: Ingest) -> None:
    ingest(fixture_bytes("new_koi8r_subject.eml"))
    ingest(fixture_bytes("new_cp1251_subject.eml"))
    assert found(db, "письмо сайт") == [1]  # «не приходят письма с формы … на сайте»
    assert found(db, "доступ бухгалтерии") == [2]  # «доступ к общей папке «Бухгалтерия»»
    with db.session() as s:
        hit = search(s.connection(), "папки")[0]
    assert hit.title == "Нет доступа к папке" and "папке" in hit.snippet and hit.score > 0


def test_agent_answers_are_searchable_without_quotes_or_commands(
    db: Database, ingest: Ingest
) -> None:
    ingest(make_mail("VPN", body="My VPN drops."))
    answer(db, ingest, 1, "#status solved\n\nReinstall the certificate bundle.\n\n-- \nAnna")
    assert found(db, "certificates bundle") == [1]
    assert found(db, "status") == []


def solve_kinit(db: Database, ingest: Ingest) -> None:
    ingest(
        make_mail(
            "kinit fails on my laptop",
            body="kinit says: Cannot find KDC for realm EXAMPLE.COM while getting credentials.",
        )
    )
    answer(
        db,
        ingest,
        1,
        "#status solved\n\nAdd the realm to /etc/krb5.conf:\n"
        "[realms] EXAMPLE.COM = { kdc = kdc.example.com }\nThen run kinit again.",
    )


def test_notification_names_a_similar_solved_request(db: Database, ingest: Ingest) -> None:
    solve_kinit(db, ingest)
    ingest(make_mail("Printer", sender="bob@example.org", body="The printer is jammed."))
    ingest(
        make_mail(
            "kinit: cannot find KDC",
            sender="carol@example.org",
            body="Since today kinit fails: cannot find KDC for realm EXAMPLE.COM.",
        )
    )
    note = text_of(notification(db, 3))
    assert "Similar solved requests:" in note
    assert "#1 kinit fails on my laptop" in note
    assert "Add the realm to /etc/krb5.conf:" in note
    assert "#status" not in note.split("Similar solved requests:")[1].split("-----")[0]
    assert "Similar solved" not in text_of(notification(db, 2))  # nothing alike: no section


def test_unsolved_or_unlike_requests_are_not_named(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("kinit fails", body="kinit: Cannot find KDC for realm EXAMPLE.COM."))
    ingest(make_mail("kinit fails too", sender="x@example.org", body="kinit: cannot find KDC."))
    assert "Similar solved" not in text_of(notification(db, 2))  # #1 is not solved


def text_of(msg: object) -> str:
    part = msg.get_body(("plain",))  # type: ignore[attr-defined]
    return str(part.get_content()).replace("\r\n", "\n")


def articles(db: Database) -> list[KbArticle]:
    with db.session() as s:
        return list(s.scalars(select(KbArticle).order_by(KbArticle.id)))


def test_kb_creates_updates_and_keeps_history(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Cannot print PDF", body="PDF files do not print."))
    answer(db, ingest, 1, "#kb\n\nOpen the PDF and choose Print as image.\n\n-- \nAnna Smith")
    [art] = articles(db)
    assert (art.title, art.internal, art.ticket_id, art.version) == (
        "Cannot print PDF",
        False,
        1,
        1,
    )
    assert art.body == "Open the PDF and choose Print as image."  # no command, no signature
    [reply] = customer_mails(db, 1, "agent-reply")
    assert "Print as image" in plain(reply) and "#kb" not in plain(reply)
    ingest(make_mail("PDF again", sender="dan@example.org", body="Printing a PDF hangs."))
    answer(db, ingest, 2, "#kb 1\n\nUpdate the driver first, then choose Print as image.")
    [art] = articles(db)
    assert art.version == 2 and art.body.startswith("Update the driver")
    assert art.title == "Cannot print PDF"
    with db.session() as s:
        history = list(s.scalars(select(KbArticleVersion).order_by(KbArticleVersion.version)))
    assert [(v.version, v.ticket_id) for v in history] == [(1, 1), (2, 2)]
    assert history[0].body == "Open the PDF and choose Print as image."
    assert found(db, "driver", kind="article") == [1]


def test_kb_note_makes_an_internal_article_and_titles_are_kept(
    db: Database, ingest: Ingest
) -> None:
    ingest(make_mail("Server room", body="The door code?"))
    answer(db, ingest, 1, "#kb Door codes\n#note\n\nThe code is 4711, change it monthly.")
    [art] = articles(db)
    assert (art.title, art.internal) == ("Door codes", True)
    assert customer_mails(db, 1, "agent-reply") == []  # a note never goes to the customer


def test_kb_unknown_article_is_an_error(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("Anything", body="Hello"))
    answer(db, ingest, 1, "#kb 42\n\nSome answer.")
    assert articles(db) == []
    errors = [r for r in outbox(db, "command-error") if r.ticket_id == 1]
    assert errors and "#kb 42: there is no article 42" in text(errors[0])
    assert customer_mails(db, 1, "agent-reply") == []  # nothing executed


def test_acknowledgement_offers_a_matching_public_article(db: Database, ingest: Ingest) -> None:
    ingest(make_mail("VPN certificate expired", body="The VPN says my certificate expired."))
    answer(db, ingest, 1, "#kb How to renew the VPN certificate\n\nOpen vpn.example.com and renew.")
    ingest(make_mail("Secret stuff", sender="e@example.org", body="Where is the vault key?"))
    answer(db, ingest, 2, "#kb Vault key\n#note\n\nThe vault key is in the safe.")
    ingest(
        make_mail(
            "VPN certificate",
            sender="frank@example.org",
            body="My VPN certificate has expired, how do I renew it?",
        )
    )
    [ack] = customer_mails(db, 3, "ack")
    body = " ".join(plain(ack).split())
    assert "Perhaps this already answers your question:" in body
    assert "How to renew the VPN certificate: http://127.0.0.1:0/kb/1" in body
    assert "If not, we will answer" in body
    assert "Vault" not in body  # internal articles are never offered
    with db.session() as s:
        t = s.get(Ticket, 3)
        assert t is not None and t.status == "new"
    ingest(make_mail("Printer", sender="g@example.org", body="The printer is jammed."))
    [plain_ack] = customer_mails(db, 4, "ack")
    assert "Perhaps" not in plain(plain_ack) and "We will answer" in plain(plain_ack)


def add_solved(db: Database, numbers: range, subject: str, body: str) -> None:
    """Solved requests ``numbers``, each with one indexed customer mail (written directly:
    hundreds of them through the pipeline would take minutes)."""
    now = datetime.now(UTC)
    with db.write() as s:
        conn = s.connection()
        for n in numbers:
            conn.execute(
                insert(Ticket.__table__),  # type: ignore[arg-type]
                {
                    "id": n,
                    "subject": subject.format(n=n),
                    "requester": f"c{n}@example.org",
                    "status": "solved",
                    "created_at": now,
                    "updated_at": now,
                },
            )
            msg = conn.execute(
                insert(Message.__table__).returning(Message.id),  # type: ignore[arg-type]
                {
                    "ticket_id": n,
                    "direction": "in",
                    "kind": "customer",
                    "subject": subject.format(n=n),
                    "text": body.format(n=n),
                    "created_at": now,
                },
            ).scalar_one()
            index_message(s, msg, "customer", subject.format(n=n), body.format(n=n))
        conn.execute(update(Counter).where(Counter.name == "ticket").values(value=numbers[-1]))


def test_an_old_solved_request_is_found_behind_many_newer_ones(
    db: Database, ingest: Ingest
) -> None:
    solve_kinit(db, ingest)
    # 520 newer requests sharing the everyday words, none about kinit
    body = "My laptop fails today while getting credentials for the realm."
    add_solved(db, range(2, 522), "Laptop fails today, case {n}", body)
    ingest(
        make_mail(
            "kinit fails today",
            sender="zoe@example.org",
            body="kinit fails today: cannot find KDC for realm EXAMPLE.COM.",
        )
    )
    assert "#1 kinit fails on my laptop" in text_of(notification(db, 522))


def test_among_common_words_the_closest_short_request_is_named(db: Database) -> None:
    # Every word of the new request is in over 300 messages (no rare word to narrow the search
    # by): the newest matches are ranked by how many of the words they share for their length.
    long = "Printer queue stuck again. " + " ".join(f"filler{i} text" for i in range(60))
    add_solved(db, range(1, 351), "Printer queue stuck, case {n}", long)
    add_solved(db, range(351, 352), "Printer queue stuck on floor two", "Printer queue stuck.")
    add_solved(db, range(352, 401), "Printer queue stuck, case {n}", long)
    with db.session() as s:
        found = similar_solved(s.connection(), 0, "Printer queue stuck", 0.3)
    assert [f.number for f in found][:1] == [351]


_PRINTER = "SELECT rowid FROM message_fts WHERE body MATCH 'printer' ORDER BY rowid"


def _indexed_rows(db: Database) -> list[int]:
    with db.engine.connect() as conn:
        return [int(r) for (r,) in conn.exec_driver_sql(_PRINTER)]


def test_index_rows_are_written_at_commit_and_leave_with_their_savepoint(db: Database) -> None:
    """index_message queues the row; the commit writes it, after every other write. A
    savepoint rolled back takes its own rows along, not the enclosing transaction's."""
    if not db.is_sqlite:
        pytest.skip("PostgreSQL's index is the server's own (GIN), kept with the row")

    def index(s: object, n: int) -> None:
        index_message(s, n, "customer", "printer", "The printer jams.")  # type: ignore[arg-type]

    with db.write() as s:
        index(s, 1)
        assert s.connection().exec_driver_sql(_PRINTER).all() == []  # not even in here, yet
        with s.begin_nested():
            index(s, 2)  # released with the savepoint: kept
        try:
            with s.begin_nested():
                index(s, 3)
                raise RuntimeError("this message fails")
        except RuntimeError:
            pass
        index(s, 4)
    assert _indexed_rows(db) == [1, 2, 4]
    try:
        with db.write() as s:
            index(s, 5)
            raise RuntimeError("the whole transaction fails")
    except RuntimeError:
        pass
    with db.write() as s:
        index(s, 6)
    assert _indexed_rows(db) == [1, 2, 4, 6]
