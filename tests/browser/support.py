"""What the browser modules share: the browser, screenshots, the console watch and the API
calls the tests make beside the page."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from orchestrator.simulator.shared import unit_hash
from tests.integration.stack import FullStack, http

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
TERMINAL = {"succeeded", "partially_failed", "aborted", "cancelled"}


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def shot(page: Page, name: str, *, docs: str | None = None, full_page: bool = False) -> None:
    """A screenshot in test-artifacts/; with REIMAGE_DOCS_SCREENSHOTS=1 also docs/screenshots/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)
    if docs and os.environ.get("REIMAGE_DOCS_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SHOTS / docs), full_page=full_page)


class Console:
    """Every console error and uncaught exception of the pages it watches. The browser itself
    logs the HTTP errors a test provokes ("Failed to load resource: ... status of 404"): a test
    names the statuses it provokes with allow(), anything else fails it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: set[int] = set()

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def allow(self, *statuses: int) -> None:
        self.allowed.update(statuses)

    def unexpected(self) -> list[str]:
        def provoked(error: str) -> bool:
            m = re.search(r"status of (\d{3})", error)
            return m is not None and int(m[1]) in self.allowed

        return [e for e in self.errors if not provoked(e)]

    def reset(self) -> None:
        self.errors.clear()
        self.allowed.clear()


@contextmanager
def api_requests(page: Page) -> Iterator[list[str]]:
    """The URLs of the API calls the page makes meanwhile."""
    urls: list[str] = []

    def seen(request: Request) -> None:
        if "/api/" in request.url:
            urls.append(request.url)

    page.on("request", seen)
    try:
        yield urls
    finally:
        page.remove_listener("request", seen)


def servers_where(size: int, failing: set[int], seed: int, ratio: float) -> list[str]:
    """Fresh server ids, those at `failing` positions being ones the simulator fails."""
    chosen: list[str] = []
    while len(chosen) < size:
        candidate = str(uuid.uuid4())
        fails = unit_hash(seed, candidate, "fail") < ratio
        if fails == (len(chosen) in failing):
            chosen.append(candidate)
    return chosen


def api_call(stack: FullStack, token: str, method: str, path: str, body: Any = None) -> Any:
    status, answer = http(method, f"{stack.api_url}/api/v1{path}", token=token, body=body)
    assert status in (200, 201, 202), (status, answer)
    return answer


def wait_for(
    read: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool], timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.25)
