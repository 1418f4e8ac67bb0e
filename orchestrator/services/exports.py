"""What a batch's servers add up to for the people reading it: failures grouped by the code
behind them ("312 x Ecs.0202") and the servers as CSV, all of them or one state or one code.

The groups are read from the counts kept with every transition (batch_code_counts); the CSV
is written in keyset-paged chunks so a 100,000-server batch never sits in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.models import Batch, BatchCodeCount
from orchestrator.errors import NotFound
from orchestrator.services.server_pages import server_page_query
from orchestrator.services.views import iso

CSV_COLUMNS = (
    "server_id",
    "state",
    "wave",
    "attempt",
    "phase",
    "image_id",
    "previous_image",
    "job_id",
    "job_status",
    "error_code",
    "error_message",
    "submitted_at",
    "finished_at",
    "updated_at",
)
# The table's columns behind them (image_id is target_image), the only ones a chunk reads.
CSV_SOURCE_COLUMNS = tuple("target_image" if c == "image_id" else c for c in CSV_COLUMNS)
CSV_CHUNK = 2000


def failure_codes(session: Session, batch_id: str) -> list[dict[str, Any]]:
    """Failed, skipped and cancelled servers grouped by state and error code, biggest first,
    each with the message of its first server: read from the counts kept with every
    transition, so the cost does not grow with the batch."""
    rows = session.execute(
        select(BatchCodeCount.state, BatchCodeCount.code, BatchCodeCount.n, BatchCodeCount.message)
        .where(BatchCodeCount.batch_id == batch_id, BatchCodeCount.n > 0)
        .order_by(BatchCodeCount.n.desc(), BatchCodeCount.state, BatchCodeCount.code)
    ).all()
    return [
        {"state": state, "code": code, "count": int(n), "message": message}
        for state, code, n, message in rows
    ]


def servers_csv(
    sessions: sessionmaker[Session],
    batch_id: str,
    *,
    state: str | None,
    code: str | None,
) -> Iterator[bytes]:
    """The batch's servers in submission order as CSV (a header, then one row each).

    Raises NotFound before the first chunk when there is no such batch, so the caller can still
    answer 404 rather than a broken download."""
    with sessions() as session:
        if session.get(Batch, batch_id) is None:
            raise NotFound(f"batch {batch_id} does not exist")
    return _chunks(sessions, batch_id, state=state, code=code)


def _chunks(
    sessions: sessionmaker[Session], batch_id: str, *, state: str | None, code: str | None
) -> Iterator[bytes]:
    yield _csv_line(CSV_COLUMNS)
    after = 0
    while True:
        query, params = server_page_query(
            batch_id,
            state=state,
            code=code,
            server_prefix=None,
            after=after,
            limit=CSV_CHUNK,
            columns=CSV_SOURCE_COLUMNS,
        )
        with sessions() as session:
            rows = session.connection().execute(query, params).all()
        if not rows:
            return
        yield b"".join(_csv_line(_csv_row(row)) for row in rows)
        after = rows[-1].id


def _csv_row(row: Row[Any]) -> tuple[Any, ...]:
    return (
        row.server_id,
        row.state,
        row.wave,
        row.attempt,
        row.phase,
        row.target_image,
        row.previous_image,
        row.job_id,
        row.job_status,
        row.error_code,
        row.error_message,
        iso(row.submitted_at),
        iso(row.finished_at),
        iso(row.updated_at),
    )


def _csv_line(values: tuple[Any, ...]) -> bytes:
    buffer = io.StringIO()
    # A cell starting with =, +, - or @ is a formula to a spreadsheet: cloud messages are
    # not ours to trust, so such cells are quoted with a leading apostrophe (OWASP's advice).
    csv.writer(buffer, lineterminator="\r\n").writerow(
        ["'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in values]
    )
    return buffer.getvalue().encode()
