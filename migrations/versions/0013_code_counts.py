"""counts per batch, state and error code, kept with every transition (the batch's failures by
code are read, not counted over its servers), filled from the servers already there; an index
of a batch's servers by error code (the drill-down and the export by code)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVER_STATES = (
    'pending', 'submitting', 'backing_up', 'running', 'verifying',
    'succeeded', 'failed', 'cancelled', 'skipped',
)  # fmt: skip


def upgrade() -> None:
    listed = ", ".join(f"'{state}'" for state in SERVER_STATES)
    op.create_table(
        'batch_code_counts',
        sa.Column('batch_id', sa.String(length=36), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('code', sa.String(length=64), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('message', sa.Text(), nullable=True),
        sa.CheckConstraint(f"state IN ({listed})", name=op.f('ck_batch_code_counts_state')),
        sa.ForeignKeyConstraint(
            ['batch_id'],
            ['batches.id'],
            name=op.f('fk_batch_code_counts_batch_id_batches'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('batch_id', 'state', 'code', name=op.f('pk_batch_code_counts')),
    )
    # Each group's message is the one of its first server (the lowest row id), as the
    # transitions keep it from now on.
    op.execute(
        """
        INSERT INTO batch_code_counts (batch_id, state, code, n, message)
        SELECT g.batch_id, g.state, g.error_code, g.n, s.error_message
        FROM (
            SELECT batch_id, state, error_code, count(*) AS n, min(id) AS first_id
            FROM batch_servers
            WHERE state IN ('failed', 'skipped', 'cancelled') AND error_code IS NOT NULL
            GROUP BY batch_id, state, error_code
        ) g
        JOIN batch_servers s ON s.id = g.first_id
        """
    )


    op.create_index(
        'ix_batch_servers_batch_id_error_code_id',
        'batch_servers',
        ['batch_id', 'error_code', 'id'],
        unique=False,
        postgresql_where=sa.text('error_code IS NOT NULL'),
        sqlite_where=sa.text('error_code IS NOT NULL'),
    )


def downgrade() -> None:
    op.drop_index('ix_batch_servers_batch_id_error_code_id', table_name='batch_servers')
    op.drop_table('batch_code_counts')
