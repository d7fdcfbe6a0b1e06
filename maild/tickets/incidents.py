"""Mass incidents, the pure part: a request's normalised words and an index of alike requests.

A request is reduced to the set of its significant words (subject and the customer's first
lines; quotes, signatures, greetings, numbers and ids dropped; Russian and English stop
words dropped; each word cut to its first letters, a crude stem that survives inflection).
Two requests are alike when the Jaccard index of their sets reaches ``[incident] similarity``.
Sets of words hold better for short texts than shingles of several words: one changed word
breaks two bigrams but only one word.

The index keeps the sets of recent requests and finds the candidates by MinHash LSH (see
AlikeIndex); only those few are compared in full, so a new request costs well under a
millisecond with 10,000 open ones (bench/incidents.py).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger(__name__)

STEM = 6  # letters kept of each word
MAX_LINES = 12  # the customer's first lines
MAX_WORDS = 40
MIN_WORDS = 2  # fewer significant words than this: not compared at all

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# Numbers, ids, dates, addresses with digits: each whole run of non-blanks holding a digit.
# Tried only where a run starts ("(?<!\S)"), scanning it once ("*+"): "\S*\d\S*" found the
# same runs but tried every position of every word again (quadratic in a word's length).
_ID = re.compile(r"(?<!\S)[^\s\d]*+\d\S*")
# An address is a whole run too (its first "\S+" can only start where a run does).
_EMAIL_OR_URL = re.compile(r"(?<!\S)\S+@\S+|https?://\S+|www\.\S+", re.I)
_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|ответ|отв|на|пересл)\s*(\[\d+\])?\s*:\s*)+", re.I)
_TAG = re.compile(r"\[[^\]]*#\s*\d+\s*\]")
_SIGNATURE = re.compile(
    r"^(--\s*$|_{3,}|-{3,}|((best |kind |warm )?regards|thanks|thank you|cheers|sincerely|"
    r"sent from my|с уважением|спасибо|всего доброго|заранее спасибо|отправлено с)\b)",
    re.I,
)
_QUOTE_HEAD = re.compile(
    r"^(on .{0,200} wrote:|.{0,200} пишет:|-+ ?original message ?-+|from: |от: )", re.I
)
_GREETING = re.compile(
    r"^(hi|hello|hey|dear|good (morning|afternoon|evening)|greetings|"
    r"здравствуйте|здравствуй|привет|добрый (день|вечер|утро)|доброе утро|"
    r"уважаемые?|коллеги|добрый)\b[^\n]{0,40}$",
    re.I,
)
_STOP_WORDS = """a an the and or but of to in on at for with from by is are was were be been
it its this
that these those i we you he she they me my our your us them not no do does did have has had
can could will would should please hi hello dear thanks team support any some there here as
so if when since after before also just still again all get got getting gives id ids
user number ticket order account customer client
и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее
мне было вот от меня еще нет о из ему теперь когда даже ну ли если уже или ни быть был него
до вас нибудь опять уж вам ведь там потом себя ничего ей может они тут где есть надо ней для
мы тебя их чем была сам чтобы без будто чего раз тоже себе под будет ж тогда кто этот того
потому этого какой совсем ним здесь этом один почти мой тем нее сейчас были куда зачем
всех никогда можно номер заявка заявки клиент пользователь при наконец два об другой хоть
после над больше тот через эти нас про всего
них какая много разве три эту моя впрочем хорошо свою этой перед иногда лучше чуть том нельзя
такой им более всегда конечно всю между пожалуйста здравствуйте спасибо"""
STOP = frozenset(_STOP_WORDS.split())


def first_lines(text: str) -> list[str]:
    """The customer's own first lines: before a quote header, '>' lines or the signature."""
    kept: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if _QUOTE_HEAD.match(line) or _SIGNATURE.match(line):
            break
        if not line or line.startswith(">") or (not kept and _GREETING.match(line)):
            continue
        kept.append(line)
        if len(kept) >= MAX_LINES:
            break
    return kept


def words(subject: str, text: str) -> frozenset[str]:
    """The normalised words of a request: its subject and the customer's first lines.

    Line by line, up to the MAX_WORDS-th word (the rest of the lines is not read): a line is
    its own runs of non-blanks, so it gives the words it gave in the lines joined by spaces.
    """
    found: list[str] = []
    for line in (_PREFIX.sub("", _TAG.sub(" ", subject)), *first_lines(text)):
        line = line.lower().replace("ё", "е")
        if "@" in line or "://" in line or "www." in line:  # all _EMAIL_OR_URL can match
            line = _EMAIL_OR_URL.sub(" ", line)
        for word in _WORD.findall(_ID.sub(" ", line)):
            if len(word) > 1 and word not in STOP:
                found.append(word[:STEM])
                if len(found) >= MAX_WORDS:
                    return frozenset(found)
    return frozenset(found)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


@dataclass(frozen=True)
class Entry:
    """One request in the index."""

    id: int
    words: frozenset[str]
    created_at: datetime
    pinned: bool = False  # an open problem stays beyond the window


BANDS, ROWS = 20, 3  # MinHash LSH: a pair at J=0.6 meets in some band with p=0.992
_rng = random.Random(12)  # fixed: every worker and every run hashes alike
_MASKS = tuple(_rng.getrandbits(64) for _ in range(BANDS * ROWS))
Key = tuple[int, tuple[int, ...]]


