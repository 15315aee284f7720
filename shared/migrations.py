"""Alembic per service, driven from code: each service's env.py calls `run_env`, and the service
upgrades (`migrate` command) or checks it is at head before it serves."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import UtcDateTime, make_engine


class SchemaNotAtHead(RuntimeError):
    pass


def alembic_config(migrations_dir: Path, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run_env(target_metadata: MetaData) -> None:
    """Body of every service's migrations/env.py."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection, target_metadata)
        return

    async def _online() -> None:
        engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
        async with engine.begin() as conn:
            await conn.run_sync(_run, target_metadata)
        await engine.dispose()

    asyncio.run(_online())


def _run(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _render_item(type_: str, obj: Any, _autogen_context: AutogenContext) -> str | Literal[False]:
    # Generated revisions must not import service models: UtcDateTime is a plain column there.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


async def upgrade_to_head(engine: AsyncEngine, migrations_dir: Path) -> None:
    cfg = alembic_config(migrations_dir)

    def _upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # Replicas (or init containers) migrating at once: the first upgrades, the others
            # wait here and then find the schema at head. Released when the transaction ends.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": str(migrations_dir)}
            )
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


@functools.cache
def code_heads(migrations_dir: Path) -> frozenset[str]:
    """The revisions the code expects. Parsing every revision file is work that /ready would
    otherwise repeat on each probe; the files do not change while the process runs."""
    return frozenset(ScriptDirectory.from_config(alembic_config(migrations_dir)).get_heads())


async def ensure_at_head(engine: AsyncEngine, migrations_dir: Path) -> None:
    heads = code_heads(migrations_dir)

    def _current(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as conn:
        current = await conn.run_sync(_current)
    if current != heads:
        raise SchemaNotAtHead(
            f"database schema is at {sorted(current) or 'nothing'}, code expects {sorted(heads)}; "
            "run the service's `migrate` command first"
        )
