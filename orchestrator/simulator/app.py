"""The simulator's HTTP face: the ECS, IMS and EVS routes served at the root (one host for all
three services), the API gateway's checks in front of them (signature or token, clock skew,
throttling: one bucket for every route), an X-Request-Id on every answer, the delivery faults
only HTTP can show (a late answer, a dropped connection) and the `/_sim/` control endpoints
(stats, the changeos and image call logs, reset, servers, images, faults, and the per-server
health a health gate probes: `GET /_sim/health/{server_id}`, 200 or 503).

A network latency (`latency_s`) delays every answer of the cloud's routes (authentication,
throttling and errors included) by that long, as a round trip to a distant region would; the
`/_sim/` control routes (the health probes among them) answer at once. `/_sim/stats` also
counts the connections that carried a request (`connections`: over HTTPS, each one a full TLS
handshake), so a test can prove a client reuses its connections.

Handlers only translate HTTP to `Cloud` calls and back; every rule and every decision of which
call meets which fault lives in the model.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from orchestrator.cloud import signer
from orchestrator.simulator.cloud import (
    Answer,
    ApiError,
    Cloud,
    Reply,
    SimulatorConfig,
    gateway_error,
)
from orchestrator.simulator.images import parse_images
from orchestrator.simulator.inventory import parse_inventory

REQUEST_ID_HEADER = "X-Request-Id"
MAX_CLOCK_SKEW_S = 15 * 60
# Control endpoints for tests and benchmarks: no authentication, no throttling.
CONTROL_PREFIX = "/_sim/"
CHANGEOS_ROUTES = frozenset({"changeos-v1", "changeos-v2"})
CREATE_IMAGE_ROUTE = "create-image"
DELETE_IMAGE_ROUTE = "delete-image"
PROJECT_HEADER = "X-Project-Id"
# nginx's "closed without a response": only the access log ever sees it.
DROPPED_STATUS = 444


@dataclass
class ConnectionCount:
    """Connections (TCP, or TLS over TCP) that carried at least one request, cloud or control."""

    count: int = 0
    _seen: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    def saw(self, transport: object | None) -> None:
        if transport is not None and transport not in self._seen:
            self._seen.add(transport)
            self.count += 1


@dataclass(frozen=True)
class Simulator:
    """What the handlers share: the model, the clock its `now` comes from, the network latency
    added before every cloud answer, and the connections seen."""

    cloud: Cloud
    clock: Callable[[], float]
    latency_s: float = 0.0
    connections: ConnectionCount = field(default_factory=ConnectionCount)
    # How the latency is waited (tests record it instead of waiting).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


SIMULATOR = web.AppKey("simulator", Simulator)
REQUEST_ID = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_simulator_app(
    config: SimulatorConfig,
    clock: Callable[[], float] = time.monotonic,
    *,
    latency_s: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> web.Application:
    """The simulator as an aiohttp application; `clock` gives monotonic seconds; `latency_s`
    (real time, waited with `sleep`) is added before every answer but those of the `/_sim/`
    control routes."""
    if not latency_s >= 0:
        raise ValueError("latency_s must be >= 0")
    app = web.Application(middlewares=[_gateway])
    started = clock()
    cloud = Cloud(config, wall_offset=time.time() - started, now=started)
    app[SIMULATOR] = Simulator(cloud, clock, latency_s, sleep=sleep)
    app.on_response_prepare.append(_stamp_request_id)
    app.add_routes(
        [
            web.post(
                "/v1/{project_id}/cloudservers/{server_id}/changeos",
                change_os_v1,
                name="changeos-v1",
            ),
            web.post(
                "/v2/{project_id}/cloudservers/{server_id}/changeos",
                change_os_v2,
                name="changeos-v2",
            ),
            web.get("/v1/{project_id}/jobs/{job_id}", show_job),
            # Before the {server_id} route, which would otherwise take these as ids.
            web.get("/v1/{project_id}/cloudservers/detail", list_servers),
            web.get("/v1/{project_id}/cloudservers/flavors", list_flavors),
            web.get("/v1/{project_id}/cloudservers/os-server-groups", list_server_groups),
            web.get("/v1/{project_id}/cloudservers/{server_id}", show_server),
            web.get(
                "/v1/{project_id}/cloudservers/os-server-groups/{server_group_id}",
                show_server_group,
            ),
            web.get("/v2/cloudimages", list_images),
            web.post("/v2/cloudimages/action", create_image, name=CREATE_IMAGE_ROUTE),
            web.get("/v1/cloudimages/quota", image_quota),
            web.get("/v1/{project_id}/cloudimages/quota", image_quota),
            web.delete("/v2/images/{image_id}", delete_image, name=DELETE_IMAGE_ROUTE),
            # Before the {volume_id} route, likewise.
            web.get("/v2/{project_id}/cloudvolumes/detail", list_volumes),
            web.get("/v2/{project_id}/cloudvolumes/{volume_id}", show_volume),
            web.get("/_sim/stats", sim_stats),
            web.get("/_sim/changeos", sim_changeos),
            web.get("/_sim/images/log", sim_image_log),
            web.get("/_sim/health/{server_id}", sim_health),
            web.post("/_sim/reset", sim_reset),
            web.post("/_sim/servers", sim_servers),
            web.post("/_sim/images", sim_images),
            web.get("/_sim/faults", sim_faults),
            web.post("/_sim/faults", sim_set_faults),
        ]
    )
    return app


# --- the gateway ---------------------------------------------------------------------------


@web.middleware
async def _gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Route check, then authentication, then the throttling bucket, as the API gateway does."""
    request[REQUEST_ID] = uuid.uuid4().hex
    simulator = request.app[SIMULATOR]
    simulator.connections.saw(request.transport)
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    if simulator.latency_s > 0:
        # Real time, like a slow answer: the network's share of every round trip.
        await simulator.sleep(simulator.latency_s)
    error = _unknown_api(request) or await _authenticate(request, simulator.cloud.config)
    if error is not None:
        simulator.cloud.record_error(error.code)
    else:
        error = simulator.cloud.admit(simulator.clock())
    if error is not None:
        await _log_turned_away(request, simulator, error)
        return _error_response(request, error)
    return await handler(request)


