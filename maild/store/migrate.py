"""Run the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect

from maild.store.db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(db: Database) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def ensure_schema(db: Database) -> None:
    """Create the schema when the database is empty (a first command before `maild init`)."""
    if not inspect(db.engine).has_table("inbound"):
        upgrade(db)


def upgrade(db: Database, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``.

    On SQLite a migration that alters a table copies it into a new one (Alembic's batch mode),
    which the foreign keys of the rows that point at it would refuse: they are off while the
    migrations run (SQLite's own advice for schema changes) and checked once afterwards.
    """
    cfg = alembic_config(db)
    with db.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # outside any transaction, where the PRAGMA takes effect
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("the upgraded database breaks a foreign key")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
