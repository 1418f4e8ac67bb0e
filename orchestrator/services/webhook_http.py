"""One webhook POST over http.client: a connect timeout, a deadline for the whole exchange,
no redirects followed, no proxies, and the outcome as a status or a short error word."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class PostOutcome:
    status: int | None  # None: no HTTP answer at all
    error: str | None  # short: "timeout", "connection refused", "HTTP 500"
    duration_ms: int
    # The receiver's Retry-After in seconds (the delta form only), when it sent one.
    retry_after_s: float | None = None


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connect_timeout_s: float,
    total_timeout_s: float,
) -> PostOutcome:
    """POST `body` to `url`; never raises for network trouble (that is an outcome)."""
    started = time.monotonic()
    deadline = started + total_timeout_s

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = _connection(parts.scheme, parts.hostname or "", parts.port, connect_timeout_s)
    try:
        connection.connect()
        # After connecting, every socket wait gets what is left of the whole deadline.
        _limit(connection, deadline)
        connection.request("POST", target, body=body, headers=dict(headers))
        _limit(connection, deadline)
        response = connection.getresponse()
        status = response.status
        retry_after = _seconds(response.getheader("Retry-After"))
    except TimeoutError:
        return PostOutcome(None, "timeout", elapsed_ms())
    except OSError as exc:
        return PostOutcome(None, _network_error(exc), elapsed_ms())
    except http.client.HTTPException:
        return PostOutcome(None, "invalid HTTP response", elapsed_ms())
    finally:
        connection.close()
    error = None if 200 <= status < 300 else f"HTTP {status}"
    return PostOutcome(status, error, elapsed_ms(), retry_after)


def _seconds(value: str | None) -> float | None:
    # An HTTP-date is rare from webhook receivers; only the delta-seconds form is read.
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _connection(
    scheme: str, host: str, port: int | None, timeout_s: float
) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(
            host, port, timeout=timeout_s, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(host, port, timeout=timeout_s)


def _limit(connection: http.client.HTTPConnection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if connection.sock is not None:
        connection.sock.settimeout(left)


def _network_error(exc: OSError) -> str:
    # Words, not the exception text: it could name internal addresses; and the row stays short.
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "name not resolved"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "TLS error"
    return "connection error"
