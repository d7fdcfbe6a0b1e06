"""The durability guard: no connection below SQLite synchronous=FULL or PostgreSQL
synchronous_commit=on is ever used (a kill -9 test cannot see the difference; a power cut can).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from maild.core.errors import UnsafeStorage
from maild.ingest.spool import SpoolQueue
from maild.store.db import Database


def _lower(dbapi_connection: Any, _record: Any) -> None:
    """What an operator's or a library's connect hook might do."""
    cur = dbapi_connection.cursor()
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cur.execute("PRAGMA synchronous=OFF")
    else:
        cur.execute("SET synchronous_commit = off")
        dbapi_connection.commit()
    cur.close()


def test_a_normal_connection_passes(db_url: str) -> None:
    db = Database(db_url)
    try:
        with db.session() as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
    finally:
        db.dispose()


def test_a_connect_hook_lowering_durability_makes_opening_fail(db_url: str) -> None:
    db = Database(db_url)
    event.listen(db.engine, "connect", _lower)  # runs after maild's own hook
    try:
        with pytest.raises(UnsafeStorage, match="synchronous"), db.session() as s:
            s.execute(text("SELECT 1"))
        with pytest.raises(UnsafeStorage), db.write() as s:  # and stays refused
            s.execute(text("SELECT 1"))
    finally:
        db.dispose()


def test_the_spool_is_guarded_too(tmp_path: Path) -> None:
    main = Database(f"sqlite:///{tmp_path}/maild.db")
    spool = SpoolQueue(tmp_path / "maild.db.spool", main)
    try:
        spool.db.dispose()  # its next connection is a new one
        event.listen(spool.db.engine, "connect", _lower)
        with pytest.raises(UnsafeStorage, match=r"maild\.db\.spool opened with PRAGMA synchr"):
            spool.count()
    finally:
        spool.dispose()
        main.dispose()
