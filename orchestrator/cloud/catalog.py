"""IMS and EVS clients: the image and disk facts a pre-flight check reads (fleet-safety-api.md
sections 1 and 7), and the IMS calls of a backup before a change of OS: make an image from a
server, follow its job, read the quota, find images by name, delete one (sections 2-6). Signed,
rate-limited and classified like ECS calls (`SignedApi`): every call spends the same fleet rate
budget as the project's ECS calls."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from orchestrator.cloud.client import SignedApi
from orchestrator.cloud.errors import (
    EcsError,
    OutcomeUnknown,
    Rejected,
    Retryable,
    classify,
    refused_before_acting,
)
from orchestrator.cloud.ims_jobs import ImageJob, ImageQuota, ListedImage
from orchestrator.cloud.models import Volume, image_facts
from orchestrator.domain.preflight import ImageFacts

# ListVolumes takes at most this many ids per call (fleet-safety-api.md section 7).
VOLUME_IDS_PER_CALL = 60
VOLUME_PAGE = 1000
IMAGE_PAGE = 500
# IMS's "image not found" codes (section 6): a delete answered with one finds nothing to do.
IMAGE_NOT_FOUND_CODES = frozenset({"IMG.0027", "IMG.0086", "IMG.0144"})


class ImsClient(SignedApi):
    """IMS of one project in one region (the project travels in `X-Project-Id`)."""

    async def find_image(self, image_id: str) -> ImageFacts | None:
        """The image with this id, or None: IMS answers an empty list, not a 404, for an id it
        does not know."""
        async for body in self._get_pages(
            "/v2/cloudimages",
            key="images",
            filters=[("id", image_id)],
            page_size=IMAGE_PAGE,
            operation="images",
        ):
            if str(body.get("id") or "").lower() == image_id.lower():
                return image_facts(body)
        return None

    async def create_server_image(
        self,
        server_id: str,
        *,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        token_taken: bool = False,
    ) -> str:
        """CreateImage from the server's system disk; answer the IMS job id (`token_taken`:
        the caller holds this call's rate token, so it goes out at once). The image exists
        only when that job ends SUCCESS (`show_image_job`).

        Never retried here: a lost answer, or a server error that does not prove IMS refused
        before acting, is `OutcomeUnknown` (as for changeos), and the caller settles it with
        `find_images_by_name` (hence: unique names). `tags` go out as `image_tags`."""
        body: dict[str, Any] = {"name": name, "instance_id": server_id}
        if description:
            body["description"] = description
        if tags:
            body["image_tags"] = [{"key": key, "value": value} for key, value in tags.items()]
        try:
            status, answer, headers = await self._call(
                "POST",
                "/v2/cloudimages/action",
                body=body,
                operation="create_image",
                token_taken=token_taken,
            )
        except Retryable as exc:
            if refused_before_acting(exc):  # busy (IMG.0010), flow control, throttling
                raise
            raise _outcome_unknown(exc) from None
        job_id = answer.get("job_id") if isinstance(answer, dict) else None
        if isinstance(job_id, str) and job_id:
            return job_id
        # A 2xx without a job id, as changeos handles it: a refusal we can prove stays
        # retryable; anything else may have started an image we cannot name.
        error = classify(
            status, json.dumps(answer).encode(), request_id=headers.get("X-Request-Id")
        )
        if isinstance(error, Retryable) and refused_before_acting(error):
            raise error
        raise OutcomeUnknown(
            code=error.code if error.code != f"HTTP.{status}" else "NoJobId",
            message="CreateImage answered without a job id",
            http_status=status,
            request_id=headers.get("X-Request-Id"),
        )

    async def show_image_job(self, job_id: str) -> ImageJob:
        """The IMS job, on the jobs path ECS also answers (each service on its own host). An
        unknown or purged job raises `JobGone` (`Common.0011`), as for ECS jobs; a 2xx body
        without a status raises ValueError (`ImageJob.from_body`)."""
        path = f"/v1/{self._project_id}/jobs/{quote(job_id, safe='')}"
        _, body, _ = await self._call("GET", path, operation="image_job")
        return ImageJob.from_body(body, job_id=job_id)

    async def image_quota(self) -> ImageQuota:
        """The region's private image quota and its use (the project is the X-Project-Id)."""
        _, body, _ = await self._call("GET", "/v1/cloudimages/quota", operation="image_quota")
        return ImageQuota.from_body(body)

    async def delete_image(self, image_id: str) -> None:
        """Glance-native delete of a private image. Idempotent: an image IMS does not know
        (already deleted) answers normally; any other refusal raises as classified."""
        path = f"/v2/images/{quote(image_id, safe='')}"
        try:
            await self._call("DELETE", path, operation="delete_image")
        except Rejected as exc:
            if not _image_not_found(exc):
                raise

    async def find_images_by_name(self, name: str) -> list[ListedImage]:
        """The project's private images with exactly this name (any status, `saving` and
        `killed` included): what settles a CreateImage whose answer was lost."""
        found: list[ListedImage] = []
        async for body in self._get_pages(
            "/v2/cloudimages",
            key="images",
            filters=[("__imagetype", "private"), ("name", name)],
            page_size=IMAGE_PAGE,
            operation="images",
        ):
            image = ListedImage.from_body(body)
            # Checked again: the filter is IMS's, and a near match would settle wrongly.
            if image is not None and image.name == name:
                found.append(image)
        return found


