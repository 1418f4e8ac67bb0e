"""`reimage simulate`: its command-line options and the loop that serves the simulator until
SIGINT or SIGTERM.

Besides the account, the images, the inventory and the faults, the options set what a health
gate and a backup meet: `--broken-images` (servers on them are never healthy at
`GET /_sim/health/{server_id}`), `--boot-seconds` (how long after its change of OS a server
becomes healthy), `--backup-seconds` and `--backup-fail-ratio` (how long an image made from a
server takes, and the share of servers whose image jobs fail), `--image-quota` (the private
image quota). Each can also change at run time through `POST /_sim/faults`.

`--tls-dir DIR` serves HTTPS: a private CA and a certificate for 127.0.0.1 and localhost made
at start, the CA's certificate written to DIR/ca.pem for clients to trust (`ORCH_ECS_CA_BUNDLE`).
`--latency-ms N` adds N ms before every answer of the cloud's routes (not `/_sim/`), as the
network to a real region would.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import ssl
from pathlib import Path

from aiohttp import web

from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cloud import ServerSpec, SimulatorConfig, is_uuid
from orchestrator.simulator.config import IMAGE_QUOTA_RANGE, MAX_JOB_SECONDS_SPREAD
from orchestrator.simulator.flavors import flavor_ids
from orchestrator.simulator.images import ImageSpec, load_images
from orchestrator.simulator.inventory import load_inventory, parse_tags
from orchestrator.simulator.tls import make_server_tls

log = logging.getLogger("reimage.simulator")


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8700, help="port to listen on (0: any)")
    parser.add_argument("--ak", required=True, help="access key the clients sign with")
    parser.add_argument("--sk", required=True, help="secret key the clients sign with")
    parser.add_argument("--project-id", required=True, help="the only project id accepted")
    parser.add_argument(
        "--job-seconds",
        type=_non_negative_float,
        default=5.0,
        metavar="S",
        help="how long a changeos job takes",
    )
    parser.add_argument(
        "--fail-ratio",
        type=_ratio,
        default=0.0,
        metavar="F",
        help="share of servers whose changeos job fails, within [0, 1]",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="decides which servers fail and which calls and jobs meet a fault",
    )
    parser.add_argument(
        "--images",
        type=_image_ids,
        default=None,
        metavar="ID,...",
        help="the only image ids that exist, besides the base image every server starts on: "
        "active Linux x86 BIOS images (default, with no --images-file: every well-formed UUID)",
    )
    parser.add_argument(
        "--images-file",
        type=_images_file,
        default=None,
        metavar="FILE",
        help='images described: {"images": [{"id", "name", "status", "min_disk", "min_ram", '
        '"os_type", "os_version", "platform", "architecture" (x86|arm), "firmware" '
        '(bios|uefi|null), "cloud_init", "visibility" (private|public|shared), "protected"}, '
        "...]} as POST /_sim/images takes; "
        "with it, only these, --images and the base image exist",
    )
    parser.add_argument("--auth-token", default=None, help="an X-Auth-Token also accepted")
    parser.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=None,
        metavar="R",
        help="requests per second over all API calls before 429 APIGW.0308",
    )
    parser.add_argument(
        "--burst",
        type=_positive_int,
        default=None,
        metavar="B",
        help="bucket size of --rate-limit (default: one second's worth)",
    )
    parser.add_argument(
        "--retry-after",
        type=_non_negative_float,
        default=None,
        metavar="S",
        help="send 'Retry-After: S' with every 429 (default: no header)",
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="serve HTTPS: a CA and a certificate for 127.0.0.1/localhost made at start, the "
        "CA certificate written to DIR/ca.pem (for ORCH_ECS_CA_BUNDLE); default: plain HTTP",
    )
    parser.add_argument(
        "--latency-ms",
        type=_non_negative_float,
        default=0.0,
        metavar="N",
        help="network latency: N ms before every answer but those of /_sim/ (default 0)",
    )
    _add_fault_arguments(parser)
    _add_inventory_arguments(parser)
    _add_health_and_backup_arguments(parser)


def _add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    ratios = {
        "--transient-error-ratio": "share of changeos/show calls answered 500 Ecs.0615 or "
        "503 Common.1503, in turn, before any side effect",
        "--flow-control-ratio": "share of changeos calls answered 202 Common.0024, no job",
        "--drop-ratio": "share of changeos calls whose job is created, then the connection "
        "closed without an answer",
        "--drop-failing-ratio": "the same, at least this often, for changes whose job will "
        "fail (the server then ends in ERROR on its old image)",
        "--slow-ratio": "share of API calls answered --slow-seconds late (after the side effect)",
        "--stuck-ratio": "share of jobs that stay RUNNING forever",
        "--error-after-success-ratio": "share of SUCCESS jobs that leave the server ERROR on "
        "its old image",
    }
    for flag, help_text in ratios.items():
        parser.add_argument(flag, type=_ratio, default=0.0, metavar="F", help=help_text)
    parser.add_argument(
        "--slow-seconds",
        type=_non_negative_float,
        default=10.0,
        metavar="S",
        help="how late a --slow-ratio answer comes",
    )
    parser.add_argument(
        "--job-ttl",
        type=_non_negative_float,
        default=None,
        metavar="S",
        help="purge jobs S seconds after they end: ShowJob then answers 400 Common.0011 "
        "(default: never)",
    )
    parser.add_argument(
        "--job-seconds-spread",
        type=_spread,
        default=0.0,
        metavar="X",
        help=f"a job takes --job-seconds * (1 + u), u uniform in [-X, X], "
        f"X within [0, {MAX_JOB_SECONDS_SPREAD}]",
    )


def _add_inventory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inventory",
        type=_inventory_file,
        default=(),
        metavar="FILE",
        help='servers to create at start: {"servers": [...]} as POST /_sim/servers takes; '
        "entry keys: id, name, tags, status, locked, charging_mode (0|1|2), has_system_disk, "
        f"image_id, key_name, task_state, busy_for_s, missing, flavor_id ({', '.join(flavor_ids())}"
        "; kc1 are Kunpeng), system_disk_size (GB), availability_zone",
    )
    parser.add_argument(
        "--inventory-size",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="also create N servers web-0001... (ids derived from --seed)",
    )
    parser.add_argument(
        "--inventory-tags",
        type=_tags,
        default=(),
        metavar="KEY=VALUE,...",
        help="tags every --inventory-size server carries",
    )
    parser.add_argument(
        "--strict-inventory",
        action="store_true",
        help="ids not in the inventory are 404 Ecs.0114 (default: any UUID exists)",
    )


def _add_health_and_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broken-images",
        type=_image_ids,
        default=frozenset(),
        metavar="ID,...",
        help="images that boot broken: servers on them are never healthy at "
        "GET /_sim/health/{server_id} (503)",
    )
    parser.add_argument(
        "--boot-seconds",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="a server is healthy only S seconds after its change of OS ended (default 0)",
    )
    parser.add_argument(
        "--backup-seconds",
        type=_non_negative_float,
        default=2.0,
        metavar="S",
        help="how long the IMS job of an image made from a server (CreateImage) takes "
        "(default 2); the image is 'saving' meanwhile, then 'active'",
    )
    parser.add_argument(
        "--backup-fail-ratio",
        type=_ratio,
        default=0.0,
        metavar="F",
        help="share of servers whose image jobs fail (the image then goes 'killed'), within [0, 1]",
    )
    low, high = IMAGE_QUOTA_RANGE
    parser.add_argument(
        "--image-quota",
        type=_image_quota,
        default=20,
        metavar="N",
        help=f"the private image quota, within [{low}, {high}] (default 20): CreateImage "
        "answers IMG.0015 once the project's private images (the base image aside) reach it",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        ak=args.ak,
        sk=args.sk,
        project_id=args.project_id,
        job_seconds=args.job_seconds,
        fail_ratio=args.fail_ratio,
        seed=args.seed,
        images=args.images,
        image_specs=args.images_file,
        auth_token=args.auth_token,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=args.retry_after,
        transient_error_ratio=args.transient_error_ratio,
        flow_control_ratio=args.flow_control_ratio,
        drop_ratio=args.drop_ratio,
        drop_failing_ratio=args.drop_failing_ratio,
        slow_ratio=args.slow_ratio,
        slow_seconds=args.slow_seconds,
        stuck_ratio=args.stuck_ratio,
        job_ttl=args.job_ttl,
        error_after_success_ratio=args.error_after_success_ratio,
        job_seconds_spread=args.job_seconds_spread,
        inventory=args.inventory,
        inventory_size=args.inventory_size,
        inventory_tags=args.inventory_tags,
        strict_inventory=args.strict_inventory,
        broken_images=args.broken_images,
        boot_seconds=args.boot_seconds,
        backup_seconds=args.backup_seconds,
        backup_fail_ratio=args.backup_fail_ratio,
        image_quota=args.image_quota,
    )


def run_simulator(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM; must run in the main thread (signal handlers)."""
    try:
        config = config_from_args(args)
    except ValueError as error:  # e.g. --burst without --rate-limit
        raise SystemExit(f"reimage simulate: {error}") from None
    context: ssl.SSLContext | None = None
    tls_dir: Path | None = getattr(args, "tls_dir", None)
    if tls_dir is not None:
        try:
            tls = make_server_tls(tls_dir)
        except OSError as error:
            raise SystemExit(f"reimage simulate: --tls-dir {tls_dir}: {error}") from None
        context = tls.context
        print(f"simulator CA certificate: {tls.ca_path}", flush=True)
        log.info("simulator CA certificate written", extra={"ca_path": str(tls.ca_path)})
    latency_s = getattr(args, "latency_ms", 0.0) / 1000
    asyncio.run(_serve(config, args.host, args.port, ssl_context=context, latency_s=latency_s))


