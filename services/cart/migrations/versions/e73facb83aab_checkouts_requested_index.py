"""index of the checkouts still requested, by updated_at

Revision ID: e73facb83aab
Revises: 34a57c27eaaa
Create Date: 2026-11-25 19:06:50.057549
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# For the outcome-inquiry round (services/cart/recovery.py), which looks for checkouts still
# `requested` and silent for a while every minute on every replica: partial, so it holds only
# the checkouts in flight however many have ever been made. On PostgreSQL the build scans the
# table once and blocks new checkouts meanwhile (a plain CREATE INDEX, inside the migration's
# transaction). Autogenerate also proposed retyping catalogue_items' columns on SQLite, which
# 34a57c27eaaa leaves alone on purpose; dropped here.

REQUESTED = sa.text("status = 'requested'")

revision: str = 'e73facb83aab'
down_revision: str | None = '34a57c27eaaa'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        'ix_checkouts_requested_updated_at',
        'checkouts',
        ['updated_at'],
        unique=False,
        postgresql_where=REQUESTED,
        sqlite_where=REQUESTED,
    )


def downgrade() -> None:
    op.drop_index('ix_checkouts_requested_updated_at', table_name='checkouts')
