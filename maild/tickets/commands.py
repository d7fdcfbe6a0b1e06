"""Agent commands at the top of a reply (`#status solved`, `#assign me`, ...): parse and check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time

from maild.config_sections import PRIORITIES, TYPES
from maild.tickets.status import STATUSES

_LINE = re.compile(r"^#([A-Za-z][A-Za-z-]*)(?:[ \t]+(.*?))?[ \t]*$")
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")

HELP = """Commands go on the first lines of your reply, one per line, before any text:
  #status new|open|pending|hold|solved|closed
  #priority low|normal|high|urgent
  #type question|problem|incident|task
  #assign <agent email>|me
  #category <name>
  #note                      (the whole message is an internal note, never sent to the customer)
  #cc add|remove <email>
  #escalate <department> [text for the department]
  #due YYYY-MM-DD [HH:MM]    (the deadline of a task, desk time; a date alone means closing time)"""

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


def _check(name: str, arg: str) -> str | None:
    """An error message for a bad command line, or None when it is well formed."""
    if name in CHOICES:
        if arg.lower() not in CHOICES[name]:
            return f"#{name} {arg}: expected one of {', '.join(CHOICES[name])}"
        return None
    if name == "note":
        return None
    if name == "due":
        return None if parse_due(arg) else f"#due {arg}: expected YYYY-MM-DD or YYYY-MM-DD HH:MM"
    if name in ("assign", "category", "escalate") and not arg:
        return f"#{name} needs a value"
    if name == "assign" and arg.lower() != "me" and not _EMAIL.match(arg):
        return f"#assign {arg}: expected an agent's email address or 'me'"
    if name == "cc":
        action, _, email = arg.partition(" ")
        if action.lower() not in ("add", "remove") or not _EMAIL.match(email.strip()):
            return f"#cc {arg}: expected 'add <email>' or 'remove <email>'"
        return None
    if name in ("assign", "category", "escalate"):
        return None
    return f"#{name}: unknown command"


def parse_due(arg: str) -> tuple[date, time | None] | None:
    """``#due`` value: a date, optionally with a time of day."""
    day, _, clock = arg.strip().replace("T", " ").replace("t", " ").partition(" ")
    try:
        return date.fromisoformat(day), time.fromisoformat(clock.strip()) if clock else None
    except ValueError:
        return None


def parse_commands(text: str) -> ParsedCommands:
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
        error = _check(name, arg)
        if error:
            errors.append(error)
        commands.append(
            Command(name, arg if name in ("category", "escalate", "assign", "cc") else arg.lower())
        )
        i += 1
    if len({c.name for c in commands if c.name not in ("cc",)}) < len(
        [c for c in commands if c.name not in ("cc",)]
    ):
        errors.append("a command other than #cc appears twice")
    body = "\n".join(lines[i:]).strip("\n") if commands else text.replace("\r\n", "\n")
    return ParsedCommands(tuple(commands), body, tuple(errors))
