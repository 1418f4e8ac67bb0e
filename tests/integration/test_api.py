"""The HTTP API on the real app, real databases (SQLite and PostgreSQL) and real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from orchestrator.api.app import create_app
from orchestrator.config import Settings, load_settings
from orchestrator.db.models import Batch, BatchServer, ServerHistory
from orchestrator.runtime import Runtime
from orchestrator.services import batches as batch_service
from orchestrator.services.views import iso

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"


def body(servers: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": servers if servers is not None else [str(uuid.uuid4()) for _ in range(3)],
        "os_change": {
            "imageid": "e215580f-73ad-429d-b6f2-5433947433b0",
            "keyname": "KeyPair-350b",
            "userid": "7e25b1da389f4697a79df3a0e5bd494e",
            "metadata": {"BYOL": "true"},
            "mode": "withStopServer",
        },
        "cloud_init": False,
        "policy": {"max_in_flight": 50, "poll_interval_s": 10, "job_timeout_s": 1800},
    }
    payload.update(overrides)
    return payload


@pytest.fixture
def settings(database_url: str, redis_url: str, cloud_settings: dict[str, Any]) -> Settings:
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        api_token=TOKEN,
        secret_key="test-secret-key",
        **cloud_settings,
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(settings, with_rate_limit=False)
    yield rt
    rt.dispose()


ClientMaker = Callable[..., Any]


@pytest.fixture
async def client(
    aiohttp_client: ClientMaker, settings: Settings, runtime: Runtime
) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(create_app(settings, runtime))
    return result


def count(runtime: Runtime, model: Any) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_every_api_route_requires_the_token(client: TestClient[Any, Any]) -> None:
    bid = str(uuid.uuid4())
    for method, path in [
        ("POST", "/api/v1/batches"),
        ("GET", "/api/v1/batches"),
        ("GET", f"/api/v1/batches/{bid}"),
        ("GET", f"/api/v1/batches/{bid}/servers"),
        ("GET", f"/api/v1/servers/{bid}/history"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await client.request(method, path, headers=headers, json={})
            assert response.status == 401, (method, path, headers)
            assert (await response.json())["error"]["code"] == "unauthorized"
    assert (await client.get("/healthz")).status == 200


async def test_create_then_read_batch_servers_and_history(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    servers = [str(uuid.uuid4()) for _ in range(5)]
    response = await client.post("/api/v1/batches", json=body(servers), headers=AUTH)
    assert response.status == 202
    batch = await response.json()
    assert batch["state"] == "pending" and batch["total"] == 5
    assert batch["counts"] == {
        "pending": 5,
        "submitting": 0,
        "backing_up": 0,
        "running": 0,
        "verifying": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
    }
    got = await (await client.get(f"/api/v1/batches/{batch['id']}", headers=AUTH)).json()
    assert (
        got["id"] == batch["id"] and got["os_change"]["imageid"] == body()["os_change"]["imageid"]
    )

    page = await (
        await client.get(f"/api/v1/batches/{batch['id']}/servers?limit=2", headers=AUTH)
    ).json()
    seen = [item["server_id"] for item in page["items"]]
    while page["next_cursor"]:
        page = await (
            await client.get(
                f"/api/v1/batches/{batch['id']}/servers?limit=2&cursor={page['next_cursor']}",
                headers=AUTH,
            )
        ).json()
        seen += [item["server_id"] for item in page["items"]]
    assert seen == servers
    assert set(page["items"][0]) >= {
        "server_id",
        "state",
        "job_id",
        "error_code",
        "error_message",
        "updated_at",
    }
    none_failed = await (
        await client.get(f"/api/v1/batches/{batch['id']}/servers?state=failed", headers=AUTH)
    ).json()
    assert none_failed == {"items": [], "next_cursor": None}

    history = await (await client.get(f"/api/v1/servers/{servers[0]}/history", headers=AUTH)).json()
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in history["items"]] == [
        (None, "pending", "accepted")
    ]
    assert history["items"][0]["batch_id"] == batch["id"]
    # Times are RFC 3339 in UTC with a Z, to the microsecond the database keeps, on the pages
    # (whose datetimes the API's encoder writes) as on the batch (written by views.iso).
    with runtime.sessions() as session:
        last = session.scalars(select(BatchServer).where(BatchServer.server_id == servers[-1]))
        updated_at = last.one().updated_at
        accepted_at = session.scalars(
            select(ServerHistory.at).where(ServerHistory.server_id == servers[0])
        ).one()
    assert page["items"][-1]["server_id"] == servers[-1]
    assert page["items"][-1]["updated_at"] == iso(updated_at)
    assert history["items"][0]["at"] == iso(accepted_at)
    assert iso(accepted_at).endswith("Z") and iso(accepted_at) == got["created_at"]
    assert datetime.fromisoformat(history["items"][0]["at"]) == accepted_at


async def test_batch_list_is_newest_first_with_cursor(client: TestClient[Any, Any]) -> None:
    ids = []
    for _ in range(3):
        response = await client.post("/api/v1/batches", json=body(), headers=AUTH)
        ids.append((await response.json())["id"])
    first = await (await client.get("/api/v1/batches?limit=2", headers=AUTH)).json()
    second = await (
        await client.get(f"/api/v1/batches?limit=2&cursor={first['next_cursor']}", headers=AUTH)
    ).json()
    assert [b["id"] for b in first["items"] + second["items"]] == list(reversed(ids))
    assert second["next_cursor"] is None


INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("missing servers", lambda b: b.pop("servers"), "servers"),
    ("missing project", lambda b: b.pop("project_id"), "project_id"),
    ("project typo", lambda b: b.__setitem__("project_id", "BAD"), "project_id"),
    ("region typo", lambda b: b.__setitem__("region", "cn-nort-4"), "region"),
    ("missing imageid", lambda b: b["os_change"].pop("imageid"), "os_change.imageid"),
    ("bad uuid", lambda b: b["servers"].__setitem__(1, "not-a-uuid"), "servers[1]"),
    ("empty servers", lambda b: b.__setitem__("servers", []), "servers"),
    ("duplicate", lambda b: b["servers"].append(b["servers"][0]), "servers[3]"),
    ("both secrets", lambda b: b["os_change"].__setitem__("adminpass", "Str0ng!Pass"), "os_change"),
    ("neither", lambda b: b["os_change"].pop("keyname"), "os_change"),
    ("bad mode", lambda b: b["os_change"].__setitem__("mode", "now"), "os_change.mode"),
    ("bad BYOL", lambda b: b["os_change"]["metadata"].__setitem__("BYOL", "yes"),
     "os_change.metadata.BYOL"),
    ("weak password", lambda b: (b["os_change"].pop("keyname"),
                                 b["os_change"].__setitem__("adminpass", "weak")),
     "os_change.adminpass"),
    ("oversized user_data", lambda b: (b.__setitem__("cloud_init", True),
                                       b["os_change"]["metadata"].__setitem__(
                                           "user_data", "QUFB" * 12000)),
     "os_change.metadata.user_data"),
    ("bad in-flight", lambda b: b["policy"].__setitem__("max_in_flight", 0),
     "policy.max_in_flight"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_requests_answer_400_and_store_nothing(
    client: TestClient[Any, Any],
    runtime: Runtime,
    case: str,
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    payload = body()
    mutate(payload)
    response = await client.post("/api/v1/batches", json=payload, headers=AUTH)
    assert response.status == 400, case
    error = (await response.json())["error"]
    assert error["code"] and error["message"]
    assert field in error["fields"], error
    assert error["fields"][field]
    assert count(runtime, Batch) == 0
    assert count(runtime, BatchServer) == 0
    assert count(runtime, ServerHistory) == 0


async def test_non_json_body_is_a_400(client: TestClient[Any, Any], runtime: Runtime) -> None:
    response = await client.post("/api/v1/batches", data=b"{nope", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"]["fields"] == {"body": "not valid JSON"}
    assert count(runtime, Batch) == 0


async def test_secret_is_sealed_never_stored_in_plaintext(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    payload = body()
    payload["os_change"].pop("keyname")
    payload["os_change"]["adminpass"] = "Sup3r-Secret-Pw!"
    response = await client.post("/api/v1/batches", json=payload, headers=AUTH)
    assert response.status == 202
    text = await response.text()
    assert "Sup3r-Secret-Pw!" not in text
    with runtime.sessions() as session:
        batch = session.scalars(select(Batch)).one()
        assert batch.sealed_secrets is not None
        assert b"Sup3r-Secret-Pw!" not in batch.sealed_secrets
        assert "adminpass" not in batch.os_change


async def test_active_server_cannot_join_a_second_batch(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    servers = [str(uuid.uuid4()) for _ in range(3)]
    first = await client.post("/api/v1/batches", json=body(servers), headers=AUTH)
    assert first.status == 202
    overlap = [servers[1], str(uuid.uuid4())]
    second = await client.post("/api/v1/batches", json=body(overlap), headers=AUTH)
    assert second.status == 409
    error = (await second.json())["error"]
    assert error["conflicts"] == [
        {"server_id": servers[1], "batch_id": (await first.json())["id"], "state": "pending"}
    ]
    assert count(runtime, Batch) == 1 and count(runtime, BatchServer) == 3


async def test_concurrent_overlapping_posts_one_winner(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    shared = str(uuid.uuid4())
    payloads = [body([shared, str(uuid.uuid4())]) for _ in range(8)]
    responses = await asyncio.gather(
        *(client.post("/api/v1/batches", json=p, headers=AUTH) for p in payloads)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [202] + [409] * 7
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).where(BatchServer.server_id == shared)) == 1


async def test_idempotency_key_replays_and_detects_mismatch(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    payload = body()
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first = await client.post("/api/v1/batches", json=payload, headers=headers)
    again = await client.post("/api/v1/batches", json=payload, headers=headers)
    assert (first.status, again.status) == (202, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    other = await client.post("/api/v1/batches", json=body(), headers=headers)
    assert other.status == 422
    assert count(runtime, Batch) == 1


async def test_unknown_batch_and_bad_query_params(client: TestClient[Any, Any]) -> None:
    missing = await client.get(f"/api/v1/batches/{uuid.uuid4()}", headers=AUTH)
    assert missing.status == 404
    malformed = await client.get("/api/v1/batches/not-a-uuid", headers=AUTH)
    assert malformed.status == 400
    assert (await malformed.json())["error"]["fields"] == {"batch_id": "not a batch UUID"}
    created = await (await client.post("/api/v1/batches", json=body(), headers=AUTH)).json()
    bad_state = await client.get(
        f"/api/v1/batches/{created['id']}/servers?state=bogus", headers=AUTH
    )
    assert bad_state.status == 400
    assert "state" in (await bad_state.json())["error"]["fields"]
    bad_limit = await client.get("/api/v1/batches?limit=0", headers=AUTH)
    assert bad_limit.status == 400
    bad_cursor = await client.get("/api/v1/batches?cursor=@@@", headers=AUTH)
    assert bad_cursor.status == 400


async def test_readyz_reports_each_dependency(client: TestClient[Any, Any]) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"database": "ok", "redis": "ok"}


def _fail(runtime: Runtime, batch_id: str, failures: dict[str, tuple[str, str]]) -> None:
    """Move the batch's pending servers named in `failures` through submitting to failed with
    a cloud code and message, as the transition function records it for a failed job."""
    from datetime import UTC, datetime

    from orchestrator.db.transitions import record_server_transition
    from orchestrator.domain.states import ServerState

    now = datetime.now(UTC)
    with runtime.sessions() as session:
        rows = session.execute(
            # In submission order: a group's message is its first failure's, and without the
            # order SQLite may walk the (batch, server) index, which orders by random uuid.
            select(BatchServer.id, BatchServer.server_id)
            .where(BatchServer.batch_id == batch_id)
            .order_by(BatchServer.id)
        ).all()
        for row_id, server_id in rows:
            if server_id not in failures:
                continue
            code, message = failures[server_id]
            record_server_transition(
                session,
                row_id,
                expected=ServerState.PENDING,
                to=ServerState.SUBMITTING,
                reason="test",
                now=now,
            )
            record_server_transition(
                session,
                row_id,
                expected=ServerState.SUBMITTING,
                to=ServerState.FAILED,
                reason="job_failed",
                now=now,
                values={"error_code": code, "error_message": message},
            )
        session.commit()


async def test_servers_page_by_id_prefix_and_state_walks_every_shape_of_the_query(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    """The page's statement is built once per shape (filters, cursor) with bound values: each
    shape answers what it is asked, page by page, and a prefix is matched literally."""
    servers = [f"5e1f{n:04d}-0000-4000-8000-{n:012d}" for n in range(6)] + [
        f"77aa{n:04d}-0000-4000-8000-{n:012d}" for n in range(2)
    ]
    created = await (await client.post("/api/v1/batches", json=body(servers), headers=AUTH)).json()
    bid = created["id"]
    _fail(runtime, bid, {servers[1]: ("Ecs.0202", "x"), servers[4]: ("Ecs.0202", "y")})

    async def walk(query: str) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            url = f"/api/v1/batches/{bid}/servers?limit=2&{query}"
            response = await client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=AUTH)
            assert response.status == 200, await response.text()
            page = await response.json()
            seen += [item["server_id"] for item in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return seen

    assert await walk("") == servers
    assert await walk("server=5e1f") == servers[:6]
    assert await walk("server=77AA") == servers[6:]
    assert await walk("state=failed") == [servers[1], servers[4]]
    assert await walk("state=failed&server=5e1f0004") == [servers[4]]
    assert await walk("state=pending&server=5e1f") == [
        servers[0],
        servers[2],
        servers[3],
        servers[5],
    ]
    assert await walk("code=Ecs.0202&server=5e1f0001") == [servers[1]]
    # LIKE's wildcards in a prefix are letters (the API allows only 0-9 a-f -; a service
    # caller may pass anything).
    literal = batch_service.list_batch_servers(
        runtime.read_sessions, bid, state=None, limit=10, cursor=None, server_prefix="5e1f_"
    )
    assert literal["items"] == []
    empty = await client.get(f"/api/v1/batches/{uuid.uuid4()}/servers?server=5e1f", headers=AUTH)
    assert empty.status == 404


async def test_failures_grouped_by_code_filtered_and_exported_as_csv(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    servers = [str(uuid.uuid4()) for _ in range(5)]
    created = await (await client.post("/api/v1/batches", json=body(servers), headers=AUTH)).json()
    bid = created["id"]
    _fail(
        runtime,
        bid,
        {
            servers[0]: ("Ecs.0202", "=HYPERLINK(evil)"),
            servers[2]: ("Ecs.0202", "other words"),
            servers[3]: ("Ecs.0111", 'image gone, "quoted"'),
        },
    )
    batch = await (await client.get(f"/api/v1/batches/{bid}", headers=AUTH)).json()
    assert batch["failure_codes"] == [
        {"state": "failed", "code": "Ecs.0202", "count": 2, "message": "=HYPERLINK(evil)"},
        {"state": "failed", "code": "Ecs.0111", "count": 1, "message": 'image gone, "quoted"'},
    ]
    page = await (
        await client.get(f"/api/v1/batches/{bid}/servers?code=Ecs.0202", headers=AUTH)
    ).json()
    assert [s["server_id"] for s in page["items"]] == [servers[0], servers[2]]
    bad = await client.get(f"/api/v1/batches/{bid}/servers?code=a%20b", headers=AUTH)
    assert bad.status == 400 and "code" in (await bad.json())["error"]["fields"]

    export = await client.get(f"/api/v1/batches/{bid}/servers.csv", headers=AUTH)
    assert export.status == 200
    assert export.headers["Content-Type"].startswith("text/csv")
    assert f'filename="batch-{bid}.csv"' in export.headers["Content-Disposition"]
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(await export.text())))
    assert [r["server_id"] for r in rows] == servers
    assert [r["state"] for r in rows] == ["failed", "pending", "failed", "failed", "pending"]
    # A cloud message is never a formula to the spreadsheet that opens the file.
    assert rows[0]["error_message"] == "'=HYPERLINK(evil)"
    assert rows[3]["error_message"] == 'image gone, "quoted"'
    only = await client.get(
        f"/api/v1/batches/{bid}/servers.csv?state=failed&code=Ecs.0111", headers=AUTH
    )
    lines = (await only.text()).splitlines()
    assert len(lines) == 2 and lines[1].startswith(servers[3] + ",failed,")
    missing = await client.get(f"/api/v1/batches/{uuid.uuid4()}/servers.csv", headers=AUTH)
    assert missing.status == 404
    assert (await client.get(f"/api/v1/batches/{bid}/servers.csv")).status == 401


async def test_batch_list_filters_by_state_searches_and_sorts(
    client: TestClient[Any, Any],
) -> None:
    ids = []
    for _ in range(3):
        response = await client.post("/api/v1/batches", json=body(), headers=AUTH)
        ids.append((await response.json())["id"])
    paused = await client.post(f"/api/v1/batches/{ids[1]}/pause", headers=AUTH)
    assert (await paused.json())["state"] == "paused"

    async def listed(query: str) -> list[str]:
        response = await client.get(f"/api/v1/batches?{query}", headers=AUTH)
        assert response.status == 200, await response.text()
        return [b["id"] for b in (await response.json())["items"]]

    assert await listed("state=paused") == [ids[1]]
    assert await listed("state=pending") == [ids[2], ids[0]]
    assert await listed(f"q={ids[0][:8]}") == [ids[0]]
    assert await listed(f"q={ids[0][:8].upper()}") == [ids[0]]
    assert await listed("q=nobody-by-that-name") == []
    oldest = await (await client.get("/api/v1/batches?order=oldest&limit=2", headers=AUTH)).json()
    rest = await listed(f"order=oldest&limit=2&cursor={oldest['next_cursor']}")
    assert [b["id"] for b in oldest["items"]] + rest == ids
    for query, field in [("state=done", "state"), ("order=up", "order"), ("q=" + "x" * 65, "q")]:
        response = await client.get(f"/api/v1/batches?{query}", headers=AUTH)
        assert response.status == 400 and field in (await response.json())["error"]["fields"]


async def test_a_hot_read_is_answered_from_memory_but_never_stale_after_a_change_here(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    from sqlalchemy import event

    created = await (await client.post("/api/v1/batches", json=body(), headers=AUTH)).json()
    url = f"/api/v1/batches/{created['id']}"
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    # Reads go through an engine of their own: statements are counted on both.
    engines = {runtime.engine, runtime.read_sessions.kw["bind"]}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        first = await (await client.get(url, headers=AUTH)).json()
        read = len(statements)
        assert read > 0  # the first read reached the database
        again = await (await client.get(url, headers=AUTH)).json()
        assert again == first and len(statements) == read  # the second came from memory
        paused = await client.post(f"{url}/pause", json={"reason": "look"}, headers=AUTH)
        assert paused.status == 200
        after = await (await client.get(url, headers=AUTH)).json()
        assert after["state"] == "paused"  # one's own change is never read back stale
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
