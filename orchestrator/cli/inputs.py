"""What the operator gives the CLI, checked before any request: ids, the values of the flags
parsed by hand, and server lists read from a file or stdin.

Each problem is a `UsageError` of one line that names what was wrong: the flag (`--waves: ...`),
the id (`batch id 12345 is not a UUID`), or the file and line (`fleet.csv line 4: ...`).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.ids import canonical_uuid


class UsageError(Exception):
    """Bad input from the operator: one line, exit code 2."""


def uuid_arg(value: str, what: str) -> str:
    """`value` as a lower-case UUID; `what` names it in the error (`batch id`, `server id`)."""
    canonical = canonical_uuid(value.strip())
    if canonical is None:
        raise UsageError(f"{what} {value} is not a UUID")
    return canonical


# ------------------------------------------------------------------ counts and percentages

_PERCENT = re.compile(r"(\d{1,3})%")


def amount(flag: str, text: str, *, minimum: int = 1) -> int | str:
    """A count (an integer >= `minimum`) or a percentage (`minimum`% to 100%), as the API takes
    it: `5` -> 5, `10%` -> "10%". The error names the flag and the value."""
    value = text.strip()
    if value.isdigit() and int(value) >= minimum:
        return int(value)
    match = _PERCENT.fullmatch(value)
    if match is not None and minimum <= int(match[1]) <= 100:
        return f"{int(match[1])}%"
    raise UsageError(
        f"{flag}: {text!r} is not a count (an integer >= {minimum}) or a percentage "
        f"from {minimum}% to 100%, like 10%"
    )


def amounts(flag: str, text: str, *, minimum: int = 1) -> list[int | str]:
    """A comma-separated list of `amount`s (`--waves 1,10%,100%`)."""
    return [amount(flag, item, minimum=minimum) for item in _items(flag, text)]


def wave_numbers(flag: str, text: str) -> list[int]:
    """Wave numbers >= 1, comma-separated (`--pause-after-waves 1,2`)."""
    numbers: list[int] = []
    for item in _items(flag, text):
        if not (item.isdigit() and int(item) >= 1):
            raise UsageError(f"{flag}: {item!r} is not a wave number (an integer >= 1)")
        numbers.append(int(item))
    return numbers


def choices(flag: str, text: str, allowed: Sequence[str]) -> list[str]:
    """Comma-separated words, each one of `allowed` (`--states failed,cancelled`)."""
    items = _items(flag, text)
    for item in items:
        if item not in allowed:
            raise UsageError(f"{flag}: {item!r} is not one of {', '.join(allowed)}")
    return items


def spread_rule(text: str) -> dict[str, int | str]:
    """`--spread KIND=N`: at most N (or N%) in flight per value of the domain KIND."""
    kind, sep, limit = text.rpartition("=")
    if not sep or not kind.strip():
        raise UsageError(f"--spread: {text!r} is not KIND=N, e.g. availability_zone=5")
    return {"by": kind.strip(), "max_in_flight": amount("--spread", limit)}


def tags(flag: str, values: Iterable[str]) -> list[str]:
    """Selector tags, each `key=value` (no comma; a key without spaces)."""
    found: list[str] = []
    for value in values:
        if _TAG.fullmatch(value.strip()) is None:
            raise UsageError(f"{flag}: {value!r} is not key=value (no comma, key without spaces)")
        found.append(value.strip())
    return found


_TAG = re.compile(r"[^=,\s]{1,128}=[^,]{0,255}")


def server_ids(flag: str, text: str) -> list[str]:
    """Comma-separated server UUIDs (`rollback --servers a,b`), each checked, none twice."""
    servers: list[str] = []
    for item in _items(flag, text):
        server = canonical_uuid(item)
        if server is None:
            raise UsageError(f"{flag}: {item!r} is not a server UUID")
        if server in servers:
            raise UsageError(f"{flag}: {item} is given twice")
        servers.append(server)
    return servers


def _items(flag: str, text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise UsageError(f"{flag}: {text!r} has an empty item; give values separated by commas")
    return items


# ------------------------------------------------------------------ server lists


@dataclass(frozen=True)
class ServerList:
    """Server ids read from `label` (a file name, or "stdin"), with the line of each."""

    label: str
    ids: list[str]
    lines: list[int]

    def where(self, index: int) -> str:
        """`fleet.csv line 7` for the id at `index` of the request's `servers`."""
        if 0 <= index < len(self.lines):
            return f"{self.label} line {self.lines[index]}"
        return f"servers[{index}]"


_SERVER_INDEX = re.compile(r"servers\[(\d+)\]")


def map_server_fields(fields: dict[str, str], servers: ServerList) -> dict[str, str]:
    """The API's `servers[3]: duplicate of servers[1]` as `fleet.csv line 5: duplicate of
    fleet.csv line 3`: the operator's file, not the request, is what they can fix."""

    def where(match: re.Match[str]) -> str:
        return servers.where(int(match[1]))

    return {
        _SERVER_INDEX.sub(where, name): _SERVER_INDEX.sub(where, reason)
        for name, reason in fields.items()
    }


def read_servers(source: str, column: str | None) -> ServerList:
    """Server UUIDs from a file (one a line, `#` comments, blank lines skipped; or the CSV
    column `column`) or stdin (`-`). Every id is checked here, so a mistake is reported at its
    line: `fleet.csv line 4: 'web-3' is not a server UUID (and 2 more bad lines)`."""
    label = "stdin" if source == "-" else source
    try:
        # utf-8-sig: a file saved by a spreadsheet may start with a byte order mark.
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {source}: not UTF-8 text") from None
    text = text.removeprefix("\ufeff")
    entries = _csv_entries(label, text, column) if column else _line_entries(text)
    problems: list[str] = []
    ids: list[str] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for line, value in entries:
        if value is None:
            problems.append(f"{label} line {line}: no {column} value")
            continue
        server = canonical_uuid(value)
        if server is None:
            problems.append(f"{label} line {line}: {value!r} is not a server UUID")
            continue
        if server in first_line:
            problems.append(f"{label} line {line}: {value} repeats line {first_line[server]}")
            continue
        first_line[server] = line
        ids.append(server)
        lines.append(line)
    if problems:
        more = len(problems) - 1
        raise UsageError(
            problems[0] + (f" (and {more} more bad line{'s' if more > 1 else ''})" if more else "")
        )
    if not ids:
        raise UsageError(f"{label}: no server ids")
    return ServerList(label, ids, lines)


def _line_entries(text: str) -> list[tuple[int, str | None]]:
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _csv_entries(label: str, text: str, column: str) -> list[tuple[int, str | None]]:
    reader = csv.DictReader(io.StringIO(text))
    entries: list[tuple[int, str | None]] = []
    try:
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise UsageError(f"{label}: no CSV column named {column!r}")
        for row in reader:
            value = row.get(column)
            # A row too short for the column, or an empty cell, is a mistake to name.
            entries.append((reader.line_num, value.strip() if value and value.strip() else None))
    except csv.Error as exc:
        raise UsageError(f"{label} line {reader.line_num}: not CSV: {exc}") from None
    return entries
