"""Cost that must not grow with the fleet (issue 17, part 4): the scheduler tick and the API's
hot reads, timed on PostgreSQL databases seeded with 10k, 100k and
1M pending servers (and the finished batches' history beside them), plus history's bytes.

Each size gets a database of its own, seeded by PostgreSQL itself (benchmarks/fleet_data.py):
one running batch of N servers (a tenth settled, 700 in flight, the rest pending over three
waves), a paused and a cancelled batch, and 47 finished ones of N/50 servers each. The tick runs
in this process against that database exactly as the beat's task runs it (a recording
dispatcher stands in for Celery), so what is timed is the tick's own SQL and Python.

    python -m benchmarks.scale --database-url postgresql+psycopg://127.0.0.1/postgres \
        --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from benchmarks.commands import shareable_url
from benchmarks.fleet_data import FleetShape, seed_fleet
from migrations import upgrade
from orchestrator.db.engine import normalise_url
from orchestrator.services import batches
from orchestrator.services.dispatch import run_tick

TICK_RUNS = 7
READ_RUNS = 25


@dataclass
class RecordingDispatcher:
    """Celery's place: what the tick would have sent, counted."""

    sent: dict[str, int] = field(default_factory=dict)

    def _count(self, kind: str, n: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + n

    def submit(self, batch_server_ids: list[int]) -> None:
        self._count("submit", len(batch_server_ids))

    def poll(self, batch_server_ids: list[int]) -> None:
        self._count("poll", len(batch_server_ids))

    def probe(self, batch_server_ids: list[int]) -> None:
        self._count("probe", len(batch_server_ids))

    def sweep(self, project_id: str, region: str) -> None:
        self._count("sweep", 1)


def shape_for_pending(pending: int) -> FleetShape:
    """About `pending` pending servers in one running batch, and history beside them."""
    big = max(1_000, round(pending / 0.9))
    small = max(10, big // 50)
    return FleetShape(
        big_batch=big,
        big_settled=0.1 - 700 / big if big > 7_000 else 0.0,
        big_running=600,
        big_submitting=100,
        finished_size=small,
        paused_size=small,
        cancelled_size=small,
    )


def _fresh_database(admin_url: str, name: str) -> str:
    target = make_url(normalise_url(admin_url))
    admin = create_engine(target, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = target.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def _median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def measure(engine: Engine, seeded_at: datetime) -> dict[str, Any]:
    sessions = sessionmaker(engine, expire_on_commit=False)
    with engine.connect() as connection:
        big = connection.execute(
            text("SELECT id FROM batches WHERE state = 'running' ORDER BY created_at DESC")
        ).scalar_one()
        server = connection.execute(
            text("SELECT server_id FROM batch_servers WHERE batch_id = :b ORDER BY id LIMIT 1"),
            {"b": big},
        ).scalar_one()
        pending = connection.execute(
            text("SELECT n_pending FROM batches WHERE id = :b"), {"b": big}
        ).scalar_one()
        history_bytes = connection.execute(
            text("SELECT pg_total_relation_size('server_history')")
        ).scalar_one()
        rows = connection.execute(text("SELECT count(*) FROM batch_servers")).scalar_one()
        history_rows = connection.execute(text("SELECT count(*) FROM server_history")).scalar_one()
    figures: dict[str, Any] = {
        "pending": pending,
        "batch_servers": rows,
        "history_rows": history_rows,
        "history_bytes_per_server": round(history_bytes / rows),
    }
    dispatcher = RecordingDispatcher()
    # The seeded in-flight servers fill the big batch's in-flight room but for 300 slots: the
    # first tick claims them, the next ones find the room full, as a steady state does.
    tick_ms, _ = _median_ms(
        lambda: run_tick(sessions, dispatcher, now=seeded_at, lease_s=300.0, call_timeout_s=60.0),
        TICK_RUNS,
    )
    figures["tick_ms"] = round(tick_ms, 1)
    figures["tick_sent"] = dict(dispatcher.sent)
    reads: dict[str, Callable[[], Any]] = {
        "GET batch": lambda: batches.get_batch(sessions, big),
        "GET servers page": lambda: batches.list_batch_servers(
            sessions, big, state=None, limit=100, cursor=None
        ),
        "GET servers page (pending)": lambda: batches.list_batch_servers(
            sessions, big, state="pending", limit=100, cursor=None
        ),
        "GET server history": lambda: batches.server_history(
            sessions, server, limit=100, cursor=None
        ),
        "GET batches page": lambda: batches.list_batches(sessions, limit=50, cursor=None),
    }
    figures["reads_ms"] = {
        name: round(_median_ms(read, READ_RUNS)[0], 2) for name, read in reads.items()
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql+psycopg://127.0.0.1/postgres",
        help="a PostgreSQL server's URL; one database per size is made (and dropped) there",
    )
    parser.add_argument("--sizes", default="10000,100000,1000000", help="pending servers")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, Any]] = {}
    for size in sizes:
        name = f"reimage_scale_{size}_{uuid.uuid4().hex[:6]}"
        url = _fresh_database(args.database_url, name)
        engine = create_engine(url)
        try:
            seeded_at = datetime.now(UTC)
            summary = seed_fleet(engine, shape_for_pending(size), now=seeded_at)
            print(
                f"{size:>9,} pending: seeded {summary.batch_servers:,} servers and "
                f"{summary.server_history:,} history rows in {summary.seconds:.0f} s",
                flush=True,
            )
            results[size] = measure(engine, seeded_at)
            print(json.dumps(results[size]), flush=True)
        finally:
            engine.dispose()
            if not args.keep:
                _drop(args.database_url, name)
    _print_table(results, args.database_url)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _drop(admin_url: str, name: str) -> None:
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


def _print_table(results: dict[int, dict[str, Any]], database_url: str) -> None:
    sizes = sorted(results)
    first = results[sizes[0]]
    print("\nfigure (median)".ljust(34) + "".join(f"{s:>14,}" for s in sizes) + "   last/first")
    rows: list[tuple[str, list[float]]] = [
        ("tick (ms)", [results[s]["tick_ms"] for s in sizes]),
    ]
    rows += [
        (f"{name} (ms)", [results[s]["reads_ms"][name] for s in sizes])
        for name in first["reads_ms"]
    ]
    rows.append(
        ("history bytes per server", [results[s]["history_bytes_per_server"] for s in sizes])
    )
    for label, values in rows:
        ratio = values[-1] / values[0] if values[0] else float("nan")
        print(label.ljust(33) + "".join(f"{v:>14,.1f}" for v in values) + f"   {ratio:8.2f}")
    verdict = results[sizes[-1]]["tick_ms"] / first["tick_ms"]
    print(
        f"\ntarget: tick at {sizes[-1]:,} within 1.5 x its time at {sizes[0]:,}: "
        f"{verdict:.2f} x ({'met' if verdict <= 1.5 else 'missed'})"
    )
    print(
        f"reproduce: python -m benchmarks.scale --database-url {shareable_url(database_url)} "
        f"--sizes {','.join(str(size) for size in sizes)}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
