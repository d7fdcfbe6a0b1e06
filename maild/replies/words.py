"""The desk's vocabulary in each language: statuses, types, priorities, plurals (pure)."""

from __future__ import annotations

import logging

from babel import Locale

log = logging.getLogger(__name__)

# What agents read in notifications: the domain's words, translated.
NAMES: dict[str, dict[str, str]] = {
    "ru": {
        "new": "новый",
        "open": "в работе",
        "pending": "ждёт ответа клиента",
        "hold": "ждёт другой отдел",
        "solved": "решён",
        "closed": "закрыт",
        "question": "вопрос",
        "problem": "проблема",
        "incident": "инцидент",
        "task": "задача",
        "suggestion": "предложение",
        "registration": "регистрация продукта",
        "low": "низкий",
        "normal": "обычный",
        "high": "высокий",
        "urgent": "срочный",
        # who wrote a message, in the escalation mail's history
        "customer": "клиент",
        "agent": "агент",
        "note": "заметка",
        "department": "отдел",
        "system": "служба",
        "auto-reply": "автоответ",
        "bounce": "отказ доставки",
    },
}

# What a customer reads about the state of their request.
CUSTOMER_STATUS: dict[str, dict[str, str]] = {
    "en": {
        "new": "received, an agent will answer soon",
        "open": "in progress",
        "pending": "waiting for your answer",
        "hold": "passed to another department",
        "solved": "solved",
        "closed": "closed",
    },
    "ru": {
        "new": "получен, скоро ответим",
        "open": "в работе",
        "pending": "ждём вашего ответа",
        "hold": "передан в другой отдел",
        "solved": "решён",
        "closed": "закрыт",
    },
}


def name_of(value: str | None, language: str) -> str:
    """``open`` -> "в работе" in Russian mail; English keeps the domain's own word."""
    if value is None:
        return ""
    return NAMES.get(language, {}).get(value, value)


def customer_status(status: str, language: str) -> str:
    return CUSTOMER_STATUS.get(language, CUSTOMER_STATUS["en"]).get(status, status)


def plural(count: float, language: str, *forms: str) -> str:
    """``7 дней``, ``1 day``: forms are one, few, many (ru) or one, other (en), by CLDR rules."""
    n = round(count)
    category = Locale(language).plural_form(n)
    order = ("one", "few", "many") if language == "ru" else ("one", "other")
    index = order.index(category) if category in order else len(forms) - 1
    return f"{n} {forms[min(index, len(forms) - 1)]}"
