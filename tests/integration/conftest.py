"""Fixtures of the in-process service tests: a simulator over real HTTP and runtimes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.service_world import World, WorldMaker, make_world_fixture


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
