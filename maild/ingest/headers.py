"""Decoding of header values in any charset, and file names that are safe to show."""

from __future__ import annotations

import codecs
import re
import unicodedata
from email.header import Header, decode_header

_FALLBACK_CHARSETS = ("utf-8", "windows-1251", "koi8-r", "latin-1")
_ALIASES = {
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
    "ks_c_5601-1987": "cp949",
    "x-mac-cyrillic": "mac-cyrillic",
    "cp-850": "cp850",
    "utf8": "utf-8",
}
_WS = re.compile(r"[\r\n\t]+")
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?")


def charset_name(charset: str | None) -> str:
    """A codec name Python knows for a MIME charset label, utf-8 if it is unknown."""
    label = (charset or "").strip().strip('"').lower()
    label = _ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name if label else "ascii"
    except LookupError:
        return "utf-8"


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode bytes with the declared charset, else the first of utf-8/cp1251/koi8-r that fits."""
    if charset:
        try:
            return data.decode(charset_name(charset))
        except UnicodeDecodeError:
            pass
    for name in _FALLBACK_CHARSETS:
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "replace")


def _raw_8bit(value: str) -> str:
    """compat32 hands 8-bit header bytes over as surrogates; decode them properly."""
    try:
        return decode_bytes(value.encode("ascii", "surrogateescape"))
    except UnicodeEncodeError:
        return value


def decode_value(value: str | Header | None) -> str:
    """A header value as text: RFC 2047 words decoded in any charset, 8-bit bytes guessed."""
    if value is None:
        return ""
    text = str(value) if not isinstance(value, Header) else value.encode()
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = _raw_8bit(text)
    if _ENCODED_WORD.search(text):
        text = _decode_words(text)
    return _WS.sub(" ", text).strip()


def _decode_words(text: str) -> str:
    try:
        parts = decode_header(text)
    except (ValueError, AssertionError, IndexError):
        return text
    out: list[str] = []
    for data, charset in parts:
        if isinstance(data, str):
            out.append(data)
        else:
            out.append(decode_bytes(data, charset))
    # decode_header keeps the spaces of unencoded runs but drops the ones between words.
    return "".join(out)


def safe_filename(name: object, default: str = "attachment") -> str:
    """An attachment's name for display only: no directories, no control characters."""
    text = decode_value(name if isinstance(name, str) else None) if name else ""
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    text = text.strip().lstrip(".").strip()
    return (text or default)[:255]
