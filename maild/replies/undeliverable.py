"""Addresses a bounce named: kept out of every outgoing mail until they write to us again."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from maild.replies.compose import Outgoing
from maild.replies.tally import tally
from maild.store.direct import Statement
from maild.store.models import Undeliverable

log = logging.getLogger(__name__)

_TABLE: Table = Undeliverable.__table__  # type: ignore[assignment]

# Compiled once: these run for every inbound and every outgoing mail.
_AMONG = select(_TABLE.c.address).where(_TABLE.c.address.in_(bindparam("wanted", expanding=True)))
_WROTE_AGAIN = Statement(delete(_TABLE).where(_TABLE.c.address == bindparam("address")))


def undeliverable_among(session: Session, addresses: Iterable[str]) -> set[str]:
    """Which of ``addresses`` are marked undeliverable (those this transaction has just lifted
    the mark from are not asked for: maild.replies.tally)."""
    wanted = {a.lower() for a in addresses if a} - tally(session).cleared
    if not wanted:
        return set()
    rows = session.connection().execute(_AMONG, {"wanted": list(wanted)})
    return {str(address) for (address,) in rows}


def _upsert(dialect: str) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(_TABLE)
    return stmt.on_conflict_do_update(
        index_elements=[_TABLE.c.address],
        set_={"ticket_id": stmt.excluded.ticket_id, "reason": stmt.excluded.reason},
    )


def mark_undeliverable(
    session: Session, addresses: Iterable[str], now: datetime, ticket_id: int, reason: str
) -> None:
    """Mark ``addresses`` (again: the request and reason are brought up to date).

    An upsert, so two workers marking one address at once never collide.
    """
    rows = [
        {"address": a, "since": now, "ticket_id": ticket_id, "reason": reason[:2000]}
        for a in dict.fromkeys(a.lower() for a in addresses)
    ]
    if rows:
        conn = session.connection()
        conn.execute(_upsert(conn.dialect.name), rows)
        tally(session).cleared.difference_update(r["address"] for r in rows)


def wrote_again(session: Session, address: str) -> bool:
    """The address wrote to us: mail may go to it again. True if it was marked."""
    changed = _WROTE_AGAIN.execute(session, {"address": address})
    tally(session).cleared.add(address)
    return bool(changed)


def deliverable(session: Session, out: Outgoing) -> Outgoing | None:
    """``out`` without undeliverable recipients (the first CC left takes the To), or None
    when nobody is left to send it to."""
    dead = undeliverable_among(session, (*out.to, *out.cc))
    if not dead:
        return out
    alive = [a for a in (*out.to, *out.cc) if a.lower() not in dead]
    log.info("outgoing %s: not sent to undeliverable %s", out.message_id, ", ".join(sorted(dead)))
    if not alive:
        return None
    to = [a for a in out.to if a.lower() not in dead] or alive[:1]
    cc = [a for a in alive if a not in to]
    return replace(out, to=tuple(to), cc=tuple(cc))
