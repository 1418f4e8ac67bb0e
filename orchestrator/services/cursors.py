"""Opaque page cursors: what a list answered as `next_cursor`, and its reading back (a cursor
this API did not give out is a 400, never a 500)."""

from __future__ import annotations

import base64

from orchestrator.errors import ServiceError


class BadCursor(ServiceError):
    code = "invalid_cursor"


def encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API gave out") from None


def decode_int(cursor: str) -> int:
    text = decode(cursor)
    if not text.isdigit():
        raise BadCursor("cursor is not one this API gave out")
    return int(text)
