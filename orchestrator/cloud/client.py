"""A small typed async client for the ECS calls we make: changeos (v1/v2), job, server, list,
flavors; and the signed transport the IMS and EVS clients (`cloud.catalog`) share with it.

Every request is signed (AK/SK) or carries an IAM token, takes a token from the fleet's rate
budget first, and has explicit connect and read timeouts. Failures come out as the typed
errors of `orchestrator.cloud.errors`; a changeos whose answer never arrived is `OutcomeUnknown`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson

from orchestrator import ids
from orchestrator.cloud import signer
from orchestrator.cloud.errors import (
    ConfigError,
    EcsError,
    OutcomeUnknown,
    Retryable,
    classify,
    refused_before_acting,
)
from orchestrator.cloud.models import Flavor, Job, OsChange, Server


@dataclass(frozen=True)
class Credentials:
    """AK/SK (optionally temporary, with a security token) or an IAM token."""

    access_key: str | None = None
    secret_key: str | None = None
    security_token: str | None = None
    auth_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key=***)"

    @property
    def usable(self) -> bool:
        return bool(self.auth_token or (self.access_key and self.secret_key))


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 30.0


class CallObserver(Protocol):
    """Told of every call and its answer (metrics implement it; the client knows no metrics)."""

    def request_answered(self, operation: str, status: str) -> None:
        """`status`: the HTTP status, or "error" when no answer came."""

    def changeos_answered(self, error: EcsError | None) -> None:
        """None: a job id came back."""

    def throttled(self) -> None:
        """The cloud answered 429."""


class RateGate(Protocol):
    # Calls a second, as last seen by this process.
    rate: float

    async def acquire(self, project_id: str, region: str) -> float: ...

    async def acquire_within(self, project_id: str, region: str, deadline_s: float) -> bool: ...

    def penalise(self, project_id: str, region: str) -> None: ...


class SignedApi:
    """One cloud service's API for one project in one region: signing (AK/SK or an IAM
    token), the fleet's rate budget (shared by every service of the project and region),
    timeouts, and the cloud's errors as typed exceptions. ECS, IMS and EVS clients build on it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: str,
        project_id: str,
        region: str,
        credentials: Credentials,
        timeouts: Timeouts | None = None,
        rate_gate: RateGate | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        # The API already refused anything else; checked again because these go into URLs.
        if not ids.PROJECT_ID.fullmatch(project_id) or not ids.REGION.fullmatch(region):
            raise ValueError("project_id or region is not well formed")
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._host = urlsplit(self._endpoint).netloc
        self._project_id = project_id
        self._region = region
        self._credentials = credentials
        timeouts = timeouts or Timeouts()
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
        )
        self._rate_gate = rate_gate
        self._observer = observer

    @property
    def project_id(self) -> str:
        return self._project_id

    @property
    def region(self) -> str:
        return self._region

    async def take_rate_token(self, *, within_s: float) -> bool:
        """Take one token of the fleet's rate budget for a call to come, waiting at most
        `within_s`; False when none could be had in that time (nothing was taken)."""
        if self._rate_gate is None:
            return True
        return await self._rate_gate.acquire_within(self._project_id, self._region, within_s)

    def _headers(
        self, method: str, path: str, query: list[tuple[str, str]], raw: bytes
    ) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json;charset=utf-8" if raw else "application/json",
            "Host": self._host,
            "X-Project-Id": self._project_id,
        }
        creds = self._credentials
        if creds.auth_token:
            headers["X-Auth-Token"] = creds.auth_token
            return headers
        if creds.security_token:
            headers["X-Security-Token"] = creds.security_token
        headers[signer.DATE_HEADER] = signer.sdk_date()
        headers["Authorization"] = signer.authorization_header(
            access_key=creds.access_key or "",
            secret_key=creds.secret_key or "",
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=raw,
        )
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        operation: str,
        token_taken: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        query = query or []
        raw = json.dumps(body).encode() if body is not None else b""
        if self._rate_gate is not None and not token_taken:
            await self._rate_gate.acquire(self._project_id, self._region)
        url = self._endpoint + path + (("?" + urlencode(query, quote_via=quote)) if query else "")
        headers = self._headers(method, path, query, raw)
        try:
            async with self._session.request(
                method, url, data=raw or None, headers=headers, timeout=self._timeout
            ) as response:
                payload = await response.read()
                status = response.status
                response_headers = {k: v for k, v in response.headers.items()}
        except aiohttp.ClientConnectorCertificateError as exc:
            self._answered(operation, "error")
            # Nothing was sent, and trying again meets the same certificate: a configuration
            # fault of ours (or an impostor), for a person to look at, never retried.
            raise ConfigError(
                code="TLS.CertificateUntrusted",
                message=f"{self._host}: {_certificate_problem(exc)}; ORCH_ECS_CA_BUNDLE names "
                "the CA certificates (PEM) the cloud's endpoints are verified against",
            ) from None
        except aiohttp.ClientConnectorSSLError as exc:
            self._answered(operation, "error")
            raise ConfigError(
                code="TLS.HandshakeFailed",
                message=f"{self._host}: TLS handshake failed ({_first_line(exc)})",
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self._answered(operation, "error")
            # Refused or unreachable before a byte was sent: safe to retry any call.
            raise Retryable(code="Connection.Failed", message=type(exc).__name__) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._answered(operation, "error")
            cls = OutcomeUnknown if method == "POST" else Retryable
            raise cls(code="Connection.Lost", message=type(exc).__name__ or "timeout") from None
        self._answered(operation, str(status))
        request_id = response_headers.get("X-Request-Id")
        if 200 <= status < 300:
            return status, _json_or_empty(payload), response_headers
        error: EcsError = classify(
            status, payload, request_id=request_id, retry_after=response_headers.get("Retry-After")
        )
        # The rate's cut signals (issue 17 part 6): a 429, the gateway's throttle codes, and
        # (in _change_os) a 202 Common.0024. A 503 Common.1503 is retried with backoff but not
        # a cut: it also comes when the cloud is briefly unwell, whatever our rate, and a cut a
        # second on such noise would starve the fleet (the rate cannot grow back between them).
        throttled = status == 429 or error.code in ("APIGW.0308", "APIG.0308")
        if throttled and self._rate_gate is not None:
            self._rate_gate.penalise(self._project_id, self._region)
        if status == 429 and self._observer is not None:
            self._observer.throttled()
        raise error

    def _answered(self, operation: str, status: str) -> None:
        if self._observer is not None:
            self._observer.request_answered(operation, status)

    async def _get_pages(
        self,
        path: str,
        *,
        key: str,
        filters: list[tuple[str, str]],
        page_size: int,
        operation: str,
        calls: Counter[str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a `marker`-paged list (`marker` = the last id), until a short page, or
        until the `count` the answer gives is reached (no empty last call). `calls` counts the
        calls made, under `operation`."""
        marker: str | None = None
        seen = 0
        while True:
            query = [*filters, ("limit", str(page_size))]
            if marker:
                query.append(("marker", marker))
            if calls is not None:
                calls[operation] += 1
            _, body, _ = await self._call("GET", path, query=query, operation=operation)
            page = body.get(key) if isinstance(body, dict) else None
            items = [item for item in page if isinstance(item, dict)] if page else []
            for item in items:
                yield item
            seen += len(items)
            count = body.get("count") if isinstance(body, dict) else None
            if len(items) < page_size or (isinstance(count, int) and seen >= count):
                return
            marker = str(items[-1].get("id") or "")
            if not marker:
                return


class EcsClient(SignedApi):
    """The ECS API of one project in one region."""

    async def change_os(
        self, server_id: str, change: OsChange, *, cloud_init: bool, token_taken: bool = False
    ) -> str:
        """Send changeos; answer the cloud's job id. The OS is changed only when the job ends.

        `token_taken`: the caller already holds this call's rate token (`take_rate_token`), so
        the request goes out at once. A server error that does not prove the cloud refused
        before acting (a 5xx system error) is an `OutcomeUnknown`, like a lost answer."""
        version = "v2" if cloud_init else "v1"
        path = f"/{version}/{self._project_id}/cloudservers/{quote(server_id, safe='')}/changeos"
        try:
            try:
                job_id = await self._change_os(path, change, token_taken=token_taken)
            except Retryable as exc:
                if refused_before_acting(exc):
                    raise
                raise OutcomeUnknown(
                    code=exc.code,
                    message=exc.message,
                    http_status=exc.http_status,
                    request_id=exc.request_id,
                    details=exc.details,
                ) from None
        except EcsError as exc:
            if self._observer is not None:
                self._observer.changeos_answered(exc)
            raise
        if self._observer is not None:
            self._observer.changeos_answered(None)
        return job_id

    async def _change_os(self, path: str, change: OsChange, *, token_taken: bool) -> str:
        status, body, headers = await self._call(
            "POST", path, body=change.to_body(), operation="changeos", token_taken=token_taken
        )
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if isinstance(job_id, str) and job_id:
            return job_id
        # A 2xx without a job id is not a success: Common.0024 is flow control answered with
        # 202; anything else we cannot prove was or was not applied.
        error = classify(status, json.dumps(body).encode(), request_id=headers.get("X-Request-Id"))
        if isinstance(error, Retryable):
            if error.code == "Common.0024" and self._rate_gate is not None:
                # Flow control is the cloud throttling us, in a 202's words: the same cut.
                self._rate_gate.penalise(self._project_id, self._region)
            raise error
        raise OutcomeUnknown(
            code=error.code if error.code != f"HTTP.{status}" else "NoJobId",
            message="changeos answered without a job id",
            http_status=status,
            request_id=headers.get("X-Request-Id"),
        )

    async def show_job(self, job_id: str) -> Job:
        path = f"/v1/{self._project_id}/jobs/{quote(job_id, safe='')}"
        _, body, _ = await self._call("GET", path, operation="job")
        return Job.from_body(body if isinstance(body, dict) else {})

    async def show_server(self, server_id: str) -> Server:
        path = f"/v1/{self._project_id}/cloudservers/{quote(server_id, safe='')}"
        _, body, _ = await self._call("GET", path, operation="server")
        server = body.get("server") if isinstance(body, dict) else None
        return Server.from_body(server if isinstance(server, dict) else {})

    async def list_servers(
        self,
        filters: dict[str, str] | None = None,
        *,
        page_size: int = 1000,
        calls: Counter[str] | None = None,
    ) -> AsyncIterator[Server]:
        """Every server matching `filters`, paged with `marker`."""
        async for body in self._get_pages(
            f"/v1/{self._project_id}/cloudservers/detail",
            key="servers",
            filters=sorted((filters or {}).items()),
            page_size=page_size,
            operation="list",
            calls=calls,
        ):
            yield Server.from_body(body)

    async def list_servers_page(
        self, *, marker: str | None, limit: int
    ) -> tuple[list[Server], int]:
        """One page of every server of the project, after `marker`, and how many there are."""
        query = [("limit", str(limit)), *([("marker", marker)] if marker else [])]
        path = f"/v1/{self._project_id}/cloudservers/detail"
        _, body, _ = await self._call("GET", path, query=query, operation="list")
        page = body.get("servers") if isinstance(body, dict) else None
        count = body.get("count") if isinstance(body, dict) else None
        servers = [Server.from_body(s) for s in page or [] if isinstance(s, dict)]
        total = count if isinstance(count, int) and not isinstance(count, bool) else 0
        return servers, total

    async def list_flavors(self) -> list[Flavor]:
        """Every flavor of the region (ListFlavors without an availability zone: one call)."""
        path = f"/v1/{self._project_id}/cloudservers/flavors"
        _, body, _ = await self._call("GET", path, operation="flavors")
        flavors = body.get("flavors") if isinstance(body, dict) else None
        return [Flavor.from_body(f) for f in flavors or [] if isinstance(f, dict)]


def _certificate_problem(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """OpenSSL's reason ("self-signed certificate in certificate chain", "Hostname mismatch,
    certificate is not valid for ...")."""
    error = exc.certificate_error
    reason = getattr(error, "verify_message", None) or _first_line(error)
    return f"the server's certificate is not trusted ({reason})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _json_or_empty(payload: bytes) -> Any:
    # orjson: a list sweep's pages are megabytes, and the standard parser was most of its cost.
    try:
        return orjson.loads(payload) if payload else {}
    except ValueError:  # orjson.JSONDecodeError is one
        return {}
