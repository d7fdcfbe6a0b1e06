"""What the command-error mail says, in the agent's language: problems and the help (pure)."""

from __future__ import annotations

PROBLEMS: dict[str, dict[str, str]] = {
    "choice": {
        "en": "#{name} {arg}: expected one of {choices}",
        "ru": "#{name} {arg}: допустимые значения: {choices}",
    },
    "type-is-category": {
        "en": "#type {arg}: this is a category, write #category {arg}",
        "ru": "#type {arg}: это категория, напишите #category {arg}",
    },
    "due": {
        "en": "#due {arg}: expected YYYY-MM-DD or YYYY-MM-DD HH:MM",
        "ru": "#due {arg}: нужна дата ГГГГ-ММ-ДД или ГГГГ-ММ-ДД ЧЧ:ММ",
    },
    "needs-value": {"en": "#{name} needs a value", "ru": "#{name}: не хватает значения"},
    "assign-bad": {
        "en": "#assign {arg}: expected an agent's email address or 'me'",
        "ru": "#assign {arg}: нужен адрес агента или me",
    },
    "cc-bad": {
        "en": "#cc {arg}: expected 'add <email>' or 'remove <email>'",
        "ru": "#cc {arg}: нужно «add <адрес>» или «remove <адрес>»",
    },
    "unknown": {"en": "#{name}: unknown command", "ru": "#{name}: неизвестная команда"},
    "twice": {
        "en": "a command other than #cc appears twice",
        "ru": "команда (кроме #cc) написана дважды",
    },
    "not-agent": {
        "en": "#assign {arg}: not an agent of this desk",
        "ru": "#assign {arg}: это не агент нашей службы",
    },
    "unknown-department": {
        "en": "#escalate {arg}: unknown department ({names})",
        "ru": "#escalate {arg}: такого отдела нет (есть: {names})",
    },
    "escalate-status": {
        "en": "#escalate puts the request on hold; leave out #status",
        "ru": "#escalate сам переводит запрос в ожидание отдела; уберите #status",
    },
    "note-escalate": {
        "en": "#note and #escalate do not go together",
        "ru": "#note и #escalate нельзя писать вместе",
    },
}

HELP = {
    "en": """Commands go on the first lines of your reply, one per line, before any text:
  #status new|open|pending|hold|solved|closed
  #priority low|normal|high|urgent
  #type question|problem|incident|task
  #assign <agent email>|me
  #category <name>           (suggestion and registration have answer times of their own)
  #note                      (the whole message is an internal note, never sent to the customer)
  #kb [title] | #kb <N>      (the answer also becomes a knowledge-base article / updates article N)
  #cc add|remove <email>
  #escalate <department> [text for the department]   (its short name or its title)
  #due YYYY-MM-DD [HH:MM]    (a task's deadline, desk time; a date alone: closing time)
  #link N | #unlink | #problem   (this request is an incident of problem N / no more / a problem)
  #merge N                   (this request continues as N; its customer is told)""",
    "ru": """Команды пишутся в первых строках ответа, по одной в строке, до текста:
  #status new|open|pending|hold|solved|closed
  #priority low|normal|high|urgent
  #type question|problem|incident|task
  #assign <адрес агента>|me
  #category <название>       (у suggestion и registration свой срок ответа)
  #note                      (всё письмо — внутренняя заметка, клиенту не уходит)
  #kb [заголовок] | #kb <N>  (ответ станет и статьёй базы знаний / обновит статью N)
  #cc add|remove <адрес>
  #escalate <отдел> [текст для отдела]   (короткое имя отдела или его название)
  #due ГГГГ-ММ-ДД [ЧЧ:ММ]    (срок задачи, время службы; без времени — конец дня)
  #link N | #unlink | #problem   (запрос — инцидент проблемы N / уже нет / сам проблема)
  #merge N                   (запрос продолжается как N; клиенту об этом сообщат)""",
}


def problem(language: str, key: str, **values: str) -> str:
    """One line of the command-error mail in ``language`` (English when there is none)."""
    texts = PROBLEMS[key]
    return texts.get(language, texts["en"]).format(**values)


def help_text(language: str) -> str:
    return HELP.get(language, HELP["en"])
