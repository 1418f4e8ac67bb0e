"""IMS and EVS clients: the image and disk facts a pre-flight check reads (fleet-safety-api.md
sections 1 and 7). Signed, rate-limited and classified like ECS calls (`SignedApi`): every call
spends the same fleet rate budget as the project's ECS calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote

from orchestrator.cloud.client import SignedApi
from orchestrator.cloud.models import Volume, image_facts
from orchestrator.domain.preflight import ImageFacts

# ListVolumes takes at most this many ids per call (fleet-safety-api.md section 7).
VOLUME_IDS_PER_CALL = 60
VOLUME_PAGE = 1000
IMAGE_PAGE = 500


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


def _volumes(body: object) -> list[Volume]:
    page = body.get("volumes") if isinstance(body, dict) else None
    return [Volume.from_body(v) for v in page or [] if isinstance(v, dict)]
