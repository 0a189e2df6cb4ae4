"""Shared fixtures: the real NATS (JetStream), Postgres and Valkey/Redis of
this machine on their standard loopback ports, each test run isolated by a
unique stream prefix, a fresh database and a Valkey key prefix.

``tests/services.py`` starts what is not already running (from the PyPI
packages the project depends on) so a fresh machine needs no manual step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from streams.topology import Topology
from tests import services

RUN_ID = uuid.uuid4().hex[:8]

# --- the fast tier: `pytest -m "not slow and not integration"` ----------------
#
# Tests need not carry their tier by hand: at collection, a test is
# ``integration`` when it (or any fixture it uses, however deep) takes one of
# the real services' fixtures, or when its body or one of its fixtures'
# bodies starts a process or a service (the words below); and ``slow`` when
# it is in SLOW.  What is left runs in-process on loopback only (in-process
# aiohttp servers, simulated providers, DuckDB files).  Checked by running
# the fast tier where NATS, Postgres and Valkey cannot be reached:
#   unshare -rn sh -c 'ip link set lo up && .venv/bin/python -m pytest -m "not slow and not integration"'
# (two tests fail there for the namespace's own sake: getaddrinfo finds no
# "localhost" without a non-loopback address, and a user namespace cannot
# chown a file to another user).
_SERVICE_FIXTURES = frozenset({"nats_url", "valkey_url", "pg_admin_dsn"})
_OUT_OF_PROCESS = re.compile(
    r"\bsubprocess\b|\bPopen\b|create_subprocess_exec|sys\.executable|\bensure_(?:nats|valkey|postgres)\b"
    r"|\bNatsServer\b|\bplaywright\b|\bmultiprocessing\b"
)
# Tests measured at 2 s or more (on the 2-core CI machine, loaded) that are
# not integration by the rules above: `pytest --durations=60 -m "not slow and
# not integration"` shows what to add.  Node ids without parameters.
SLOW = frozenset(
    {
        "tests/architecture/test_layering.py::test_every_package_imports_only_what_the_table_allows",
        "tests/architecture/test_layering.py::test_no_import_cycle_inside_a_package",
        "tests/benchmarks/test_iam_eval_smoke.py::test_iam_benchmark_runs",
        "tests/gateway/test_connection.py::test_slowloris_sockets_are_closed_after_the_header_timeout",
        "tests/gateway/test_live_config.py::test_a_snapshot_that_cannot_be_built_changes_nothing",
        "tests/gateway/test_overload.py::test_a_saturated_gateway_sheds_new_requests_keeps_admitted_ones_and_recovers",
        "tests/gateway/test_overload.py::test_an_in_process_stack_serves_through_loop_lag_its_own_clients_cause",
        "tests/hooks/test_ner.py::test_ner_for_the_org_that_asked",
        "tests/hooks/test_pii.py::test_same_findings_as_presidio_analyzer",
        "tests/hooks/test_pipeline.py::test_card_is_redacted_in_the_forwarded_request",
        "tests/projections/test_store_contract.py::TestDuckDBStore::test_arrival_order_does_not_matter",
        "tests/proxy/test_blockpage.py::test_who_gets_the_page_and_what_the_form_refuses",
        "tests/routing/test_credentials.py::test_requests_spread_over_the_pool_by_weight",
        "tests/routing/test_smart.py::test_any_router_failure_serves_the_default",
        "tests/routing/test_smart.py::test_the_router_pick_serves_the_request",
        "tests/semantic_cache/test_index.py::test_removed_and_expired_entries_are_never_returned",
        "tests/semantic_cache/test_index.py::test_top1_finds_the_stored_vector_only_in_its_partition",
    }
)
_starts_processes: dict[Callable[..., Any], bool] = {}


def _mentions_processes(fn: Callable[..., Any]) -> bool:
    if fn not in _starts_processes:
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = ""
        _starts_processes[fn] = bool(_OUT_OF_PROCESS.search(source))
    return _starts_processes[fn]


def _is_integration(item: pytest.Item) -> bool:
    if _SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    fn = getattr(item, "function", None)
    if fn is not None and _mentions_processes(fn):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        if any(_mentions_processes(d.func) for d in defs):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        if "integration" not in marks and _is_integration(item):
            item.add_marker(pytest.mark.integration)
        if "slow" not in marks and item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


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
    """The streams (and object stores and KV buckets) this run's ``topology``
    fixtures made go at the end of the run: the machine's NATS outlives test
    runs, and each full run used to leave about 40 streams behind."""
    yield
    if not services._port_open("127.0.0.1", 4222):
        return
    mine = f"T{RUN_ID}".upper()
    try:
        _drop_streams(services.NATS_URL, (mine, f"OBJ_{mine}", f"KV_{mine}"))
    except Exception as exc:  # cleanup must not fail the run
        print(f"could not drop this run's streams: {type(exc).__name__}: {exc}")


@pytest.fixture(scope="session", autouse=True)
def _drop_run_valkey_keys() -> Iterator[None]:
    """The Valkey keys this run's ``valkey_prefix`` fixtures named go at the
    end of the run (quota counters, reservations, cache entries): most
    expire, but not all (a semantic cache's log has no TTL): a full run
    left ~330 of them behind."""
    yield
    if not services._port_open("127.0.0.1", 6379):
        return
    try:
        import valkey

        client = valkey.Valkey.from_url(services.VALKEY_URL)
        try:
            batch = []
            for key in client.scan_iter(match=f"nxt:{RUN_ID}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
        finally:
            client.close()  # type: ignore[no-untyped-call]
    except Exception as exc:  # cleanup must not fail the run
        print(f"could not drop this run's Valkey keys: {type(exc).__name__}: {exc}")


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
