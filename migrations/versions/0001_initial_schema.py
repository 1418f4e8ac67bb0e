"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('cloud_init', sa.Boolean(), nullable=False),
    sa.Column('os_change', sa.JSON(), nullable=False),
    sa.Column('sealed_secrets', sa.LargeBinary(), nullable=True),
    sa.Column('policy', sa.JSON(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('n_pending', sa.Integer(), nullable=False),
    sa.Column('n_submitting', sa.Integer(), nullable=False),
    sa.Column('n_running', sa.Integer(), nullable=False),
    sa.Column('n_succeeded', sa.Integer(), nullable=False),
    sa.Column('n_failed', sa.Integer(), nullable=False),
    sa.Column('n_cancelled', sa.Integer(), nullable=False),
    sa.Column('n_skipped', sa.Integer(), nullable=False),
    sa.Column('pause_reason', sa.Text(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('parent_id', sa.String(length=36), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_batches_idempotency_key'))
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('ix_batches_created_at_id', ['created_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_batches_state'), ['state'], unique=False)

    op.create_table('batch_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_batch_events_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_events'))
    )
    with op.batch_alter_table('batch_events', schema=None) as batch_op:
        batch_op.create_index('ix_batch_events_batch_id_id', ['batch_id', 'id'], unique=False)

    op.create_table('batch_servers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('server_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('call_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome_unknown', sa.Boolean(), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retries', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('job_status', sa.String(length=20), nullable=True),
    sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('polls', sa.Integer(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_batch_servers_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_servers')),
    sa.UniqueConstraint('batch_id', 'server_id', name='uq_batch_servers_batch_id_server_id')
    )
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.create_index('ix_batch_servers_batch_id_id', ['batch_id', 'id'], unique=False)
        batch_op.create_index('ix_batch_servers_batch_id_state_id', ['batch_id', 'state', 'id'], unique=False)
        batch_op.create_index('ix_batch_servers_state_next_poll_at', ['state', 'next_poll_at'], unique=False)
        batch_op.create_index('uq_batch_servers_active_server', ['server_id'], unique=True, sqlite_where=sa.text("state IN ('pending', 'submitting', 'running')"), postgresql_where=sa.text("state IN ('pending', 'submitting', 'running')"))

    op.create_table('server_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('batch_server_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('server_id', sa.String(length=64), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['batch_server_id'], ['batch_servers.id'], name=op.f('fk_server_history_batch_server_id_batch_servers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_history'))
    )
    with op.batch_alter_table('server_history', schema=None) as batch_op:
        batch_op.create_index('ix_server_history_batch_server_id_id', ['batch_server_id', 'id'], unique=False)
        batch_op.create_index('ix_server_history_server_id_id', ['server_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('server_history', schema=None) as batch_op:
        batch_op.drop_index('ix_server_history_server_id_id')
        batch_op.drop_index('ix_server_history_batch_server_id_id')

    op.drop_table('server_history')
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_index('uq_batch_servers_active_server', sqlite_where=sa.text("state IN ('pending', 'submitting', 'running')"), postgresql_where=sa.text("state IN ('pending', 'submitting', 'running')"))
        batch_op.drop_index('ix_batch_servers_state_next_poll_at')
        batch_op.drop_index('ix_batch_servers_batch_id_state_id')
        batch_op.drop_index('ix_batch_servers_batch_id_id')

    op.drop_table('batch_servers')
    with op.batch_alter_table('batch_events', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_events_batch_id_id')

    op.drop_table('batch_events')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_state'))
        batch_op.drop_index('ix_batches_created_at_id')

    op.drop_table('batches')
