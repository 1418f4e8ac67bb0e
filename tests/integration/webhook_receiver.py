"""A real HTTP server in a thread that records webhook requests; it can be told to answer
the first N requests with an error status, or to answer every request slowly."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    def signed_by(self, secret: str) -> bool:
        """Our own check of the signature: HMAC-SHA256(secret, "<timestamp>.<body>")."""
        timestamp = self.headers.get("X-Reimage-Timestamp", "")
        expected = hmac.new(
            secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(
            self.headers.get("X-Reimage-Signature", ""), f"sha256={expected}"
        )


@dataclass
class Receiver:
    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None  # sent with the failing answers when set
    status: int = 200
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    n = len(receiver.requests)
                time.sleep(receiver.delay_s)
                status = receiver.fail_status if n <= receiver.fail_first else receiver.status
                self.send_response(status)
                if receiver.retry_after is not None and n <= receiver.fail_first:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str = "/hook") -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
