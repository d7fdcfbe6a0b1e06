"""Jinja rendering of mail templates: the operator's folder first, then the shipped ones."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

SHIPPED = Path(__file__).resolve().parents[1] / "templates"

_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# "до 12:30 понедельника": the genitive after "до".
_RU_DAYS_GEN = (
    "понедельника",
    "вторника",
    "среды",
    "четверга",
    "пятницы",
    "субботы",
    "воскресенья",
)


def when_text(due: datetime, now: datetime, language: str, timezone: str) -> str:
    """A deadline in the customer's words: "today 15:00", "by Monday 12:30", "до 12:30 среды"."""
    zone = ZoneInfo(timezone)
    local, today = due.astimezone(zone), now.astimezone(zone).date()
    hhmm = local.strftime("%H:%M")
    days = (local.date() - today).days
    if language == "ru":
        if days == 0:
            return f"сегодня до {hhmm}"
        if days == 1:
            return f"завтра до {hhmm}"
        if days < 7:
            return f"до {hhmm} {_RU_DAYS_GEN[local.weekday()]}"
        return f"до {hhmm} {local.strftime('%d.%m.%Y')}"
    if days == 0:
        return f"today {hhmm}"
    if days == 1:
        return f"tomorrow {hhmm}"
    if days < 7:
        return f"{_EN_DAYS[local.weekday()]} {hhmm}"
    return f"{local.strftime('%Y-%m-%d')} {hhmm}"


class Renderer:
    """Renders ``<lang>/<name>.txt.j2`` and, when present, ``<lang>/<name>.html.j2``."""

    def __init__(self, override: Path | None = None) -> None:
        loaders = [FileSystemLoader(str(override))] if override else []
        loaders.append(FileSystemLoader(str(SHIPPED)))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, language: str, template: str, **context: Any) -> tuple[str, str | None]:
        text = self.env.get_template(f"{language}/{template}.txt.j2").render(**context)
        try:
            html_tpl = self.env.get_template(f"{language}/{template}.html.j2")
        except Exception:  # TemplateNotFound: an HTML part is optional
            return text, None
        return text, html_tpl.render(**context)


_RU_DAYS = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье")
_RU_MONTHS_GEN = (
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
)
_EN_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def day_text(day: date, language: str) -> str:
    """ "Monday 30 November" / "понедельник, 30 ноября"."""
    if language == "ru":
        return f"{_RU_DAYS[day.weekday()]}, {day.day} {_RU_MONTHS_GEN[day.month - 1]}"
    return f"{_EN_DAYS[day.weekday()]} {day.day} {_EN_MONTHS[day.month - 1]}"
