"""A small synchronous client of reimage's own HTTP API, for the CLI."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class ApiUnreachable(Exception):
    """The API did not answer (refused, timed out, DNS): exit code 3."""


@dataclass
class ApiError(Exception):
    """The API answered with an error body."""

    status: int
    code: str
    message: str
    fields: dict[str, str]
    # Reason codes and how many servers have each (a pre-flight refusal, 422).
    codes: dict[str, int] = dataclasses.field(default_factory=dict)
    # Servers already in another active batch (a 409): server_id, batch_id, state of each.
    conflicts: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def one_line(self) -> str:
        problems = [f"{name}: {reason}" for name, reason in list(self.fields.items())[:5]]
        problems += [f"{code} x{count}" for code, count in list(self.codes.items())[:8]]
        detail = "; ".join(problems)
        return f"{self.message} ({self.code}, HTTP {self.status})" + (
            f": {detail}" if detail else ""
        )


@dataclass(frozen=True)
class ApiClient:
    base_url: str
    token: str
    timeout_s: float = 30.0

    def request(
        self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        url = self.base_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"the API at {self.base_url} is unreachable: {reason}") from None

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any = None, **query: str) -> Any:
        return self.request(
            "POST", path, body=body if body is not None else {}, query=query or None
        )

    def pages(self, path: str, **query: str) -> list[dict[str, Any]]:
        """Every item of a cursor-paged listing."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.get(path, **query, **({"cursor": cursor} if cursor else {}))
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        error = json.loads(exc.read()).get("error", {})
    except (ValueError, AttributeError):
        error = {}
    return ApiError(
        status=exc.code,
        code=str(error.get("code") or f"http_{exc.code}"),
        message=str(error.get("message") or exc.reason),
        fields={str(k): str(v) for k, v in (error.get("fields") or {}).items()},
        codes={str(k): int(v) for k, v in (error.get("codes") or {}).items()},
        conflicts=[
            {str(k): str(v) for k, v in item.items()}
            for item in (error.get("conflicts") or [])
            if isinstance(item, dict)
        ],
    )
