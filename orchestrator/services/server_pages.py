"""The queries behind the hot pages: a batch's servers (the API's servers page and the CSV
export both page through the one query, so both keep the plan that does not grow with the
fleet) and a server's history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, select

from orchestrator.db.models import BATCH_SERVERS_TABLE, BATCHES_TABLE, SERVER_HISTORY_TABLE

# Built once per shape (which filters, which columns) with the values as bound parameters:
# building and keying a new statement for every page was a quarter of a page's cost.
_statements: dict[tuple[bool, bool, bool, bool, tuple[str, ...]], Select[Any]] = {}


def server_page_query(
    batch_id: str,
    *,
    state: str | None,
    code: str | None,
    server_prefix: str | None,
    after: int | None,
    limit: int,
    columns: Sequence[str],
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement and its parameters for `columns` (and `id`, the cursor) of up to `limit`
    of a batch's servers after row `after`, in submission order. Only the columns the reader
    shows: each one more is fetched, converted and dropped for every row of every page.

    The ids come first, from an index holding every column the conditions name ((batch_id,
    id), (batch_id, state, id) or (batch_id, error_code, id)): an index-only scan. Asked for the
    rows themselves in id order, PostgreSQL may walk the primary key past every older batch's
    rows instead (230 ms for a first page behind 1.1 million of them)."""
    shape = (bool(state), bool(code), bool(server_prefix), after is not None, tuple(columns))
    statement = _statements.get(shape)
    if statement is None:
        statement = _statements[shape] = _build(*shape)
    params: dict[str, Any] = {"batch_id": batch_id, "limit": limit}
    if state:
        params["state"] = state
    if code:
        params["code"] = code
    if server_prefix:
        params["prefix_pattern"] = _escaped(server_prefix) + "%"
    if after is not None:
        params["after"] = after
    return statement, params


def _build(
    by_state: bool, by_code: bool, by_prefix: bool, by_after: bool, columns: tuple[str, ...]
) -> Select[Any]:
    c = BATCH_SERVERS_TABLE.c
    ids = select(c.id).where(c.batch_id == bindparam("batch_id"))
    if by_state:
        ids = ids.where(c.state == bindparam("state"))
    if by_code:
        ids = ids.where(c.error_code == bindparam("code"))
    if by_prefix:
        ids = ids.where(c.server_id.like(bindparam("prefix_pattern"), escape="/"))
    if by_after:
        ids = ids.where(c.id > bindparam("after"))
    ids = ids.order_by(c.id).limit(bindparam("limit"))
    return (
        select(c.id, *(c[name] for name in columns if name != "id"))
        .where(c.id.in_(ids.scalar_subquery()))
        .order_by(c.id)
    )


def _escaped(prefix: str) -> str:
    """`prefix` matched literally by LIKE ... ESCAPE '/'."""
    return prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")


_history_statements: dict[tuple[bool, bool], Select[Any]] = {}


def history_page_query(
    server_id: str, *, limit: int, after: int | None, projects: Sequence[str] | None
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement and its parameters for up to `limit` history rows of one server after row
    `after`, oldest first; only those of `projects`' batches when given (built once per shape,
    as the servers page is)."""
    shape = (after is not None, projects is not None)
    statement = _history_statements.get(shape)
    if statement is None:
        h = SERVER_HISTORY_TABLE.c
        statement = select(*h).where(h.server_id == bindparam("server_id"))
        if after is not None:
            statement = statement.where(h.id > bindparam("after"))
        if projects is not None:
            b = BATCHES_TABLE.c
            scoped = select(b.id).where(b.project_id.in_(bindparam("projects", expanding=True)))
            statement = statement.where(h.batch_id.in_(scoped))
        statement = statement.order_by(h.id).limit(bindparam("limit"))
        _history_statements[shape] = statement
    params: dict[str, Any] = {"server_id": server_id, "limit": limit}
    if after is not None:
        params["after"] = after
    if projects is not None:
        params["projects"] = list(projects)
    return statement, params
