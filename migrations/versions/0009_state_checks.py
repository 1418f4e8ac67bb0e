"""state columns accept only their enum's values (a CHECK on PostgreSQL, triggers on SQLite)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a migration must keep meaning what it meant when it was written.
SERVER = ('pending', 'submitting', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')
BATCH = ('pending', 'running', 'paused', 'succeeded', 'partially_failed', 'aborted', 'cancelled')
DELIVERY = ('pending', 'delivered', 'failed')
# (table, column, allowed values, may be NULL)
CHECKS = (
    ('batches', 'state', BATCH, False),
    ('batch_servers', 'state', SERVER, False),
    ('batch_wave_counts', 'state', SERVER, False),
    ('server_history', 'to_state', SERVER, False),
    ('server_history', 'from_state', SERVER, True),
    ('batch_events', 'to_state', BATCH, False),
    ('batch_events', 'from_state', BATCH, True),
    ('webhook_deliveries', 'state', DELIVERY, False),
)


def _condition(column: str, values: tuple[str, ...], nullable: bool, row: str = '') -> str:
    listed = ', '.join(f"'{v}'" for v in values)
    name = f'{row}{column}'
    test = f'{name} IN ({listed})'
    return f'({name} IS NULL OR {test})' if nullable else test


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table, column, values, nullable in CHECKS:
        name = f'ck_{table}_{column}'
        if not sqlite:
            op.create_check_constraint(name, table, _condition(column, values, nullable))
            continue
        # SQLite cannot add a CHECK to a table in place; triggers refuse the same rows.
        for when in ('INSERT', f'UPDATE OF {column}'):
            kind = 'insert' if when == 'INSERT' else 'update'
            op.execute(
                f'CREATE TRIGGER {name}_{kind} BEFORE {when} ON {table} '
                f'WHEN NOT {_condition(column, values, nullable, "NEW.")} '
                f"BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {name}'); END"
            )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table, column, _, _ in reversed(CHECKS):
        name = f'ck_{table}_{column}'
        if not sqlite:
            op.drop_constraint(name, table, type_='check')
            continue
        for kind in ('insert', 'update'):
            op.execute(f'DROP TRIGGER IF EXISTS {name}_{kind}')
