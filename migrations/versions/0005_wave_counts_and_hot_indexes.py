"""wave counts and hot indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batch_wave_counts',
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_batch_wave_counts_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('batch_id', 'wave', 'state', name=op.f('pk_batch_wave_counts'))
    )
    # Batches that already exist get their counts from their servers, once.
    op.execute(
        "INSERT INTO batch_wave_counts (batch_id, wave, state, n) "
        "SELECT batch_id, wave, state, count(*) FROM batch_servers GROUP BY batch_id, wave, state"
    )
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batch_servers_batch_id_wave_state'))
        batch_op.create_index('ix_batch_servers_batch_id_wave_state_position', ['batch_id', 'wave', 'state', 'position'], unique=False)
        batch_op.create_index('ix_batch_servers_settled_job_seconds', ['batch_id', 'id'], unique=False, postgresql_include=['job_seconds'], postgresql_where=sa.text("job_seconds IS NOT NULL AND state IN ('succeeded', 'failed')"), sqlite_where=sa.text("job_seconds IS NOT NULL AND state IN ('succeeded', 'failed')"))



def downgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_servers_settled_job_seconds', postgresql_include=['job_seconds'], postgresql_where=sa.text("job_seconds IS NOT NULL AND state IN ('succeeded', 'failed')"), sqlite_where=sa.text("job_seconds IS NOT NULL AND state IN ('succeeded', 'failed')"))
        batch_op.drop_index('ix_batch_servers_batch_id_wave_state_position')
        batch_op.create_index(batch_op.f('ix_batch_servers_batch_id_wave_state'), ['batch_id', 'wave', 'state'], unique=False)

    op.drop_table('batch_wave_counts')
