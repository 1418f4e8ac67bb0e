"""The JSON entries the simulator is given (servers in `--inventory` and `POST /_sim/servers`,
images in `--images-file` and `POST /_sim/images`): the field checks they share, and reading
one entry, a list of them, or a file of them, with errors that name the entry and the key."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.simulator.shared import is_uuid

T = TypeVar("T")
Field = Callable[[object], Any]


def uuid_field(value: object) -> str:
    if not is_uuid(value):
        raise ValueError("must be a UUID")
    return str(value)


def text_field(value: object) -> str:
    if not (isinstance(value, str) and value):
        raise ValueError("must be a non-empty string")
    return value


def flag_field(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}")
        return str(value)

    return parse


def integer_in(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer within [{low}, {high}]")
        return value

    return parse


def parse_fields(entry: object, fields: Mapping[str, Field], kind: str) -> dict[str, Any]:
    """Each key of one entry through its check; ValueError names the first bad or unknown key.
    `kind` with its article: "a server", "an image"."""
    if not isinstance(entry, dict):
        raise ValueError(f"{kind} entry must be an object")
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {sorted(fields)}")
    values: dict[str, Any] = {}
    for key, value in entry.items():
        try:
            values[key] = fields[key](value)
        except ValueError as error:
            raise ValueError(f"{key} {error}") from None
    return values


def parse_list(data: object, key: str, parse: Callable[[object], T]) -> list[T]:
    """`{key: [entry, ...]}`; ValueError says which entry is wrong (`key[i]: ...`) and why."""
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'expected {{"{key}": [...]}}')
    parsed: list[T] = []
    for index, entry in enumerate(entries):
        try:
            parsed.append(parse(entry))
        except ValueError as error:
            raise ValueError(f"{key}[{index}]: {error}") from None
    return parsed


def read_json_file(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
