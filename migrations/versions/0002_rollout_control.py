"""rollout control

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.create_index('ix_batch_servers_batch_id_wave_state', ['batch_id', 'wave', 'state'], unique=False)

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('abort_reason', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('current_wave', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('waves_total', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('wave_ended_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('selector', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('selector')
        batch_op.drop_column('wave_ended_at')
        batch_op.drop_column('waves_total')
        batch_op.drop_column('current_wave')
        batch_op.drop_column('abort_reason')
        batch_op.drop_column('paused_by')

    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_servers_batch_id_wave_state')

