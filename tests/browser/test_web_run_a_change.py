"""Running a change from the web page alone (issue 16), in Debian's Chromium against the real
stack: submit a batch from the form (a pasted list, a file) after a dry run, follow it (rate and
ETA), pause it with a reason, find its failures by code, export them as CSV, retry with options;
a missing or malformed batch URL; the timeline's details and breadcrumb; the batch list's
filters; the same page at 375 px. Every test fails on a console error or an uncaught exception
it did not provoke.

With REIMAGE_DOCS_SCREENSHOTS=1 the submit form with its dry-run report and the phone view
replace the committed pictures in docs/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, FilePayload, Page, ViewportSize, expect

from tests.browser.support import (
    TERMINAL,
    Console,
    api_call,
    api_requests,
    chromium,
    servers_where,
    shot,
    wait_for,
)
from tests.integration.stack import FullStack, http, stack_on_fresh_database

pytestmark = pytest.mark.e2e

TOKEN = "web-change-token-abcdefghijklmnop"
AK, SK = "WEBCHANGEACCESSKEY01", "web-change-secret-key-000000000000000000001"
PROJECT = "1605767bd8b5d3f92f0ac0123456789b"
REGION = "cn-north-4"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
SEED, FAIL_RATIO = 11, 0.3
JOB_FAIL_CODE = "Ecs.0202"
UI_TIMEOUT_MS = 15_000
PHONE: ViewportSize = {"width": 375, "height": 812}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
CSV_HEADER = (
    "server_id,state,wave,attempt,phase,image_id,previous_image,job_id,job_status,"
    "error_code,error_message,submitted_at,finished_at,updated_at"
)
# The failures batch: 12 servers, these positions fail their job.
F_SIZE, F_FAILING = 12, {0, 3, 5, 8, 11}


def fine(n: int) -> list[str]:
    return servers_where(n, set(), SEED, FAIL_RATIO)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    with stack_on_fresh_database(
        tmp_path_factory.mktemp("web-change"),
        redis_db=7,  # a database of its own: own queues
        token=TOKEN,
        ak=AK,
        sk=SK,
        project_id=PROJECT,
        simulator_args=[
            *("--job-seconds", "1.0", "--job-seconds-spread", "0.2"),
            *("--fail-ratio", str(FAIL_RATIO), "--seed", str(SEED)),
        ],
        extra_env={
            "ORCH_ECS_RATE": "500",
            "ORCH_ECS_BURST": "500",
            "ORCH_HEALTH_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
        },
    ) as full:
        yield full


def api(stack: FullStack, method: str, path: str, body: Any = None) -> Any:
    return api_call(stack, TOKEN, method, path, body)


def submit(stack: FullStack, servers: list[str], **policy: Any) -> dict[str, Any]:
    body = {
        "project_id": PROJECT,
        "region": REGION,
        "servers": servers,
        "os_change": {"imageid": IMAGE, "keyname": "KeyPair-web", "mode": "withStopServer"},
        "policy": {"poll_interval_s": 1, "job_timeout_s": 300, **policy},
    }
    return api(stack, "POST", "/batches", body)  # type: ignore[no-any-return]


def ended(stack: FullStack, batch_id: str, timeout_s: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: api(stack, "GET", f"/batches/{batch_id}"),
        lambda b: b["state"] in TERMINAL,
        timeout_s,
    )


@pytest.fixture(scope="module")
def failures(stack: FullStack) -> dict[str, Any]:
    """A finished batch with failures, started before any browser opens."""
    servers = servers_where(F_SIZE, F_FAILING, SEED, FAIL_RATIO)
    batch = submit(stack, servers, max_in_flight=6)
    return {"id": batch["id"], "servers": servers}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _context(browser: Browser, stack: FullStack, viewport: ViewportSize) -> BrowserContext:
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


@pytest.fixture(scope="module")
def console() -> Console:
    return Console()


@pytest.fixture(autouse=True)
def no_console_errors(console: Console) -> Iterator[None]:
    console.reset()
    yield
    assert console.unexpected() == []


def _signed_in(context: BrowserContext, stack: FullStack, console: Console) -> Page:
    opened = context.new_page()
    console.watch(opened)
    opened.goto(stack.api_url + "/")
    opened.get_by_test_id("token-input").fill(TOKEN)
    opened.get_by_test_id("sign-in-submit").click()
    expect(opened.get_by_test_id("whoami")).to_have_text("bootstrap · admin")
    return opened


@pytest.fixture(scope="module")
def desktop(browser: Browser, stack: FullStack, console: Console) -> Iterator[Page]:
    expect.set_options(timeout=UI_TIMEOUT_MS)
    context = _context(browser, stack, DESKTOP)
    yield _signed_in(context, stack, console)
    context.close()


@pytest.fixture(scope="module")
def phone(browser: Browser, stack: FullStack, console: Console) -> Iterator[Page]:
    expect.set_options(timeout=UI_TIMEOUT_MS)
    context = _context(browser, stack, PHONE)
    yield _signed_in(context, stack, console)
    context.close()


def go(page: Page, stack: FullStack, route: str) -> None:
    page.goto(f"{stack.api_url}/{route}")


def fits(page: Page, testid: str | None = None, locator: Any = None) -> None:
    """The element is on screen horizontally: nothing cut off at the right."""
    target = locator if locator is not None else page.get_by_test_id(testid or "")
    box = target.bounding_box()
    assert box is not None, testid
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (testid, box, width)


def no_page_overflow(page: Page) -> None:
    scroll, width = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert scroll <= width, (scroll, width)


def fill_change(page: Page, *, waves: str, in_flight: str) -> None:
    page.get_by_test_id("project-id").fill(PROJECT)
    page.get_by_test_id("region").fill(REGION)
    page.get_by_test_id("imageid").fill(IMAGE)
    page.get_by_test_id("keyname").fill("KeyPair-web")
    page.get_by_test_id("waves").fill(waves)
    page.get_by_test_id("max-in-flight").fill(in_flight)
    page.get_by_test_id("advanced").locator("summary").click()
    page.get_by_test_id("poll-interval").fill("1")
    page.get_by_test_id("job-timeout").fill("300")


def csv_file(text: str) -> FilePayload:
    """A file as the operator's file picker hands it to the page."""
    return {"name": "fleet.csv", "mimeType": "text/csv", "buffer": text.encode()}