async def _serve(
    config: SimulatorConfig,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    latency_s: float = 0.0,
) -> None:
    runner = web.AppRunner(create_simulator_app(config, latency_s=latency_s))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        bound_port = runner.addresses[0][1]  # the real one when port 0 was asked for
        scheme = "https" if ssl_context is not None else "http"
        print(f"simulator listening on {scheme}://{host}:{bound_port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def _ratio(text: str) -> float:
    value = _finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not within [0, 1]")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _spread(text: str) -> float:
    value = _finite_float(text)
    if not 0.0 <= value <= MAX_JOB_SECONDS_SPREAD:
        raise argparse.ArgumentTypeError(f"{text} is not within [0, {MAX_JOB_SECONDS_SPREAD}]")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not an integer") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _image_quota(text: str) -> int:
    value = _integer(text)
    low, high = IMAGE_QUOTA_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is not within [{low}, {high}]")
    return value


def _tags(text: str) -> tuple[str, ...]:
    try:
        return parse_tags(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _inventory_file(path: str) -> tuple[ServerSpec, ...]:
    try:
        return load_inventory(path)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _images_file(path: str) -> tuple[ImageSpec, ...]:
    try:
        return load_images(path)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _image_ids(text: str) -> frozenset[str]:
    ids = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [image for image in ids if not is_uuid(image)]
    if bad or not ids:
        raise argparse.ArgumentTypeError(f"not image UUIDs: {', '.join(bad) or text!r}")
    return frozenset(ids)
