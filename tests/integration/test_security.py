"""Who may do what: the authorization matrix over every route x role x own/other project, token
lifecycle, the audit log, and hostile input, on the real app with real databases and Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text

from orchestrator.api.app import create_app
from orchestrator.api.route_spec import RouteSpec
from orchestrator.api.routes import ROUTES
from orchestrator.config import Settings, load_settings
from orchestrator.domain.access import Role
from orchestrator.runtime import Runtime
from orchestrator.services import tokens as tokens_service
from tests.integration.conftest import CloudMaker

BOOTSTRAP = "bootstrap-token-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}
OWN = "0605767bd8b5d3f92f0ac0123456789a"
OTHER = "ffff767bd8b5d3f92f0ac0123456789b"

ClientMaker = Callable[..., Any]


def batch_body(project: str, n: int = 3, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "project_id": project,
        # Each project is simulated in its own region (see `settings`).
        "region": "cn-east-3" if project == OTHER else "cn-north-4",
        "servers": [str(uuid.uuid4()) for _ in range(n)],
        "os_change": {
            "imageid": "e215580f-73ad-429d-b6f2-5433947433b0",
            "keyname": "KeyPair-350b",
            "mode": "withStopServer",
        },
    }
    payload.update(overrides)
    return payload


FAILURE_LIMIT = 20


@pytest.fixture
async def clouds(make_cloud: CloudMaker) -> dict[str, Any]:
    return await make_cloud({"cn-north-4": OWN, "cn-east-3": OTHER})


@pytest.fixture(params=[10_000])
def settings(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, clouds: dict[str, Any]
) -> Settings:
    return load_settings(
        **clouds,
        database_url=database_url,
        redis_url=redis_url,
        api_token=BOOTSTRAP,
        secret_key="test-secret-key",
        max_body_bytes=64 * 1024,
        max_servers_per_batch=500,
        notify_allowed_hosts=["hooks.example.com", "*.ops.example.net"],
        # The matrix presents hundreds of bad tokens on purpose; the lockout has its own test.
        auth_failure_limit=request.param,
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(settings, with_rate_limit=False)
    yield rt
    rt.dispose()


@pytest.fixture
async def client(
    aiohttp_client: ClientMaker, settings: Settings, runtime: Runtime
) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(create_app(settings, runtime))
    return result


def make_token(runtime: Runtime, role: Role, projects: list[str] | None, name: str = "") -> str:
    created = tokens_service.create_token(
        runtime.sessions,
        name=name or f"{role.value}-{uuid.uuid4().hex[:8]}",
        role=role.value,
        projects=projects,
        created_by="test",
        now=runtime.clock(),
    )
    return created.token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_batch(client: TestClient[Any, Any], project: str) -> str:
    response = await client.post("/api/v1/batches", json=batch_body(project), headers=ADMIN_AUTH)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


# ---------------------------------------------------------------- the authorization matrix


@dataclass(frozen=True)
class Cell:
    route: RouteSpec
    role: Role
    project: str  # the project the request is about: OWN (in the token's scope) or OTHER

    @property
    def id(self) -> str:
        where = "own" if self.project == OWN else "other"
        return f"{self.route.method} {self.route.path} as {self.role.value} on {where}"


# The routes that need a token; the public ones (health, metrics, the API document) are
# checked to answer without one in test_public_routes_need_no_token.
API_ROUTES = [r for r in ROUTES if r.role is not None]
CELLS = [
    Cell(route, role, project)
    for route in API_ROUTES
    for role in Role
    for project in ((OWN, OTHER) if route.scope != "none" else (OWN,))
]

# What a permitted request answers, per route (the batch is fresh and pending).
PERMITTED: dict[tuple[str, str], set[int]] = {
    ("POST", "/api/v1/batches"): {202},
    ("GET", "/api/v1/batches"): {200},
    ("GET", "/api/v1/batches/{batch_id}"): {200},
    ("GET", "/api/v1/batches/{batch_id}/servers"): {200},
    ("GET", "/api/v1/batches/{batch_id}/servers.csv"): {200},
    ("GET", "/api/v1/batches/{batch_id}/webhooks"): {200},
    ("POST", "/api/v1/batches/{batch_id}/pause"): {200},
    ("POST", "/api/v1/batches/{batch_id}/resume"): {200},
    ("POST", "/api/v1/batches/{batch_id}/cancel"): {200},
    # A fresh batch has no failed server to retry: the request is understood and refused.
    ("POST", "/api/v1/batches/{batch_id}/retry"): {400},
    # Nor a server that was sent a change, so none with an image to go back to.
    ("POST", "/api/v1/batches/{batch_id}/rollback"): {400},
    # Nor a gate waiting for approval.
    ("POST", "/api/v1/batches/{batch_id}/approve"): {409},
    ("POST", "/api/v1/batches/{batch_id}/reject"): {409},
    ("GET", "/api/v1/servers/{server_id}/history"): {200},
    ("GET", "/api/v1/whoami"): {200},
    ("GET", "/api/v1/tokens"): {200},
    ("POST", "/api/v1/tokens"): {201},
    ("DELETE", "/api/v1/tokens/{token}"): {200},
    ("GET", "/api/v1/audit"): {200},
}


def expected_statuses(cell: Cell) -> set[int]:
    route = cell.route
    assert route.role is not None
    if not cell.role.allows(route.role):
        return {403}
    if cell.project == OTHER and route.scope == "batch":
        return {404}  # exactly as for a batch that does not exist: no existence leak
    if cell.project == OTHER and route.scope == "create":
        return {403}
    return PERMITTED[(route.method, route.path)]


def test_the_matrix_covers_every_api_route() -> None:
    assert {(r.method, r.path) for r in API_ROUTES} == set(PERMITTED)
    public = {r.path for r in ROUTES if r.role is None}
    assert public == {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/docs"}


async def test_public_routes_need_no_token(client: TestClient[Any, Any]) -> None:
    for route in ROUTES:
        if route.role is None:
            response = await client.get(route.path)
            assert response.status == 200, route.path


async def _request_for(
    client: TestClient[Any, Any], runtime: Runtime, cell: Cell
) -> tuple[str, str, dict[str, Any] | None]:
    route, path, body = cell.route, cell.route.path, None
    if "{batch_id}" in path:
        batch_id = await new_batch(client, cell.project)
        if path.endswith("/resume"):
            r = await client.post(f"/api/v1/batches/{batch_id}/pause", headers=ADMIN_AUTH)
            assert r.status == 200
        path = path.replace("{batch_id}", batch_id)
    if "{server_id}" in path:
        batch_id = await new_batch(client, cell.project)
        r = await client.get(f"/api/v1/batches/{batch_id}/servers", headers=ADMIN_AUTH)
        server = (await r.json())["items"][0]["server_id"]
        path = path.replace("{server_id}", server)
    if "{token}" in path:
        path = path.replace("{token}", f"victim-{uuid.uuid4().hex[:8]}")
        make_token(runtime, Role.VIEWER, None, name=path.rsplit("/", 1)[1])
    if route.method == "POST" and route.path == "/api/v1/batches":
        body = batch_body(cell.project)
    elif route.path == "/api/v1/tokens" and route.method == "POST":
        body = {"name": f"new-{uuid.uuid4().hex[:8]}", "role": "viewer"}
    elif route.path.endswith(("/retry", "/rollback")):
        body = {"states": ["failed"]}
    return route.method, path, body


async def test_authorization_matrix(client: TestClient[Any, Any], runtime: Runtime) -> None:
    """Every route x role x own/other project. Tokens are scoped to OWN; a failure lists every
    cell that answered wrongly, not only the first."""
    tokens = {role: make_token(runtime, role, [OWN]) for role in Role}
    wrong: list[str] = []
    for cell in CELLS:
        method, path, body = await _request_for(client, runtime, cell)
        response = await client.request(method, path, json=body, headers=auth(tokens[cell.role]))
        expected = expected_statuses(cell)
        if response.status not in expected:
            wrong.append(f"{cell.id}: {response.status} (expected {sorted(expected)})")
        # No token at all, or a bad one: 401 everywhere, before anything else is looked at.
        if cell.role is Role.VIEWER:
            for headers in ({}, auth("rmg_" + "x" * 43)):
                anonymous = await client.request(method, path, json=body, headers=headers)
                if anonymous.status != 401:
                    wrong.append(f"{cell.id} without a valid token: {anonymous.status}")
    assert not wrong, "\n".join(wrong)


async def test_scoped_lists_show_only_their_projects(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    own_batch = await new_batch(client, OWN)
    other_batch = await new_batch(client, OTHER)
    viewer = auth(make_token(runtime, Role.VIEWER, [OWN]))
    listed = await (await client.get("/api/v1/batches", headers=viewer)).json()
    assert [b["id"] for b in listed["items"]] == [own_batch]
    everything = await (await client.get("/api/v1/batches", headers=ADMIN_AUTH)).json()
    assert {b["id"] for b in everything["items"]} == {own_batch, other_batch}

    # Server history: the rows of another project's batches are not shown to a scoped token.
    histories = {}
    for batch_id in (own_batch, other_batch):
        servers = await client.get(f"/api/v1/batches/{batch_id}/servers", headers=ADMIN_AUTH)
        server = (await servers.json())["items"][0]["server_id"]
        mine = await client.get(f"/api/v1/servers/{server}/history", headers=viewer)
        everyone = await client.get(f"/api/v1/servers/{server}/history", headers=ADMIN_AUTH)
        histories[batch_id] = (
            [row["batch_id"] for row in (await mine.json())["items"]],
            [row["batch_id"] for row in (await everyone.json())["items"]],
        )
    assert histories[own_batch] == ([own_batch], [own_batch])
    assert histories[other_batch] == ([], [other_batch])


# ---------------------------------------------------------------- tokens


async def test_token_lifecycle_shown_once_hashed_used_revoked(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    r = await client.post(
        "/api/v1/tokens",
        json={"name": "ci-deployer", "role": "operator", "projects": [OWN]},
        headers=ADMIN_AUTH,
    )
    assert r.status == 201
    created = await r.json()
    token = created["token"]
    assert token.startswith("rmg_") and len(token) > 40
    assert created["token_prefix"] == token[:12]

    # Stored only as a hash: the token is nowhere in the database.
    with runtime.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_tokens")).all()
    assert token not in json.dumps([list(map(str, row)) for row in rows])

    listed = await (await client.get("/api/v1/tokens", headers=ADMIN_AUTH)).json()
    entry = next(t for t in listed["items"] if t["name"] == "ci-deployer")
    assert "token" not in entry and entry["last_used_at"] is None
    assert token not in json.dumps(listed)

    assert (await client.get("/api/v1/batches", headers=auth(token))).status == 200
    listed = await (await client.get("/api/v1/tokens", headers=ADMIN_AUTH)).json()
    entry = next(t for t in listed["items"] if t["name"] == "ci-deployer")
    assert entry["last_used_at"] is not None

    duplicate = await client.post(
        "/api/v1/tokens", json={"name": "ci-deployer", "role": "viewer"}, headers=ADMIN_AUTH
    )
    assert duplicate.status == 409
    bad = await client.post(
        "/api/v1/tokens",
        json={"name": "x y", "role": "root", "projects": ["a/b"], "admin": True},
        headers=ADMIN_AUTH,
    )
    assert bad.status == 400
    assert set((await bad.json())["error"]["fields"]) == {"admin"}
    bad = await client.post(
        "/api/v1/tokens",
        json={"name": "x y", "role": "root", "projects": ["a/b"]},
        headers=ADMIN_AUTH,
    )
    assert set((await bad.json())["error"]["fields"]) == {"name", "role", "projects"}

    revoked = await client.delete("/api/v1/tokens/ci-deployer", headers=ADMIN_AUTH)
    assert revoked.status == 200 and (await revoked.json())["revoked_at"]
    assert (await client.get("/api/v1/batches", headers=auth(token))).status == 401
    missing = await client.delete("/api/v1/tokens/nobody", headers=ADMIN_AUTH)
    assert missing.status == 404


# ---------------------------------------------------------------- audit


async def test_audit_log_records_every_mutating_request(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    operator = make_token(runtime, Role.OPERATOR, [OWN], name="ops-alice")
    viewer = make_token(runtime, Role.VIEWER, None, name="viewer-bob")
    r = await client.post("/api/v1/batches", json=batch_body(OWN), headers=auth(operator))
    batch_id = (await r.json())["id"]
    await client.post(
        f"/api/v1/batches/{batch_id}/pause", json={"reason": "look"}, headers=auth(operator)
    )
    await client.post(f"/api/v1/batches/{batch_id}/cancel", headers=auth(viewer))  # 403
    await client.post("/api/v1/batches", json=batch_body(OTHER), headers=auth(operator))  # 403
    await client.post(f"/api/v1/batches/{batch_id}/resume", headers={})  # 401
    await client.get("/api/v1/batches", headers=auth(operator))  # a read: not audited

    page = await (await client.get("/api/v1/audit", headers=ADMIN_AUTH)).json()
    rows = [(e["actor"], e["action"], e["status"], e["outcome"]) for e in page["items"]]
    assert rows == [
        ("anonymous", "batch.resume", 401, "denied"),
        ("ops-alice", "batch.create", 403, "denied"),
        ("viewer-bob", "batch.cancel", 403, "denied"),
        ("ops-alice", "batch.pause", 200, "ok"),
        ("ops-alice", "batch.create", 202, "ok"),
    ]
    created = page["items"][-1]
    assert created["batch_id"] == batch_id and created["project_id"] == OWN
    assert created["remote_addr"] == "127.0.0.1" and created["role"] == "operator"
    assert page["items"][1]["project_id"] == OTHER  # the refused submit says for which project

    # Filters, and the history row names the token that paused.
    by_actor = await (
        await client.get("/api/v1/audit?actor=ops-alice&outcome=ok", headers=ADMIN_AUTH)
    ).json()
    assert [e["action"] for e in by_actor["items"]] == ["batch.pause", "batch.create"]
    by_batch = await (
        await client.get(f"/api/v1/audit?batch_id={batch_id}&limit=1", headers=ADMIN_AUTH)
    ).json()
    assert len(by_batch["items"]) == 1 and by_batch["next_cursor"]
    more = await (
        await client.get(
            f"/api/v1/audit?batch_id={batch_id}&limit=10&cursor={by_batch['next_cursor']}",
            headers=ADMIN_AUTH,
        )
    ).json()
    assert len(more["items"]) >= 2
    assert (await client.get("/api/v1/audit?since=yesterday", headers=ADMIN_AUTH)).status == 400
    assert (await client.get("/api/v1/audit", headers=auth(operator))).status == 403
    batch = await (await client.get(f"/api/v1/batches/{batch_id}", headers=ADMIN_AUTH)).json()
    assert batch["paused_by"] == "ops-alice"

    # Append-only in the database itself.
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), runtime.engine.begin() as connection:
            connection.execute(text(statement))


# ---------------------------------------------------------------- hostile input


async def test_hostile_input_gets_clear_4xx(client: TestClient[Any, Any]) -> None:
    huge = batch_body(
        OWN, os_change={"imageid": "e215580f-73ad-429d-b6f2-5433947433b0", "keyname": "k" * 70_000}
    )
    r = await client.post("/api/v1/batches", json=huge, headers=ADMIN_AUTH)
    assert r.status == 413
    assert (await r.json())["error"]["code"] == "request_entity_too_large"

    r = await client.post("/api/v1/batches", json=batch_body(OWN, n=501), headers=ADMIN_AUTH)
    assert r.status == 400
    assert (await r.json())["error"]["fields"]["servers"] == "at most 500 servers per batch"

    cases: dict[str, tuple[dict[str, Any], str]] = {
        "unknown field": (batch_body(OWN, surprise=1), "surprise"),
        "project with a slash": (batch_body("abc/../def"), "project_id"),
        "region injection": (batch_body(OWN, region="cn-north-4.evil.com/x"), "region"),
        "server not a uuid": (batch_body(OWN, servers=["../../servers"]), "servers[0]"),
        "image not a uuid": (
            batch_body(OWN, os_change={"imageid": "x?y=1", "keyname": "k"}),
            "os_change.imageid",
        ),
        "notify ftp": (batch_body(OWN, notify_url="ftp://hooks.example.com/x"), "notify_url"),
        "notify credentials": (
            batch_body(OWN, notify_url="https://u:p@hooks.example.com/x"),
            "notify_url",
        ),
        "notify host not allowed": (
            batch_body(OWN, notify_url="https://169.254.169.254/latest"),
            "notify_url",
        ),
    }
    for name, (payload, field) in cases.items():
        r = await client.post("/api/v1/batches", json=payload, headers=ADMIN_AUTH)
        assert r.status == 400, name
        assert field in (await r.json())["error"]["fields"], name
    for url in ("https://hooks.example.com/reimage", "https://a.ops.example.net/x"):
        r = await client.post(
            "/api/v1/batches", json=batch_body(OWN, notify_url=url), headers=ADMIN_AUTH
        )
        assert r.status == 202, url

    batch_id = await new_batch(client, OWN)
    r = await client.post(
        f"/api/v1/batches/{batch_id}/pause",
        json={"reason": "x", "force": True},
        headers=ADMIN_AUTH,
    )
    assert r.status == 400 and "force" in (await r.json())["error"]["fields"]
    r = await client.get("/api/v1/servers/..%2F..%2Fetc/history", headers=ADMIN_AUTH)
    assert r.status in (400, 404)
    r = await client.get("/api/v1/servers/not-a-uuid/history", headers=ADMIN_AUTH)
    assert r.status == 400
    r = await client.get("/api/v1/batches/not-a-uuid", headers=ADMIN_AUTH)
    assert r.status == 400


@pytest.mark.parametrize("settings", [FAILURE_LIMIT], indirect=True)
async def test_bad_tokens_are_slowed_then_refused(client: TestClient[Any, Any]) -> None:
    statuses = []
    for attempt in range(FAILURE_LIMIT + 2):
        r = await client.get("/api/v1/batches", headers=auth(f"guess-{attempt}"))
        statuses.append(r.status)
    assert statuses[:FAILURE_LIMIT] == [401] * FAILURE_LIMIT
    assert statuses[FAILURE_LIMIT:] == [429, 429]
    r = await client.get("/api/v1/batches", headers=auth("one-more"))
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    # Health stays reachable for probes.
    assert (await client.get("/healthz")).status == 200