def downloaded_rows(download: Any) -> list[dict[str, str]]:
    text = Path(download.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0] == CSV_HEADER
    return list(csv.DictReader(io.StringIO(text)))


def open_batch_from_submit(page: Page) -> str:
    page.get_by_test_id("submit-batch").click()
    expect(page.get_by_test_id("batch-page")).to_be_visible()
    batch_id = page.get_by_test_id("batch-page").get_attribute("data-batch-id")
    assert batch_id
    return batch_id


# ---------------------------------------------------------------- B6: submit from the page


def test_a_pasted_list_is_dry_run_then_submitted(
    desktop: Page, stack: FullStack, console: Console
) -> None:
    page = desktop
    good = fine(6)
    locked = str(uuid.uuid4())
    http(
        "POST", f"{stack.sim_url}/_sim/servers", body={"servers": [{"id": locked, "locked": True}]}
    )
    go(page, stack, "#/")
    page.get_by_test_id("new-batch-link").click()
    expect(page.get_by_test_id("submit-form")).to_be_visible()
    # One a line, a comment, a blank line and a repeat: 7 distinct servers.
    pasted = "\n".join(["# tonight's web tier", *good[:3], "", good[0], *good[3:], locked])
    page.get_by_test_id("servers-text").fill(pasted)
    expect(page.get_by_test_id("servers-count")).to_have_text("7 server(s) (1 repeated, dropped)")
    fill_change(page, waves="1, 100%", in_flight="3")
    page.get_by_test_id("on-incompatible").select_option("skip")
    page.get_by_test_id("health-kind").select_option("http")
    page.get_by_test_id("health-target").fill(stack.sim_url + "/_sim/health/{server_id}")
    page.get_by_test_id("health-initial-delay").fill("0")
    page.get_by_test_id("health-interval").fill("1")
    page.get_by_test_id("health-deadline").fill("60")
    expect(page.get_by_test_id("submit-batch")).to_be_disabled()

    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("submit-status")).to_contain_text("Dry run of 7 servers")
    verdicts = page.get_by_test_id("dry-run-verdicts-row")
    expect(verdicts.filter(has_text="submit")).to_contain_text("6")
    expect(verdicts.filter(has_text="will_fail")).to_contain_text("1")
    code = page.locator("[data-testid=dry-run-code-row][data-code=server_locked]")
    expect(code).to_contain_text(locked)
    expect(code).to_contain_text("blocks")
    expect(page.get_by_test_id("plan-waves")).to_have_text("2: 1, 6 servers")
    expect(page.get_by_test_id("plan-max-in-flight")).to_have_text("3")
    expect(page.get_by_test_id("plan-on-incompatible")).to_have_text("stored skipped")
    expect(page.get_by_test_id("plan-health")).to_contain_text("/_sim/health/{server_id}")
    expect(page.get_by_test_id("submit-batch")).to_be_enabled()
    page.get_by_test_id("submit-results").scroll_into_view_if_needed()
    shot(page, "20-submit-dry-run", docs="submit.png", full_page=True)

    # A change after the dry run: Submit waits for another one.
    page.get_by_test_id("max-in-flight").fill("2")
    expect(page.get_by_test_id("submit-batch")).to_be_disabled()
    expect(page.get_by_test_id("submit-status")).to_contain_text("Changed since the dry run")
    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("plan-max-in-flight")).to_have_text("2")
    batch_id = open_batch_from_submit(page)

    batch = api(stack, "GET", f"/batches/{batch_id}")
    assert batch["total"] == 7 and batch["submitted_by"] == "bootstrap"
    assert batch["policy"]["max_in_flight"] == 2 and batch["policy"]["on_incompatible"] == "skip"
    assert batch["policy"]["health_check"]["http"].endswith("/_sim/health/{server_id}")
    # B12: pre-flight's reason on the skipped server, in its row and on its page.
    row = page.locator(f"[data-testid=server-row][data-server-id='{locked}']")
    expect(row.get_by_test_id("error-code")).to_have_text("server_locked")
    expect(page.get_by_test_id("policy-summary")).to_contain_text("health check")
    # B10: an average rate and "finished" once it has ended.
    expect(page.get_by_test_id("batch-state")).to_have_text("succeeded", timeout=60_000)
    expect(page.get_by_test_id("eta")).to_have_text("finished")
    expect(page.get_by_test_id("rate")).to_have_text(re.compile(r"^\d+\.\d/min$"))
    # B12: a server's page shows its health probes, images and pre-flight facts in the batch.
    done = next(s for s in good if s != locked)
    go(page, stack, f"#/servers/{done}?batch={batch_id}")
    expect(page.get_by_test_id("in-batch-state")).to_have_text("succeeded")
    expect(page.get_by_test_id("server-health-last")).to_contain_text("HTTP 200")
    expect(page.get_by_test_id("server-target-image")).to_have_text(IMAGE)
    expect(page.get_by_test_id("server-previous-image")).not_to_have_text("—")
    expect(page.get_by_test_id("server-facts")).to_contain_text("availability zone")
    go(page, stack, f"#/servers/{locked}?batch={batch_id}")
    expect(page.get_by_test_id("server-error")).to_contain_text("server_locked")
    expect(page.get_by_test_id("server-facts")).to_contain_text("system disk gb")


