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
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the private Redis as the services make it (stream reads unparsed), flushed before the test."""
    client = connect(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def influx_db(influx: InfluxServer) -> str:
    """A fresh database name, created."""
    name = f"homeiq_test_{next(_databases)}"
    influx.create_database(name)
    return name


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where the test's child processes write their logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
