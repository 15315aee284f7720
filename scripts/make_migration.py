"""Autogenerate a service's Alembic revision: `python scripts/make_migration.py orders "msg"`.

Runs the existing revisions on a throwaway SQLite file, then diffs the models against it.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command

from shared.db import make_engine
from shared.migrations import alembic_config, upgrade_to_head


def main(service: str, message: str) -> None:
    migrations = Path("services") / service / "migrations"
    importlib.import_module(f"services.{service}.models")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/head.db"
        engine = make_engine(url)
        asyncio.run(upgrade_to_head(engine, migrations))
        asyncio.run(engine.dispose())
        command.revision(alembic_config(migrations, url), message=message, autogenerate=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
