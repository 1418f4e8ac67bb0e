"""Who is calling: roles, principals and API token material (generation and hashing).

A token is `rmg_` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: with
that much entropy a plain hash cannot be reversed or guessed, and it lets a request find its
token with one indexed lookup instead of trying every stored hash.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "rmg_"
SHOWN_PREFIX_CHARS = 8


class Role(enum.StrEnum):
    """Ordered: each role may do everything the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    # An operator who may also approve other people's batches (four eyes: never their own).
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return _RANKS[self] >= _RANKS[needed]


# Worked out once: every API request asks `allows`, and listing the enum each time showed in
# profiles.
_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a token's name, role and project scope (None: all)."""

    name: str
    role: Role
    projects: frozenset[str] | None
    token_id: str | None = None

    def sees(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects

    def project_filter(self) -> list[str] | None:
        """The projects a query must be limited to; None means no limit."""
        return None if self.projects is None else sorted(self.projects)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def shown_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + SHOWN_PREFIX_CHARS]
