"""What the customer reads (issue 14): acknowledgement, replies, delays, escalation words."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from clockkit import create_at, events, mail, msk, outbox, ticket, update
from customerkit import (
    PAGE,
    RU_BODY,
    agent_says,
    customer_mails,
    desk_config,
    plain,
    words,
)

from maild.replies.render import Renderer
from maild.replies.scheduled import Notices
from maild.scheduler.jobs import sweep_hold, sweep_sla
from maild.store.db import Database

MONDAY_10 = msk(2026, 11, 23, 10, 0)


def test_acknowledgement_in_russian_reads_naturally(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path, desk={"language": "ru", "name": "Служба поддержки РИТ"})
    number = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    (ack,) = customer_mails(db, number, "ack")
    text = plain(ack)
    # No desk name in the wrong case: without [desk] name_in the phrase needs no case at all.
    assert "Спасибо за обращение! Вашему запросу присвоен номер #1." in text
    assert "обращение в Служба" not in text
    assert "Мы ответим сегодня до 14:00 MSK." in text
    assert "Чтобы добавить комментарий, просто ответьте на это письмо." in text
    assert PAGE.search(text), text
    assert text.rstrip().endswith("Служба поддержки РИТ\nЭто автоматическое сообщение.")


def test_name_in_gives_the_desk_name_after_v(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk_config(
        db_url,
        tmp_path,
        desk={"name": "Служба поддержки РИТ", "name_in": "Службу поддержки РИТ"},
    )
    number = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    text = plain(customer_mails(db, number, "ack")[0])
    assert "Спасибо за обращение в Службу поддержки РИТ. Вашему запросу присвоен номер #1." in text


def test_english_acknowledgement_with_link_and_hint(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path)
    friday = msk(2026, 11, 27, 17, 30)
    number = create_at(db, config, friday, "Printer is broken", body="It prints nothing at all.")
    text = plain(customer_mails(db, number, "ack")[0])
    assert "thank you for writing to Example Support. Your request has the number #1." in text
    assert "We will answer on Monday by 12:30 MSK." in text
    assert "To add a comment, just reply to this mail." in text
    assert PAGE.search(text)


def test_agent_reply_ends_with_hint_link_and_the_original_request(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path)
    en = create_at(db, config, MONDAY_10, "Printer is broken", body="It prints nothing at all.")
    ru = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY, sender="k@ex.ru")
    agent_says(db, config, en, "Please switch it off and on again.", MONDAY_10)
    agent_says(db, config, ru, "Выключите и снова включите его, пожалуйста.", MONDAY_10)
    (reply_en,) = customer_mails(db, en, "agent-reply")
    text = plain(reply_en)
    assert text.startswith("Please switch it off and on again.\n\nTo add a comment, just reply")
    assert PAGE.search(text)
    assert "Your request of 2026-11-23 10:00 MSK:\n> It prints nothing at all." in text
    (reply_ru,) = customer_mails(db, ru, "agent-reply")
    text = plain(reply_ru)
    assert text.startswith("Выключите и снова включите его, пожалуйста.\n\nЧтобы добавить")
    assert f"Ваш запрос от 23.11.2026 10:00 MSK:\n> {RU_BODY}" in text
    assert "Это автоматическое сообщение" not in text  # a person wrote this one


@pytest.mark.parametrize(
    ("at", "ru", "en"),
    [
        (
            msk(2026, 11, 24, 16, 0),  # Tuesday 16:00
            "Для того чтобы решить вопрос, мне надо подключить технического инженера. "
            "Постараемся вернуться к вам до конца дня или завтра.",
            "To solve the question, I need to bring in the app developers. "
            "We will try to get back to you by the end of the day or tomorrow.",
        ),
        (
            msk(2026, 11, 24, 17, 30),  # Tuesday 17:30
            "Для того чтобы решить вопрос, мне надо подключить технического инженера. "
            "Так как уже вечер, с ответом вернемся завтра. Постараемся как можно быстрее.",
            "To solve the question, I need to bring in the app developers. As it is evening "
            "already, we will come back with an answer tomorrow. "
            "We will try to be as quick as possible.",
        ),
        (
            msk(2026, 11, 27, 17, 30),  # Friday evening
            "Для того чтобы решить вопрос, мне надо подключить технического инженера. "
            "Вернемся с ответом в первый рабочий день — понедельник, 30 ноября.",
            "To solve the question, I need to bring in the app developers. "
            "We will come back with an answer on the first working day, Monday 30 November.",
        ),
        (
            msk(2026, 11, 28, 12, 0),  # Saturday
            "Для того чтобы решить вопрос, мне надо подключить технического инженера. "
            "Вернемся с ответом в первый рабочий день — понедельник, 30 ноября.",
            "To solve the question, I need to bring in the app developers. "
            "We will come back with an answer on the first working day, Monday 30 November.",
        ),
    ],
)
def test_escalation_words_by_the_hour_with_the_department_title(
    db: Database, tmp_path: Path, db_url: str, at: object, ru: str, en: str
) -> None:
    config = desk_config(db_url, tmp_path)
    n_ru = create_at(db, config, at, "Не печатает принтер", body=RU_BODY)  # type: ignore[arg-type]
    n_en = create_at(db, config, at, "Printer", body="It prints nothing.", sender="c@ex.org")  # type: ignore[arg-type]
    # By title (with spaces), and by the title of another department in English.
    agent_says(db, config, n_ru, "#escalate технического инженера проверьте драйвер", at)  # type: ignore[arg-type]
    agent_says(db, config, n_en, "#escalate the app developers\nWe are on it.", at)  # type: ignore[arg-type]
    (interim_ru,) = customer_mails(db, n_ru, "hold-interim")
    assert words(plain(interim_ru)).startswith(ru), plain(interim_ru)
    (interim_en,) = customer_mails(db, n_en, "hold-interim")
    assert words(plain(interim_en)).startswith("We are on it. " + en), plain(interim_en)
    assert (ticket(db, n_ru).hold_department, ticket(db, n_en).hold_department) == ("tech", "apps")
    (to_tech,) = [r for r in outbox(db, "escalation") if r.ticket_id == n_ru]
    assert to_tech.recipients == "tech@example.com"
    assert "проверьте драйвер" in plain(to_tech)


def test_escalation_mail_history_is_in_the_desks_zone(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path, desk={"language": "ru"})
    number = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    agent_says(db, config, number, "#escalate tech", MONDAY_10 + timedelta(minutes=5))
    (esc,) = [r for r in outbox(db, "escalation") if r.ticket_id == number]
    text = plain(esc)
    assert "Анна просит технического инженера помочь" in text.replace("Anna", "Анна")
    assert "23.11.2026 10:00 MSK  клиент customer@example.org" in text  # 07:00 UTC, desk time
    assert "07:00" not in text


def test_delay_notice_at_the_breach_once_and_only_without_an_answer(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path)
    en = create_at(db, config, MONDAY_10, "Printer is broken", body="It prints nothing at all.")
    ru = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY, sender="k@ex.ru")
    answered = create_at(db, config, MONDAY_10, "Scanner", body="Dead.", sender="a@x.org")
    agent_says(db, config, answered, "Looking at it now.", MONDAY_10 + timedelta(hours=1))
    sweep_sla(db, config, msk(2026, 11, 23, 14, 0))  # due 14:00: breached
    sweep_sla(db, config, msk(2026, 11, 23, 15, 0))
    (delay_en,) = customer_mails(db, en, "sla_delay")
    (delay_ru,) = customer_mails(db, ru, "sla_delay")
    assert not customer_mails(db, answered, "sla_delay")
    assert words(plain(delay_en)).startswith(
        'Hello, your request #1 "Printer is broken" is being handled by our specialists. '
        "We apologise: the answer is taking longer than we promised. "
        "The estimated time of our answer is today by 18:00 MSK."
    ), plain(delay_en)
    assert words(plain(delay_ru)).startswith(
        "Здравствуйте! Ваш запрос #2 «Не печатает принтер» обрабатывается нашими специалистами. "
        "Приносим извинения: ответ занимает больше времени, чем мы обещали. "
        "Ориентировочное время ответа — сегодня до 18:00 MSK."
    ), plain(delay_ru)
    assert mail(delay_ru)["Subject"] == "Ответ задерживается: [Support #2] Не печатает принтер"
    assert delay_en.rate_key == "customer@example.org"  # counted by the loop rules
    assert len(events(db, en, "delay-told")) == 1


def test_delay_notice_can_be_turned_off(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk_config(db_url, tmp_path, sla={"tell_customer": False})
    number = create_at(db, config, MONDAY_10, "Printer is broken")
    assert sweep_sla(db, config, msk(2026, 11, 23, 14, 0)) == 1
    assert outbox(db, "sla_breach") and not customer_mails(db, number, "sla_delay")


def test_hold_notice_uses_the_practices_words(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk_config(db_url, tmp_path)
    ru = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    en = create_at(db, config, MONDAY_10, "Printer", body="It prints nothing.", sender="c@ex.org")
    for number in (ru, en):
        agent_says(db, config, number, "#escalate billing", MONDAY_10)
    sweep_hold(db, config, MONDAY_10 + timedelta(hours=24))
    assert (
        "Вопрос в работе, но ответ от коллег ещё не получили. Я уже напомнил про срочность "
        "вопроса, постараемся в течение дня решить."
    ) in words(plain(customer_mails(db, ru, "hold_customer")[0]))
    assert (
        "The question is in progress, but we have not yet received an answer from our "
        "colleagues. I have already reminded them of the urgency, we will try to solve it "
        "within the day."
    ) in words(plain(customer_mails(db, en, "hold_customer")[0]))


def test_plurals_follow_the_language(db: Database, tmp_path: Path, db_url: str) -> None:
    config = desk_config(db_url, tmp_path)
    ru = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    en = create_at(db, config, MONDAY_10, "Printer", body="It prints nothing.", sender="c@ex.org")
    notices = Notices(config, Renderer(), MONDAY_10)
    with db.write() as s:
        from maild.store.models import Ticket

        for number, days in ((ru, 7), (ru, 1), (ru, 3), (en, 1), (en, 7)):
            t = s.get(Ticket, number)
            assert t is not None
            notices.to_customer(s, t, "pending_autosolved", days=days)
    texts = [words(plain(r)) for r in outbox(db, "pending_autosolved")]
    assert "уже 7 дней," in texts[0] and "уже 1 день," in texts[1] and "уже 3 дня," in texts[2]
    assert "for 1 day," in texts[3] and "for 7 days," in texts[4]


def test_agents_read_russian_words_in_russian_mail(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path, desk={"language": "ru"})
    number = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    note = next(r for r in outbox(db, "notify") if r.ticket_id == number)
    text = plain(note)
    assert "Тип:         вопрос" in text and "Приоритет:   обычный" in text
    assert "Статус:      новый" in text and "Срок:        сегодня до 14:00 MSK" in text
    update(db, number, priority="urgent")
    sweep_sla(db, config, msk(2026, 11, 23, 14, 0))
    (breach,) = [r for r in outbox(db, "sla_breach") if r.ticket_id == number]
    assert "Тип: вопрос, приоритет: срочный" in plain(breach)


def test_command_error_is_all_in_the_agents_language(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(db_url, tmp_path, desk={"language": "ru"})
    number = create_at(db, config, MONDAY_10, "Не печатает принтер", body=RU_BODY)
    bad = "#type suggestion\n#escalate legal\n#frobnicate\nТекст"
    agent_says(db, config, number, bad, MONDAY_10)
    (err,) = [r for r in outbox(db, "command-error") if r.ticket_id == number]
    text = plain(err)
    assert "#type suggestion: это категория, напишите #category suggestion" in text
    assert "#frobnicate: неизвестная команда" in text
    assert (
        "#escalate legal: такого отдела нет (есть: billing, tech (технического инженера), "
        "apps (the app developers))"
    ) in text
    assert "Команды пишутся в первых строках ответа" in text
    for english in ("expected", "unknown", "Commands go", "needs a value", "agent email"):
        assert english not in text, english


def test_page_promises_the_new_time_after_the_delay_notice(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    from maild.web.page import load_view

    config = desk_config(db_url, tmp_path)
    number = create_at(db, config, MONDAY_10, "Printer is broken")
    with db.session() as s:
        view = load_view(s, config, number, MONDAY_10)
        assert view is not None and view.promise == "today by 14:00 MSK"
    sweep_sla(db, config, msk(2026, 11, 23, 14, 0))
    with db.session() as s:
        view = load_view(s, config, number, msk(2026, 11, 23, 14, 0))
        assert view is not None and view.promise == "today by 18:00 MSK"


def test_delay_notice_keeps_to_the_auto_reply_limit(
    db: Database, tmp_path: Path, db_url: str
) -> None:
    config = desk_config(
        db_url, tmp_path, limits={"auto_replies_per_hour": 1}, sla={"question": 0.5}
    )
    number = create_at(db, config, msk(2026, 11, 23, 13, 30), "Printer is broken")  # ack: 1
    assert sweep_sla(db, config, msk(2026, 11, 23, 14, 0)) == 1  # breached within the hour
    assert not customer_mails(db, number, "sla_delay")
    assert len(events(db, number, "delay-suppressed")) == 1
