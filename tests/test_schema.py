"""The Alembic migrations build exactly the schema the models describe (no drift)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from maild.knowledge.index import FTS_OBJECTS
from maild.store.db import Database
from maild.store.models import Base


def test_migrations_match_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        diff = compare_metadata(ctx, Base.metadata)
    # SQLite cannot tell some types apart (e.g. BIGINT vs INTEGER primary keys); those are
    # type changes, and any table, column or index missing or extra is a real drift.
    real = [d for d in diff if not (isinstance(d, list) and d and d[0][0] == "modify_type")]
    # The full-text index is raw DDL (FTS5 tables and their shadow tables, GIN expressions).
    real = [d for d in real if not (isinstance(d, tuple) and d[1].name.startswith(FTS_OBJECTS))]
    assert real == [], real
