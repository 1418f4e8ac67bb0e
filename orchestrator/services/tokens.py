"""API tokens in the database: create (shown once), revoke, list, and find the caller of a request.

The bootstrap admin token (ORCH_API_TOKEN) is not stored here; the API checks it first.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import ids
from orchestrator.db.models import ApiToken
from orchestrator.domain.access import Principal, Role, hash_token, new_token, shown_prefix
from orchestrator.errors import Conflict, NotFound, ServiceError
from orchestrator.services.views import iso

TOKEN_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# last_used_at is a hint for humans; writing it on every request would make reads write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenInvalid(ServiceError):
    code = "invalid_request"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid request")
        self.fields = fields


@dataclass(frozen=True)
class CreatedToken:
    token: str
    view: dict[str, Any]


def token_view(row: ApiToken) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "projects": row.projects,
        "token_prefix": row.token_prefix,
        "created_at": iso(row.created_at),
        "created_by": row.created_by,
        "last_used_at": iso(row.last_used_at),
        "revoked_at": iso(row.revoked_at),
    }


def validate_token_request(
    name: object, role: object, projects: object
) -> tuple[str, Role, list[str] | None]:
    problems: dict[str, str] = {}
    if not isinstance(name, str) or not TOKEN_NAME.fullmatch(name):
        problems["name"] = "1-64 characters of A-Z a-z 0-9 _ . @ -"
    if not isinstance(role, str) or role not in {r.value for r in Role}:
        problems["role"] = "one of " + ", ".join(r.value for r in Role)
    scope: list[str] | None = None
    if projects is not None:
        if not isinstance(projects, list) or not projects:
            problems["projects"] = "a non-empty list of project ids, or null for every project"
        else:
            bad = [p for p in projects if not isinstance(p, str) or not ids.PROJECT_ID.fullmatch(p)]
            if bad:
                problems["projects"] = "project ids are 32 lowercase hex digits"
            scope = sorted({p for p in projects if isinstance(p, str)})
    if problems:
        raise TokenInvalid(problems)
    return str(name), Role(str(role)), scope


def create_token(
    sessions: sessionmaker[Session],
    *,
    name: object,
    role: object,
    projects: object,
    created_by: str,
    now: datetime,
) -> CreatedToken:
    valid_name, valid_role, scope = validate_token_request(name, role, projects)
    token = new_token()
    row = ApiToken(
        id=str(uuid.uuid4()),
        name=valid_name,
        role=valid_role.value,
        projects=scope,
        token_hash=hash_token(token),
        token_prefix=shown_prefix(token),
        created_at=now,
        created_by=created_by,
        last_used_at=None,
        revoked_at=None,
    )
    try:
        with sessions.begin() as session:
            session.add(row)
            session.flush()
            view = token_view(row)
    except IntegrityError:
        raise Conflict(f"a token named {valid_name!r} already exists", {}) from None
    return CreatedToken(token=token, view=view)


def revoke_token(
    sessions: sessionmaker[Session], name_or_id: str, *, now: datetime
) -> dict[str, Any]:
    with sessions.begin() as session:
        row = session.scalars(
            select(ApiToken).where((ApiToken.name == name_or_id) | (ApiToken.id == name_or_id))
        ).first()
        if row is None:
            raise NotFound(f"no token {name_or_id!r}")
        if row.revoked_at is None:
            row.revoked_at = now
        session.flush()
        return token_view(row)


def list_tokens(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as session:
        return [token_view(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def principal_of(row: ApiToken) -> Principal:
    return Principal(
        name=row.name,
        role=Role(row.role),
        projects=None if row.projects is None else frozenset(row.projects),
        token_id=row.id,
    )


def authenticate(sessions: sessionmaker[Session], token: str, *, now: datetime) -> Principal | None:
    """The live token's principal, or None (unknown or revoked); marks it used."""
    with sessions.begin() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token))
        ).first()
        if row is None or row.revoked_at is not None:
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        return principal_of(row)
