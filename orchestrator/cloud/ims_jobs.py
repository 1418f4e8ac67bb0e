"""The typed values IMS's backup calls answer (fleet-safety-api.md sections 1, 3 and 5): an
image job (`ImageJob`), the private image quota (`ImageQuota`) and an image found by name
(`ListedImage`), each parsed tolerantly from the IMS body: a missing field is None, and only a
body nothing can be decided from raises ValueError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FINAL_IMAGE_JOB_STATUSES = frozenset({"SUCCESS", "FAIL"})
# `__data_origin` of an image made from an ECS is "instance,<server id>" (Terraform parses it).
_INSTANCE_ORIGIN = "instance,"


@dataclass(frozen=True)
class ImageJob:
    """An IMS job (ShowJob) that makes an image from a server. `status` is IMS's own word
    (INIT, RUNNING, SUCCESS, FAIL). `image_id` is `entities.image_id` when present: the docs
    leave unsaid whether it is there before SUCCESS, so only a succeeded job's is to be relied
    on. `body` is the answer verbatim, for a history that must outlive the cloud's job."""

    job_id: str
    status: str
    job_type: str | None
    image_id: str | None
    image_name: str | None
    progress: float | None  # `entities.process_percent`, 0 to 1
    error_code: str | None
    fail_reason: str | None
    begin_time: str | None  # IMS's own format ("04-Jun-2015 18:11:06:586"), kept as text
    end_time: str | None  # None while the job runs (IMS answers "")
    body: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.status.upper() in FINAL_IMAGE_JOB_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status.upper() == "SUCCESS"

    @classmethod
    def from_body(cls, body: object, *, job_id: str | None = None) -> ImageJob:
        """The job in a ShowJob answer; `job_id`, the id asked for, stands in when the body
        omits it. ValueError when the body is not an object or has no status: nothing, not
        even whether the job ended, can be read from it."""
        if not isinstance(body, dict):
            raise ValueError(f"an IMS job body must be a JSON object, not {type(body).__name__}")
        status = _text(body.get("status"))
        if status is None:
            raise ValueError("the IMS job body has no status")
        entities = body.get("entities")
        found = entities if isinstance(entities, dict) else {}
        return cls(
            job_id=_text(body.get("job_id")) or job_id or "",
            status=status,
            job_type=_text(body.get("job_type")),
            image_id=_text(found.get("image_id")),
            image_name=_text(found.get("image_name")),
            progress=_fraction(found.get("process_percent")),
            # The SDK's JobEntities also carries the error, for jobs that put it only there.
            error_code=_text(body.get("error_code")) or _text(found.get("error_code")),
            fail_reason=(
                _text(body.get("fail_reason"))
                or _text(found.get("error"))
                or _text(found.get("addition_error_msg"))
            ),
            begin_time=_text(body.get("begin_time")),
            end_time=_text(body.get("end_time")),
            body=body,
        )


@dataclass(frozen=True)
class ImageQuota:
    """The region's private image quota (`type` "image") and how much of it is used."""

    used: int
    quota: int

    @property
    def left(self) -> int:
        """How many more private images may be made (never below 0)."""
        return max(0, self.quota - self.used)

    @classmethod
    def from_body(cls, body: object) -> ImageQuota:
        """`{"quotas": {"resources": [{"type": "image", "used", "quota", ...}, ...]}}`;
        ValueError when the "image" resource or its numbers are missing: the quota must be
        read, never assumed (the docs' 20 is an example, not a default)."""
        quotas = body.get("quotas") if isinstance(body, dict) else None
        resources = quotas.get("resources") if isinstance(quotas, dict) else None
        for resource in resources if isinstance(resources, list) else []:
            if not isinstance(resource, dict) or resource.get("type") != "image":
                continue
            used, quota = _count(resource.get("used")), _count(resource.get("quota"))
            if used is None or quota is None:
                raise ValueError("the IMS image quota has no integer used or quota")
            return cls(used=used, quota=quota)
        raise ValueError('the IMS quota answer has no "image" resource')


@dataclass(frozen=True)
class ListedImage:
    """An image as ListImages shows it, reduced to what settling and cleaning up a backup
    read: which image, in which state, made from which server."""

    id: str
    name: str
    status: str  # queued, saving, active, killed, deleted
    created_at: str | None
    source_server_id: str | None  # from `__data_origin` "instance,<server id>"

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ListedImage | None:
        """None for an entry without an id: it can be neither used nor deleted."""
        image_id = _text(body.get("id"))
        if image_id is None:
            return None
        origin = _text(body.get("__data_origin")) or ""
        source = origin[len(_INSTANCE_ORIGIN) :] if origin.startswith(_INSTANCE_ORIGIN) else ""
        return cls(
            id=image_id,
            name=_text(body.get("name")) or "",
            status=_text(body.get("status")) or "",
            created_at=_text(body.get("created_at")),
            source_server_id=source or None,
        )


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fraction(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
