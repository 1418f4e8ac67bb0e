"""health gate, rollback and backup: the `backing_up` and `verifying` server states, their
counts, a batch's kind, and each server's phase, previous image, probes and backup image

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a migration must keep meaning what it meant when it was written.
OLD_SERVER = ('pending', 'submitting', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')
NEW_SERVER = (
    'pending',
    'submitting',
    'backing_up',
    'running',
    'verifying',
    'succeeded',
    'failed',
    'cancelled',
    'skipped',
)
# (table, column, may be NULL): the state columns that hold a server state.
SERVER_STATE_COLUMNS = (
    ('batch_servers', 'state', False),
    ('batch_wave_counts', 'state', False),
    ('server_history', 'to_state', False),
    ('server_history', 'from_state', True),
)
OLD_ACTIVE = "state IN ('pending', 'submitting', 'running')"
NEW_ACTIVE = "state IN ('pending', 'submitting', 'backing_up', 'running', 'verifying')"
ACTIVE_INDEX = 'uq_batch_servers_active_server'


def _condition(column: str, values: tuple[str, ...], nullable: bool, row: str = '') -> str:
    listed = ', '.join(f"'{v}'" for v in values)
    name = f'{row}{column}'
    test = f'{name} IN ({listed})'
    return f'({name} IS NULL OR {test})' if nullable else test


def _replace_checks(values: tuple[str, ...]) -> None:
    """The same checks as 0009, for another list of server states."""
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table, column, nullable in SERVER_STATE_COLUMNS:
        name = f'ck_{table}_{column}'
        if not sqlite:
            op.drop_constraint(name, table, type_='check')
            op.create_check_constraint(name, table, _condition(column, values, nullable))
            continue
        for when in ('INSERT', f'UPDATE OF {column}'):
            kind = 'insert' if when == 'INSERT' else 'update'
            op.execute(f'DROP TRIGGER IF EXISTS {name}_{kind}')
            op.execute(
                f'CREATE TRIGGER {name}_{kind} BEFORE {when} ON {table} '
                f'WHEN NOT {_condition(column, values, nullable, "NEW.")} '
                f"BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {name}'); END"
            )


def _replace_active_index(condition: str) -> None:
    """One server, one active batch: the new in-flight states are active too."""
    op.drop_index(ACTIVE_INDEX, table_name='batch_servers')
    op.create_index(
        ACTIVE_INDEX,
        'batch_servers',
        ['server_id'],
        unique=True,
        postgresql_where=sa.text(condition),
        sqlite_where=sa.text(condition),
    )


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('n_backing_up', sa.Integer(), nullable=False, server_default='0')
        )
        batch_op.add_column(
            sa.Column('n_verifying', sa.Integer(), nullable=False, server_default='0')
        )
        batch_op.add_column(
            sa.Column('n_rolling_back', sa.Integer(), nullable=False, server_default='0')
        )
        batch_op.add_column(
            sa.Column('kind', sa.String(length=16), nullable=False, server_default='change')
        )
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('phase', sa.String(length=16), nullable=False, server_default='change')
        )
        batch_op.add_column(sa.Column('previous_image', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('health', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('backup', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('backup_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_batch_servers_backup_expires_at', ['backup_expires_at'], unique=False)
    _replace_checks(NEW_SERVER)
    _replace_active_index(NEW_ACTIVE)


def downgrade() -> None:
    _replace_active_index(OLD_ACTIVE)
    _replace_checks(OLD_SERVER)
    with op.batch_alter_table('batch_servers', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_servers_backup_expires_at')
        batch_op.drop_column('backup_expires_at')
        batch_op.drop_column('backup')
        batch_op.drop_column('health')
        batch_op.drop_column('previous_image')
        batch_op.drop_column('phase')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('kind')
        batch_op.drop_column('n_rolling_back')
        batch_op.drop_column('n_verifying')
        batch_op.drop_column('n_backing_up')
