"""Decoding of header values in any charset, and file names that are safe to show."""

from __future__ import annotations

import binascii
import codecs
import re
import unicodedata
from email.header import Header

# Labels real mail uses that Python does not know, or knows as a narrower charset than the
# mailers meant (GB2312 mail is routinely GBK/GB18030, KS C 5601 is CP949, Shift_JIS is CP932).
_ALIASES = {
    "x-unknown": "",
    "unknown-8bit": "",
    "x-user-defined": "",
    "unknown": "",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "x-mac-cyrillic": "mac-cyrillic",
    "cp-850": "cp850",
    "utf8": "utf-8",
    "big5": "big5hkscs",
}
_WS = re.compile(r"[\r\n\t\x00]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?]*?)\?([bBqQ])\?(.*?)\?=")
_QP_BYTE = re.compile(rb"=([0-9A-Fa-f]{2})")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _codec(charset: str | None) -> str | None:
    """The Python text codec for a MIME charset label, or None if it is absent or unknown."""
    label = (charset or "").strip().strip("\"'").lower().split("*", 1)[0]
    label = _ALIASES.get(label, label)
    if not label:
        return None
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def guess_8bit(data: bytes) -> str:
    """Decode bytes of no (or an unusable) declared charset: utf-8, else Cyrillic or Western.

    Text in which most letters are 8-bit is taken as Russian: KOI8-R puts lower-case letters
    in 0xC0-0xDF, windows-1251 in 0xE0-0xFF, and running text is mostly lower case. Text with
    only the odd 8-bit letter among ASCII ones is taken as windows-1252 (Western European).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    high = sum(1 for b in data if b >= 0x80)
    ascii_letters = sum(1 for b in data if 0x41 <= (b | 0x20) <= 0x7A)
    if high >= ascii_letters:
        koi_lower = sum(1 for b in data if 0xC0 <= b <= 0xDF)
        cp_lower = sum(1 for b in data if b >= 0xE0)
        return data.decode("koi8-r" if koi_lower > cp_lower else "windows-1251", "replace")
    try:
        return data.decode("windows-1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode bytes with the declared charset; utf-8 if that fails; guess if none is usable."""
    name = _codec(charset)
    if name and name != "ascii":
        try:
            return data.decode(name)
        except (UnicodeError, LookupError):
            pass
        try:
            text = data.decode("utf-8", "replace")
        except UnicodeError:
            text = "\ufffd"
        if "\ufffd" not in text:
            return text
        if name == "utf-8" and not any(c > "\x7f" and c != "\ufffd" for c in text):
            return guess_8bit(data)  # "utf-8" without a single utf-8 sequence: mislabelled
        try:
            return data.decode(name, "replace")
        except (UnicodeError, LookupError):
            return guess_8bit(data)
    if data.isascii():
        return data.decode("ascii")
    return guess_8bit(data)


def _to_bytes(text: str) -> bytes:
    """The wire bytes behind a header string (compat32 keeps 8-bit bytes as surrogates)."""
    try:
        return text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _raw_8bit(value: str, hint: str | None = None) -> str:
    """Undeclared 8-bit header bytes: utf-8, else the message's body charset, else a guess."""
    data = _to_bytes(value)
    if data.isascii():
        return value
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    name = _codec(hint)
    if name and name not in ("ascii", "utf-8"):
        try:
            return data.decode(name)
        except (UnicodeError, LookupError):
            pass
    return guess_8bit(data)


def _word_bytes(encoding: str, text: str) -> bytes:
    data = _to_bytes(text)
    if encoding in "qQ":
        return _QP_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    data = _B64_JUNK.sub(b"", data.split(b"=", 1)[0])
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""


def _decode_words(text: str, hint: str | None = None) -> str:
    """RFC 2047 encoded words, tolerant of what real mailers write.

    Adjacent words in one charset are joined before decoding (mailers split multi-byte
    characters across words); whitespace between encoded words is dropped; raw 8-bit bytes
    inside a word are taken in the word's charset.
    """
    out: list[str] = []
    run: bytes = b""
    run_charset: str | None = None
    pos = 0
    for m in _ENCODED_WORD.finditer(text):
        gap = text[pos : m.start()]
        charset = m.group(1).split("*", 1)[0]
        adjacent = pos > 0 and not gap.strip()
        if not adjacent or run_charset is None or charset.lower() != run_charset.lower():
            if run_charset is not None:
                out.append(decode_bytes(run, run_charset))
            run, run_charset = b"", charset
            if not adjacent:
                out.append(_raw_8bit(gap, hint))
        run += _word_bytes(m.group(2), m.group(3))
        pos = m.end()
    if run_charset is not None:
        out.append(decode_bytes(run, run_charset))
    out.append(_raw_8bit(text[pos:], hint))
    return "".join(out)


def decode_value(value: str | Header | None, hint: str | None = None) -> str:
    """A header value as text: RFC 2047 words decoded in any charset, 8-bit bytes guessed.

    ``hint`` is the message's body charset, the best guess for undeclared 8-bit bytes.
    CR, LF, TAB and NUL never survive: folding and injected line breaks become one space.
    """
    if value is None:
        return ""
    if isinstance(value, Header):
        # compat32 wraps a value with 8-bit bytes in a Header; its chunk keeps the bytes.
        chunks = getattr(value, "_chunks", None) or [(str(value), None)]
        text = "".join(str(chunk) for chunk, _ in chunks)
    else:
        text = str(value)
    if text.isascii() and "=?" not in text:  # most headers: no words, no 8-bit bytes
        return _WS.sub(" ", _FOLD.sub("", text) if "\n" in text else text).strip()
    text = _FOLD.sub("", text)
    if "=?" in text:
        text = _decode_words(text, hint)
    elif _SURROGATE.search(text):
        text = _raw_8bit(text, hint)
    text = _SURROGATE.sub("\ufffd", text)
    return _WS.sub(" ", text).strip()


def safe_filename(name: object, default: str = "attachment") -> str:
    """An attachment's name for display only: no directories, no control characters."""
    text = decode_value(name) if isinstance(name, str | Header) and name else ""
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    text = text.strip().lstrip(".").strip()
    return (text or default)[:255]
