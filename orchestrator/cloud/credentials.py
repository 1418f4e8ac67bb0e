"""Cloud credentials per Huawei project: from a JSON file only its owner can read, or one
default from the environment (HUAWEICLOUD_SDK_AK / _SK / _SECURITY_TOKEN, ORCH_ECS_AUTH_TOKEN).

File (ORCH_CREDENTIALS_FILE), every part optional:
    {"default": {"ak": "...", "sk": "...", "security_token": "..."},
     "projects": {"<project_id>": {"ak": "...", "sk": "..."}, ...}}
A project without its own entry uses the file's default, then the environment's. Credentials
live only in memory: never in the database, history, logs, metrics, errors or webhooks.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cloud.client import Credentials
from orchestrator.config import Settings, SettingsError

_FIELDS = {"ak": "access_key", "sk": "secret_key", "security_token": "security_token"}
_FIELDS_WITH_TOKEN = {**_FIELDS, "auth_token": "auth_token"}


@dataclass(frozen=True)
class CredentialStore:
    default: Credentials
    per_project: dict[str, Credentials] = field(default_factory=dict)

    def for_project(self, project_id: str) -> Credentials:
        return self.per_project.get(project_id, self.default)

    @property
    def projects(self) -> list[str]:
        return sorted(self.per_project)


def _from_environment(settings: Settings) -> Credentials:
    def value(secret: Any) -> str | None:
        return secret.get_secret_value() if secret is not None else None

    return Credentials(
        access_key=value(settings.cloud_ak),
        secret_key=value(settings.cloud_sk),
        security_token=value(settings.cloud_security_token),
        auth_token=value(settings.cloud_auth_token),
    )


def _entry(where: str, raw: object) -> Credentials:
    if not isinstance(raw, dict):
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: {where} must be an object")
    unknown = sorted(set(raw) - set(_FIELDS_WITH_TOKEN))
    if unknown:
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: {where}: unknown field {unknown[0]!r}")
    if not all(isinstance(v, str) and v for v in raw.values()):
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: {where}: values must be non-empty strings")
    if ("ak" in raw) != ("sk" in raw):
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: {where}: ak and sk go together")
    if "ak" not in raw and "auth_token" not in raw:
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: {where}: needs ak and sk (or auth_token)")
    return Credentials(**{_FIELDS_WITH_TOKEN[k]: v for k, v in raw.items()})


def check_private(path: Path) -> None:
    """Refuse a credentials file that anyone but its owner could read or change."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"ORCH_CREDENTIALS_FILE: {path} is accessible to group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )


def load_credentials(settings: Settings) -> CredentialStore:
    environment = _from_environment(settings)
    if settings.credentials_file is None:
        return CredentialStore(environment)
    path = Path(settings.credentials_file)
    check_private(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        # The parser's message may quote the file's content: never repeat it.
        raise SettingsError(f"ORCH_CREDENTIALS_FILE: {path} is not a readable JSON file") from None
    if not isinstance(document, dict) or set(document) - {"default", "projects"}:
        raise SettingsError(
            'ORCH_CREDENTIALS_FILE: must be an object with "default" and/or "projects"'
        )
    default = _entry("default", document["default"]) if "default" in document else environment
    projects = document.get("projects", {})
    if not isinstance(projects, dict):
        raise SettingsError('ORCH_CREDENTIALS_FILE: "projects" must be an object')
    per_project = {str(p): _entry(f"projects.{p}", raw) for p, raw in projects.items()}
    return CredentialStore(default, per_project)
