"""Fixtures of the in-process service tests: a simulator over real HTTP and runtimes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.simulator.app import create_simulator_app
from orchestrator.simulator.cloud import SimulatorConfig
from tests.support.service_world import AK, PROJECT, SK, World, WorldMaker, make_world_fixture


@pytest.fixture
async def make_world(
    aiohttp_server: Callable[..., Any], database_url: str, redis_url: str
) -> AsyncIterator[WorldMaker]:
    """A simulator over real HTTP (config overrides as keywords) and runtimes against it."""
    async for maker in make_world_fixture(aiohttp_server, database_url, redis_url):
        yield maker


@pytest.fixture
async def world(make_world: WorldMaker) -> World:
    return await make_world()


CloudMaker = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_cloud(aiohttp_server: Callable[..., Any]) -> CloudMaker:
    """Settings that point ECS, IMS and EVS at simulators over real HTTP, one per region and
    its project (any server id exists, every image is active): for API tests whose
    submissions must pass pre-flight."""

    async def make(projects: dict[str, str] | None = None) -> dict[str, Any]:
        endpoints: dict[str, str] = {}
        for region, project_id in (projects or {"cn-north-4": PROJECT}).items():
            config = SimulatorConfig(ak=AK, sk=SK, project_id=project_id, job_seconds=1.0)
            server = await aiohttp_server(create_simulator_app(config))
            endpoints[region] = str(server.make_url("")).rstrip("/")
        return {
            "ecs_endpoints": endpoints,
            "ims_endpoints": endpoints,
            "evs_endpoints": endpoints,
            "cloud_ak": AK,
            "cloud_sk": SK,
        }

    return make


@pytest.fixture
async def cloud_settings(make_cloud: CloudMaker) -> dict[str, Any]:
    """One simulated region, cn-north-4, of the tests' usual project."""
    return await make_cloud()
