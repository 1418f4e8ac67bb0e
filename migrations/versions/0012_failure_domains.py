"""failure domains, windows and approvals: each server's domain values, the batch's domain
sizes and wave labels, when a batch waiting for its window may start again, who submitted it,
the approval gate it waits on, and every approval or refusal

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('domains', sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column('window_opens_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('submitted_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('approval_gate', sa.Integer(), nullable=True))
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('domains', sa.JSON(), nullable=True))
    op.create_table(
        'approvals',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('batch_id', sa.String(length=36), nullable=False),
        sa.Column('gate', sa.Integer(), nullable=False),
        sa.Column('principal', sa.String(length=64), nullable=False),
        sa.Column('decision', sa.String(length=16), nullable=False),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['batch_id'],
            ['batches.id'],
            name=op.f('fk_approvals_batch_id_batches'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_approvals')),
        sa.UniqueConstraint(
            'batch_id', 'gate', 'principal', name='uq_approvals_batch_id_gate_principal'
        ),
    )


def downgrade() -> None:
    op.drop_table('approvals')
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_column('domains')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('approval_gate')
        batch_op.drop_column('submitted_by')
        batch_op.drop_column('window_opens_at')
        batch_op.drop_column('domains')
