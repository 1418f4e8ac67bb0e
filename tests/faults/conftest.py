"""Fault tests: real processes, their own Redis and PostgreSQL, crashes on purpose."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: crash and chaos tests on a full stack (own Redis and PostgreSQL)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the item, so a fixture can tell whether its test failed
    (and keep the logs of a failed one)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
    return None
