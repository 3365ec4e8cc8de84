"""Fixtures: private redis-server and influxd processes (or containers where a Docker engine answers)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.stream import connect

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session; each test flushes it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), None).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One private influxd for the session; each test gets its own database."""
    server = InfluxServer(tmp_path_factory.mktemp("influxd"), None).start()
    yield server
    left = server.databases()
    server.stop()
    # Every database holds files open until influxd stops: a suite that leaves them behind runs the shared server
    # out of descriptors (the CI of ec7dcb8 read back nothing a 204 had taken). Tests drop what they create.
    assert len(left) <= MAX_DATABASES_LEFT, f"{len(left)} databases left behind, e.g. {left[:5]}"


MAX_DATABASES_LEFT = 50


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the private Redis as the services make it (stream reads unparsed), flushed before the test."""
    client = connect(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def influx_db(influx: InfluxServer) -> Iterator[str]:
    """A fresh database name, created, and dropped after the test."""
    with influx.scratch_database(f"homeiq_test_{next(_databases)}") as name:
        yield name


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where the test's child processes write their logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
