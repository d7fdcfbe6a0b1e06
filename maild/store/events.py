"""The one way to write a line of a request's history (an ``events`` row)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from maild.store.direct import Statement
from maild.store.models import Event

MAILD = "maild"  # the actor of what maild does on its own clock (sweeps, the breaker)

_INSERT = Statement(insert(Event.__table__))  # type: ignore[arg-type]


def add_event(
    session: Session, ticket_id: int, at: datetime, kind: str, actor: str = "", **detail: object
) -> None:
    """Write the event at once (one INSERT on the driver, no ORM object to flush); ``detail``
    as JSON."""
    _INSERT.execute(
        session,
        {
            "ticket_id": ticket_id,
            "at": at,
            "actor": actor,
            "kind": kind,
            "detail": json.dumps(detail, ensure_ascii=False, default=str),
        },
    )
