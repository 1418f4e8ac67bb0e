"""Images (IMS): their attributes (`ImageSpec`), the JSON that `--images-file` and
`POST /_sim/images` take, and the catalog a simulated project sees (`ImageCatalog`: lookups,
replacement, deletion, and when each image was added, last changed and became active).

Entry schema, only `id` required: `id` (UUID), `name` (1-128 letters, digits, `-._`, spaces or
Chinese, no space at either end), `status` (queued | saving | active | killed | deleted, default
active), `min_disk` (GB, 1-1024, default 40), `min_ram` (MB, default 0), `os_type` (Linux |
Windows | Other, default Linux), `os_version` (default "EulerOS 2.9 64bit"), `platform` (default
EulerOS), `architecture` (x86 | arm, default x86), `firmware` (bios | uefi | null, default null:
the image has no `hw_firmware_type`, which means BIOS), `cloud_init` (default true),
`visibility` (private | public | shared, default private; shared: another project's image shared
with this one), `protected` (default false; public images always are).

Images made from a server by CreateImage (see `backups`) also carry a description, tags and
their origin (the server and the image it ran); the JSON does not set those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.simulator.entries import (
    flag_field,
    integer_in,
    one_of,
    parse_fields,
    read_json_file,
    text_field,
    uuid_field,
)
from orchestrator.simulator.shared import derived_uuid, is_uuid

IMAGE_STATUSES = ("queued", "saving", "active", "killed", "deleted")
OS_TYPES = ("Linux", "Windows", "Other")
IMAGE_ARCHITECTURES = ("x86", "arm")
FIRMWARES = ("bios", "uefi")
VISIBILITIES = ("private", "public", "shared")
MIN_DISK_RANGE = (1, 1024)
MAX_MIN_RAM_MB = 1024 * 1024
MAX_NAME_LENGTH = 128
_NAME = re.compile(rf"[0-9A-Za-z\-._ \u4e00-\u9fa5]{{1,{MAX_NAME_LENGTH}}}")


@dataclass(frozen=True)
class ImageSpec:
    """One image as IMS describes it."""

    id: str
    name: str
    status: str = "active"
    min_disk: int = 40  # GB
    min_ram: int = 0  # MB
    os_type: str = "Linux"
    os_version: str = "EulerOS 2.9 64bit"
    platform: str = "EulerOS"
    architecture: str = "x86"
    firmware: str | None = None  # None: no hw_firmware_type, which means BIOS
    cloud_init: bool = True
    visibility: str = "private"
    protected: bool = False  # shown as true for public images whatever this says
    # Set by CreateImage on images made from a server, never by the JSON.
    description: str = ""
    tags: tuple[str, ...] = ()  # "key.value"
    source_image_id: str | None = None  # the image the server ran: __originalimagename
    source_server_id: str | None = None  # the server: __data_origin "instance,<id>"

    def __post_init__(self) -> None:
        # Specs built in code (config, tests) obey the same rules as the JSON.
        for key, parse in _FIELDS.items():
            try:
                parse(getattr(self, key))
            except ValueError as error:
                raise ValueError(f"image {self.id!r}: {key} {error}") from None

    @property
    def boot_mode(self) -> str:
        return self.firmware or "bios"


def default_image(image_id: str) -> ImageSpec:
    """An image nothing described: active, Linux, x86, BIOS, 40 GB."""
    return ImageSpec(id=image_id.lower(), name=f"sim-image-{image_id[:8].lower()}")


def base_image(seed: int) -> ImageSpec:
    """The image every server starts on unless its spec names another: one per seed, derived
    from it, so it never equals an image a test asks for by chance."""
    return ImageSpec(id=derived_uuid(seed, "base-image"), name="sim-base-euleros-2.9")


# --- parsing -----------------------------------------------------------------------------


def _uuid(value: object) -> str:
    return uuid_field(value).lower()


def is_image_name(value: str) -> bool:
    """IMS's rule for image names (1-128 characters of the allowed set, no space at either end)."""
    return _NAME.fullmatch(value) is not None and value.strip() == value


def _name(value: object) -> str:
    if not (isinstance(value, str) and is_image_name(value)):
        raise ValueError(
            "must be 1-128 letters, digits, '-', '_', '.', spaces or Chinese characters, "
            "not starting or ending with a space"
        )
    return value


def _firmware(value: object) -> str | None:
    return None if value is None else one_of(FIRMWARES)(value)


