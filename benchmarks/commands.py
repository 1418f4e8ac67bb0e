"""The command lines the benchmarks print to reproduce a run: safe to paste and to share."""

from __future__ import annotations

import shlex

from sqlalchemy.engine import make_url

from orchestrator.db.engine import normalise_url

# Query keys of a database URL that carry a secret (libpq's and psycopg's).
SECRET_QUERY_KEYS = ("password", "sslpassword", "passfile")


def shareable_url(url: str) -> str:
    """`url` without its password (in the authority or the query), quoted for a shell."""
    parsed = make_url(normalise_url(url)).difference_update_query(SECRET_QUERY_KEYS)
    return shlex.quote(parsed.render_as_string(hide_password=True))
