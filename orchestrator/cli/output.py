"""How the operator commands print: tables fitted to the terminal that never cut a value (an id
least of all), JSON (an object for one thing, an array for a listing) and CSV.

A table at a narrow width first drops its least important columns (`Col.drop`); free text
(`Col.wrap`) wraps inside its column. When even the columns that are never dropped do not fit,
each row is printed as a block of `name  value` lines instead: every value whole, at any width.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

# A wrapping column is never narrower than this (or its longest value, if shorter).
WRAP_MIN = 12


@dataclass(frozen=True)
class Col:
    """A column: the row's key, its header in a table (default: the key), whether it may be
    left out at a narrow width (0: never; the highest number goes first), whether it wraps."""

    key: str
    label: str | None = None
    drop: int = 0
    wrap: bool = False

    @property
    def header(self) -> str:
        return self.label or self.key


Columns = Sequence[Col | str]


def _cols(columns: Columns) -> list[Col]:
    return [c if isinstance(c, Col) else Col(c) for c in columns]


def cell(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value)


def _natural(rows: Sequence[Mapping[str, Any]], col: Col) -> int:
    """The width of the column's widest line (header included)."""
    lines = [col.header, *(line for row in rows for line in cell(row, col.key).splitlines())]
    return max(cell_len(line) for line in lines)


def column_widths(
    rows: Sequence[Mapping[str, Any]], cols: Sequence[Col], width: int
) -> list[int] | None:
    """Each column's width (padding and borders aside) so the table is at most `width` wide,
    or None when it cannot be: columns that do not wrap keep their widest value whole."""
    natural = [_natural(rows, col) for col in cols]
    room = width - (3 * len(cols) + 1)  # a space either side of each cell, and the borders
    widths = [n if not col.wrap else min(n, WRAP_MIN) for col, n in zip(cols, natural, strict=True)]
    if sum(widths) > room:
        return None
    spare = room - sum(widths)
    while spare > 0:  # the room left goes to the wrapping columns, a character at a time
        short = [i for i, col in enumerate(cols) if col.wrap and widths[i] < natural[i]]
        if not short:
            break
        for i in short[:spare]:
            widths[i] += 1
        spare -= min(spare, len(short))
    return widths


def fit(
    rows: Sequence[Mapping[str, Any]], columns: Columns, width: int
) -> tuple[list[Col], list[int]] | None:
    """The columns a table shows at `width` and their widths: the droppable ones go, the
    highest `drop` first, until the rest fit; None when even those never dropped do not."""
    shown = _cols(columns)
    while True:
        widths = column_widths(rows, shown, width)
        if widths is not None:
            return shown, widths
        droppable = [col for col in shown if col.drop]
        if not droppable:
            return None
        shown.remove(max(droppable, key=lambda col: col.drop))


def table_of(
    rows: Sequence[Mapping[str, Any]], columns: Columns, width: int, title: str = ""
) -> Table | None:
    """The table of `rows` at most `width` wide, every value whole; None when none fits."""
    fitted = fit(rows, columns, width)
    if fitted is None:
        return None
    shown, widths = fitted
    table = Table(
        *(
            Column(col.header, width=w, no_wrap=not col.wrap, overflow="fold")
            for col, w in zip(shown, widths, strict=True)
        ),
        title=title or None,
    )
    for row in rows:
        table.add_row(*(Text(cell(row, col.key)) for col in shown))
    return table


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Columns,
    console: Console | None = None,
    title: str = "",
) -> None:
    """A table as wide as the console at most, or records (see the module's note)."""
    console = console or Console()
    table = table_of(rows, columns, console.width, title)
    if table is None:
        if title:
            console.print(Text(title), soft_wrap=True)
        print_records(rows, columns, console)
    else:
        console.print(table)


def print_records(
    rows: Sequence[Mapping[str, Any]], columns: Columns, console: Console | None = None
) -> None:
    """Each row as lines of `header  value`, a blank line between rows: for widths at which
    no table fits. Nothing is cut; a long value wraps like any text."""
    console = console or Console()
    cols = _cols(columns)
    pad = max(cell_len(col.header) for col in cols)
    for index, row in enumerate(rows):
        if index:
            console.print()
        for col in cols:
            value = cell(row, col.key)
            if value:
                console.print(
                    Text(f"{col.header:<{pad}}  {value}"), soft_wrap=True, highlight=False
                )


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Columns) -> str:
    buffer = io.StringIO()
    keys = [col.key for col in _cols(columns)]
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def emit(rows: Sequence[Mapping[str, Any]], columns: Columns, output: str, title: str = "") -> None:
    """A listing: a JSON array, CSV with a header, or a table."""
    if output == "json":
        print(to_json(list(rows)))
    elif output == "csv":
        print(to_csv(rows, columns), end="")
    else:
        print_table(rows, columns, title=title)


def emit_one(row: Mapping[str, Any], columns: Columns, output: str) -> None:
    """One thing (a batch): a JSON object, or CSV / a table of one row."""
    if output == "json":
        print(to_json(row))
    else:
        emit([row], columns, output)


def cloud_error(details: Any) -> tuple[str | None, str | None]:
    """The cloud's error in a history row's `details`, as the web page reads it: an API error
    (`code`, `message`: a refused submission), a failed job's `job.error_code` and
    `job.fail_reason`, or the error that made a job vanish (`job_gone`)."""
    if not isinstance(details, dict):
        return None, None
    if details.get("code") or details.get("message"):
        return _text(details.get("code")), _text(details.get("message"))
    job = details.get("job")
    if isinstance(job, dict) and (job.get("error_code") or job.get("fail_reason")):
        return _text(job.get("error_code")), _text(job.get("fail_reason"))
    gone = details.get("job_gone")
    if isinstance(gone, dict):
        return _text(gone.get("code")), _text(gone.get("message"))
    return None, None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
