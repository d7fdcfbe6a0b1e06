"""Words for the index (pure): Snowball stems in Russian and English, similarity, snippets.

Both stores see the same words on SQLite: the text is stemmed here (PyStemmer) and FTS5
indexes the stems, so «загрузка», «загрузки» and «загрузить» meet on one stem.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable

import Stemmer

log = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CYRILLIC = re.compile(r"[а-я]")
MAX_INDEXED_CHARS = 20_000  # of one message's text: the rest adds little to finding it
QUERY_TERMS = 16  # at most this many distinct stems from a mail used as a query

# Words too common to tell one request from another (queries only; the index keeps them).
_STOP_TEXT = """
    a an and are as at be but by can could do does for from had has have hello hi i if in
    is it its me my no not of on or our please regards so thank thanks that the their there
    this to us was we were what when where which who will with would you your
    а без бы был была были было в вам вас ваш весь во вот все всё вы где да для до добрый
    его ее её если есть еще ещё же за здравствуйте и из или им их к как когда ко ли либо мне
    мы на над не нет ни но ну о об от по под пожалуйста при с со спасибо так также там то
    того тоже только у уже хотя что чтобы эта эти это я"""
STOPWORDS = frozenset(_STOP_TEXT.split())

_local = threading.local()


def _stemmers() -> tuple[Stemmer.Stemmer, Stemmer.Stemmer]:
    """(russian, english), one pair per thread: a Stemmer object is not thread-safe."""
    pair = getattr(_local, "pair", None)
    if pair is None:
        pair = _local.pair = (Stemmer.Stemmer("russian"), Stemmer.Stemmer("english"))
    return pair  # type: ignore[no-any-return]


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (ё as е), digits kept, punctuation dropped."""
    return _WORD.findall(text.lower().replace("ё", "е"))


def stem(word: str) -> str:
    ru, en = _stemmers()
    return str(ru.stemWord(word) if _CYRILLIC.search(word) else en.stemWord(word))


def stems(text: str) -> list[str]:
    """Every word of ``text`` as its stem, in order (what the SQLite index holds)."""
    ru, en = _stemmers()
    return [
        str(ru.stemWord(w) if _CYRILLIC.search(w) else en.stemWord(w))
        for w in words(text[:MAX_INDEXED_CHARS])
    ]


def indexed(*parts: str) -> str:
    """The stemmed form of ``parts`` for the FTS5 table: stems separated by spaces."""
    return " ".join(stems("\n".join(parts)))


def query_words(text: str, limit: int = QUERY_TERMS) -> list[str]:
    """Distinct words of ``text`` that say something (no stop words, one per stem), the
    first ``limit``: what PostgreSQL stems itself."""
    found: dict[str, str] = {}
    for word in words(text[:MAX_INDEXED_CHARS]):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        found.setdefault(stem(word), word)
        if len(found) >= limit:
            break
    return list(found.values())


def query_terms(text: str, limit: int = QUERY_TERMS) -> list[str]:
    """The stems of :func:`query_words`: what the SQLite index is asked for."""
    return [stem(w) for w in query_words(text, limit)]


def similarity(query: Iterable[str], document: str) -> float:
    """Cosine of the two sets of meaningful stems: 1.0 for the same words, 0 for none shared."""
    q = set(query)
    d = set(query_terms(document, limit=400))
    if not q or not d:
        return 0.0
    return len(q & d) / math.sqrt(len(q) * len(d))


def snippet(text: str, terms: Iterable[str], width: int = 70) -> str:
    """About ``2 * width`` characters of ``text`` around the first word matching ``terms``."""
    wanted = set(terms)
    flat = " ".join(text.split())
    start = 0
    for m in _WORD.finditer(flat):
        if stem(m.group(0).lower().replace("ё", "е")) in wanted:
            start = m.start()
            break
    lo, hi = max(0, start - width), min(len(flat), start + width)
    return ("…" if lo else "") + flat[lo:hi] + ("…" if hi < len(flat) else "")