async def _log_turned_away(request: web.Request, simulator: Simulator, error: ApiError) -> None:
    """A call turned away here still reached the simulator: the client did send it, and the
    logs of changeos and image calls show it."""
    route, now = request.match_info.route.name, simulator.clock()
    if route in CHANGEOS_ROUTES:
        simulator.cloud.changeos_turned_away(
            request.match_info["server_id"],
            error.code,
            now=now,
            project_id=request.match_info["project_id"],
            body=await request.read(),
        )
    elif route == CREATE_IMAGE_ROUTE:
        simulator.cloud.create_image_turned_away(await request.read(), error.code, now=now)
    elif route == DELETE_IMAGE_ROUTE:
        simulator.cloud.delete_image_turned_away(
            request.match_info["image_id"], error.code, now=now
        )


def _unknown_api(request: web.Request) -> ApiError | None:
    unrouted = request.match_info.http_exception
    if unrouted is None:
        return None
    return gateway_error(
        unrouted.status,
        "APIGW.0101",
        "The API does not exist or has not been published in the environment.",
    )


async def _authenticate(request: web.Request, config: SimulatorConfig) -> ApiError | None:
    authorization = request.headers.get("Authorization")
    if authorization is None:
        return _check_token(request.headers.get("X-Auth-Token"), config.auth_token)
    reason = signer.verify(
        authorization=authorization,
        secret_key_for={config.ak: config.sk},
        method=request.method,
        raw_path=request.raw_path,
        # The raw form: a decoded query is ambiguous once a value holds an encoded '&' or '='.
        raw_query=request.rel_url.raw_query_string,
        headers=request.headers,
        body=await request.read(),
    )
    if reason is not None:
        return _unauthorized("APIGW.0301", f"Incorrect IAM authentication information: {reason}")
    return _check_clock_skew(request.headers[signer.DATE_HEADER])  # verify() ensured it is there


