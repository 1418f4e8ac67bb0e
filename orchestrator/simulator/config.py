"""`SimulatorConfig`: what the simulated account looks like (credentials, images, inventory, the
private image quota) and how it misbehaves (job timing, failures, throttling, the injected faults,
images that boot broken, how long a server takes to boot and an image to be made), with its
validation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.simulator.images import ImageSpec
from orchestrator.simulator.inventory import ServerSpec, parse_tag
from orchestrator.simulator.shared import is_uuid

# Every share of calls, jobs or servers that meets a fault.
RATIO_FIELDS = (
    "fail_ratio",
    "transient_error_ratio",
    "flow_control_ratio",
    "drop_ratio",
    "drop_failing_ratio",
    "slow_ratio",
    "stuck_ratio",
    "error_after_success_ratio",
    "backup_fail_ratio",
)
MAX_JOB_SECONDS_SPREAD = 0.9
# The range IMS's quota query shows for the private image quota ("min": 1, "max": 1000).
IMAGE_QUOTA_RANGE = (1, 1000)


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated account looks like and how its jobs and API calls behave."""

    ak: str
    sk: str
    project_id: str
    job_seconds: float = 5.0
    fail_ratio: float = 0.0  # share of servers whose jobs fail (decided by seed and server id)
    seed: int = 0
    # The image catalog. With neither of these every well-formed image id exists and is an
    # active default image; with either, only those (and the base image) exist. `images` are
    # default ones, `image_specs` (--images-file) described ones, which win on the same id.
    images: frozenset[str] | None = None
    image_specs: tuple[ImageSpec, ...] | None = None
    auth_token: str | None = None
    rate_limit: float | None = None  # requests per second over every API call, None: unlimited
    burst: int | None = None  # bucket size; None: one second's worth of rate_limit
    retry_after: float | None = None  # seconds in a Retry-After header on 429; None: no header
    # Faults, each decided per call (or per job) from the seed: see `faults`.
    transient_error_ratio: float = 0.0  # 500 Ecs.0615 / 503 Common.1503 before any side effect
    flow_control_ratio: float = 0.0  # changeos answers 202 Common.0024 without a job
    drop_ratio: float = 0.0  # changeos creates its job, then the connection is closed unanswered
    # The same, at least this often, for changes whose job will fail (the hardest case: the
    # server ends in ERROR on its old image, and a blind resend would change it a second time).
    drop_failing_ratio: float = 0.0
    slow_ratio: float = 0.0  # the answer comes slow_seconds late (after the side effect)
    slow_seconds: float = 10.0
    stuck_ratio: float = 0.0  # jobs that stay RUNNING forever
    job_ttl: float | None = None  # finished jobs vanish (Common.0011) this long after their end
    error_after_success_ratio: float = 0.0  # SUCCESS jobs that leave the server ERROR, old image
    job_seconds_spread: float = 0.0  # a job takes job_seconds * (1 + u), u uniform in [-X, X]
    # The servers that exist from the start (besides the lazily created ones).
    inventory: tuple[ServerSpec, ...] = ()
    inventory_size: int = 0  # that many generated servers, web-0001...
    inventory_tags: tuple[str, ...] = ()  # carried by every generated server
    strict_inventory: bool = False  # True: ids not in the inventory are 404 Ecs.0114
    # Health (`GET /_sim/health/{server_id}`): servers on these images are never healthy, and
    # a server is healthy only boot_seconds after its last change of OS ended.
    broken_images: frozenset[str] = frozenset()
    boot_seconds: float = 0.0
    # IMS images made from servers (CreateImage): how long their job takes, the share of servers
    # whose image jobs fail (decided by seed and server id), the private image quota.
    backup_seconds: float = 2.0
    backup_fail_ratio: float = 0.0
    image_quota: int = 20

    def __post_init__(self) -> None:
        problem = next(self._problems(), None)
        if problem is not None:
            raise ValueError(problem)

    @property
    def closed_catalog(self) -> bool:
        return self.images is not None or self.image_specs is not None

    @property
    def bucket_size(self) -> int:
        return self.burst or max(1, math.ceil(self.rate_limit or 1))

    def _problems(self) -> Iterator[str]:
        if not (self.ak and self.sk and self.project_id):
            yield "ak, sk and project_id are required"
        yield from self._timing_problems()
        yield from self._throttling_problems()
        for name in RATIO_FIELDS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                yield f"{name} must be within [0, 1]"
        yield from self._inventory_problems()

    def _timing_problems(self) -> Iterator[str]:
        if not _at_least_zero(self.job_seconds):
            yield "job_seconds must be a finite number >= 0"
        if not _at_least_zero(self.slow_seconds):
            yield "slow_seconds must be a finite number >= 0"
        if self.job_ttl is not None and not _at_least_zero(self.job_ttl):
            yield "job_ttl must be a finite number >= 0 (or None: never purge)"
        if not 0.0 <= self.job_seconds_spread <= MAX_JOB_SECONDS_SPREAD:
            yield f"job_seconds_spread must be within [0, {MAX_JOB_SECONDS_SPREAD}]"
        for name in ("boot_seconds", "backup_seconds"):
            if not _at_least_zero(getattr(self, name)):
                yield f"{name} must be a finite number >= 0"

    def _throttling_problems(self) -> Iterator[str]:
        if self.rate_limit is not None and not (
            math.isfinite(self.rate_limit) and self.rate_limit > 0
        ):
            yield "rate_limit must be > 0"
        if self.burst is not None and (self.burst < 1 or self.rate_limit is None):
            yield "burst must be >= 1 and needs rate_limit"
        if self.retry_after is not None and not _at_least_zero(self.retry_after):
            yield "retry_after must be a finite number >= 0"

    def _inventory_problems(self) -> Iterator[str]:
        if self.images is not None and not all(is_uuid(image) for image in self.images):
            yield "images must be UUIDs"
        if not all(is_uuid(image) and image == image.lower() for image in self.broken_images):
            yield "broken_images must be lower-case UUIDs"
        low, high = IMAGE_QUOTA_RANGE
        quota = self.image_quota
        if isinstance(quota, bool) or not isinstance(quota, int) or not low <= quota <= high:
            yield f"image_quota must be an integer within [{low}, {high}]"
        if self.image_specs is not None and not all(
            isinstance(spec, ImageSpec) for spec in self.image_specs
        ):
            yield "image_specs must hold ImageSpec entries"
        if self.inventory_size < 0:
            yield "inventory_size must be >= 0"
        try:
            for tag in self.inventory_tags:
                parse_tag(tag)
        except ValueError as error:
            yield f"inventory_tags: {error}"
        if not all(isinstance(spec, ServerSpec) for spec in self.inventory):
            yield "inventory must hold ServerSpec entries"


def _at_least_zero(value: float) -> bool:
    return math.isfinite(value) and value >= 0