class EvsClient(SignedApi):
    """EVS of one project in one region."""

    async def show_volume(self, volume_id: str) -> Volume:
        path = f"/v2/{self._project_id}/cloudvolumes/{quote(volume_id, safe='')}"
        _, body, _ = await self._call("GET", path, operation="volume")
        volume = body.get("volume") if isinstance(body, dict) else None
        return Volume.from_body(volume if isinstance(volume, dict) else {})

    async def volumes_by_id(self, volume_ids: Sequence[str]) -> list[Volume]:
        """The volumes with these ids, at most 60 (unknown ids are left out): one call."""
        if len(volume_ids) > VOLUME_IDS_PER_CALL:
            raise ValueError(f"at most {VOLUME_IDS_PER_CALL} volume ids per call")
        query = [("ids", json.dumps(list(volume_ids), separators=(",", ":"))), ("limit", "1000")]
        _, body, _ = await self._call("GET", self._detail, query=query, operation="volumes")
        return _volumes(body)

    async def volumes_page(self, *, marker: str | None, limit: int) -> tuple[list[Volume], int]:
        """One page of every volume of the project, after `marker`, and how many there are."""
        query = [("limit", str(limit)), *([("marker", marker)] if marker else [])]
        _, body, _ = await self._call("GET", self._detail, query=query, operation="volumes")
        count = body.get("count") if isinstance(body, dict) else None
        total = count if isinstance(count, int) and not isinstance(count, bool) else 0
        return _volumes(body), total

    @property
    def _detail(self) -> str:
        return f"/v2/{self._project_id}/cloudvolumes/detail"


def _outcome_unknown(error: EcsError) -> OutcomeUnknown:
    return OutcomeUnknown(
        code=error.code,
        message=error.message,
        http_status=error.http_status,
        request_id=error.request_id,
        details=error.details,
    )


def _image_not_found(error: Rejected) -> bool:
    """IMS's "image not found", or a bare 404 from IMS itself (the docs leave the answer for a
    deleted id unsaid). Not the gateway's 404 (`APIGW.0101`, no such API): that is a wrong
    endpoint, and calling it "deleted" would hide it."""
    if error.code in IMAGE_NOT_FOUND_CODES:
        return True
    return error.http_status == 404 and not error.code.startswith(("APIGW.", "APIG."))


def _volumes(body: object) -> list[Volume]:
    page = body.get("volumes") if isinstance(body, dict) else None
    return [Volume.from_body(v) for v in page or [] if isinstance(v, dict)]