def _check_token(token: str | None, expected: str | None) -> ApiError | None:
    if token is None:
        return _unauthorized(
            "APIGW.0301",
            "Incorrect IAM authentication information: no Authorization or X-Auth-Token header",
        )
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return None
    return _unauthorized("Common.0013", "Incorrect IAM authentication information: invalid token")


def _check_clock_skew(sdk_date: str) -> ApiError | None:
    try:
        signed_at = datetime.strptime(sdk_date, signer.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return _unauthorized(
            "APIGW.0301",
            f"Incorrect IAM authentication information: X-Sdk-Date is not {signer.DATE_FORMAT}",
        )
    if abs(time.time() - signed_at.timestamp()) <= MAX_CLOCK_SKEW_S:
        return None
    return _unauthorized(
        "APIGW.0303",
        "Incorrect IAM authentication information: the request has expired "
        "(X-Sdk-Date is more than 15 minutes away from the server time)",
    )


def _unauthorized(code: str, message: str) -> ApiError:
    return gateway_error(401, code, message)


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # A signal rather than the middleware, so aiohttp's own error pages carry one too.
    if REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = request.get(REQUEST_ID) or uuid.uuid4().hex


# --- the ECS API ---------------------------------------------------------------------------


async def change_os_v1(request: web.Request) -> web.Response:
    return await _change_os(request, cloud_init=False)


async def change_os_v2(request: web.Request) -> web.Response:
    return await _change_os(request, cloud_init=True)


async def _change_os(request: web.Request, *, cloud_init: bool) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_change_os(
        request.match_info["project_id"],
        request.match_info["server_id"],
        await request.read(),
        cloud_init=cloud_init,
        now=simulator.clock(),
    )
    return await _deliver(request, answer)


async def show_job(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_show_job(
        request.match_info["project_id"], request.match_info["job_id"], now=simulator.clock()
    )
    return await _deliver(request, answer)


async def show_server(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_show_server(
        request.match_info["project_id"], request.match_info["server_id"], now=simulator.clock()
    )
    return await _deliver(request, answer)


async def list_servers(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_list_servers(
        request.match_info["project_id"], request.query, now=simulator.clock()
    )
    return await _deliver(request, answer)


async def list_flavors(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_list_flavors(
        request.match_info["project_id"], request.query, now=simulator.clock()
    )
    return await _deliver(request, answer)


async def list_server_groups(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_list_server_groups(
        request.match_info["project_id"], request.query, now=simulator.clock()
    )
    return await _deliver(request, answer)


async def show_server_group(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_show_server_group(
        request.match_info["project_id"],
        request.match_info["server_group_id"],
        now=simulator.clock(),
    )
    return await _deliver(request, answer)


# --- IMS and EVS ---------------------------------------------------------------------------


async def list_images(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_list_images(
        request.headers.get(PROJECT_HEADER), request.query, now=simulator.clock()
    )
    return await _deliver(request, answer)


async def create_image(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_create_image(
        request.headers.get(PROJECT_HEADER), await request.read(), now=simulator.clock()
    )
    return await _deliver(request, answer)


async def image_quota(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    in_url = request.match_info.get("project_id")
    if in_url is not None:
        answer = simulator.cloud.answer_image_quota(in_url, now=simulator.clock(), where="the URL")
    else:
        answer = simulator.cloud.answer_image_quota(
            request.headers.get(PROJECT_HEADER), now=simulator.clock()
        )
    return await _deliver(request, answer)


async def delete_image(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_delete_image(
        request.headers.get(PROJECT_HEADER),
        request.match_info["image_id"],
        await request.read(),
        now=simulator.clock(),
    )
    return await _deliver(request, answer, no_content=True)


async def show_volume(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    answer = simulator.cloud.answer_show_volume(
        request.match_info["project_id"], request.match_info["volume_id"], now=simulator.clock()
    )
    return await _deliver(request, answer)


async def list_volumes(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    # The multidict itself: its items() keep every value of a repeated `ids`.
    answer = simulator.cloud.answer_list_volumes(
        request.match_info["project_id"], request.query, now=simulator.clock()
    )
    return await _deliver(request, answer)


async def _deliver(
    request: web.Request, answer: Answer, *, no_content: bool = False
) -> web.Response:
    """Send the reply, late when the model said so, or close the connection instead;
    `no_content`: a success is a 204 with no body."""
    if answer.delay_s > 0:
        # Real time, not the injected clock: the point is to outlast a client's timeout.
        await asyncio.sleep(answer.delay_s)
    if answer.drop:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=DROPPED_STATUS)
    if no_content and not isinstance(answer.reply, ApiError):
        return web.Response(status=204)
    return _reply(request, answer.reply)


# --- control -------------------------------------------------------------------------------


async def sim_stats(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    stats = simulator.cloud.stats(simulator.clock())
    return web.json_response({**stats, "connections": simulator.connections.count})


async def sim_changeos(request: web.Request) -> web.Response:
    """Every changeos received (`?since=<Unix time>`: from then on) with its time and answer."""
    simulator = request.app[SIMULATOR]
    since = _since(request)
    if since is None:
        return _control_error("since must be a Unix time in seconds")
    return web.json_response({"calls": simulator.cloud.changeos_calls(since)})


def _since(request: web.Request) -> float | None:
    """The `since` query parameter (default 0); None when it is not a number."""
    try:
        return float(request.query.get("since") or 0)
    except ValueError:
        return None


async def sim_image_log(request: web.Request) -> web.Response:
    """Every CreateImage and image delete received (`?since=<Unix time>`), with its time,
    server, image, answer and, for an image created, when it became active."""
    simulator = request.app[SIMULATOR]
    since = _since(request)
    if since is None:
        return _control_error("since must be a Unix time in seconds")
    return web.json_response({"calls": simulator.cloud.image_calls(since, now=simulator.clock())})


async def sim_health(request: web.Request) -> web.Response:
    """The server's health: 200 `{"healthy": true, ...}` or 503 `{"healthy": false, "why"}`."""
    simulator = request.app[SIMULATOR]
    body = simulator.cloud.probe_health(request.match_info["server_id"], now=simulator.clock())
    return web.json_response(body, status=200 if body["healthy"] else 503)


async def sim_reset(request: web.Request) -> web.Response:
    """Back to the start state: initial config (faults included), inventory, no job."""
    simulator = request.app[SIMULATOR]
    simulator.cloud.reset(now=simulator.clock())
    return web.json_response({"reset": True})


async def sim_servers(request: web.Request) -> web.Response:
    """Add or replace servers: `{"servers": [entry, ...]}` (see `inventory`) -> their ids."""
    simulator = request.app[SIMULATOR]
    try:
        specs = parse_inventory(await request.json())
    except ValueError as error:  # also malformed JSON
        return _control_error(str(error))
    ids = simulator.cloud.put_servers(specs, now=simulator.clock())
    return web.json_response({"servers": ids})


async def sim_images(request: web.Request) -> web.Response:
    """Add or replace images: `{"images": [entry, ...]}` (see `images`) -> their ids."""
    simulator = request.app[SIMULATOR]
    try:
        specs = parse_images(await request.json())
    except ValueError as error:  # also malformed JSON
        return _control_error(str(error))
    ids = simulator.cloud.put_images(specs, now=simulator.clock())
    return web.json_response({"images": ids})


async def sim_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].cloud.faults())


async def sim_set_faults(request: web.Request) -> web.Response:
    """Change any subset of the fault settings at run time; answer all of them."""
    try:
        settings = request.app[SIMULATOR].cloud.set_faults(await request.json())
    except ValueError as error:
        return _control_error(str(error))
    return web.json_response(settings)


def _control_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _reply(request: web.Request, reply: Reply) -> web.Response:
    if isinstance(reply, ApiError):
        return _error_response(request, reply)
    return web.json_response(reply)


def _error_response(request: web.Request, error: ApiError) -> web.Response:
    response = web.json_response(error.body(request[REQUEST_ID]), status=error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = f"{error.retry_after:g}"
    return response
