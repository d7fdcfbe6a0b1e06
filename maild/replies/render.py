"""Jinja rendering of mail templates: the operator's folder first, then the shipped ones."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from maild.core.clock import as_utc
from maild.replies.words import customer_status, name_of, plural

SHIPPED = Path(__file__).resolve().parents[1] / "templates"

_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# «в понедельник до 12:30»: the accusative after «в» (and «во вторник»).
_RU_ON_DAY = (
    "в понедельник",
    "во вторник",
    "в среду",
    "в четверг",
    "в пятницу",
    "в субботу",
    "в воскресенье",
)


def zone_label(local: datetime) -> str:
    """ "MSK" for Moscow; a zone without a name of its own gives its offset, "+05"."""
    return local.strftime("%Z") or "UTC"


def when_text(due: datetime, now: datetime, language: str, timezone: str) -> str:
    """A deadline in the customer's words, in the desk's zone and saying so:
    "on Monday by 12:30 MSK", «в понедельник до 12:30 MSK»."""
    zone = ZoneInfo(timezone)
    local, today = due.astimezone(zone), now.astimezone(zone).date()
    hhmm = f"{local.strftime('%H:%M')} {zone_label(local)}"
    days = (local.date() - today).days
    if language == "ru":
        if days == 0:
            return f"сегодня до {hhmm}"
        if days == 1:
            return f"завтра до {hhmm}"
        if days < 7:
            return f"{_RU_ON_DAY[local.weekday()]} до {hhmm}"
        return f"{local.strftime('%d.%m.%Y')} до {hhmm}"
    if days == 0:
        return f"today by {hhmm}"
    if days == 1:
        return f"tomorrow by {hhmm}"
    if days < 7:
        return f"on {_EN_DAYS[local.weekday()]} by {hhmm}"
    return f"on {local.strftime('%Y-%m-%d')} by {hhmm}"


def local_time(value: datetime, timezone: str, language: str = "en") -> str:
    """An instant in the desk's zone, named: "2026-11-30 12:30 MSK", «30.11.2026 12:30 MSK»."""
    local = as_utc(value).astimezone(ZoneInfo(timezone))
    day = local.strftime("%d.%m.%Y" if language == "ru" else "%Y-%m-%d")
    return f"{day} {local.strftime('%H:%M')} {zone_label(local)}"


class Renderer:
    """Renders ``<lang>/<name>.txt.j2`` and, when present, ``<lang>/<name>.html.j2``.

    ``reload``: look at every template file's time again before each use (jinja's
    ``auto_reload``), so that an edit shows at once. The pipeline does without (a ``stat`` a
    template, for every mail, inside the write transaction): its workers are restarted with a
    new renderer on SIGHUP, which is when the desk's templates are read again.
    """

    def __init__(self, override: Path | None = None, *, reload: bool = True) -> None:
        loaders = [FileSystemLoader(str(override))] if override else []
        loaders.append(FileSystemLoader(str(SHIPPED)))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=reload,
        )
        self.env.filters["plural"] = plural
        self.env.filters["word"] = name_of
        self.env.filters["customer_status"] = customer_status
        # HTML parts found missing: looked for once per renderer, not for every mail (most
        # mail has none, and a miss searches both folders and raises). A template added later
        # is found after a reload, as jinja's own cache already has it for an override that
        # would shadow a shipped template.
        self.no_html: set[str] = set()

    def render(self, language: str, template: str, **context: Any) -> tuple[str, str | None]:
        text = self.env.get_template(f"{language}/{template}.txt.j2").render(**context)
        name = f"{language}/{template}.html.j2"
        if name in self.no_html:
            return text, None
        try:
            html_tpl = self.env.get_template(name)
        except TemplateNotFound:  # an HTML part is optional
            self.no_html.add(name)
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
