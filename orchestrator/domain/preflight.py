"""Pre-flight: whether a change of OS can work on one server, and which image it gets.

One pure function (`judge`) over typed facts, called by every path that needs the decision:
the dry run, the submission (`on_incompatible`), and the send path just before each changeos.
Nothing here reads a database, a clock or the network.

The rules are Huawei's (fleet-safety-api.md section 11 and the user guide "切换操作系统"): no
switch between x86 and Kunpeng (Arm) images, nor between BIOS and UEFI images; a server needs
a system disk; spot servers cannot change OS; a locked server is refused; a yearly/monthly
server whose system disk is smaller than the image needs must be expanded first (a
pay-per-use one gets a larger disk, billed accordingly); a Windows image takes a password,
not a key pair. The cloud documents no error code for several of these (section 11), so they
are checked here before sending whatever the cloud would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.domain.verdicts import ServerSnapshot


class Architecture(StrEnum):
    X86_64 = "x86_64"
    AARCH64 = "aarch64"  # Kunpeng


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


# ECS `metadata.charging_mode` (fleet-safety-api.md section 9).
PAY_PER_USE, YEARLY_MONTHLY, SPOT = "0", "1", "2"
CHARGING_NAMES = {PAY_PER_USE: "pay_per_use", YEARLY_MONTHLY: "yearly_monthly", SPOT: "spot"}
# IMS `virtual_env_type` of an image an ECS system disk can be changed to.
SYSTEM_DISK_IMAGE = "FusionCompute"


class Verdict(StrEnum):
    """What a real run would do with the server (and what the dry run answers)."""

    SUBMIT = "submit"
    SKIP = "skip"  # already on its target image and idle
    WAIT = "wait"  # busy with another operation: asked again later
    WILL_FAIL = "will_fail"  # the cloud would refuse the change, or the change would fail
    CONFLICT = "conflict"  # pending or in flight in another batch (decided by the service)
    UNKNOWN = "unknown"  # a fact the decision needs could not be read


@dataclass(frozen=True)
class ImageFacts:
    """An IMS image as the rules need it. `firmware` BIOS when `hw_firmware_type` is absent."""

    id: str
    status: str
    min_disk_gb: int
    os_type: str  # Linux, Windows or Other
    architecture: Architecture
    firmware: Firmware
    virtual_env_type: str | None = SYSTEM_DISK_IMAGE
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "min_disk_gb": self.min_disk_gb,
            "os_type": self.os_type,
            "architecture": self.architecture.value,
            "firmware": self.firmware.value,
            "virtual_env_type": self.virtual_env_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageFacts:
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            status=str(data["status"]),
            min_disk_gb=int(data["min_disk_gb"]),
            os_type=str(data["os_type"]),
            architecture=Architecture(data["architecture"]),
            firmware=Firmware(data["firmware"]),
            virtual_env_type=data.get("virtual_env_type"),
        )


@dataclass(frozen=True)
class ServerFacts:
    """What the rules read of a server (its live state is in `snapshot`)."""

    snapshot: ServerSnapshot
    flavor_id: str | None
    charging_mode: str | None
    locked: bool
    has_system_disk: bool


@dataclass(frozen=True)
class Login:
    """How the request gives the new OS its login."""

    keyname: bool
    adminpass: bool
    user_data: bool = False


@dataclass(frozen=True)
class ChangeRequest:
    """The change a batch asks for. `images`: the image for each architecture; a batch with a
    single `imageid` gives it for every architecture (`single_image`)."""

    images: Mapping[Architecture, str]
    single_image: bool
    login: Login
    stop_server: bool  # mode withStopServer: the cloud stops a running server itself
    skip_matching: bool = True

    @classmethod
    def for_image(
        cls, image_id: str, login: Login, *, stop_server: bool, skip_matching: bool = True
    ) -> ChangeRequest:
        return cls(
            images=dict.fromkeys(Architecture, image_id),
            single_image=True,
            login=login,
            stop_server=stop_server,
            skip_matching=skip_matching,
        )

    @property
    def image_ids(self) -> frozenset[str]:
        return frozenset(self.images.values())


@dataclass(frozen=True)
class Facts:
    """Everything known about one server when it is judged.

    `server` None: the cloud does not know the server. `architecture` None: its flavor is
    unknown. `current_image` None: its present image could not be found (it may have been
    deleted). `disk_gb` None: the system disk's size is unknown. `images`: the facts of every
    image the request names, None for one IMS does not know.
    """

    server: ServerFacts | None
    architecture: Architecture | None
    current_image: ImageFacts | None
    disk_gb: int | None
    images: Mapping[str, ImageFacts | None]
    # False: the cloud kept refusing to show the server (throttled, a 5xx): `server` None then
    # says nothing about whether it exists.
    server_readable: bool = True


@dataclass(frozen=True)
class Reason:
    """Why: a stable `code`, words for a person, and the facts the rule used."""

    code: str
    message: str
    facts: dict[str, Any] = field(default_factory=dict)
    blocking: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "facts": self.facts,
            "blocking": self.blocking,
        }


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    image_id: str | None  # the image this server is (or would be) sent
    reasons: tuple[Reason, ...] = ()

    @property
    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]

    @property
    def first_blocking(self) -> Reason | None:
        return next((reason for reason in self.reasons if reason.blocking), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "image_id": self.image_id,
            "reasons": [reason.as_dict() for reason in self.reasons],
        }


# Codes and what they mean, for the OpenAPI document and the README.
CODES: dict[str, str] = {
    "server_not_found": "the cloud does not know the server",
    "server_unreadable": "the cloud kept refusing to show the server (throttled or busy); it is "
    "judged again before its changeos",
    "image_not_found": "IMS does not know the target image",
    "image_not_active": "the target image is not active (queued, saving, killed, deleted)",
    "image_not_supported": "the target image is not an ECS system-disk image (ISO, data, BMS)",
    "architecture_mismatch": "x86 and Kunpeng (Arm) images cannot replace each other, or the "
    "batch has no image for the server's architecture",
    "architecture_unknown": "the server's flavor is not listed, so its architecture is unknown",
    "firmware_mismatch": "BIOS and UEFI images cannot replace each other",
    "disk_too_small": "a yearly/monthly server's system disk is below the image's min_disk: "
    "expand it first",
    "disk_size_unknown": "the size of a yearly/monthly server's system disk could not be read",
    "login_mismatch": "a Windows image takes a password (adminpass), not a key pair",
    "server_locked": "the server is locked (e.g. by an order)",
    "spot_server": "spot-priced servers cannot change OS",
    "no_system_disk": "the server has no system disk",
    "needs_stop": "the server is running and the request has no mode withStopServer",
    "already_on_image": "the server already runs its target image (skip)",
    "busy": "the server is busy with another operation (wait)",
    # Warnings: they do not block.
    "disk_will_grow": "a pay-per-use system disk below min_disk is created larger, billed "
    "accordingly",
    "firmware_unknown": "the server's present image is gone, so its firmware is unknown",
    "login_from_user_data": "no key pair or password: the login comes from user_data only",
}


def judge(facts: Facts, request: ChangeRequest) -> Judgement:
    """The verdict for one server, with every reason that applies.

    Order: a server the cloud does not know fails; an image matters only once the server's
    architecture picks it; a server already on its image (and idle) is skipped whatever else
    holds; any blocking rule means `will_fail`; a busy server waits; else `submit`, with the
    warnings that apply.
    """
    server = facts.server
    if server is None and not facts.server_readable:
        reason = Reason("server_unreadable", CODES["server_unreadable"])
        return Judgement(Verdict.UNKNOWN, None, (reason,))
    if server is None:
        return Judgement(
            Verdict.WILL_FAIL, None, (Reason("server_not_found", CODES["server_not_found"]),)
        )
    image_id, pick_problem = _pick_image(facts, request, server)
    if image_id is None:
        assert pick_problem is not None
        unknown = pick_problem.code in UNKNOWN_CODES
        verdict = Verdict.UNKNOWN if unknown else Verdict.WILL_FAIL
        return Judgement(verdict, None, (pick_problem,))
    seen = server.snapshot
    if request.skip_matching and seen.image_id == image_id and seen.is_idle:
        reason = Reason("already_on_image", CODES["already_on_image"], {"image_id": image_id})
        return Judgement(Verdict.SKIP, image_id, (reason,))
    reasons = [*_server_rules(server, request), *_image_rules(facts, request, server, image_id)]
    blocking = [reason for reason in reasons if reason.blocking]
    if blocking and all(reason.code in UNKNOWN_CODES for reason in blocking):
        return Judgement(Verdict.UNKNOWN, image_id, tuple(reasons))
    if blocking:
        return Judgement(Verdict.WILL_FAIL, image_id, tuple(reasons))
    if not seen.is_idle:
        busy = Reason(
            "busy",
            CODES["busy"],
            {"status": seen.status, "task_state": seen.task_state},
            blocking=False,
        )
        return Judgement(Verdict.WAIT, image_id, (busy, *reasons))
    return Judgement(Verdict.SUBMIT, image_id, tuple(reasons))


# Blocking codes that say a fact is missing rather than that the change cannot work.
UNKNOWN_CODES = frozenset({"architecture_unknown", "disk_size_unknown"})


def _pick_image(
    facts: Facts, request: ChangeRequest, server: ServerFacts
) -> tuple[str | None, Reason | None]:
    architecture = facts.architecture
    if request.single_image:
        return next(iter(request.images.values())), None
    if architecture is None:
        return None, Reason(
            "architecture_unknown", CODES["architecture_unknown"], {"flavor_id": server.flavor_id}
        )
    image_id = request.images.get(architecture)
    if image_id is None:
        return None, Reason(
            "architecture_mismatch",
            f"the batch has no image for {architecture.value} servers",
            {
                "server_architecture": architecture.value,
                "flavor_id": server.flavor_id,
                "images": {arch.value: image for arch, image in request.images.items()},
            },
        )
    return image_id, None


def _server_rules(server: ServerFacts, request: ChangeRequest) -> list[Reason]:
    charging = CHARGING_NAMES.get(server.charging_mode or "", server.charging_mode)
    reasons: list[Reason] = []
    if server.locked:
        reasons.append(Reason("server_locked", CODES["server_locked"], {"locked": True}))
    if server.charging_mode == SPOT:
        reasons.append(Reason("spot_server", CODES["spot_server"], {"charging_mode": charging}))
    if not server.has_system_disk:
        reasons.append(Reason("no_system_disk", CODES["no_system_disk"], {"volumes": []}))
    if server.snapshot.status == "ACTIVE" and not request.stop_server:
        reasons.append(
            Reason("needs_stop", CODES["needs_stop"], {"status": "ACTIVE", "mode": None})
        )
    return reasons


def _image_rules(
    facts: Facts, request: ChangeRequest, server: ServerFacts, image_id: str
) -> list[Reason]:
    image = facts.images.get(image_id)
    if image is None:
        return [Reason("image_not_found", CODES["image_not_found"], {"image_id": image_id})]
    reasons: list[Reason] = []
    if image.status != "active":
        reasons.append(
            Reason(
                "image_not_active",
                f"image {image_id} is {image.status}, not active",
                {"image_id": image_id, "status": image.status},
            )
        )
    if image.virtual_env_type not in (None, SYSTEM_DISK_IMAGE):
        reasons.append(
            Reason(
                "image_not_supported",
                CODES["image_not_supported"],
                {"image_id": image_id, "virtual_env_type": image.virtual_env_type},
            )
        )
    reasons += _architecture_rule(facts, server, image)
    reasons += _firmware_rule(facts, image)
    reasons += _disk_rule(facts, server, image)
    reasons += _login_rule(request.login, image)
    return reasons


def _architecture_rule(facts: Facts, server: ServerFacts, image: ImageFacts) -> list[Reason]:
    architecture = facts.architecture
    if architecture is None:
        # A single image: the cloud may still refuse it; nothing proves it will.
        return [
            Reason(
                "architecture_unknown",
                CODES["architecture_unknown"],
                {"flavor_id": server.flavor_id, "image_architecture": image.architecture.value},
                blocking=False,
            )
        ]
    if architecture is image.architecture:
        return []
    return [
        Reason(
            "architecture_mismatch",
            f"a {architecture.value} server cannot change to a {image.architecture.value} image",
            {
                "server_architecture": architecture.value,
                "flavor_id": server.flavor_id,
                "image_id": image.id,
                "image_architecture": image.architecture.value,
            },
        )
    ]


def _firmware_rule(facts: Facts, image: ImageFacts) -> list[Reason]:
    current = facts.current_image
    if current is None:
        return [
            Reason(
                "firmware_unknown",
                CODES["firmware_unknown"],
                {"image_firmware": image.firmware.value},
                blocking=False,
            )
        ]
    if current.firmware is image.firmware:
        return []
    return [
        Reason(
            "firmware_mismatch",
            f"a {current.firmware.value.upper()} server cannot change to a "
            f"{image.firmware.value.upper()} image",
            {
                "current_image_id": current.id,
                "server_firmware": current.firmware.value,
                "image_id": image.id,
                "image_firmware": image.firmware.value,
            },
        )
    ]


def _disk_rule(facts: Facts, server: ServerFacts, image: ImageFacts) -> list[Reason]:
    if not server.has_system_disk:
        return []  # no_system_disk already says it
    charging = CHARGING_NAMES.get(server.charging_mode or "", server.charging_mode)
    size = facts.disk_gb
    about = {"disk_gb": size, "min_disk_gb": image.min_disk_gb, "charging_mode": charging}
    if size is None:
        if server.charging_mode == YEARLY_MONTHLY:
            return [Reason("disk_size_unknown", CODES["disk_size_unknown"], about)]
        return []
    if size >= image.min_disk_gb:
        return []
    if server.charging_mode == YEARLY_MONTHLY:
        return [
            Reason(
                "disk_too_small",
                f"the system disk is {size} GB and the image needs {image.min_disk_gb} GB: "
                "a yearly/monthly server's disk must be expanded first",
                about,
            )
        ]
    return [
        Reason(
            "disk_will_grow",
            f"the new system disk is created at {image.min_disk_gb} GB (now {size} GB), "
            "billed accordingly",
            about,
            blocking=False,
        )
    ]


def _login_rule(login: Login, image: ImageFacts) -> list[Reason]:
    about = {
        "image_os_type": image.os_type,
        "keyname": login.keyname,
        "adminpass": login.adminpass,
        "user_data": login.user_data,
    }
    if image.os_type == "Windows" and (login.keyname or not login.adminpass):
        return [Reason("login_mismatch", CODES["login_mismatch"], about)]
    if not (login.keyname or login.adminpass):
        if login.user_data:
            return [
                Reason("login_from_user_data", CODES["login_from_user_data"], about, blocking=False)
            ]
        return [Reason("login_mismatch", "neither a key pair nor a password is given", about)]
    return []