def test_a_file_of_servers_at_375_px_with_a_bad_line_then_submitted(
    phone: Page, stack: FullStack, console: Console
) -> None:
    page = phone
    console.allow(400)
    servers = fine(4)
    go(page, stack, "#/submit")
    page.get_by_test_id("source-file").check()
    bad = "\n".join(["server_id,name", *(f"{s},web-{i}" for i, s in enumerate(servers)), "nope,x"])
    page.get_by_test_id("servers-file").set_input_files(files=csv_file(bad))
    expect(page.get_by_test_id("servers-count")).to_have_text("fleet.csv: 5 server(s)")
    fill_change(page, waves="100%", in_flight="4")
    page.get_by_test_id("submit-dry-run").click()
    # A 400 names the field, and the line it came from.
    error = page.locator("[data-testid=field-error][data-field='servers[4]']")
    expect(error).to_have_text('servers[4] ("nope"): not a UUID')
    expect(page.get_by_test_id("submit-batch")).to_be_disabled()
    fits(page, locator=error)
    shot(page, "21-submit-file-400-phone")

    good = "\n".join(["server_id,name", *(f"{s},web-{i}" for i, s in enumerate(servers))])
    page.get_by_test_id("servers-file").set_input_files(files=csv_file(good))
    expect(page.get_by_test_id("servers-count")).to_have_text("fleet.csv: 4 server(s)")
    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("dry-run-summary")).to_have_text("4 server(s): 4 submit.")
    no_page_overflow(page)
    fits(page, "submit-batch")
    batch_id = open_batch_from_submit(page)
    assert api(stack, "GET", f"/batches/{batch_id}/servers")["items"][0]["server_id"] in servers
    expect(page.get_by_test_id("batch-state")).to_have_text("succeeded", timeout=60_000)
    no_page_overflow(page)
    shot(page, "22-batch-phone", docs="phone.png")


