"""Shared fixtures: the real NATS (JetStream), Postgres and Valkey/Redis of
this machine on their standard loopback ports, each test run isolated by a
unique stream prefix, a fresh database and a Valkey key prefix.

``tests/services.py`` starts what is not already running (from the PyPI
packages the project depends on) so a fresh machine needs no manual step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from streams.topology import Topology
from tests import services

RUN_ID = uuid.uuid4().hex[:8]


def _drop_streams(url: str, prefixes: tuple[str, ...]) -> int:
    async def run() -> int:
        import nats

        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            dropped = 0
            for info in await js.streams_info():
                if info.config.name and info.config.name.startswith(prefixes):
                    await js.delete_stream(info.config.name)
                    dropped += 1
            return dropped
        finally:
            await nc.close()

    # Its own thread and loop: a session's teardown may run beside a loop
    # pytest-asyncio still holds.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=60)


@pytest.fixture(scope="session", autouse=True)
def _drop_run_streams() -> Iterator[None]:
    """The streams (and spill object stores) this run's ``topology``
    fixtures made go at the end of the run: the machine's NATS outlives test
    runs, and each full run used to leave about 40 streams behind."""
    yield
    if not services._port_open("127.0.0.1", 4222):
        return
    mine = f"T{RUN_ID}".upper()
    try:
        _drop_streams(services.NATS_URL, (mine, f"OBJ_{mine}"))
    except Exception as exc:  # cleanup must not fail the run
        print(f"could not drop this run's streams: {type(exc).__name__}: {exc}")


@pytest.fixture(scope="session")
def nats_url() -> str:
    return services.ensure_nats()


@pytest.fixture(scope="session")
def valkey_url() -> str:
    return services.ensure_valkey()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    return services.ensure_postgres()


@pytest.fixture
def topology() -> Topology:
    """A fresh set of stream names for one test."""
    return Topology(prefix=f"T{RUN_ID}{uuid.uuid4().hex[:6]}".upper())


@pytest.fixture
async def pg_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"nexus_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = pg_admin_dsn.rpartition("/")
    yield f"{base}/{name}"
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def valkey_prefix() -> str:
    return f"nxt:{RUN_ID}:{uuid.uuid4().hex[:6]}:"


@pytest.fixture
def tmp_data_dir(tmp_path: os.PathLike[str]) -> Iterator[str]:
    yield str(tmp_path)
