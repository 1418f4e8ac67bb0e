"""How every long-running process logs: one JSON object per line (or plain text for people),
the batch, server and job ids of what is being handled, and no secret ever.

Ids come from `extra=` on the call or from `log_context(...)`, which services and tasks hold
while they handle one batch or server. A filter on the handler replaces every configured
secret value and every Authorization / X-Auth-Token header value with `[redacted]`, in the
message, its arguments and a formatted traceback alike.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import SecretStr

from orchestrator.config import Settings

REDACTED = "[redacted]"
CONTEXT_FIELDS = ("batch_id", "server_id", "job_id")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"reimage_log_{name}", default=None) for name in CONTEXT_FIELDS
}
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Header values up to the end of the line or of a quoted string.
_HEADERS = re.compile(
    r"(?i)\b(authorization|x-auth-token)(\s*[:=]\s*|['\"]\s*:\s*['\"])([^'\"\r\n]+)"
)
# Secrets shorter than this are not searched for: they would redact ordinary words.
_MIN_SECRET_LEN = 6


@contextmanager
def log_context(
    *, batch_id: str | None = None, server_id: str | None = None, job_id: str | None = None
) -> Iterator[None]:
    """Ids added to every log line written inside the block (this thread or task only)."""
    given = {"batch_id": batch_id, "server_id": server_id, "job_id": job_id}
    tokens = [(_context[k], _context[k].set(v)) for k, v in given.items() if v is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def secret_values(settings: Settings) -> list[str]:
    """Every SecretStr setting's value (AK/SK, tokens, keys), longest first."""
    values = [
        getattr(settings, name).get_secret_value()
        for name in type(settings).model_fields
        if isinstance(getattr(settings, name), SecretStr)
    ]
    return sorted({v for v in values if len(v) >= _MIN_SECRET_LEN}, key=len, reverse=True)


class RedactSecrets(logging.Filter):
    """Rewrites the record so that no configured secret and no credential header survives."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _HEADERS.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            # Format the traceback now, redacted; formatters reuse exc_text as it is.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                setattr(record, key, self._redact_value(value))
        return True

    def _redact_value(self, value: object) -> object:
        """Strings anywhere inside an `extra=` value (Celery passes dicts of task data)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return value


class JsonFormatter(logging.Formatter):
    """One line: ts, level, logger, msg, process, the ids known, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name) or _context[name].get()
            if value:
                entry[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        exc = record.exc_text or (
            self.formatException(record.exc_info) if record.exc_info else None
        )
        if exc:
            entry["exc"] = exc
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a terminal: time, level, logger, message, then the ids known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := record.__dict__.get(name) or _context[name].get())
        ]
        if not ids:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


def make_handler(
    settings: Settings, *, stream: TextIO | None = None, log_format: str | None = None
) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    chosen = log_format or settings.log_format
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(RedactSecrets(secret_values(settings)))
    return handler


def configure_logging(
    settings: Settings, *, log_format: str | None = None, stream: TextIO | None = None
) -> None:
    """The root logger writes through one handler of ours; earlier handlers are removed."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(settings, stream=stream, log_format=log_format))
    root.setLevel(settings.log_level)
    # Loggers that would otherwise print request lines or run below our level on their own.
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
