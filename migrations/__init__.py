"""Alembic migrations of the reimage database (run with `reimage migrate`)."""
