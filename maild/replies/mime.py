"""A small, fast MIME writer for the mail we compose ourselves (RFC 2045-2047, RFC 2231).

The stdlib generator folds every header through ``email.header`` and costs about 1 ms a mail;
our mail has a fixed shape, so it is written directly: headers as RFC 2047 base64 words, bodies
as quoted-printable UTF-8, attachments as base64, CRLF line ends.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from collections.abc import Sequence
from urllib.parse import quote

_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_WORD_BYTES = 45  # 45 bytes -> 60 base64 chars -> a 72-char encoded word


def encode_words(value: str) -> str:
    """``value`` as one or more RFC 2047 encoded words, folded; ASCII stays readable."""
    if value.isascii() and len(value) < 900:
        return value
    data = value.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # never split a character
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


def address(name: str, addr: str) -> str:
    """``Name <addr>`` with the name quoted or encoded as needed."""
    if not name:
        return addr
    if not name.isascii():
        return f"{encode_words(name)} <{addr}>"
    if _SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{addr}>'
    return f"{name} <{addr}>"


def fold_list(items: Sequence[str], sep: str = " ") -> str:
    """Join header items, one per folded line once the line would pass 78 characters."""
    lines, line = [], ""
    for item in items:
        if line and len(line) + len(sep) + len(item) > 76:
            lines.append(line + sep.rstrip())
            line = item
        else:
            line = f"{line}{sep}{item}" if line else item
    lines.append(line)
    return "\r\n ".join(lines)


@functools.lru_cache(maxsize=4)
def text_part(text: str, subtype: str) -> bytes:
    """A text part, quoted-printable UTF-8. Remembered for the last few texts: the agents'
    notifications of one message share their text, and encoding it costs more than the rest
    of the mail."""
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    qp = binascii.b2a_qp(body, quotetabs=False, istext=True).replace(b"\n", b"\r\n")
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode() + qp


def attachment_part(name: str, ctype: str, data: bytes) -> bytes:
    maintype, _, subtype = ctype.partition("/")
    if not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]+", maintype or "-") or not re.fullmatch(
        r"[A-Za-z0-9!#$&^_.+-]+", subtype or "-"
    ):
        maintype, subtype = "application", "octet-stream"
    safe = "".join(c for c in name if c >= " " and c not in '"\\/\x7f') or "attachment"
    if len(safe) > 60:  # keeps the header line well under 998 octets, extension kept
        stem, dot, ext = safe.rpartition(".")
        safe = f"{stem[: 55 - len(ext)]}~{dot}{ext}" if dot and len(ext) <= 10 else safe[:60]
    param = f'filename="{safe}"' if safe.isascii() else f"filename*=utf-8''{quote(safe, safe='')}"
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    head = (
        f"Content-Type: {maintype}/{subtype}\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; {param}\r\n\r\n"
    )
    return head.encode() + b64


def multipart(subtype: str, parts: Sequence[bytes]) -> tuple[str, bytes]:
    """(the Content-Type header value, the body) of a multipart of ``parts``."""
    boundary = f"=_maild_{secrets.token_hex(12)}"
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return f'multipart/{subtype}; boundary="{boundary}"', body + f"--{boundary}--\r\n".encode()
