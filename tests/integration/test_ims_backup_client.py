"""The IMS client's backup calls (CreateImage from a server, its job, the quota, ListImages by
name, the Glance delete) against the simulator over real HTTP: signed, spending a rate token and
counted per call, with IMS's refusals classified (busy is Retryable, quota and names Rejected, a
lost CreateImage answer OutcomeUnknown). The simulator runs on a clock the test moves, so no test
waits for a job to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orchestrator.cloud.catalog import ImsClient
from orchestrator.cloud.client import Credentials, EcsClient, Timeouts
from orchestrator.cloud.errors import (
    ConfigError,
    EcsError,
    JobGone,
    OutcomeUnknown,
    Rejected,
    Retryable,
    refused_before_acting,
)
from orchestrator.cloud.ims_jobs import ImageJob, ImageQuota, ListedImage
from orchestrator.cloud.models import OsChange
from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cloud import ServerSpec, SimulatorConfig
from orchestrator.simulator.images import ImageSpec
from tests.support.clocks import ManualClock

pytestmark = pytest.mark.integration

AK = "IMSBACKUPACCESSKEY01"
SK = "ims-backup-secret-key-000000000000000001"
PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
REGION = "cn-north-4"
SERVER = "b6f4a5b4-1c8e-4d7c-9a3e-2f1d0c9b8a71"
OTHER_SERVER = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
UNKNOWN = "ffffffff-0000-4000-8000-00000000ffff"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"  # public, what a change of OS moves to
BACKUP_SECONDS = 30.0
JOB_SECONDS = 20.0


@dataclass
class Recorder:
    """Both the fleet's rate gate and the call observer: every token taken, every answer."""

    tokens: list[tuple[str, str]] = field(default_factory=list)
    answered: list[tuple[str, str]] = field(default_factory=list)
    cuts: list[tuple[str, str]] = field(default_factory=list)
    rate: float = 100.0

    async def acquire(self, project_id: str, region: str) -> float:
        self.tokens.append((project_id, region))
        return 0.0

    async def acquire_within(self, project_id: str, region: str, deadline_s: float) -> bool:
        self.tokens.append((project_id, region))
        return True

    def penalise(self, project_id: str, region: str) -> None:
        self.cuts.append((project_id, region))

    def request_answered(self, operation: str, status: str) -> None:
        self.answered.append((operation, status))

    def changeos_answered(self, error: EcsError | None) -> None:
        pass

    def throttled(self) -> None:
        pass


