"""docker-compose.yml: valid against the Compose specification, and wired as documented."""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from jsonschema.protocols import Validator

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# The Compose specification's JSON schema; this repository carries its own copy in tests/data/.
SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"

APP_SERVICES = ("api", "worker", "beat")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)(AK|SK)$|KEY$")
SECRET_FLAGS = ("--ak", "--sk", "--password", "--token")
INTERPOLATION = re.compile(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def validator() -> Validator:
    if not SCHEMA_FILE.is_file():
        pytest.fail(f"Compose schema not found at {SCHEMA_FILE}")
    schema = json.loads(SCHEMA_FILE.read_text())
    # The file declares "https://json-schema.org/draft-07/schema"; jsonschema knows draft 7 by
    # its canonical id only, and would otherwise fall back to the latest draft with a warning.
    declared = str(schema.get("$schema", ""))
    canonical = declared.replace("https://", "http://", 1).rstrip("#") + "#"
    cls = jsonschema.validators.validator_for({"$schema": canonical})
    assert cls is jsonschema.Draft7Validator, f"unexpected draft {declared!r}"
    cls.check_schema(schema)
    return cls(schema)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


# ------------------------------------------------------------------ schema


def test_compose_file_is_valid(compose: dict[str, Any], validator: Validator) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert problems == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("api", "ports"), "oops"),
        (("api", "depends_on", "migrate", "condition"), "service_done"),
        (("worker", "deploy"), ["replicas", 2]),
        (("beat", "restart"), 5),
        (("migrate", "comand"), ["reimage", "migrate"]),
    ],
)
def test_schema_rejects_a_broken_copy(
    compose: dict[str, Any], validator: Validator, path: tuple[str, ...], value: object
) -> None:
    broken = copy.deepcopy(compose)
    target = broken["services"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not validator.is_valid(broken)


# ------------------------------------------------------------------ structure


def test_service_names(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "beat",
        "simulator",
    }


def test_backing_services(compose: dict[str, Any]) -> None:
    postgres = services(compose)["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["environment"]["POSTGRES_DB"] == "reimage"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    redis = services(compose)["redis"]
    assert redis["image"] == "redis:7"
    assert redis["healthcheck"]["test"]


def test_migrate_is_one_shot_after_postgres(compose: dict[str, Any]) -> None:
    migrate = services(compose)["migrate"]
    assert migrate["build"] == "."
    assert migrate["command"] == ["reimage", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "ports" not in migrate
    assert "deploy" not in migrate


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_migrate_and_redis(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    assert service["build"] == "."
    assert service["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }


def test_commands(compose: dict[str, Any]) -> None:
    by_name = services(compose)
    assert by_name["api"]["command"] == ["reimage", "api", "--host", "0.0.0.0", "--port", "8080"]
    assert by_name["api"]["ports"] == ["8080:8080"]
    assert by_name["worker"]["command"] == ["reimage", "worker", "--concurrency", "4"]
    assert by_name["beat"]["command"] == ["reimage", "beat"]


def test_workers_scale_and_beat_is_single(compose: dict[str, Any]) -> None:
    assert services(compose)["worker"]["deploy"]["replicas"] == 2
    assert services(compose)["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_simulator_only_in_demo_profile(compose: dict[str, Any]) -> None:
    simulator = services(compose)["simulator"]
    assert simulator["profiles"] == ["demo"]
    command = simulator["command"]
    assert command[:2] == ["reimage", "simulate"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options["--host"] == "0.0.0.0"
    assert options["--port"] == "8700"
    assert options["--project-id"].startswith("${HUAWEICLOUD_SDK_PROJECT_ID:-")
    others = [name for name, s in services(compose).items() if name != "simulator"]
    assert all("profiles" not in services(compose)[name] for name in others)


def test_app_services_share_one_environment(compose: dict[str, Any]) -> None:
    shared = compose["x-reimage-env"]
    for name in (*APP_SERVICES, "migrate"):
        assert services(compose)[name]["environment"] == shared
    assert shared["ORCH_REDIS_URL"] == "redis://redis:6379/0"
    assert shared["ORCH_API_TOKEN"] == "${ORCH_API_TOKEN:?set ORCH_API_TOKEN}"
    optional = (
        "ORCH_ECS_ENDPOINT",
        "ORCH_IMS_ENDPOINT",
        "ORCH_EVS_ENDPOINT",
        "ORCH_SECRET_KEY",
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
    )
    assert all(name in shared for name in optional)


def test_database_url_matches_postgres(compose: dict[str, Any]) -> None:
    url = urlsplit(compose["x-reimage-env"]["ORCH_DATABASE_URL"])
    postgres = services(compose)["postgres"]["environment"]
    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/reimage")
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-reimage}"


# ------------------------------------------------------------------ secrets and interpolation


def secret_values(compose: dict[str, Any]) -> list[tuple[str, object]]:
    """(where, value) of every environment entry or command argument that holds a secret."""
    found: list[tuple[str, object]] = []
    environments = {"x-reimage-env": compose["x-reimage-env"]}
    environments.update({n: s.get("environment", {}) for n, s in services(compose).items()})
    for where, environment in environments.items():
        for name, value in environment.items():
            if SECRET_NAME.search(name):
                found.append((f"{where}.{name}", value))
            if isinstance(value, str) and "://" in value:
                found.append((f"{where}.{name} (URL password)", urlsplit(value).password))
    for name, service in services(compose).items():
        command = service.get("command", [])
        for flag, value in itertools.pairwise(command):
            if flag in SECRET_FLAGS:
                found.append((f"{name}.command {flag}", value))
    return found


def test_secrets_are_never_literal(compose: dict[str, Any]) -> None:
    found = secret_values(compose)
    assert len(found) >= 8, found  # the scan did see the secrets it is meant to check
    for where, value in found:
        # None passes the variable through from the host; a string must be one interpolation.
        if value is not None:
            assert isinstance(value, str) and INTERPOLATION.fullmatch(value), where


def test_interpolation_defaults_hold_no_braces() -> None:
    # Compose ends `${VAR:-default}` at the first `}`: a default like
    # `https://ecs.{region}.myhuaweicloud.com` would be cut short and garble the value.
    text = COMPOSE_FILE.read_text().replace("$$", "")
    assert re.findall(r"\$\{[^}]*\{", text) == []