# Hashes already computed, shared by the threads (a dict's get and set are atomic): requests
# keep using the same few thousand stems.
_HASHES: dict[str, int] = {}
HASH_CACHE = 200_000  # words remembered at most


def _word_hash(word: str) -> int:
    found = _HASHES.get(word)
    if found is None:
        found = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        if len(_HASHES) < HASH_CACHE:
            _HASHES[word] = found
    return found


def band_keys(found: frozenset[str]) -> list[Key]:
    """The MinHash signature of ``found`` (one 64-bit hash a word, XOR-ed with a fixed mask
    for each of the BANDS * ROWS values), cut into ``BANDS`` bands of ``ROWS`` values."""
    xs = [_word_hash(w) for w in found]
    sig = [min([x ^ mask for x in xs]) for mask in _MASKS]
    return [(i, tuple(sig[i * ROWS : (i + 1) * ROWS])) for i in range(BANDS)]


class AlikeIndex:
    """Recent requests by their words, for finding the alike ones.

    Candidates come from MinHash LSH (locality-sensitive hashing): each request goes into
    ``BANDS`` buckets; two sets meet in at least one with probability 1 - (1 - J^ROWS)^BANDS
    (0.992 at J = 0.6, 0.9998 at 0.7, 0.02 at 0.1). Each candidate is then checked with the
    exact Jaccard index, so nothing below ``threshold`` is ever reported.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.entries: dict[int, Entry] = {}
        self.buckets: dict[Key, set[int]] = {}
        self.keys: dict[int, list[Key]] = {}
        self._order: deque[tuple[datetime, int]] = deque()

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry, keys: list[Key] | None = None) -> None:
        """Index ``entry`` (``keys``: its band_keys, if the caller has them already)."""
        self.remove(entry.id)
        self.entries[entry.id] = entry
        self.keys[entry.id] = keys = keys or band_keys(entry.words)
        for key in keys:
            self.buckets.setdefault(key, set()).add(entry.id)
        self._order.append((entry.created_at, entry.id))

    def remove(self, ident: int) -> None:
        if self.entries.pop(ident, None) is None:
            return
        for key in self.keys.pop(ident, ()):
            ids = self.buckets.get(key)
            if ids is not None:
                ids.discard(ident)
                if not ids:
                    del self.buckets[key]

    def expire(self, before: datetime) -> None:
        """Drop the requests created before ``before``, except pinned ones (open problems)."""
        while self._order and self._order[0][0] < before:
            _, ident = self._order.popleft()
            entry = self.entries.get(ident)
            if entry is not None and entry.created_at < before and not entry.pinned:
                self.remove(ident)

    def alike(
        self, query: frozenset[str], keys: list[Key] | None = None
    ) -> list[tuple[int, float]]:
        """(id, similarity) of the indexed requests at least ``threshold`` alike, best first."""
        if not query:
            return []
        candidates: set[int] = set()
        for key in keys or band_keys(query):
            candidates.update(self.buckets.get(key, ()))
        found = []
        for ident in candidates:
            score = jaccard(query, self.entries[ident].words)
            if score >= self.threshold:
                found.append((ident, score))
        found.sort(key=lambda pair: (-pair[1], pair[0]))
        return found


# Agent commands about problems (executed in maild/pipeline/incident_commands.py).
COMMANDS = ("link", "unlink", "problem", "merge")
NUMBER = re.compile(r"^#?(\d{1,12})$")
WORDS: dict[str, dict[str, str]] = {
    "number": {
        "en": "#{name} {arg}: expected a request number",
        "ru": "#{name} {arg}: нужен номер запроса",
    },
    "no-value": {"en": "#{name} takes no value", "ru": "#{name}: без значения"},
    "missing": {"en": "#{name} {arg}: no such request", "ru": "#{name} {arg}: такого запроса нет"},
    "itself": {
        "en": "#{name} {arg}: that is this request",
        "ru": "#{name} {arg}: это этот же запрос",
    },
    "finished": {
        "en": "#{name} {arg}: that request is closed or merged",
        "ru": "#{name} {arg}: этот запрос закрыт или объединён с другим",
    },
    "is-incident": {
        "en": "#link {arg}: that request is an incident of #{problem}; write #link {problem}",
        "ru": "#link {arg}: этот запрос — инцидент проблемы #{problem}; напишите #link {problem}",
    },
    "not-linked": {
        "en": "#unlink: this request is not an incident of a problem",
        "ru": "#unlink: этот запрос не привязан к проблеме",
    },
}


def word(lang: str, key: str, **values: object) -> str:
    text = WORDS[key]
    return (text.get(lang) or text["en"]).format(**values)


def syntax_error(name: str, arg: str, lang: str) -> str | None:
    """A malformed `#link`/`#merge`/`#unlink`/`#problem` line."""
    if name in ("link", "merge"):
        return None if NUMBER.match(arg) else word(lang, "number", name=name, arg=arg)
    return word(lang, "no-value", name=name) if arg else None


def distinct_customers(requesters: Iterable[str]) -> int:
    return len({r.lower() for r in requesters})
