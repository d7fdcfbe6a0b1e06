"""Message-IDs read from a message's raw bytes, before it is parsed: for the inbound queue.

The queue shares mail among workers by thread (:func:`thread_key`) and lets a reply inherit
the key of the mail it answers (:func:`parent_ids`, :func:`message_id`). The ids are read
with :func:`maild.threading.refs.parse_msgid_list`, the reader the matching stage uses on the
parsed headers, so a folded, bare or junk-laden id means the same mail to both.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from maild.threading.refs import MAX_ID_LENGTH, parse_msgid_list

MAX_PARENTS = 20
_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")
_REFERENCES = re.compile(rb"(?im)^references[ \t]*:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")
_IN_REPLY_TO = re.compile(rb"(?im)^in-reply-to[ \t]*:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)")
_SPACE = re.compile(r"\s+")


def header_block(raw: bytes) -> bytes:
    """The header block of a raw message (all of it when there is no blank line)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            return raw[: end + len(sep)]
    return raw


def _value(head: bytes, pattern: re.Pattern[bytes]) -> str | None:
    """The first such header's value, unfolded lines and all, as text."""
    m = pattern.search(head)
    return m.group(1).decode("utf-8", "replace") if m else None


def _ids(head: bytes, pattern: re.Pattern[bytes]) -> list[str]:
    return parse_msgid_list(_value(head, pattern))


def message_id(raw: bytes) -> str | None:
    """The message's own Message-ID in the form the matching stage stores; a value that is no
    id at all is kept as written (folding removed), so that the message still has one."""
    value = _value(header_block(raw), _MESSAGE_ID)
    if value is None:
        return None
    ids = parse_msgid_list(value)
    return ids[0] if ids else (_SPACE.sub("", value)[:MAX_ID_LENGTH] or None)


def thread_key(raw: bytes) -> int:
    """A number shared by a message and the replies to it, for sharing work among workers.

    The root of the thread: the first References entry (RFC 5322 puts the thread's first
    message there), else In-Reply-To, else the message's own Message-ID. A customer's quick
    follow-up to their own first mail then goes to the same worker as that mail, which
    processes both in order, so the follow-up finds the request it belongs to.
    """
    head = header_block(raw)
    for pattern in (_REFERENCES, _IN_REPLY_TO, _MESSAGE_ID):
        ids = _ids(head, pattern)
        if ids:
            return zlib.crc32(ids[0].encode("utf-8")) & 0x7FFFFFFF
    return zlib.crc32(raw[:4096]) & 0x7FFFFFFF


def parent_ids(raw: bytes) -> tuple[str, ...]:
    """The Message-IDs a message answers, nearest first: In-Reply-To (at most 3), then
    References from the end; at most MAX_PARENTS."""
    head = header_block(raw)
    ids = _ids(head, _IN_REPLY_TO)[:3]
    ids.extend(reversed(_ids(head, _REFERENCES)[-MAX_PARENTS:]))
    return tuple(dict.fromkeys(ids))[:MAX_PARENTS]


def inherit_thread_keys(
    rows: Sequence[dict[str, object]],
    parents: Sequence[tuple[str, ...]],
    known: dict[str, int],
) -> None:
    """A message answering one we hold (``known``: Message-ID -> thread key, or an earlier
    row of this batch) takes that message's thread key, so a whole thread keeps one key even
    when its first message itself answered something older."""
    batch: dict[str, int] = {}
    for row, ids in zip(rows, parents, strict=True):
        for pid in ids:
            key = batch.get(pid, known.get(pid))
            if key is not None:
                row["thread_key"] = key
                break
        if row["message_id"]:  # the first holder of a Message-ID keeps it
            batch.setdefault(str(row["message_id"]), int(str(row["thread_key"])))
