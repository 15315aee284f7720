"""disputes of our payments; Stripe events about no payment of ours marked ignored; payment
sessions found by their payment intent

Revision ID: fa29662133c8
Revises: 05c0d3ba2baf
Create Date: 2026-11-27 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'fa29662133c8'
down_revision: str | None = '05c0d3ba2baf'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without a default: PostgreSQL adds them without rewriting the table. Events
    # stored before stay as they are; the replay marks a foreign one ignored the next time it runs.
    op.add_column('stripe_events', sa.Column('ignored_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('stripe_events', sa.Column('ignored_reason', sa.Text(), nullable=True))
    # One row per order: a plain CREATE INDEX, which holds writes to payment_sessions off while it
    # is built (CONCURRENTLY cannot run inside the migration's transaction).
    op.create_index(op.f('ix_payment_sessions_payment_intent_id'), 'payment_sessions', ['payment_intent_id'], unique=False)
    op.create_table('disputes',
    sa.Column('dispute_id', sa.String(length=255), nullable=False),
    sa.Column('order_id', sa.String(length=36), nullable=False),
    sa.Column('payment_intent_id', sa.String(length=255), nullable=False),
    sa.Column('charge_id', sa.String(length=255), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=30), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_disputes_amount_not_negative')),
    sa.PrimaryKeyConstraint('dispute_id', name=op.f('pk_disputes'))
    )
    op.create_index(op.f('ix_disputes_order_id'), 'disputes', ['order_id'], unique=False)
    op.create_index('ix_disputes_status_created_at', 'disputes', ['status', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_disputes_status_created_at', table_name='disputes')
    op.drop_index(op.f('ix_disputes_order_id'), table_name='disputes')
    op.drop_table('disputes')
    op.drop_index(op.f('ix_payment_sessions_payment_intent_id'), table_name='payment_sessions')
    with op.batch_alter_table('stripe_events') as batch:
        batch.drop_column('ignored_reason')
        batch.drop_column('ignored_at')
