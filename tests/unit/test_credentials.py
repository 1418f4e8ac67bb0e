"""Cloud credentials per project: the file's rules, the fallbacks, and refusing a file that
others could read, before any command starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cloud.credentials import load_credentials
from orchestrator.config import SettingsError, load_settings

PROJECT = "0605767bd8b5d3f92f0ac0123456789a"


def write(path: Path, document: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(document))
    path.chmod(mode)
    return path


def test_each_project_gets_its_own_keys_then_the_default(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json",
        {
            "default": {"ak": "AKDEF", "sk": "skdef"},
            "projects": {PROJECT: {"ak": "AKP", "sk": "skp", "security_token": "st"}},
        },
    )
    store = load_credentials(load_settings(credentials_file=str(path), cloud_ak="AKENV"))
    own = store.for_project(PROJECT)
    assert (own.access_key, own.secret_key, own.security_token) == ("AKP", "skp", "st")
    other = store.for_project("another")
    assert (other.access_key, other.secret_key) == ("AKDEF", "skdef")
    assert "skp" not in repr(own) and "skdef" not in repr(other)


def test_without_a_default_in_the_file_the_environment_is_the_default(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"projects": {PROJECT: {"ak": "AKP", "sk": "skp"}}})
    settings = load_settings(credentials_file=str(path), cloud_ak="AKENV", cloud_sk="skenv")
    assert load_credentials(settings).for_project("x").access_key == "AKENV"
    assert (
        load_credentials(load_settings(cloud_ak="A", cloud_sk="B")).for_project("x").secret_key
        == "B"
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "c.json", {"default": {"ak": "A", "sk": "B"}}, mode)
    with pytest.raises(SettingsError, match=r"accessible to group or others .*chmod 600"):
        load_credentials(load_settings(credentials_file=str(path)))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"default": {"ak": "A"}}, "ak and sk go together"),
        ({"default": {"ak": "A", "sk": "B", "password": "x"}}, "unknown field 'password'"),
        ({"default": {}}, "needs ak and sk"),
        ({"default": {"ak": "", "sk": "B"}}, "non-empty strings"),
        ({"projects": []}, '"projects" must be an object'),
        ({"keys": {}}, 'must be an object with "default"'),
    ],
)
def test_malformed_files_are_refused_with_a_reason(
    tmp_path: Path, document: object, reason: str
) -> None:
    path = write(tmp_path / "c.json", document)
    with pytest.raises(SettingsError, match=reason):
        load_credentials(load_settings(credentials_file=str(path)))


def test_the_parser_error_never_quotes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"default": {"ak": "A", "sk": "very-secret-sk"')  # cut short
    path.chmod(0o600)
    with pytest.raises(SettingsError) as caught:
        load_credentials(load_settings(credentials_file=str(path)))
    assert "very-secret-sk" not in str(caught.value)
