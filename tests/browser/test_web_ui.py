"""The operator page in a real browser: Debian's Chromium driven by Playwright against the real
stack (API, worker, beat and simulator processes, PostgreSQL, Redis).

The tests run in file order and share one browser page, one stack and one batch: they follow an
operator through sign-in, a batch mid-run (pause, explore the failures while paused, resume to
the end, retry) and a second batch they cancel. Each step's screenshot goes to
test-artifacts/screenshots/. With REIMAGE_DOCS_SCREENSHOTS=1 two of them also replace the
committed pictures in docs/screenshots/ (opt-in: a plain test run leaves tracked files alone).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import support
from tests.browser.support import api_requests
from tests.integration.stack import FullStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
TOKEN = "web-ui-token-abcdefghijklmnop"
AK, SK = "WEBUIACCESSKEY000001", "web-ui-secret-key-00000000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
SEED, FAIL_RATIO = 7, 0.25
JOB_FAIL_CODE = "Ecs.0202"  # what the simulator's failing jobs answer
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}
# Batch A: 18 servers in waves of 6, 9 and 3, three at a time; these positions fail.
A_SIZE, A_FAILING = 18, {1, 4, 10, 15}
UI_TIMEOUT_MS = 15_000
BROKEN_IMAGE = "0b0e0e0e-73ad-429d-b6f2-5433947433b1"  # boots broken in the simulator


def servers_where(size: int, failing: set[int]) -> list[str]:
    """Fresh server ids, those at `failing` positions being ones the simulator fails."""
    return support.servers_where(size, failing, SEED, FAIL_RATIO)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    directory = tmp_path_factory.mktemp("web-ui")
    with stack_on_fresh_database(
        directory,
        redis_db=12,  # a database of its own: own queues
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=[
            *("--job-seconds", "2.5", "--job-seconds-spread", "0.2"),
            *("--fail-ratio", str(FAIL_RATIO), "--seed", str(SEED)),
            *("--broken-images", BROKEN_IMAGE),
        ],
        extra_env={
            "ORCH_ECS_RATE": "500",
            "ORCH_ECS_BURST": "500",
            "ORCH_HEALTH_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
        },
    ) as full:
        yield full


def api(stack: FullStack, method: str, path: str, body: Any = None) -> Any:
    status, answer = http(method, f"{stack.api_url}/api/v1{path}", token=TOKEN, body=body)
    assert status in (200, 201, 202), (status, answer)
    return answer


def submit(
    stack: FullStack,
    servers: list[str],
    image: str = "e215580f-73ad-429d-b6f2-5433947433b0",
    **policy: Any,
) -> dict[str, Any]:
    body = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": servers,
        "os_change": {
            "imageid": image,
            "keyname": "KeyPair-web",
            "mode": "withStopServer",
        },
        "policy": {"poll_interval_s": 1, "job_timeout_s": 300, **policy},
    }
    return api(stack, "POST", "/batches", body)  # type: ignore[no-any-return]


def accepted(stack: FullStack, servers: list[str]) -> int:
    stats = http("GET", f"{stack.sim_url}/_sim/stats")[1]
    return sum(stats["changeos_accepted"].get(s, 0) for s in servers)


def wait_api(stack: FullStack, batch_id: str, ok: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stack.processes.assert_alive()
        batch = api(stack, "GET", f"/batches/{batch_id}")
        if ok(batch):
            return batch  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, batch
        time.sleep(0.25)


@pytest.fixture(scope="module")
def batch_a(stack: FullStack) -> dict[str, Any]:
    """Started before the browser opens, so it is running by the time the operator looks."""
    servers = servers_where(A_SIZE, A_FAILING)
    batch = submit(stack, servers, max_in_flight=3, waves=[6, "50%"])
    return {"id": batch["id"], "servers": servers}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with support.chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def page(browser: Browser, stack: FullStack, batch_a: dict[str, Any]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.goto(stack.api_url + "/")
    yield opened
    context.close()
    # A script error or a CSP violation shows up on the console: the page must have none.
    # The browser itself logs the answers the tests provoke (the wrong token, the conflict).
    expected = re.compile(r"status of (401 \(Unauthorized\)|409 \(Conflict\))")
    assert [e for e in errors if not expected.search(e)] == []


def shot(page: Page, name: str, *, docs: str | None = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    if docs and os.environ.get("REIMAGE_DOCS_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SHOTS / docs))


def sign_in(page: Page) -> None:
    if page.get_by_test_id("sign-in").is_visible():
        page.get_by_test_id("token-input").fill(TOKEN)
        page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("sign-out")).to_be_visible()


def test_page_and_api_answers_carry_the_security_headers(stack: FullStack) -> None:
    with urllib.request.urlopen(stack.api_url + "/", timeout=5) as response:
        headers = response.headers
        body = response.read().decode()
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "style-src 'self'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Type"].startswith("text/html")
    assert "<script>" not in body and "style=" not in body  # nothing inline for the CSP to block
    with urllib.request.urlopen(stack.api_url + "/static/app.js", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Cache-Control"] == "no-cache"
    for path in ("/static/..%2F__init__.py", "/static/nope.js", "/static/%2e%2e"):
        status, _ = http("GET", stack.api_url + path)
        assert status == 404, path
    request = urllib.request.Request(stack.api_url + "/api/v1/batches")
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("the API answered without a token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
        assert exc.headers["X-Frame-Options"] == "DENY"


def test_sign_in_refuses_a_wrong_token_then_lists_the_batch(
    page: Page, batch_a: dict[str, Any]
) -> None:
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    page.get_by_test_id("token-input").fill("not-the-token")
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("sign-in-message")).to_contain_text("not accepted")
    shot(page, "01-sign-in-refused")
    sign_in(page)
    assert page.evaluate("sessionStorage.getItem('reimage.api-token')") == TOKEN
    assert page.context.cookies() == []  # the token is never a cookie
    row = page.locator(f"[data-testid=batch-row][data-batch-id='{batch_a['id']}']")
    expect(row).to_be_visible()
    expect(row.get_by_test_id("batch-link")).to_have_text(batch_a["id"][:8])
    expect(row.get_by_test_id("state-badge")).to_have_text(re.compile("pending|running"))
    expect(row.get_by_test_id("progress-bar")).to_be_visible()
    shot(page, "02-batch-list")


def test_batch_page_mid_run_then_pause_freezes_submissions(
    page: Page, stack: FullStack, batch_a: dict[str, Any]
) -> None:
    sign_in(page)
    page.locator(f"[data-testid=batch-row][data-batch-id='{batch_a['id']}']").get_by_test_id(
        "batch-link"
    ).click()
    expect(page).to_have_url(re.compile(f"#/batches/{batch_a['id']}$"))
    expect(page.get_by_test_id("batch-id")).to_have_text(batch_a["id"])
    expect(page.get_by_test_id("waves-total")).to_have_text("3")
    expect(page.get_by_test_id("max-in-flight")).to_have_text("3")
    expect(page.get_by_test_id("budget-allowed")).to_have_text("no limit")
    # Live updates: the page follows the run without a reload until two servers have failed.
    expect(page.get_by_test_id("count-failed")).to_have_text(re.compile("[2-9]"), timeout=30_000)
    expect(page.get_by_test_id("batch-state")).to_have_text("running")
    expect(page.get_by_test_id("action-resume")).to_be_hidden()
    expect(page.get_by_test_id("action-retry")).to_be_hidden()
    shot(page, "03-batch-running", docs="batch.png")

    page.get_by_test_id("action-pause").click()
    page.get_by_test_id("pause-dialog-input").fill("looking at wave 1")
    page.get_by_test_id("pause-dialog-confirm").click()
    expect(page.get_by_test_id("batch-state")).to_have_text("paused")
    expect(page.get_by_test_id("pause-reason")).to_contain_text("Paused: looking at wave 1")
    expect(page.get_by_test_id("action-pause")).to_be_hidden()
    expect(page.get_by_test_id("action-resume")).to_be_visible()
    shot(page, "04-batch-paused")
    # What was in flight ends; nothing new is sent to the cloud while paused.
    paused = wait_api(
        stack, batch_a["id"], lambda b: b["counts"]["submitting"] + b["counts"]["running"] == 0
    )
    assert paused["state"] == "paused"
    sent = accepted(stack, batch_a["servers"])
    time.sleep(3)
    assert accepted(stack, batch_a["servers"]) == sent < A_SIZE
    later = api(stack, "GET", f"/batches/{batch_a['id']}")
    assert later["counts"] == paused["counts"] and later["state"] == "paused"
    expect(page.get_by_test_id("count-pending")).to_have_text(str(later["counts"]["pending"]))


def test_filter_search_and_a_failed_servers_timeline(
    page: Page, stack: FullStack, batch_a: dict[str, Any]
) -> None:
    sign_in(page)
    page.goto(f"{stack.api_url}/#/batches/{batch_a['id']}")
    rows = page.get_by_test_id("server-row")
    expect(rows).to_have_count(A_SIZE)
    failed = [
        s
        for s in api(stack, "GET", f"/batches/{batch_a['id']}/servers?state=failed")["items"]
        if s["state"] == "failed"
    ]
    assert len(failed) >= 2

    page.get_by_test_id("state-filter").select_option("failed")
    expect(rows).to_have_count(len(failed))
    for state in rows.evaluate_all("rows => rows.map(r => r.dataset.state)"):
        assert state == "failed"
    expect(rows.first.get_by_test_id("error-code")).to_have_text(JOB_FAIL_CODE)

    target = failed[-1]["server_id"]
    prefix = target[:6]
    expected = [s for s in failed if s["server_id"].startswith(prefix)]
    page.get_by_test_id("server-search").fill(prefix)
    expect(rows).to_have_count(len(expected))
    expect(rows.first).to_have_attribute("data-server-id", expected[0]["server_id"])
    shot(page, "05-servers-filtered")
    # The batch is paused, not ended: the page keeps polling; what was typed stays.
    with api_requests(page) as polled:
        page.wait_for_timeout(2500)
    assert any(f"server={prefix}" in url for url in polled), polled
    expect(page.get_by_test_id("server-search")).to_have_value(prefix)
    expect(page.get_by_test_id("state-filter")).to_have_value("failed")
    expect(rows).to_have_count(len(expected))

    page.get_by_test_id("server-search").fill("zz")
    expect(page.get_by_test_id("search-hint")).to_be_visible()
    page.get_by_test_id("server-search").fill(target)
    expect(rows).to_have_count(1)
    rows.first.get_by_test_id("server-link").click()

    expect(page).to_have_url(re.compile(f"#/servers/{target}\\?batch={batch_a['id']}$"))
    expect(page.get_by_test_id("server-id")).to_have_text(target)
    history = api(stack, "GET", f"/servers/{target}/history")["items"]
    expect(page.get_by_test_id("history-row")).to_have_count(len(history))
    ending = page.locator("[data-testid=history-row][data-to-state=failed]")
    expect(ending.get_by_test_id("cloud-code")).to_have_text(JOB_FAIL_CODE)
    expect(ending.get_by_test_id("cloud-message")).to_contain_text("system disk")
    expect(ending.get_by_test_id("history-reason")).to_have_text("job failed")
    expect(page.get_by_test_id("server-state")).to_have_text("failed")
    shot(page, "06-server-timeline", docs="timeline.png")

    page.go_back()  # hash routing: the browser's back returns to the batch
    expect(page).to_have_url(re.compile(f"#/batches/{batch_a['id']}$"))
    expect(page.get_by_test_id("batch-state")).to_have_text("paused")


def test_resume_runs_the_batch_to_its_end_then_retry_opens_the_new_batch(
    page: Page, stack: FullStack, batch_a: dict[str, Any]
) -> None:
    sign_in(page)
    page.goto(f"{stack.api_url}/#/batches/{batch_a['id']}")
    page.get_by_test_id("action-resume").click()
    expect(page.get_by_test_id("batch-state")).to_have_text("running")
    expect(page.get_by_test_id("batch-state")).to_have_text("partially failed", timeout=60_000)
    final = api(stack, "GET", f"/batches/{batch_a['id']}")
    assert final["state"] == "partially_failed"
    assert final["counts"]["succeeded"] == A_SIZE - len(A_FAILING)
    expect(page.get_by_test_id("count-succeeded")).to_have_text(str(A_SIZE - len(A_FAILING)))
    expect(page.get_by_test_id("count-failed")).to_have_text(str(len(A_FAILING)))
    expect(page.get_by_test_id("done-count")).to_have_text(f"{A_SIZE} of {A_SIZE}")
    for action in ("pause", "resume", "cancel"):
        expect(page.get_by_test_id(f"action-{action}")).to_be_hidden()
    with api_requests(page) as polled:  # an ended batch changes no more: no polling
        page.wait_for_timeout(2500)
    assert polled == []
    expect(page.get_by_test_id("live-indicator")).to_be_hidden()
    shot(page, "07-batch-finished")

    page.get_by_test_id("action-retry").click()
    page.get_by_test_id("retry-dry-run").click()
    expect(page.get_by_test_id("retry-result")).to_contain_text(f"{len(A_FAILING)} server(s)")
    page.get_by_test_id("retry-submit").click()
    expect(page).not_to_have_url(re.compile(f"#/batches/{batch_a['id']}$"))
    expect(page.get_by_test_id("parent-link")).to_have_text(batch_a["id"][:8])
    child_id = page.get_by_test_id("batch-page").get_attribute("data-batch-id")
    child = api(stack, "GET", f"/batches/{child_id}")
    assert child["parent_id"] == batch_a["id"] and child["total"] == len(A_FAILING)
    shot(page, "08-retry-batch")


def test_cancel_a_second_batch_and_hostile_text_stays_text(page: Page, stack: FullStack) -> None:
    sign_in(page)
    servers = servers_where(8, set())
    batch = submit(stack, servers, max_in_flight=1)
    deadline = time.monotonic() + 20
    while accepted(stack, servers) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    hostile = '<img src=x data-testid="injected"><script>window.owned=1</script>'
    api(stack, "POST", f"/batches/{batch['id']}/pause", {"reason": hostile})
    page.goto(f"{stack.api_url}/#/batches/{batch['id']}")
    expect(page.get_by_test_id("pause-reason")).to_contain_text(hostile)
    assert page.locator("[data-testid=injected]").count() == 0
    assert page.evaluate("window.owned") is None

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("action-cancel").click()
    expect(page.get_by_test_id("action-cancel")).to_be_hidden()
    expect(page.get_by_test_id("batch-state")).to_have_text("cancelled", timeout=30_000)
    done = api(stack, "GET", f"/batches/{batch['id']}")
    assert done["state"] == "cancelled" and done["cancel_requested"] is True
    assert done["counts"]["cancelled"] == len(servers) - accepted(stack, servers) > 0
    expect(page.get_by_test_id("count-cancelled")).to_have_text(str(done["counts"]["cancelled"]))
    shot(page, "09-batch-cancelled")

    # An API refusal is shown with its own message: retrying servers that another active
    # batch has claimed meanwhile is a conflict (409).
    cancelled = [s for s in servers if not accepted(stack, [s])]
    submit(stack, cancelled, max_in_flight=1)
    page.get_by_test_id("action-retry").click()
    page.get_by_test_id("retry-dry-run").click()
    expect(page.get_by_test_id("retry-result")).to_contain_text(f"{len(cancelled)} conflict")
    page.get_by_test_id("retry-submit").click()
    expect(page.get_by_test_id("submit-error-message")).to_have_text(
        f"HTTP 409: {len(cancelled)} server(s) already belong to an active batch"
    )
    expect(page.get_by_test_id("conflict")).to_have_count(len(cancelled))
    expect(page).to_have_url(re.compile(f"#/batches/{batch['id']}$"))
    shot(page, "10-retry-conflict")
    page.get_by_test_id("dialog-cancel").click()

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("sign-in-message")).to_have_text("Signed out.")
    assert page.evaluate("sessionStorage.getItem('reimage.api-token')") is None
    page.goto(f"{stack.api_url}/#/batches/{batch['id']}")
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    shot(page, "11-signed-out")


def test_a_viewer_sees_who_it_is_and_no_controls(page: Page, stack: FullStack) -> None:
    viewer = api(
        stack, "POST", "/tokens", {"name": "web-viewer", "role": "viewer", "projects": [PROJECT]}
    )["token"]
    # Long enough (about 30 s) to be still running when the operator cancels it, on a busy
    # machine too.
    running = submit(stack, servers_where(12, set()), max_in_flight=1)
    page.goto(f"{stack.api_url}/#/")
    page.get_by_test_id("token-input").fill(viewer)
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("whoami")).to_have_text("web-viewer · viewer · 1 project(s)")
    page.goto(f"{stack.api_url}/#/batches/{running['id']}")
    expect(page.get_by_test_id("batch-state")).to_be_visible()
    for action in ("pause", "resume", "cancel", "retry", "rollback"):
        expect(page.get_by_test_id(f"action-{action}")).to_be_hidden()
    shot(page, "12-viewer-no-controls")

    # The operator sees the controls on the same page (the bootstrap token is an admin).
    page.get_by_test_id("sign-out").click()
    sign_in(page)
    expect(page.get_by_test_id("whoami")).to_have_text("bootstrap · admin")
    page.goto(f"{stack.api_url}/#/batches/{running['id']}")
    expect(page.get_by_test_id("action-cancel")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("action-cancel").click()
    expect(page.get_by_test_id("batch-state")).to_have_text("cancelled", timeout=30_000)


def test_a_pre_flight_check_shows_verdicts_and_a_skipped_servers_reason(
    page: Page, stack: FullStack
) -> None:
    fine = servers_where(2, set())
    locked = str(uuid.uuid4())
    http(
        "POST", f"{stack.sim_url}/_sim/servers", body={"servers": [{"id": locked, "locked": True}]}
    )
    request = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": [*fine, locked],
        "os_change": {
            "imageid": "e215580f-73ad-429d-b6f2-5433947433b0",
            "keyname": "KeyPair-web",
            "mode": "withStopServer",
        },
        "policy": {"on_incompatible": "skip", "poll_interval_s": 1},
    }
    page.goto(f"{stack.api_url}/#/")
    sign_in(page)
    page.get_by_test_id("dry-run-link").click()
    expect(page.get_by_test_id("dry-run")).to_be_visible()
    page.get_by_test_id("dry-run-request").fill(json.dumps(request))
    page.get_by_test_id("dry-run-submit").click()
    expect(page.get_by_test_id("dry-run-status")).to_contain_text("3 servers checked")
    verdicts = page.get_by_test_id("dry-run-verdicts-row")
    expect(verdicts.filter(has_text="submit")).to_contain_text("2")
    expect(verdicts.filter(has_text="will_fail")).to_contain_text("1")
    code = page.locator("[data-testid=dry-run-code-row][data-code=server_locked]")
    expect(code).to_contain_text(locked)
    expect(code).to_contain_text("locked")
    shot(page, "13-pre-flight-check")
    # The same request for real, with skip: the locked server is stored skipped, and says why.
    batch = api(stack, "POST", "/batches", request)
    page.goto(f"{stack.api_url}/#/batches/{batch['id']}")
    row = page.locator(f"[data-testid=server-row][data-server-id='{locked}']")
    expect(row).to_have_attribute("data-state", "skipped")
    expect(row.get_by_test_id("error-code")).to_have_text("server_locked")
    wait_api(stack, batch["id"], lambda b: b["state"] in TERMINAL)


def test_a_failed_health_gate_shows_its_probes_and_is_rolled_back_from_the_page(
    page: Page, stack: FullStack
) -> None:
    servers = servers_where(2, set())
    check = {
        "http": stack.sim_url + "/_sim/health/{server_id}",
        "initial_delay_s": 0,
        "interval_s": 1,
        "timeout_s": 2,
        "deadline_s": 3,
    }
    batch = submit(stack, servers, image=BROKEN_IMAGE, health_check=check)
    done = wait_api(stack, batch["id"], lambda b: b["state"] in TERMINAL)
    assert done["state"] == "partially_failed" and done["counts"]["failed"] == 2
    sign_in(page)
    page.goto(f"{stack.api_url}/#/batches/{batch['id']}")
    rows = page.get_by_test_id("server-row")
    expect(rows).to_have_count(2)
    expect(rows.first.get_by_test_id("error-code")).to_have_text("health_check_failed")
    expect(rows.first.get_by_test_id("server-health")).to_contain_text("last HTTP 503")
    shot(page, "14-health-gate-failed")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("action-rollback").click()
    expect(page.get_by_test_id("batch-kind")).to_have_text("rollback", timeout=UI_TIMEOUT_MS)
    rollback_id = page.get_by_test_id("batch-page").get_attribute("data-batch-id")
    assert rollback_id and rollback_id != batch["id"]
    ended = wait_api(stack, rollback_id, lambda b: b["state"] in TERMINAL)
    assert ended["state"] == "succeeded" and ended["parent_id"] == batch["id"]
    expect(page.get_by_test_id("batch-state")).to_have_text("succeeded", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("parent-link")).to_have_attribute("href", f"#/batches/{batch['id']}")
    assert accepted(stack, servers) == 4  # each: the change, and the one rollback
    # A server's page shows each phase where it happened: the failed gate's probes in the
    # batch that changed it, the image it went back to in the rollback batch.
    first = api(stack, "GET", f"/batches/{batch['id']}/servers?server={servers[0]}")["items"][0]
    page.goto(f"{stack.api_url}/#/servers/{servers[0]}?batch={batch['id']}")
    expect(page.get_by_test_id("server-health-last")).to_contain_text("HTTP 503")
    expect(page.get_by_test_id("server-previous-image")).to_have_text(first["previous_image"])
    page.goto(f"{stack.api_url}/#/servers/{servers[0]}?batch={rollback_id}")
    expect(page.get_by_test_id("in-batch-state")).to_have_text("succeeded")
    expect(page.get_by_test_id("server-target-image")).to_have_text(first["previous_image"])
    expect(page.get_by_test_id("history-row").filter(has_text=rollback_id[:8])).not_to_have_count(0)
    expect(page.get_by_test_id("crumb-batch")).to_have_attribute("href", f"#/batches/{rollback_id}")


def test_an_approver_approves_a_waiting_batch_from_the_page(page: Page, stack: FullStack) -> None:
    approver = api(stack, "POST", "/tokens", {"name": "web-approver", "role": "approver"})["token"]
    servers = servers_where(2, set())
    batch = submit(stack, servers, approvals={"before_start": 1})
    wait_api(stack, batch["id"], lambda b: b["approval_gate"] == 0)
    if page.get_by_test_id("sign-out").is_visible():
        page.get_by_test_id("sign-out").click()
    page.goto(f"{stack.api_url}/#/")
    page.get_by_test_id("token-input").fill(approver)
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("whoami")).to_contain_text("web-approver · approver")
    page.goto(f"{stack.api_url}/#/batches/{batch['id']}")
    expect(page.get_by_test_id("pause-reason")).to_contain_text("awaiting approval")
    expect(page.get_by_test_id("action-resume")).to_be_hidden()  # a gate opens by approval only
    page.get_by_test_id("action-approve").click()
    page.get_by_test_id("approve-dialog-input").fill("canary plan reviewed")
    page.get_by_test_id("approve-dialog-confirm").click()
    expect(page.get_by_test_id("approvals")).to_contain_text("web-approver")
    expect(page.get_by_test_id("approvals")).to_contain_text("canary plan reviewed")
    ended = wait_api(stack, batch["id"], lambda b: b["state"] in TERMINAL)
    assert ended["state"] == "succeeded"
    shot(page, "15-approved")
