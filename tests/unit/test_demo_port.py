"""The demo's API port: the one asked for, else the CLI's default (8080) when it is free, so the
CLI works without ORCH_API_URL, else any free port (the printed export line names it)."""

from __future__ import annotations

from orchestrator.devstack.demo import CLI_DEFAULT_PORT, choose_api_port


def test_the_port_asked_for_wins() -> None:
    assert choose_api_port(9123, lambda port: True, lambda: 40000) == 9123


def test_the_clis_default_port_when_it_is_free() -> None:
    asked: list[int] = []

    def is_free(port: int) -> bool:
        asked.append(port)
        return True

    assert choose_api_port(None, is_free, lambda: 40000) == CLI_DEFAULT_PORT == 8080
    assert asked == [8080]


def test_any_free_port_when_the_default_is_taken() -> None:
    assert choose_api_port(None, lambda port: False, lambda: 40000) == 40000
