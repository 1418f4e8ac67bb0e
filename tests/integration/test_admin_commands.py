"""The admin commands of the security model, as an operator runs them: `reimage tokens` on the
database (token printed once, only its hash kept, audited), and every long-running command
refusing a credentials file that others could read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from orchestrator.db.engine import normalise_url

PROJECT_ONE, PROJECT_TWO = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def reimage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(url: str, query: str) -> list[Any]:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(query)).all())
    finally:
        engine.dispose()


def test_tokens_create_list_revoke_from_the_command_line(sqlite_url: str) -> None:
    env = {"ORCH_DATABASE_URL": sqlite_url}
    created = reimage(
        "tokens",
        "create",
        "--name",
        "deployer",
        "--role",
        "operator",
        "--project",
        PROJECT_ONE,
        "--project",
        PROJECT_TWO,
        env=env,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("rmg_") and "\n" not in token
    assert "shown only this once" in created.stderr and token not in created.stderr

    listed = reimage("tokens", "list", "--output", "json", env=env)
    [entry] = json.loads(listed.stdout)
    assert entry["name"] == "deployer" and entry["projects"] == [PROJECT_ONE, PROJECT_TWO]
    assert token not in listed.stdout and entry["token_prefix"] == token[:12]
    assert token not in json.dumps(
        [list(map(str, r)) for r in rows(sqlite_url, "SELECT * FROM api_tokens")]
    )

    again = reimage("tokens", "create", "--name", "deployer", "--role", "viewer", env=env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already exists" in again.stderr
    bad = reimage(
        "tokens", "create", "--name", "x", "--role", "viewer", "--project", "a/b", env=env
    )
    assert bad.returncode == 2 and "projects:" in bad.stderr

    revoked = reimage("tokens", "revoke", "deployer", env=env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert reimage("tokens", "revoke", "nobody", env=env).returncode == 2

    audit = rows(sqlite_url, "SELECT actor, action, method FROM audit_log ORDER BY id")
    assert [(a.split(":")[0], b, c) for a, b, c in audit] == [
        ("cli", "token.create", "CLI"),
        ("cli", "token.revoke", "CLI"),
    ]


@pytest.mark.parametrize("command", ["api", "worker", "beat", "migrate"])
def test_commands_refuse_to_start_with_an_open_file(tmp_path: Path, command: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"default": {"ak": "A", "sk": "secret-B"}}))
    path.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", command],
        env={
            **os.environ,
            "ORCH_CREDENTIALS_FILE": str(path),
            "ORCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "ORCH_API_TOKEN": "t" * 20,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ORCH_CREDENTIALS_FILE" in lines[0] and "chmod 600" in lines[0]
    assert "secret-B" not in result.stderr + result.stdout
