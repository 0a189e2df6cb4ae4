"""Which client the quota reservation goes through: the pipelined one,
whatever asked the node for a Valkey client first.  (The compliance engine
is built before the quota gate and asks for a valkey-py client for its rate
limiter; the gate took that client and every reservation paid valkey-py's
command packing and reply parsing: issue 17.)"""

from __future__ import annotations

import valkey.asyncio as avalkey

from ingress.pipeline.swapper import Clients
from ingress.quota.resp import PipelinedValkey
from streams.settings import Settings

URL = "redis://127.0.0.1:6379/0"


async def test_the_quota_gate_gets_the_pipelined_client_after_the_hooks_took_valkey_py() -> None:
    clients = Clients(None, None, "nexus:", Settings(valkey_url=URL))
    try:
        hooks = clients.valkey()  # the engine is built first
        assert isinstance(hooks, avalkey.Valkey)
        assert isinstance(clients.quota(), PipelinedValkey)
        assert clients.quota() is clients.quota()  # one per node
    finally:
        await clients.aclose()


async def test_a_client_the_caller_hands_in_is_used_for_quotas_too() -> None:
    given = avalkey.from_url(URL)  # type: ignore[no-untyped-call]
    clients = Clients(given, None, "t:", Settings(valkey_url=URL))
    try:
        assert clients.quota() is given
        assert clients.prefix == "t:"
    finally:
        await clients.aclose()
        await given.aclose()


async def test_a_quota_client_the_caller_hands_in_is_used_as_it_is() -> None:
    quota = PipelinedValkey.from_url(URL)
    clients = Clients(None, quota, "t:", Settings(valkey_url=URL))
    try:
        clients.valkey()
        assert clients.quota() is quota
    finally:
        await clients.aclose()
        await quota.aclose()
