"""`reimage tokens create|revoke|list`: API tokens managed on the database directly.

The administrator of the service runs these next to the database (like `reimage migrate`), so a
first admin token can be made before any token exists. The token is printed once, on stdout,
and never again: only its hash is stored. Each change is written to the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from orchestrator.domain.access import Role


def add_token_commands(sub: Any, settings_loader: Any, cli_error: type[Exception]) -> None:
    tokens = sub.add_parser("tokens", help="create, revoke or list API tokens (on the database)")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    p = actions.add_parser("create", help="create a token and print it once")
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument(
        "--project",
        action="append",
        dest="projects",
        metavar="PROJECT_ID",
        help="limit the token to this project (repeat for several; default: every project)",
    )
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.set_defaults(func=_runner(_create, settings_loader, cli_error))

    p = actions.add_parser("revoke", help="revoke a token by name or id")
    p.add_argument("token", metavar="NAME_OR_ID")
    p.set_defaults(func=_runner(_revoke, settings_loader, cli_error))

    p = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    p.add_argument("--output", choices=["table", "json"], default="table")
    p.set_defaults(func=_runner(_list, settings_loader, cli_error))


def _runner(action: Any, settings_loader: Any, cli_error: type[Exception]) -> Any:
    def run(args: argparse.Namespace) -> int:
        from orchestrator.db.engine import make_engine, make_session_factory
        from orchestrator.errors import ServiceError
        from orchestrator.services.tokens import TokenInvalid

        settings = settings_loader()
        engine = make_engine(settings.database_url)
        try:
            result: int = action(args, make_session_factory(engine))
            return result
        except TokenInvalid as exc:
            raise cli_error(
                "; ".join(f"{field}: {reason}" for field, reason in exc.fields.items())
            ) from None
        except ServiceError as exc:
            raise cli_error(exc.message) from None
        finally:
            engine.dispose()

    return run


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except Exception:  # no user name in this environment (a container without passwd)
        return "cli"


def _audit(sessions: Any, action: str, details: dict[str, Any]) -> None:
    from orchestrator.clock import utcnow
    from orchestrator.services import audit

    audit.record(
        sessions,
        {
            "at": utcnow(),
            "actor": _actor(),
            "role": Role.ADMIN.value,
            "action": action,
            "method": "CLI",
            "path": "reimage tokens",
            "batch_id": None,
            "project_id": None,
            "remote_addr": None,
            "status": 0,
            "outcome": "ok",
            "details": details,
        },
    )


def _create(args: argparse.Namespace, sessions: Any) -> int:
    from orchestrator.clock import utcnow
    from orchestrator.services import tokens

    created = tokens.create_token(
        sessions,
        name=args.name,
        role=args.role,
        projects=args.projects,
        created_by=_actor(),
        now=utcnow(),
    )
    _audit(sessions, "token.create", {"name": created.view["name"], "role": args.role})
    if args.output == "json":
        print(json.dumps({**created.view, "token": created.token}))
    else:
        scope = ", ".join(created.view["projects"] or ["every project"])
        print(created.token)
        print(
            f"token {created.view['name']!r} ({args.role}, {scope}) created; it is shown only "
            "this once: store it now",
            file=sys.stderr,
        )
    return 0


def _revoke(args: argparse.Namespace, sessions: Any) -> int:
    from orchestrator.clock import utcnow
    from orchestrator.services import tokens

    view = tokens.revoke_token(sessions, args.token, now=utcnow())
    _audit(sessions, "token.revoke", {"name": view["name"]})
    print(f"token {view['name']!r} revoked at {view['revoked_at']}")
    return 0


def _list(args: argparse.Namespace, sessions: Any) -> int:
    from orchestrator.services import tokens

    items = tokens.list_tokens(sessions)
    if args.output == "json":
        print(json.dumps(items))
        return 0
    print(f"{'NAME':<24} {'ROLE':<9} {'PROJECTS':<30} {'PREFIX':<13} {'LAST USED':<26} REVOKED")
    for t in items:
        projects = ",".join(t["projects"] or ["*"])
        print(
            f"{t['name']:<24} {t['role']:<9} {projects:<30} {t['token_prefix']:<13} "
            f"{t['last_used_at'] or '-':<26} {t['revoked_at'] or '-'}"
        )
    return 0
