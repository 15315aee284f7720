"""A database left at an older schema revision, as a deployment from before a migration left
it: the starting point of the tests that apply that migration over existing data."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Connection

from shared.db import make_engine
from shared.migrations import alembic_config


async def migrated_to(database_url: str, migrations: Path, revision: str) -> None:
    """Applies a service's migrations (`migrations`, its bootstrap's MIGRATIONS) up to
    `revision` and no further."""
    engine = make_engine(database_url)
    config = alembic_config(migrations)

    def upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
    finally:
        await engine.dispose()
