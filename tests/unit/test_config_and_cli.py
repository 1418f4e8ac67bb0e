"""Settings: defaults that run on one machine; a bad value is one line naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import SettingsError, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ORCH_DATABASE_URL",
        "ORCH_REDIS_URL",
        "ORCH_ECS_ENDPOINT",
        "ORCH_TICK_SECONDS",
        "ORCH_API_TOKEN",
        "ORCH_SECRET_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url == "sqlite:///reimage.db"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.endpoint_for("cn-north-4") == "https://ecs.cn-north-4.myhuaweicloud.com"
    assert settings.tick_seconds == 1
    assert settings.api_token is None and settings.secret_key is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORCH_TICK_SECONDS", "soon"),
        ("ORCH_TICK_SECONDS", "0"),
        ("ORCH_DATABASE_URL", "mysql://x"),
        ("ORCH_REDIS_URL", "http://x"),
        ("ORCH_ECS_ENDPOINT", "ecs.example.com"),
        ("ORCH_ECS_RATE", "-1"),
    ],
)
def test_malformed_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message


def test_endpoint_per_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ORCH_ECS_ENDPOINTS", '{"eu-west-101": "https://ecs.eu-west-101.example.eu/"}'
    )
    settings = load_settings()
    assert settings.endpoint_for("eu-west-101") == "https://ecs.eu-west-101.example.eu"
    assert settings.endpoint_for("cn-north-4") == "https://ecs.cn-north-4.myhuaweicloud.com"
    monkeypatch.setenv("ORCH_ECS_ENDPOINTS", '{"x-y-1": "ftp://nope"}')
    with pytest.raises(SettingsError, match=r"^ORCH_ECS_ENDPOINTS: "):
        load_settings()


def test_empty_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_SECRET_KEY", "")
    assert load_settings().secret_key is None


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_api_refuses_to_start_without_a_token() -> None:
    result = run_cli("api", "--port", "1", env={})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "reimage: ORCH_API_TOKEN is not set: the API refuses to start without a token"
    )


def test_bad_setting_stops_every_command_with_one_line() -> None:
    for command in ("migrate", "worker", "beat", "api"):
        result = run_cli(command, env={"ORCH_TICK_SECONDS": "soon", "ORCH_API_TOKEN": "t"})
        assert result.returncode == 2, command
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("reimage: ORCH_TICK_SECONDS:"), result.stderr


def test_demo_says_when_the_configured_redis_is_unreachable(tmp_path: Path) -> None:
    result = run_cli("demo", env={"ORCH_REDIS_URL": "redis://127.0.0.1:1/0"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "reimage: ORCH_REDIS_URL=redis://127.0.0.1:1/0 is unreachable"