def test_a_refused_submit_names_the_conflicts(
    desktop: Page, stack: FullStack, console: Console
) -> None:
    page = desktop
    console.allow(409, 422)
    servers = fine(2)
    running = submit(stack, servers, approvals={"before_start": 1})  # holds them, pending
    go(page, stack, "#/submit")
    page.get_by_test_id("servers-text").fill("\n".join(servers))
    fill_change(page, waves="", in_flight="2")
    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("dry-run-verdicts-row").filter(has_text="conflict")).to_contain_text(
        "2"
    )
    page.get_by_test_id("submit-batch").click()
    expect(page.get_by_test_id("submit-error-message")).to_have_text(
        "HTTP 409: 2 server(s) already belong to an active batch"
    )
    expect(page.get_by_test_id("conflict")).to_have_count(2)
    expect(page.get_by_test_id("conflicts")).to_contain_text(running["id"][:8])
    # 422: a locked server, with on_incompatible reject, refuses the batch whole and says why.
    locked = str(uuid.uuid4())
    http(
        "POST", f"{stack.sim_url}/_sim/servers", body={"servers": [{"id": locked, "locked": True}]}
    )
    page.get_by_test_id("servers-text").fill("\n".join([*fine(1), locked]))
    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("dry-run-summary")).to_contain_text(
        "the batch would be refused whole"
    )
    page.get_by_test_id("submit-batch").click()
    refused = page.locator(f"[data-testid=incompatible-server][data-server-id='{locked}']")
    expect(refused).to_contain_text("server_locked")
    expect(page.get_by_test_id("incompatible")).to_contain_text(
        "server_locked \N{MULTIPLICATION SIGN}1"
    )
    # B12: the batch waiting on its gate says so, with the approvals it has and needs.
    go(page, stack, f"#/batches/{running['id']}")
    expect(page.get_by_test_id("approval-waiting")).to_contain_text(
        "Waiting for approval before the start: 0 of 1"
    )
    expect(page.get_by_test_id("action-resume")).to_be_hidden()
    page.get_by_test_id("action-reject").click()
    page.get_by_test_id("reject-dialog-input").fill("not tonight")
    page.get_by_test_id("reject-dialog-confirm").click()
    expect(page.get_by_test_id("batch-state")).to_have_text("cancelled")


