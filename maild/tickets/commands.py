"""Agent commands at the top of a reply (`#status solved`, `#assign me`, ...): parse and check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time

from maild.tickets.command_words import problem
from maild.tickets.incidents import COMMANDS as INCIDENT_COMMANDS
from maild.tickets.incidents import syntax_error as incident_syntax_error
from maild.tickets.words import PRIORITIES, STATUSES, TYPES

_LINE = re.compile(r"^#([A-Za-z][A-Za-z-]*)(?:[ \t]+(.*?))?[ \t]*$")
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")

# Categories with an answer time of their own: `#category registration`, not `#type`.
CATEGORY_CLOCKS = ("suggestion", "registration")

CHOICES: dict[str, tuple[str, ...]] = {
    "status": STATUSES,
    "priority": PRIORITIES,
    "type": TYPES,
}


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


@dataclass(frozen=True)
class ParsedCommands:
    commands: tuple[Command, ...]
    body: str
    errors: tuple[str, ...]

    def get(self, name: str) -> Command | None:
        return next((c for c in self.commands if c.name == name), None)


def _check(name: str, arg: str, lang: str) -> str | None:
    """An error message for a bad command line, or None when it is well formed."""
    if name in CHOICES:
        if arg.lower() in CHOICES[name]:
            return None
        if name == "type" and arg.lower() in CATEGORY_CLOCKS:
            return problem(lang, "type-is-category", arg=arg)
        return problem(lang, "choice", name=name, arg=arg, choices=", ".join(CHOICES[name]))
    if name in ("note", "kb"):  # `#kb`, `#kb Title`, `#kb N` (maild.knowledge.articles)
        return None
    if name == "due":
        return None if parse_due(arg) else problem(lang, "due", arg=arg)
    if name in ("assign", "category", "escalate") and not arg:
        return problem(lang, "needs-value", name=name)
    if name == "assign" and arg.lower() != "me" and not _EMAIL.match(arg):
        return problem(lang, "assign-bad", arg=arg)
    if name == "cc":
        action, _, email = arg.partition(" ")
        if action.lower() not in ("add", "remove") or not _EMAIL.match(email.strip()):
            return problem(lang, "cc-bad", arg=arg)
        return None
    if name in ("assign", "category", "escalate"):
        return None
    if name in INCIDENT_COMMANDS:  # #link N, #unlink, #problem, #merge N
        return incident_syntax_error(name, arg, lang)
    return problem(lang, "unknown", name=name)


def parse_due(arg: str) -> tuple[date, time | None] | None:
    """``#due`` value: a date, optionally with a time of day."""
    day, _, clock = arg.strip().replace("T", " ").replace("t", " ").partition(" ")
    try:
        return date.fromisoformat(day), time.fromisoformat(clock.strip()) if clock else None
    except ValueError:
        return None


def parse_commands(text: str, language: str = "en") -> ParsedCommands:
    """Split the command lines off the top of ``text``; the rest is what the customer sees."""
    lines = text.replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    errors: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        match = _LINE.match(line)
        if not line:
            i += 1
            continue
        if not match:
            break
        name, arg = match.group(1).lower(), (match.group(2) or "").strip()
        error = _check(name, arg, language)
        if error:
            errors.append(error)
        commands.append(
            Command(
                name, arg if name in ("category", "escalate", "assign", "cc", "kb") else arg.lower()
            )
        )
        i += 1
    if len({c.name for c in commands if c.name not in ("cc",)}) < len(
        [c for c in commands if c.name not in ("cc",)]
    ):
        errors.append(problem(language, "twice"))
    body = "\n".join(lines[i:]).strip("\n") if commands else text.replace("\r\n", "\n")
    return ParsedCommands(tuple(commands), body, tuple(errors))