StartSimulator = Callable[..., Awaitable[str]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def start_simulator(aiohttp_server: Callable[..., Any], clock: ManualClock) -> StartSimulator:
    """A simulator over a real TCP port (config overrides as keywords) -> its URL."""

    async def start(**overrides: Any) -> str:
        settings: dict[str, Any] = {
            "ak": AK,
            "sk": SK,
            "project_id": PROJECT,
            "job_seconds": JOB_SECONDS,
            "backup_seconds": BACKUP_SECONDS,
            "image_specs": (ImageSpec(id=IMAGE, name="EulerOS 2.9", visibility="public"),),
            "inventory": (ServerSpec(id=SERVER, system_disk_size=50), ServerSpec(id=OTHER_SERVER)),
            "strict_inventory": True,
            "image_quota": 5,
            **overrides,
        }
        server = await aiohttp_server(create_simulator_app(SimulatorConfig(**settings), clock))
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ims_client(
    http: aiohttp.ClientSession,
    endpoint: str,
    recorder: Recorder,
    *,
    sk: str = SK,
    timeouts: Timeouts | None = None,
) -> ImsClient:
    return ImsClient(
        http,
        endpoint=endpoint,
        project_id=PROJECT,
        region=REGION,
        credentials=Credentials(access_key=AK, secret_key=sk),
        timeouts=timeouts,
        rate_gate=recorder,
        observer=recorder,
    )


async def simulator_json(http: aiohttp.ClientSession, url: str, **post: Any) -> Any:
    """A control endpoint's answer: GET, or POST of `post` as JSON when given."""
    request = http.post(url, json=post) if post else http.get(url)
    async with request as response:
        assert response.status == 200
        return await response.json()


# --- the whole life of a backup --------------------------------------------------------------


async def test_a_backup_is_made_followed_listed_counted_and_deleted(
    start_simulator: StartSimulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    endpoint = await start_simulator()
    recorder = Recorder()
    ims = ims_client(http, endpoint, recorder)
    assert await ims.image_quota() == ImageQuota(used=0, quota=5)

    job_id = await ims.create_server_image(
        SERVER,
        name="backup-web-00001",
        description="before the change of OS",
        tags={"reimage": "backup"},
    )
    assert len(job_id) == 32
    started = await ims.show_image_job(job_id)
    assert (started.job_id, started.status, started.is_final) == (job_id, "INIT", False)
    assert started.end_time is None and started.error_code is None
    [saving] = await ims.find_images_by_name("backup-web-00001")
    assert (saving.status, saving.is_active, saving.source_server_id) == ("saving", False, SERVER)
    assert (await ims.image_quota()).left == 4  # a backup counts from the start

    clock.advance(BACKUP_SECONDS / 2)
    running = await ims.show_image_job(job_id)
    assert running.status == "RUNNING" and running.progress == pytest.approx(0.5)
    clock.advance(BACKUP_SECONDS / 2)
    done = await ims.show_image_job(job_id)
    assert (done.status, done.is_final, done.succeeded) == ("SUCCESS", True, True)
    assert (done.job_type, done.image_name, done.progress) == (
        "createImageByInstance",
        "backup-web-00001",
        1.0,
    )
    assert done.image_id == saving.id and done.end_time
    assert done.body["entities"]["image_id"] == saving.id  # verbatim, for the history
    [active] = await ims.find_images_by_name("backup-web-00001")
    assert (active.id, active.status, active.is_active) == (saving.id, "active", True)
    assert active.created_at and active.created_at.endswith("Z")

    await ims.delete_image(saving.id)
    assert await ims.find_images_by_name("backup-web-00001") == []
    assert await ims.image_quota() == ImageQuota(used=0, quota=5)
    await ims.delete_image(saving.id)  # already gone (a 404): nothing to do, no error
    await ims.delete_image(UNKNOWN)

    # Every call went through the signed transport: one rate token each, each counted.
    assert recorder.tokens == [(PROJECT, REGION)] * len(recorder.answered)
    assert recorder.answered == [
        ("image_quota", "200"),
        ("create_image", "200"),
        ("image_job", "200"),
        ("images", "200"),
        ("image_quota", "200"),
        ("image_job", "200"),
        ("image_job", "200"),
        ("images", "200"),
        ("delete_image", "204"),
        ("images", "200"),
        ("image_quota", "200"),
        ("delete_image", "404"),
        ("delete_image", "404"),
    ]
    log = await simulator_json(http, f"{endpoint}/_sim/images/log")
    assert [(c["kind"], c["image_id"], c["answer"]) for c in log["calls"]] == [
        ("create", saving.id, "accepted"),
        ("delete", saving.id, "accepted"),
        ("delete", saving.id, "IMG.0027"),
        ("delete", UNKNOWN, "IMG.0027"),
    ]


async def test_find_images_by_name_sees_only_private_images_of_exactly_that_name(
    start_simulator: StartSimulator, http: aiohttp.ClientSession
) -> None:
    ims = ims_client(http, await start_simulator(), Recorder())
    await ims.create_server_image(SERVER, name="backup-a")
    await ims.create_server_image(OTHER_SERVER, name="backup-a-2")
    [image] = await ims.find_images_by_name("backup-a")
    assert (image.name, image.source_server_id) == ("backup-a", SERVER)
    assert await ims.find_images_by_name("EulerOS 2.9") == []  # the public image
    assert await ims.find_images_by_name("backup") == []


async def test_a_failed_backup_job_ends_fail_with_its_reason(
    start_simulator: StartSimulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    ims = ims_client(http, await start_simulator(backup_fail_ratio=1.0), Recorder())
    job_id = await ims.create_server_image(SERVER, name="backup-doomed")
    clock.advance(BACKUP_SECONDS)
    job = await ims.show_image_job(job_id)
    assert (job.status, job.is_final, job.succeeded) == ("FAIL", True, False)
    assert job.error_code == "IMG.0006"
    assert job.fail_reason and "failed" in job.fail_reason
    [killed] = await ims.find_images_by_name("backup-doomed")
    assert (killed.id, killed.status) == (job.image_id, "killed")


async def test_a_purged_image_job_is_job_gone(
    start_simulator: StartSimulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    ims = ims_client(http, await start_simulator(job_ttl=60.0), Recorder())
    job_id = await ims.create_server_image(SERVER, name="backup-old")
    clock.advance(BACKUP_SECONDS + 60.0)
    with pytest.raises(JobGone) as raised:
        await ims.show_image_job(job_id)
    assert raised.value.code == "Common.0011"
    with pytest.raises(JobGone):
        await ims.show_image_job("0" * 32)


# --- refusals ----------------------------------------------------------------------------------


async def test_the_quota_is_read_and_a_full_quota_is_rejected_img_0015(
    start_simulator: StartSimulator, http: aiohttp.ClientSession
) -> None:
    ims = ims_client(http, await start_simulator(image_quota=1), Recorder())
    quota = await ims.image_quota()
    assert (quota.used, quota.quota, quota.left) == (0, 1, 1)
    await ims.create_server_image(SERVER, name="backup-1")
    assert (await ims.image_quota()).left == 0
    with pytest.raises(Rejected) as raised:
        await ims.create_server_image(OTHER_SERVER, name="backup-2")
    assert (raised.value.code, raised.value.http_status) == ("IMG.0015", 400)
    assert not isinstance(raised.value, Retryable | OutcomeUnknown)


async def test_names_and_servers_ims_refuses_are_rejected(
    start_simulator: StartSimulator, http: aiohttp.ClientSession
) -> None:
    ims = ims_client(http, await start_simulator(), Recorder())
    await ims.create_server_image(SERVER, name="backup-taken")
    refusals = [
        (OTHER_SERVER, "backup-taken", "IMG.0009"),  # the name is in use
        (UNKNOWN, "backup-nobody", "IMG.0005"),  # no such server
        (OTHER_SERVER, " starts-with-a-space", "IMG.0003"),
        (OTHER_SERVER, "", "IMG.0013"),
    ]
    for server_id, name, code in refusals:
        with pytest.raises(Rejected) as raised:
            await ims.create_server_image(server_id, name=name)
        assert raised.value.code == code, name


async def test_a_backup_and_a_change_of_os_of_one_server_refuse_each_other_as_busy(
    start_simulator: StartSimulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    endpoint = await start_simulator()
    recorder = Recorder()
    ims = ims_client(http, endpoint, recorder)
    ecs = EcsClient(
        http,
        endpoint=endpoint,
        project_id=PROJECT,
        region=REGION,
        credentials=Credentials(access_key=AK, secret_key=SK),
        rate_gate=recorder,
    )
    change = OsChange(
        imageid=IMAGE,
        keyname="KeyPair-test",
        userid="7e25b1da389f4697a79df3a0e5bd494e",
        mode="withStopServer",
    )
    await ecs.change_os(SERVER, change, cloud_init=False)
    with pytest.raises(Retryable) as raised:
        await ims.create_server_image(SERVER, name="backup-during-change")
    assert (raised.value.code, raised.value.http_status) == ("IMG.0010", 400)
    assert refused_before_acting(raised.value)  # retryable as is: nothing was started
    assert await ims.find_images_by_name("backup-during-change") == []

    clock.advance(JOB_SECONDS)
    job_id = await ims.create_server_image(SERVER, name="backup-during-change")
    with pytest.raises(Retryable) as busy:  # a second backup of the same server meanwhile
        await ims.create_server_image(SERVER, name="backup-again")
    assert busy.value.code == "IMG.0010"
    with pytest.raises(Retryable) as change_refused:
        await ecs.change_os(SERVER, change, cloud_init=False)
    assert (change_refused.value.code, change_refused.value.http_status) == ("Ecs.0603", 501)
    clock.advance(BACKUP_SECONDS)
    assert (await ims.show_image_job(job_id)).succeeded


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"flow_control_ratio": 1.0}, "Common.0024"),
        ({"rate_limit": 0.01, "burst": 1}, "APIGW.0308"),
    ],
)
async def test_flow_control_and_a_429_both_cut_the_fleets_rate(
    start_simulator: StartSimulator,
    http: aiohttp.ClientSession,
    overrides: dict[str, Any],
    code: str,
) -> None:
    # Issue 17 part 6: the rate is found from the cloud's answers; a 202 Common.0024 (no job)
    # is the cloud throttling as much as a 429 APIGW.0308 is.
    endpoint = await start_simulator(**overrides)
    recorder = Recorder()
    ecs = EcsClient(
        http,
        endpoint=endpoint,
        project_id=PROJECT,
        region=REGION,
        credentials=Credentials(access_key=AK, secret_key=SK),
        rate_gate=recorder,
    )
    change = OsChange(imageid=IMAGE, keyname="KeyPair-test", mode="withStopServer")
    with pytest.raises(Retryable) as raised:
        for _ in range(3):
            await ecs.change_os(SERVER, change, cloud_init=False)
    assert raised.value.code == code
    assert recorder.cuts == [(PROJECT, REGION)]


async def test_deleting_an_image_ims_will_not_delete_raises_as_classified(
    start_simulator: StartSimulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    ims = ims_client(http, await start_simulator(), Recorder())
    with pytest.raises(Rejected) as public:
        await ims.delete_image(IMAGE)
    assert public.value.code == "IMG.0094"
    job = await ims.show_image_job(await ims.create_server_image(SERVER, name="backup-young"))
    assert job.image_id is not None
    with pytest.raises(Retryable) as creating:  # still being made: deletable once it ends
        await ims.delete_image(job.image_id)
    assert creating.value.code == "IMG.0090"
    clock.advance(BACKUP_SECONDS)
    await ims.delete_image(job.image_id)
    assert await ims.find_images_by_name("backup-young") == []


async def test_calls_are_signed_a_wrong_secret_is_a_config_error_and_makes_nothing(
    start_simulator: StartSimulator, http: aiohttp.ClientSession
) -> None:
    endpoint = await start_simulator()
    wrong = ims_client(http, endpoint, Recorder(), sk="not-the-secret-key-000000000000000000001")
    with pytest.raises(ConfigError) as raised:
        await wrong.create_server_image(SERVER, name="backup-unsigned")
    assert (raised.value.code, raised.value.http_status) == ("APIGW.0301", 401)
    with pytest.raises(ConfigError):
        await wrong.image_quota()
    right = ims_client(http, endpoint, Recorder())
    assert await right.find_images_by_name("backup-unsigned") == []
    log = await simulator_json(http, f"{endpoint}/_sim/images/log")
    assert [c["answer"] for c in log["calls"]] == ["APIGW.0301"]


# --- answers that never came -----------------------------------------------------------------


async def test_a_lost_create_image_answer_is_outcome_unknown_and_settled_by_name(
    start_simulator: StartSimulator, http: aiohttp.ClientSession
) -> None:
    endpoint = await start_simulator()
    # Every answer comes 0.5 s late (real time: it must outlast the client's read timeout).
    await simulator_json(http, f"{endpoint}/_sim/faults", slow_ratio=1.0, slow_seconds=0.5)
    recorder = Recorder()
    impatient = ims_client(http, endpoint, recorder, timeouts=Timeouts(read_s=0.1))
    with pytest.raises(OutcomeUnknown) as raised:
        await impatient.create_server_image(SERVER, name="backup-lost")
    assert raised.value.code == "Connection.Lost"
    assert recorder.answered == [("create_image", "error")]  # sent once, never again

    await simulator_json(http, f"{endpoint}/_sim/faults", slow_ratio=0.0)
    [made] = await ims_client(http, endpoint, Recorder()).find_images_by_name("backup-lost")
    assert (made.source_server_id, made.status) == (SERVER, "saving")


@pytest.mark.parametrize(
    ("status", "answer", "expected", "code"),
    [
        pytest.param(
            500,
            {"error": {"code": "IMG.0999", "message": "system error"}},
            OutcomeUnknown,
            "IMG.0999",
            id="server-error-may-have-acted",
        ),
        pytest.param(
            429,
            {"error_code": "APIGW.0308", "error_msg": "throttled"},
            Retryable,
            "APIGW.0308",
            id="throttled-before-acting",
        ),
        pytest.param(
            400,
            {"error": {"code": "IMG.0060", "message": "flow control"}},
            Retryable,
            "IMG.0060",
            id="ims-flow-control",
        ),
        pytest.param(200, {}, OutcomeUnknown, "NoJobId", id="success-without-job-id"),
    ],
)
async def test_create_image_answers_the_simulator_never_gives(
    aiohttp_server: Callable[..., Any],
    http: aiohttp.ClientSession,
    status: int,
    answer: dict[str, Any],
    expected: type[EcsError],
    code: str,
) -> None:
    """A stub IMS for what the simulator does not answer CreateImage with."""

    async def create_image(request: web.Request) -> web.Response:
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_post("/v2/cloudimages/action", create_image)
    server = await aiohttp_server(app)
    ims = ims_client(http, str(server.make_url("")).rstrip("/"), Recorder())
    with pytest.raises(expected) as raised:
        await ims.create_server_image(SERVER, name="backup-stub")
    assert type(raised.value) is expected and raised.value.code == code


# --- parsing, tolerant of what IMS leaves out --------------------------------------------------


def test_an_image_job_body_without_entities_or_errors_parses_to_nones() -> None:
    job = ImageJob.from_body({"status": "RUNNING", "end_time": ""}, job_id="j1")
    assert (job.job_id, job.status, job.is_final) == ("j1", "RUNNING", False)
    assert (job.image_id, job.error_code, job.fail_reason, job.end_time) == (None,) * 4
    failed = ImageJob.from_body(
        {"status": "FAIL", "job_id": "j2", "entities": {"error_code": "IMG.0110", "error": "x"}}
    )
    assert (failed.job_id, failed.error_code, failed.fail_reason) == ("j2", "IMG.0110", "x")
    unusable_jobs: tuple[object, ...] = ({}, {"status": ""}, [], "SUCCESS")
    for unusable in unusable_jobs:
        with pytest.raises(ValueError):
            ImageJob.from_body(unusable)


def test_the_quota_needs_its_image_resource_and_a_listed_image_its_id() -> None:
    body = {
        "quotas": {
            "resources": [
                {"type": "image_shared", "used": 9, "quota": 9},
                {"type": "image", "used": 25, "quota": 20},
            ]
        }
    }
    assert ImageQuota.from_body(body).left == 0  # over the quota: none left, not -5
    for unusable in ({}, {"quotas": {"resources": [{"type": "image", "used": "1"}]}}):
        with pytest.raises(ValueError):
            ImageQuota.from_body(unusable)
    assert ListedImage.from_body({"name": "no id"}) is None
    bare = ListedImage.from_body({"id": "i1", "__data_origin": "volume,v1"})
    assert bare == ListedImage("i1", "", "", None, None)