_FIELDS: dict[str, Callable[[object], Any]] = {
    "id": _uuid,
    "name": _name,
    "status": one_of(IMAGE_STATUSES),
    "min_disk": integer_in(*MIN_DISK_RANGE),
    "min_ram": integer_in(0, MAX_MIN_RAM_MB),
    "os_type": one_of(OS_TYPES),
    "os_version": text_field,
    "platform": text_field,
    "architecture": one_of(IMAGE_ARCHITECTURES),
    "firmware": _firmware,
    "cloud_init": flag_field,
    "visibility": one_of(VISIBILITIES),
    "protected": flag_field,
}


def parse_image_spec(entry: object) -> ImageSpec:
    """One entry of `{"images": [...]}`; ValueError names the first bad or unknown key."""
    if isinstance(entry, dict) and "id" not in entry and not set(entry) - set(_FIELDS):
        raise ValueError("id is required")
    values = parse_fields(entry, _FIELDS, "an image")
    return replace(default_image(values["id"]), **values)


def parse_images(data: object) -> tuple[ImageSpec, ...]:
    """`{"images": [entry, ...]}`; ValueError says which entry is wrong and why."""
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError('expected {"images": [...]}')
    specs: list[ImageSpec] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(images):
        try:
            spec = parse_image_spec(entry)
        except ValueError as error:
            raise ValueError(f"images[{index}]: {error}") from None
        if spec.id in first_index:
            raise ValueError(f"images[{index}]: id repeats images[{first_index[spec.id]}]")
        first_index[spec.id] = index
        specs.append(spec)
    return tuple(specs)


def load_images(path: str | Path) -> tuple[ImageSpec, ...]:
    """The --images-file file: the same JSON as `POST /_sim/images` takes."""
    return parse_images(read_json_file(path))


# --- the catalog -------------------------------------------------------------------------


class ImageCatalog:
    """The images of the simulated region in a stable order, each with when it was added, last
    changed and became active.

    Open (`closed=False`): besides the images it holds, every well-formed UUID is an active
    default image, synthesized when looked up and never listed unless asked for by id. A
    deleted image is gone from both, until it is put again.
    """

    def __init__(self, images: Iterable[ImageSpec], *, closed: bool, now: float) -> None:
        self.closed = closed
        self._images: dict[str, ImageSpec] = {}
        # What servers still running on a deleted image show of it.
        self._deleted: dict[str, ImageSpec] = {}
        self._added_at: dict[str, float] = {}
        self._updated_at: dict[str, float] = {}
        self._active_at: dict[str, float] = {}
        self._created_at = now
        self.put(images, now=now)

    def put(self, images: Iterable[ImageSpec], *, now: float) -> list[str]:
        """Add images, or replace those with the same id (keeping their place); their ids.
        `now` is when the change happened."""
        ids = []
        for given in images:
            image = replace(given, id=given.id.lower())
            previous = self._images.get(image.id)
            self._images[image.id] = image
            self._deleted.pop(image.id, None)
            self._added_at.setdefault(image.id, now)
            self._updated_at[image.id] = now
            if image.status != "active":
                self._active_at.pop(image.id, None)
            elif previous is None or previous.status != "active":
                self._active_at[image.id] = now
            ids.append(image.id)
        return ids

    def delete(self, image_id: str) -> None:
        """Forget the image (held, or synthesized by an open catalog): no lookup or listing
        finds it any more."""
        key = image_id.lower()
        self._deleted[key] = self._images.pop(key, default_image(key))

    def get(self, image_id: str) -> ImageSpec | None:
        """The image, synthesized when the catalog is open; None when it does not exist."""
        key = image_id.lower()
        known = self._images.get(key)
        if known is not None or self.closed or not is_uuid(image_id) or key in self._deleted:
            return known
        return default_image(image_id)

    def holds(self, image_id: str) -> bool:
        """Whether the image is one the catalog holds (not a synthesized one)."""
        return image_id.lower() in self._images

    def describe(self, image_id: str) -> ImageSpec:
        """What a server on `image_id` shows: the image, or what it was before it was deleted
        (a server keeps running on a deleted image), or a default one when the catalog never
        held it."""
        return self.get(image_id) or self._deleted.get(image_id.lower()) or default_image(image_id)

    def added_at(self, image_id: str) -> float:
        return self._added_at.get(image_id.lower(), self._created_at)

    def updated_at(self, image_id: str) -> float:
        return self._updated_at.get(image_id.lower(), self._created_at)

    def active_at(self, image_id: str) -> float | None:
        """When the image last became active; None while it is not (synthesized images have
        always been)."""
        key = image_id.lower()
        if key in self._images:
            return self._active_at.get(key)
        return self._created_at

    def __iter__(self) -> Iterator[ImageSpec]:
        return iter(self._images.values())
