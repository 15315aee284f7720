"""refunds may be rejected, keep why they failed and when the reconciler asked Stripe

Revision ID: 05c0d3ba2baf
Revises: 3c0a411a3aad
Create Date: 2026-11-25 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '05c0d3ba2baf'
down_revision: str | None = '3c0a411a3aad'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ('pending', 'succeeded', 'failed', 'canceled')
AFTER = (*BEFORE, 'rejected')
PENDING = sa.text("status = 'pending'")


def _check(statuses: tuple[str, ...]) -> str:
    return 'status IN (' + ', '.join(f"'{s}'" for s in statuses) + ')'


def _allow(statuses: tuple[str, ...]) -> None:
    if op.get_context().dialect.name == 'sqlite':
        # SQLite cannot alter a constraint: the table is rebuilt (nothing refers to refunds).
        with op.batch_alter_table('refunds', recreate='always') as batch:
            batch.drop_constraint(op.f('ck_refunds_status'), type_='check')
            batch.create_check_constraint(op.f('ck_refunds_status'), _check(statuses))
        return
    # On PostgreSQL: NOT VALID then VALIDATE, so the table is not locked against writes while
    # every row is checked.
    op.execute('ALTER TABLE refunds DROP CONSTRAINT ck_refunds_status')
    op.execute(f'ALTER TABLE refunds ADD CONSTRAINT ck_refunds_status CHECK ({_check(statuses)}) NOT VALID')
    op.execute('ALTER TABLE refunds VALIDATE CONSTRAINT ck_refunds_status')


def upgrade() -> None:
    # Nullable columns without a default: PostgreSQL adds them without rewriting the table.
    op.add_column('refunds', sa.Column('failure_reason', sa.Text(), nullable=True))
    op.add_column('refunds', sa.Column('reconciled_at', sa.DateTime(timezone=True), nullable=True))
    _allow(AFTER)
    op.create_index('ix_refunds_pending', 'refunds', ['created_at'], unique=False, postgresql_where=PENDING, sqlite_where=PENDING)


def downgrade() -> None:
    op.drop_index('ix_refunds_pending', table_name='refunds', postgresql_where=PENDING, sqlite_where=PENDING)
    # Fails while a refund is rejected: such a refund must be settled first.
    _allow(BEFORE)
    with op.batch_alter_table('refunds') as batch:
        batch.drop_column('reconciled_at')
        batch.drop_column('failure_reason')
