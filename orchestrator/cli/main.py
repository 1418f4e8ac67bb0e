"""The `reimage` command: migrate, api, worker, beat, simulate, demo.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from orchestrator.config import Settings, SettingsError, load_settings

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit code 2, for every subcommand too."""

    def error(self, message: str) -> NoReturn:
        print(f"reimage: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class CliError(Exception):
    """A one-line message for the user; exit code 2."""


def _settings() -> Settings:
    from orchestrator.cloud.credentials import load_credentials

    try:
        settings = load_settings()
        # A credentials file open to others is refused before anything starts.
        load_credentials(settings)
        return settings
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def _configure_logging(settings: Settings | None = None, log_format: str | None = None) -> None:
    """Logs of long-running commands: JSON or text (ORCH_LOG_FORMAT), secrets redacted. A
    command that runs without our settings (the simulator) still logs, with the defaults."""
    from orchestrator.observability.logs import configure_logging

    if settings is None:
        try:
            settings = load_settings()
        except SettingsError:
            settings = Settings.model_construct()  # the defaults, unvalidated env aside
    configure_logging(settings, log_format=log_format)


def cmd_migrate(args: argparse.Namespace) -> int:
    from migrations import upgrade

    settings = _settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from orchestrator.api.serve import serve
    from workers.api_kicker import TickKicker

    if args.processes < 1:
        raise CliError("--processes must be at least 1")
    settings = _settings()
    if settings.api_token is None:
        raise CliError("ORCH_API_TOKEN is not set: the API refuses to start without a token")
    _configure_logging(settings)
    serve(
        settings,
        host=args.host,
        port=args.port,
        processes=args.processes,
        make_kick=lambda: TickKicker(settings),
    )
    return 0


def _apply_loglevel(args: argparse.Namespace) -> str:
    """--loglevel wins over ORCH_LOG_LEVEL, here and in the Celery processes started from here
    (they read the environment when Celery sets up logging)."""
    if args.loglevel:
        os.environ["ORCH_LOG_LEVEL"] = args.loglevel
    return str(args.loglevel or os.environ.get("ORCH_LOG_LEVEL") or "INFO")


def cmd_worker(args: argparse.Namespace) -> int:
    """Celery workers: by default one for submissions and polls, and one of its own for the tick
    and webhook queues, so ticks, list sweeps and webhooks never wait behind a backlog of cloud
    calls. It has two pool processes and webhook runs take at most one of them (a Redis lock),
    so a slow receiver never holds up a tick."""
    level = _apply_loglevel(args)
    _configure_logging(_settings())
    from orchestrator.cli.supervise import supervise
    from workers.app import POLL_QUEUE, SUBMIT_QUEUE, TICK_QUEUE, WEBHOOK_QUEUE

    def celery(queues: str, concurrency: int, name: str) -> tuple[str, list[str]]:
        return name, [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-Q",
            queues,
            f"--concurrency={concurrency}",
            f"--loglevel={level}",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}@%h",
        ]

    everything = f"{SUBMIT_QUEUE},{POLL_QUEUE},{TICK_QUEUE},{WEBHOOK_QUEUE}"
    if not args.supervise:
        os.execv(sys.executable, celery(args.queues or everything, args.concurrency, "reimage")[1])
    if args.queues:
        return supervise([celery(args.queues, args.concurrency, "reimage")])
    return supervise(
        [
            celery(f"{SUBMIT_QUEUE},{POLL_QUEUE}", args.concurrency, "work"),
            celery(f"{TICK_QUEUE},{WEBHOOK_QUEUE}", 2, "control"),
        ]
    )


def cmd_beat(args: argparse.Namespace) -> int:
    level = _apply_loglevel(args)
    _configure_logging(_settings())
    from workers.app import get_app

    app = get_app()
    # The leader-elected scheduler keeps its schedule in memory; the file is only a formality.
    schedule = Path(tempfile.mkdtemp(prefix="reimage-beat-")) / "schedule"
    app.start(["beat", f"--loglevel={level}", f"--schedule={schedule}"])
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator.simulator.cli import run_simulator

    _configure_logging()
    run_simulator(args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.devstack.demo import DemoError, run_demo

    _configure_logging(log_format="text")  # for the person watching, beside its live bars
    try:
        return run_demo(args)
    except DemoError as exc:
        raise CliError(str(exc)) from None


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.bench import run_bench
    from orchestrator.devstack.stack import StackError

    try:
        return run_bench(args)
    except StackError as exc:
        raise CliError(str(exc)) from None


def _add_loglevel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loglevel",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="overrides ORCH_LOG_LEVEL for this command (default: ORCH_LOG_LEVEL, INFO)",
    )


def build_parser() -> argparse.ArgumentParser:
    from orchestrator.simulator.cli import add_simulate_arguments

    parser = OneLineParser(
        prog="reimage", description="Change the OS of fleets of Huawei Cloud ECS servers, safely."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="upgrade the database schema")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("api", help="serve the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="API processes on the port (SO_REUSEPORT), kept by this one (default 1)",
    )
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "worker", help="run Celery workers (submit and poll; tick and webhooks apart)"
    )
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--queues", default=None, help="comma-separated queues (default: all)")
    _add_loglevel(p)
    p.add_argument(
        "--supervise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart the Celery worker if it dies on its own (default: on)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("beat", help="run the scheduler tick (Celery beat)")
    _add_loglevel(p)
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser("simulate", help="serve an ECS-compatible simulator")
    add_simulate_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="run a demo batch against the simulator, end to end")
    p.add_argument("--servers", type=int, default=50)
    p.add_argument("--fail-ratio", type=float, default=0.1)
    p.add_argument("--job-seconds", type=float, default=4.0)
    p.add_argument("--api-port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--keep-running",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the stack up after the batch ends (default: when run in a terminal)",
    )
    p.set_defaults(func=cmd_demo)

    from benchmarks.bench import add_bench_arguments
    from orchestrator.cli.ops import add_operator_commands
    from orchestrator.cli.tokens import add_token_commands

    add_operator_commands(sub)
    add_token_commands(sub, _settings, CliError)

    p = sub.add_parser("bench", help="measure the full stack against the lower bound and the peer")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except CliError as exc:
        print(f"reimage: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
