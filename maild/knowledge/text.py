"""Words for the index (pure): Snowball stems in Russian and English, similarity, snippets.

Both stores see the same words on SQLite: the text is stemmed here (PyStemmer) and FTS5
indexes the stems, so «загрузка», «загрузки» and «загрузить» meet on one stem.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections.abc import Iterable

import Stemmer  # type: ignore[import-not-found]

from maild.knowledge.stopwords import STOPWORDS

log = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CYRILLIC = re.compile(r"[а-я]")
MAX_INDEXED_CHARS = 20_000  # of one message's text: the rest adds little to finding it
QUERY_TERMS = 16  # at most this many distinct stems from a mail used as a query


_local = threading.local()


def _stemmers() -> tuple[Stemmer.Stemmer, Stemmer.Stemmer]:
    """(russian, english), one pair per thread: a Stemmer object is not thread-safe."""
    pair = getattr(_local, "pair", None)
    if pair is None:
        pair = _local.pair = (Stemmer.Stemmer("russian"), Stemmer.Stemmer("english"))
    return pair


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (ё as е), digits kept, punctuation dropped."""
    return list(_words(text))


@functools.lru_cache(maxsize=16)
def _words(text: str) -> tuple[str, ...]:
    """:func:`words`, remembered for the last few texts: a new request's text is split for
    its index row, then again for the articles, the similar requests and their scores."""
    return tuple(_WORD.findall(text.lower().replace("ё", "е")))


# Stems already computed, shared by the threads (a dict's get and set are atomic): a desk's
# mail keeps using the same few thousand words, and each is stemmed once per process.
_STEMS: dict[str, str] = {}
STEM_CACHE = 200_000  # words remembered at most (a few tens of MB in the worst case)


def _new_stem(word: str) -> str:
    ru, en = _stemmers()
    found = str(ru.stemWord(word) if _CYRILLIC.search(word) else en.stemWord(word))
    if len(_STEMS) < STEM_CACHE:
        _STEMS[word] = found
    return found


def stem(word: str) -> str:
    return _STEMS.get(word) or _new_stem(word)


def stems(text: str) -> list[str]:
    """Every word of ``text`` as its stem, in order (what the SQLite index holds)."""
    known = _STEMS.get
    return [known(w) or _new_stem(w) for w in _words(text[:MAX_INDEXED_CHARS])]


def indexed(*parts: str) -> str:
    """The stemmed form of ``parts`` for the FTS5 table: stems separated by spaces."""
    return " ".join(stems("\n".join(parts)))


def query_words(text: str, limit: int = QUERY_TERMS) -> list[str]:
    """Distinct words of ``text`` that say something (no stop words, one per stem), the
    first ``limit``: what PostgreSQL stems itself."""
    found: dict[str, str] = {}
    for word in _words(text[:MAX_INDEXED_CHARS]):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        found.setdefault(stem(word), word)
        if len(found) >= limit:
            break
    return list(found.values())


def query_terms(text: str, limit: int = QUERY_TERMS) -> list[str]:
    """The stems of :func:`query_words`: what the SQLite index is asked for."""
    return [stem(w) for w in query_words(text, limit)]


PREFIX_LENGTHS = (4, 5, 6, 7)  # the lengths of a Russian prefix key; FTS5 keeps an index of each


def match_key(word: str) -> tuple[str, bool]:
    """(key, prefix) the index is asked for: a word's stem; a Russian stem is matched as a
    prefix, one letter shorter when long, because Snowball leaves forms of one word on
    different stems («загрузка» загрузк, «загрузить» загруз), and at most seven letters, the
    longest prefix FTS5 keeps its own index of (a prefix without one merges the lists of
    every word it starts: 4–5 times slower for common words). Seven, not six: «перезагрузка»
    (перезаг) must not find «перезапуск» (перезап), while «авторизация» and
    «авторизоваться» (авторизац, авторизова) still meet on авториз."""
    root = stem(word)
    if not _CYRILLIC.search(root) or len(root) < PREFIX_LENGTHS[0]:
        return root, False
    return (root[:-1] if len(root) > PREFIX_LENGTHS[1] else root)[: PREFIX_LENGTHS[-1]], True


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
