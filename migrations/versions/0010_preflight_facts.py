"""pre-flight: the image each server is sent, and the facts it was judged on at submission

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_image', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('facts', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_column('facts')
        batch_op.drop_column('target_image')