def test_a_selector_is_dry_run_then_submitted(desktop: Page, stack: FullStack) -> None:
    page = desktop
    canaries = fine(3)
    entries = [
        {"id": s, "name": f"canary-{i}", "tags": ["role=canary"]} for i, s in enumerate(canaries)
    ]
    http("POST", f"{stack.sim_url}/_sim/servers", body={"servers": entries})
    go(page, stack, "#/submit")
    page.get_by_test_id("source-selector").check()
    page.get_by_test_id("selector-tags").fill("role=canary")
    page.get_by_test_id("selector-name").fill("canary-")
    expect(page.get_by_test_id("servers-count")).to_have_text("resolved by the cloud at submission")
    fill_change(page, waves="1, 100%", in_flight="3")
    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("dry-run-summary")).to_have_text("3 server(s): 3 submit.")
    batch_id = open_batch_from_submit(page)
    expect(page.get_by_test_id("selector")).to_contain_text("role=canary")
    servers = api(stack, "GET", f"/batches/{batch_id}/servers")["items"]
    assert sorted(s["server_id"] for s in servers) == sorted(canaries)
    ended(stack, batch_id)


def test_one_image_per_architecture_is_dry_run_then_submitted(
    desktop: Page, stack: FullStack
) -> None:
    """The form's "one per architecture" mode sends `images`, not `imageid`: pre-flight picks
    each server's image by its flavor's architecture (the simulator's servers are x86)."""
    page = desktop
    servers = fine(2)
    go(page, stack, "#/submit")
    page.get_by_test_id("servers-text").fill("\n".join(servers))
    fill_change(page, waves="100%", in_flight="2")
    page.get_by_test_id("imageid").fill("")
    page.get_by_test_id("image-mode").select_option("arch")
    expect(page.get_by_test_id("imageid")).to_be_hidden()
    page.get_by_test_id("image-x86").fill(IMAGE)
    page.get_by_test_id("submit-dry-run").click()
    expect(page.get_by_test_id("dry-run-summary")).to_have_text("2 server(s): 2 submit.")
    batch_id = open_batch_from_submit(page)
    batch = api(stack, "GET", f"/batches/{batch_id}")
    assert batch["os_change"].get("images") == {"x86_64": IMAGE}
    assert "imageid" not in batch["os_change"]
    ended(stack, batch_id)


# ---------------------------------------------------------------- A1, B10: follow and pause


def test_rate_and_eta_while_running_then_pause_asks_for_a_reason(
    desktop: Page, stack: FullStack
) -> None:
    page = desktop
    batch = submit(stack, fine(10), max_in_flight=1)
    go(page, stack, f"#/batches/{batch['id']}")
    expect(page.get_by_test_id("rate")).to_have_text(re.compile(r"^\d+\.\d/min$"), timeout=30_000)
    expect(page.get_by_test_id("eta")).to_have_text(re.compile(r"^\d+ (s|min \d+ s)$"))
    expect(page.get_by_test_id("live-indicator")).to_be_visible()

    page.get_by_test_id("action-pause").click()
    dialog = page.get_by_test_id("pause-dialog")
    expect(dialog).to_be_visible()
    page.get_by_test_id("pause-dialog-confirm").click()  # a reason is required
    expect(page.get_by_test_id("pause-dialog-hint")).to_be_visible()
    reason = "checking wave 1 on the dashboards"
    page.get_by_test_id("pause-dialog-input").fill(reason)
    page.get_by_test_id("pause-dialog-confirm").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("pause-reason")).to_contain_text(f"Paused: {reason}")
    expect(page.get_by_test_id("eta")).to_have_text("paused")  # no estimate while held
    paused = api(stack, "GET", f"/batches/{batch['id']}")
    assert paused["state"] == "paused" and paused["pause_reason"] == reason
    assert paused["paused_by"] == "bootstrap"
    shot(page, "23-paused-with-a-reason")
    api(stack, "POST", f"/batches/{batch['id']}/cancel")


