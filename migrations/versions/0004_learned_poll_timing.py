"""learned poll timing

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_seconds', sa.Float(), nullable=True))

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expected_job_s', sa.Float(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('expected_job_s')

    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_column('job_seconds')

