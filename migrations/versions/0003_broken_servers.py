"""broken servers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_result', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('broken', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('n_broken', sa.Integer(), server_default='0', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('n_broken')

    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_column('broken')
        batch_op.drop_column('job_result')

