"""evidence that a changeos landed: the server as it was before the call

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('before_call', sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column('facts_not_before', sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_column('facts_not_before')
        batch_op.drop_column('before_call')
