"""money and credit columns are 64-bit

Revision ID: f958dd2eaa2e
Revises: 6f15b670ebc0
Create Date: 2026-11-25 17:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

# A line may cost up to shared.limits.MAX_LINE_TOTAL (past 2**31): these columns become BIGINT.
# On PostgreSQL each table is rewritten once (one ALTER TABLE for all its columns) under an
# ACCESS EXCLUSIVE lock. SQLite stores every INTEGER in up to 8 bytes whatever its declared type,
# so there is nothing to change there (and a batch rebuild would trip foreign keys).

COLUMNS: dict[str, tuple[str, ...]] = {
    'job_items': ('units_per_item',),
    'entitlements': ('sessions',),
}

revision: str = 'f958dd2eaa2e'
down_revision: str | None = '6f15b670ebc0'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _retype(sql_type: str) -> None:
    if op.get_context().dialect.name == 'sqlite':
        return
    for table, columns in COLUMNS.items():
        changes = ', '.join(f'ALTER COLUMN {c} TYPE {sql_type}' for c in columns)
        op.execute(f'ALTER TABLE {table} {changes}')


def upgrade() -> None:
    _retype('BIGINT')


def downgrade() -> None:
    # Fails if a value no longer fits 32 bits: nothing is truncated silently.
    _retype('INTEGER')