def test_pause_dialog_at_375_px(phone: Page, stack: FullStack) -> None:
    page = phone
    batch = submit(stack, fine(6), max_in_flight=1)
    go(page, stack, f"#/batches/{batch['id']}")
    page.get_by_test_id("action-pause").click()
    fits(page, "pause-dialog")
    page.get_by_test_id("pause-dialog-input").fill("phone check")
    page.get_by_test_id("pause-dialog-input").press("Enter")
    expect(page.get_by_test_id("pause-reason")).to_contain_text("Paused: phone check")
    no_page_overflow(page)
    api(stack, "POST", f"/batches/{batch['id']}/cancel")


# ---------------------------------------------------------------- A2: missing, malformed


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_a_missing_or_malformed_batch_url_is_said(
    device: str, request: pytest.FixtureRequest, stack: FullStack, console: Console
) -> None:
    page: Page = request.getfixturevalue(device)
    console.allow(404)
    unknown = str(uuid.uuid4())
    go(page, stack, f"#/batches/{unknown}")
    expect(page.get_by_test_id("batch-missing")).to_contain_text(f"No batch {unknown}")
    expect(page.get_by_test_id("live-indicator")).to_be_hidden()
    expect(page.get_by_test_id("batch-meta")).to_have_count(0)
    with api_requests(page) as polled:  # nothing to follow: no polling
        page.wait_for_timeout(2500)
    assert polled == []
    go(page, stack, "#/batches/not-a-uuid")
    expect(page.get_by_test_id("bad-batch-id")).to_contain_text('"not-a-uuid" is not a batch id')
    expect(page.get_by_test_id("batch-list")).to_have_count(0)
    expect(page.get_by_test_id("live-indicator")).to_be_hidden()
    fits(page, "bad-batch-id")


# ---------------------------------------------------------------- B8, B9: failures by code


def test_failures_grouped_by_code_filter_the_servers_and_export_as_csv(
    desktop: Page, stack: FullStack, failures: dict[str, Any]
) -> None:
    page = desktop
    final = ended(stack, failures["id"])
    assert final["counts"]["failed"] == len(F_FAILING)
    go(page, stack, f"#/batches/{failures['id']}")
    group = page.locator(f"[data-testid=failure-group][data-code='{JOB_FAIL_CODE}']")
    expect(group.get_by_test_id("failure-group-count")).to_have_text(str(len(F_FAILING)))
    expect(group).to_contain_text(f"{len(F_FAILING)} \N{MULTIPLICATION SIGN} {JOB_FAIL_CODE}")
    group.get_by_test_id("failure-group-filter").click()
    rows = page.get_by_test_id("server-row")
    expect(rows).to_have_count(len(F_FAILING))
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.code)")) == {JOB_FAIL_CODE}
    expect(page.get_by_test_id("code-filter")).to_contain_text(JOB_FAIL_CODE)
    expect(page.get_by_test_id("state-filter")).to_have_value("failed")
    shot(page, "24-failures-by-code")

    with page.expect_download() as downloaded:
        group.get_by_test_id("failure-group-csv").click()
    lines = downloaded_rows(downloaded.value)
    assert len(lines) == len(F_FAILING)
    assert {r["error_code"] for r in lines} == {JOB_FAIL_CODE}
    assert {r["server_id"] for r in lines} == {failures["servers"][i] for i in F_FAILING}
    assert downloaded.value.suggested_filename.endswith(".csv")

    page.get_by_test_id("code-filter-clear").click()
    page.get_by_test_id("state-filter").select_option("succeeded")
    expect(rows).to_have_count(F_SIZE - len(F_FAILING))
    with page.expect_download() as downloaded:
        page.get_by_test_id("export-csv").click()
    succeeded = downloaded_rows(downloaded.value)
    assert len(succeeded) == F_SIZE - len(F_FAILING)
    assert {r["state"] for r in succeeded} == {"succeeded"}
    page.get_by_test_id("state-filter").select_option("")
    with page.expect_download() as downloaded:
        page.get_by_test_id("export-csv").click()
    every = downloaded_rows(downloaded.value)
    assert [r["server_id"] for r in every] == failures["servers"]  # submission order


