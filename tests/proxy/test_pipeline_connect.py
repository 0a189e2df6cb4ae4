"""A decrypted LLM call's own connection to the provider (the pipeline's
client, ``pipeline_client``) is opened by the proxy's rules, as a relayed
one is: the resolve override decides where a host goes, and an address
that is private and not in ``allow_private_cidrs`` is refused, checked
when the call connects (not only when the client's CONNECT was)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nexus.sim.server import SimServer, start_sim
from tests.proxy.conftest import MakeProxy, client_context, tls_through
from tests.proxy.pki import Pki

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
async def literal_upstream(upstream_pki: Pki) -> AsyncIterator[SimServer]:
    """The simulated provider addressed by its literal (private) address."""
    sim = await start_sim(host="127.0.0.1", port=0, ssl_context=upstream_pki.server_context(["127.0.0.1"]))
    yield sim
    await sim.close()


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> bytes:
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer sk-x\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (host.encode(), len(BODY), BODY)
    )
    answer = await reader.read()
    writer.close()
    return answer


async def _chat(node: Any, host: str, port: int, ca: Path) -> bytes:
    reader, writer = await tls_through(node, host, client_context(ca), port=port)
    return await _post(reader, writer, host)


def _calls(sim: SimServer) -> int:
    return len(sim.state.recorder.snapshot()["requests"])


async def test_a_pipeline_call_goes_where_the_resolve_override_says(
    make_proxy: MakeProxy, proxy_ca: tuple[Path, Path], upstream_pki: Pki
) -> None:
    # A name of no DNS zone: only the override sends it anywhere (to the
    # simulated provider, whose certificate is verified for that name).
    ctx = upstream_pki.server_context(["llm.nexus-test.invalid"])
    sim = await start_sim(host="127.0.0.1", port=0, ssl_context=ctx)
    try:
        node = await make_proxy(
            resolve={"llm.nexus-test.invalid:443": f"127.0.0.1:{sim.port}"},
            interception=[{"host": "llm.nexus-test.invalid", "adapter": "openai"}],
        )
        answer = await _chat(node, "llm.nexus-test.invalid", 443, proxy_ca[0])
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b"x-nexus-request-id" in answer.lower()  # through the pipeline, not relayed
        assert _calls(sim) == 1
    finally:
        await sim.close()


async def test_a_pipeline_call_to_a_private_address_not_allowed_is_refused(
    make_proxy: MakeProxy, literal_upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    port = literal_upstream.port
    node = await make_proxy(
        allow_private_cidrs=["127.0.0.0/8"],
        allow_ports=[port],
        interception=[{"host": "127.0.0.1", "adapter": "openai"}],
    )
    # Allowed: the call reaches the provider through the pipeline.
    answer = await _chat(node, "127.0.0.1", port, proxy_ca[0])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"x-nexus-request-id" in answer.lower()
    assert _calls(literal_upstream) == 1

    # The CONNECT passed the guard; the address is no longer allowed when
    # the call connects (as a name rebound to a private address would be):
    # the call is refused, the provider never reached.  (A second node: the
    # first one's client keeps its connection.)
    node = await make_proxy(
        allow_private_cidrs=["127.0.0.0/8"],
        allow_ports=[port],
        interception=[{"host": "127.0.0.1", "adapter": "openai"}],
    )
    reader, writer = await tls_through(node, "127.0.0.1", client_context(proxy_ca[0]), port=port)
    node.upstreams._allowed = []
    answer = await _post(reader, writer, "127.0.0.1")
    assert answer.startswith(b"HTTP/1.1 502"), answer[:300]
    assert _calls(literal_upstream) == 1
