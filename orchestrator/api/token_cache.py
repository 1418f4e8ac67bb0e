"""This API process's short memory of which token hash belongs to whom (or to no one).

Kept for TOKEN_CACHE_S so that a busy client costs one database lookup per few seconds, not one
per request; a revocation made through this process clears it at once, one made elsewhere is
seen here within TOKEN_CACHE_S.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from orchestrator.domain.access import Principal

TOKEN_CACHE_S = 5.0
MAX_ENTRIES = 10_000


@dataclass
class _Entry:
    principal: Principal | None
    until: float


_entries: dict[str, _Entry] = {}


def lookup(token_hash: str) -> tuple[bool, Principal | None]:
    """(known, principal): known is False when the hash must be looked up again."""
    entry = _entries.get(token_hash)
    if entry is None or entry.until <= time.monotonic():
        return False, None
    return True, entry.principal


def remember(token_hash: str, principal: Principal | None) -> None:
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[token_hash] = _Entry(principal, time.monotonic() + TOKEN_CACHE_S)


def forget_all() -> None:
    _entries.clear()
