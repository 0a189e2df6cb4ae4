from __future__ import annotations

import hashlib
import os

import nats
import pytest

from streams.events import INLINE_BODY_LIMIT
from streams.spill import SpillStore, body_of
from streams.topology import Topology

pytestmark = pytest.mark.integration


async def test_large_body_spills_and_its_reference_resolves_to_the_exact_bytes(
    nats_url: str, topology: Topology
) -> None:
    small, must_spill = body_of(b'{"a":1}')
    assert small.inline == b'{"a":1}' and not must_spill
    big = os.urandom(INLINE_BODY_LIMIT + 1000)
    body, must_spill = body_of(big)
    assert must_spill and body.inline is None and body.ref is not None
    assert body.ref.sha256 == hashlib.sha256(big).hexdigest() and body.ref.size == len(big)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    store = SpillStore(js, topology.spill_bucket)
    try:
        ref = await store.put(big)
        assert ref == body.ref
        assert await store.get(ref) == big
    finally:
        await js.delete_object_store(topology.spill_bucket)
        await nc.close()
