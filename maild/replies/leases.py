"""Outbox leases: which sender holds which mail, renewed while it sends, freed when it is gone.

A sender claims due mail for a short lease (twice ``[outbound] timeout``) under its instance
name, renews the lease while it still holds the mail, and writes each outcome as soon as it is
known. Every sender keeps a row in ``outbox_senders`` with its host, pid and heartbeat; a
sender that starts frees at once the leases of senders that are gone (a dead pid on this host,
or a heartbeat older than a lease), so a kill -9 never leaves mail waiting for a lease to run out.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count

from sqlalchemy import Table, bindparam, delete, insert, select, update

from maild.core.clock import as_utc
from maild.replies.transport import SendError
from maild.store.db import Database
from maild.store.models import Outbox, SenderInstance
from maild.tickets.words import OutboxState

log = logging.getLogger(__name__)

_OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]
_SENDERS: Table = SenderInstance.__table__  # type: ignore[assignment]
_PROCESS = secrets.token_hex(6)  # this process: senders of an earlier process with our pid are gone
_SEQ = count(1)
HOST = socket.gethostname()[:255]


def lease_for(timeout: float) -> timedelta:
    """A lease outlives a few renewals: twice the relay timeout, at least 10 s."""
    return timedelta(seconds=max(10.0, 2 * timeout))


def new_instance() -> str:
    return f"{_PROCESS}-{os.getpid()}-{next(_SEQ)}"


def backoff(attempts: int) -> timedelta:
    """15 s, 30 s, 1 min, ... capped at one hour."""
    return timedelta(seconds=min(15 * 2 ** max(attempts - 1, 0), 3600))


@dataclass(frozen=True)
class Claimed:
    id: int
    envelope_from: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    refused: str | None = None


def claim_due(
    db: Database, now: datetime, limit: int, owner: str, lease: timedelta
) -> list[Claimed]:
    """Lease up to ``limit`` due mails to ``owner`` (SKIP LOCKED on PostgreSQL).

    Core statements, and the raw mail read after the write transaction: on SQLite the write
    lock is shared with the pipeline, so it is held for as little as possible.
    """
    o = _OUTBOX.c
    stmt = (
        select(o.id, o.envelope_from, o.recipients, o.attempts, o.refused)
        .where(o.state == OutboxState.QUEUED, o.next_attempt_at <= now)
        .where((o.claimed_until.is_(None)) | (o.claimed_until < now))
        .order_by(o.id)
        .limit(limit)
    )
    if not db.is_sqlite:
        stmt = stmt.with_for_update(skip_locked=True)
    with db.write() as s:
        conn = s.connection()
        rows = conn.execute(stmt).all()
        ids = [int(r.id) for r in rows]
        if ids:
            conn.execute(
                update(_OUTBOX)
                .where(o.id.in_(ids))
                .values(claimed_until=now + lease, claimed_by=owner)
            )
    if not ids:
        return []
    with db.read() as s:
        raws = {
            int(i): bytes(raw) for i, raw in s.execute(select(o.id, o.raw).where(o.id.in_(ids)))
        }
    return [
        Claimed(
            int(r.id),
            r.envelope_from,
            tuple(filter(None, r.recipients.split(","))),
            raws[int(r.id)],
            int(r.attempts),
            r.refused,
        )
        for r in rows
    ]


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text[:2000] or None


def _outcome(
    item: Claimed, now: datetime, error: SendError | None, warning: str | None, max_attempts: int
) -> dict[str, object]:
    values: dict[str, object] = {
        "claimed_until": None,
        "claimed_by": None,
        "attempts": item.attempts + 1,
    }
    if error is None:  # a refusal of an earlier attempt stays on the row
        values.update(state=OutboxState.SENT, sent_at=now, last_error=_join(warning, item.refused))
    elif error.permanent or item.attempts + 1 >= max_attempts:
        values.update(state=OutboxState.FAILED, last_error=_join(str(error), item.refused))
    else:
        values.update(
            state=OutboxState.QUEUED,
            last_error=_join(str(error)),
            next_attempt_at=now + backoff(item.attempts + 1),
        )
        if error.retry:  # delivered to the others: only the deferred ones are tried again
            values["recipients"] = ",".join(error.retry)
        if error.refused:
            values["refused"] = _join(item.refused, error.refused)
    return values


Attempt = tuple[Claimed, SendError | None, str | None]


def record(
    db: Database, attempts: Sequence[Attempt], now: datetime, max_attempts: int
) -> list[str]:
    """Store the outcome of delivery attempts in one transaction; returns the new states."""
    states = []
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for item, error, warning in attempts:
        values = _outcome(item, now, error, warning, max_attempts)
        states.append(str(values["state"]))
        params = {"oid": item.id, **{f"v_{k}": v for k, v in values.items()}}
        groups.setdefault(tuple(sorted(values)), []).append(params)
    with db.write() as s:
        conn = s.connection()
        if not db.is_sqlite:
            # Losing this commit in a crash of the database server (not of maild) means the
            # mail is sent again, never lost; without the flush the sender is ~2.5x faster.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        for keys, rows in groups.items():
            stmt = (
                update(_OUTBOX)
                .where(_OUTBOX.c.id == bindparam("oid"))
                .values({k: bindparam(f"v_{k}") for k in keys})
            )
            conn.execute(stmt, rows)
    return states


def renew(db: Database, owner: str, ids: Sequence[int], now: datetime, lease: timedelta) -> None:
    """The heartbeat: ``owner`` is alive and still holds ``ids``."""
    o = _OUTBOX.c
    with db.write() as s:
        conn = s.connection()
        beat = update(_SENDERS).where(_SENDERS.c.instance == owner).values(heartbeat_at=now)
        if not conn.execute(beat).rowcount:  # taken for gone after a long pause: here again
            conn.execute(insert(_SENDERS).values(_sender_row(owner, now)))
        if ids:
            conn.execute(
                update(_OUTBOX)
                .where(o.id.in_(list(ids)), o.claimed_by == owner, o.state == OutboxState.QUEUED)
                .values(claimed_until=now + lease)
            )


def _sender_row(owner: str, now: datetime) -> dict[str, object]:
    return {
        "instance": owner,
        "host": HOST,
        "pid": os.getpid(),
        "started_at": now,
        "heartbeat_at": now,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _gone(instance: str, host: str, pid: int, beat: datetime, stale: datetime) -> bool:
    if as_utc(beat) < stale:
        return True
    if host != HOST:
        return False
    if pid == os.getpid():  # our pid, but not this process's: a restart (a container's pid 1)
        return not instance.startswith(_PROCESS)
    return not _alive(pid)


def register(db: Database, owner: str, now: datetime, lease: timedelta) -> int:
    """Record ``owner`` as a running sender and free the leases of senders that are gone.

    Returns how many mails were freed.
    """
    o, c = _OUTBOX.c, _SENDERS.c
    with db.write() as s:
        conn = s.connection()
        rows = conn.execute(select(c.instance, c.host, c.pid, c.heartbeat_at)).all()
        gone = [
            r.instance
            for r in rows
            if _gone(r.instance, r.host, r.pid, r.heartbeat_at, now - lease)
        ]
        freed = 0
        if gone:
            held = (o.state == OutboxState.QUEUED) & o.claimed_by.in_(gone)
            freed += conn.execute(
                update(_OUTBOX).where(held).values(claimed_until=None, claimed_by=None)
            ).rowcount
            conn.execute(delete(_SENDERS).where(c.instance.in_(gone)))
        if db.is_sqlite:  # one daemon per SQLite file: a lease of an older version is stale
            stale = (
                (o.state == OutboxState.QUEUED)
                & o.claimed_by.is_(None)
                & o.claimed_until.is_not(None)
            )
            freed += conn.execute(update(_OUTBOX).where(stale).values(claimed_until=None)).rowcount
        conn.execute(insert(_SENDERS).values(_sender_row(owner, now)))
    if freed:
        log.warning("outbox: %d mail(s) held by a sender that is gone are free again", freed)
    return freed


def retire(db: Database, owner: str) -> None:
    """A clean stop: free what ``owner`` still holds and forget it."""
    o = _OUTBOX.c
    with db.write() as s:
        conn = s.connection()
        conn.execute(
            update(_OUTBOX)
            .where(o.state == OutboxState.QUEUED, o.claimed_by == owner)
            .values(claimed_until=None, claimed_by=None)
        )
        conn.execute(delete(_SENDERS).where(_SENDERS.c.instance == owner))


def retry_now(db: Database, now: datetime) -> int:
    """The relay works again: mail waiting out its back-off is due now; returns how many."""
    o = _OUTBOX.c
    waiting = (o.state == OutboxState.QUEUED) & (o.attempts > 0) & (o.next_attempt_at > now)
    with db.write() as s:
        result = s.connection().execute(update(_OUTBOX).where(waiting).values(next_attempt_at=now))
        return int(result.rowcount)