# ---------------------------------------------------------------- B7: retry with options


def test_retry_with_states_and_in_flight_after_a_dry_run(
    desktop: Page, stack: FullStack, failures: dict[str, Any]
) -> None:
    page = desktop
    ended(stack, failures["id"])
    go(page, stack, f"#/batches/{failures['id']}")
    page.get_by_test_id("action-retry").click()
    expect(page.get_by_test_id("retry-state-failed")).to_be_checked()
    expect(page.get_by_test_id("retry-state-cancelled")).to_be_disabled()  # none cancelled
    page.get_by_test_id("retry-max-in-flight").fill("1")
    expect(page.get_by_test_id("retry-submit")).to_be_disabled()
    page.get_by_test_id("retry-dry-run").click()
    result = page.get_by_test_id("retry-result")
    expect(result.get_by_test_id("plan-max-in-flight")).to_have_text("1")
    expect(result.get_by_test_id("dry-run-summary")).to_contain_text(f"{len(F_FAILING)} server(s)")
    page.get_by_test_id("retry-max-in-flight").fill("2")  # changed: judged again first
    expect(page.get_by_test_id("retry-submit")).to_be_disabled()
    page.get_by_test_id("retry-dry-run").click()
    expect(result.get_by_test_id("plan-max-in-flight")).to_have_text("2")
    shot(page, "25-retry-dialog")
    page.get_by_test_id("retry-submit").click()
    expect(page.get_by_test_id("parent-link")).to_have_text(failures["id"][:8])
    child_id = page.get_by_test_id("batch-page").get_attribute("data-batch-id")
    child = api(stack, "GET", f"/batches/{child_id}")
    assert child["parent_id"] == failures["id"] and child["total"] == len(F_FAILING)
    assert child["policy"]["max_in_flight"] == 2
    ended(stack, str(child_id))


# ---------------------------------------------------------------- A3, A4: the timeline


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_timeline_details_wrap_and_the_breadcrumb_leads_back_to_the_batch(
    device: str, request: pytest.FixtureRequest, stack: FullStack, failures: dict[str, Any]
) -> None:
    page: Page = request.getfixturevalue(device)
    ended(stack, failures["id"])
    go(page, stack, f"#/batches/{failures['id']}")
    page.get_by_test_id("state-filter").select_option("failed")
    rows = page.get_by_test_id("server-row")
    expect(rows).to_have_count(len(F_FAILING))
    rows.first.get_by_test_id("server-link").click()
    expect(page.get_by_test_id("server-page")).to_be_visible()
    crumb = page.get_by_test_id("crumb-batch")
    expect(crumb).to_have_attribute("href", f"#/batches/{failures['id']}")
    # It failed here, and again in the retry batch: a row each, the same code.
    failed = page.locator("[data-testid=history-row][data-to-state=failed]")
    expect(failed.first.get_by_test_id("cloud-code")).to_have_text(JOB_FAIL_CODE)
    # The longest details: every line must wrap inside the page, none cut off on the right.
    toggles = page.get_by_test_id("details-toggle")
    for i in range(toggles.count()):
        toggles.nth(i).click()
    blocks = page.get_by_test_id("history-json")
    expect(blocks.first).to_be_visible()
    for i in range(blocks.count()):
        block = blocks.nth(i)
        block.scroll_into_view_if_needed()
        fits(page, locator=block)
        scroll, client = block.evaluate("b => [b.scrollWidth, b.clientWidth]")
        assert scroll <= client, (scroll, client)
    no_page_overflow(page)
    fits(page, "sign-out")
    shot(page, f"26-timeline-details-{device}")
    crumb.click()
    expect(page).to_have_url(re.compile(f"#/batches/{failures['id']}$"))
    expect(page.get_by_test_id("batch-state")).to_have_text("partially failed")


# ---------------------------------------------------------------- B11, A5: the batch list


def test_the_batch_list_filters_searches_and_sorts(
    desktop: Page, stack: FullStack, failures: dict[str, Any]
) -> None:
    page = desktop
    ended(stack, failures["id"])
    go(page, stack, "#/")
    rows = page.get_by_test_id("batch-row")
    expect(rows.first).to_be_visible()
    every = api(stack, "GET", "/batches?limit=500")["items"]
    expect(rows).to_have_count(len(every))

    page.get_by_test_id("batch-state-filter").select_option("partially_failed")
    partial = [b for b in every if b["state"] == "partially_failed"]
    expect(rows).to_have_count(len(partial))
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.state)")) == {"partially_failed"}
    page.get_by_test_id("batch-state-filter").select_option("")

    page.get_by_test_id("batch-search").fill(failures["id"][:8])
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-batch-id", failures["id"])
    page.get_by_test_id("batch-search").fill("bootst")  # the submitter's name
    expect(rows).to_have_count(len(every))
    page.get_by_test_id("batch-search").fill("nobody")
    expect(page.get_by_test_id("batches-empty")).to_have_text("No batch matches.")
    page.get_by_test_id("batch-search").fill("")
    expect(rows).to_have_count(len(every))

    page.get_by_test_id("batch-order").select_option("oldest")
    oldest = api(stack, "GET", "/batches?order=oldest&limit=1")["items"][0]
    expect(rows.first).to_have_attribute("data-batch-id", oldest["id"])
    page.get_by_test_id("batch-order").select_option("newest")
    expect(rows.first).to_have_attribute("data-batch-id", every[0]["id"])
    shot(page, "27-batch-list-filters")


def test_at_375_px_the_list_keeps_state_and_progress_and_sign_out_fits(
    phone: Page, stack: FullStack, failures: dict[str, Any]
) -> None:
    page = phone
    ended(stack, failures["id"])
    go(page, stack, "#/")
    row = page.locator(f"[data-testid=batch-row][data-batch-id='{failures['id']}']")
    expect(row.get_by_test_id("state-badge")).to_be_visible()
    expect(row.get_by_test_id("progress-bar")).to_be_visible()
    fits(page, locator=row.get_by_test_id("state-badge"))
    fits(page, locator=row.get_by_test_id("progress-bar"))
    fits(page, "sign-out")
    fits(page, "whoami")
    no_page_overflow(page)
    shot(page, "28-batch-list-phone")
    # The batch page: stacked server rows, the failure groups, the controls; all on screen.
    go(page, stack, f"#/batches/{failures['id']}")
    expect(page.get_by_test_id("failure-group").first).to_be_visible()
    expect(page.get_by_test_id("server-row").first).to_be_visible()
    fits(page, locator=page.get_by_test_id("server-row").first)
    fits(page, "action-retry")
    no_page_overflow(page)


def test_every_module_of_the_page_is_served_as_javascript(stack: FullStack) -> None:
    """The page is ES modules (no build step): each must come with a JavaScript type, or the
    browser refuses to run it (nosniff)."""
    static = Path(__file__).resolve().parents[2] / "orchestrator" / "web" / "static"
    modules = sorted(p.name for p in static.glob("*.js"))
    assert {"app.js", "core.js", "submit.js"} <= set(modules)
    for name in modules:
        with urllib.request.urlopen(f"{stack.api_url}/static/{name}", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/javascript"), name
            assert "Content-Security-Policy" in response.headers
