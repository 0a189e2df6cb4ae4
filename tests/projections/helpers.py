"""Building and publishing realistic traffic for the projection tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.js import JetStreamContext

from streams.codec import encode
from streams.events import (
    Body,
    Event,
    Node,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    Tenant,
    UpstreamResult,
    Usage,
    UsageRecorded,
)
from streams.topology import Topology

T0 = 1_760_000_000_000  # a fixed epoch-ms so rows are comparable across runs


def ok_request(i: int, *, prefix: str = "req", stream: bool = False) -> list[Event]:
    """The four facts of one successful request, with numbers derived from i."""
    rid = f"{prefix}-{i:06d}"
    tenant = Tenant(org_id=f"org-{i % 3}", project_id=f"proj-{i % 5}", key_id=f"key-{i % 7}", user_id="u1")
    node = Node(kind="gateway", id="gw-1")
    ts = T0 + i * 10
    prompt, completion = 10 + i % 50, 5 + i % 20
    return [
        RequestReceived(
            request_id=rid,
            trace_id=f"tr-{i}",
            occurred_at_ms=ts,
            node=node,
            tenant=tenant,
            endpoint="chat",
            path="/v1/chat/completions",
            requested_model="gpt-4o-mini",
            stream=stream,
            client_ip="10.0.0.7",
            user_agent="openai-python/3",
            body=Body(inline=b"{}", size=321),
        ),
        UpstreamResult(
            request_id=rid,
            occurred_at_ms=ts + 40,
            node=node,
            tenant=tenant,
            provider="sim",
            provider_model="sim-small",
            status=200,
            upstream_ms=38.5,
            ttft_ms=12.25 if stream else None,
        ),
        UsageRecorded(
            request_id=rid,
            occurred_at_ms=ts + 41,
            node=node,
            tenant=tenant,
            provider="sim",
            provider_model="sim-small",
            model="gpt-4o-mini",
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=i % 4,
                reasoning_tokens=i % 3,
            ),
            cost_usd=round(prompt * 0.15e-6 + completion * 0.6e-6, 12),
            config_version="cfg-1",
        ),
        RequestCompleted(
            request_id=rid,
            occurred_at_ms=ts + 42,
            node=node,
            tenant=tenant,
            status=200,
            latency_ms=41.75,
            ttft_ms=14.5 if stream else None,
            provider="sim",
            provider_model="sim-small",
        ),
    ]


def retried_request(i: int, *, prefix: str = "retry") -> list[Event]:
    """Attempt 1 on provider a fails with 502, attempt 2 on provider b works."""
    rid = f"{prefix}-{i:06d}"
    tenant = Tenant(org_id="org-r", project_id="proj-r", key_id="key-r")
    ts = T0 + i * 10
    return [
        RequestReceived(
            request_id=rid, occurred_at_ms=ts, tenant=tenant, requested_model="m", endpoint="chat"
        ),
        UpstreamResult(
            request_id=rid,
            occurred_at_ms=ts + 5,
            provider="prov-a",
            provider_model="a-1",
            attempt=1,
            status=502,
            upstream_ms=4.0,
            error_code="upstream_error",
        ),
        UpstreamResult(
            request_id=rid,
            occurred_at_ms=ts + 20,
            provider="prov-b",
            provider_model="b-1",
            attempt=2,
            status=200,
        ),
        UsageRecorded(
            request_id=rid,
            occurred_at_ms=ts + 21,
            provider="prov-b",
            provider_model="b-1",
            model="m",
            usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10),
            cost_usd=0.5,
        ),
        RequestCompleted(
            request_id=rid,
            occurred_at_ms=ts + 22,
            latency_ms=22.0,
            attempts=2,
            provider="prov-b",
            provider_model="b-1",
        ),
    ]


def failed_request(i: int, *, prefix: str = "fail") -> list[Event]:
    rid = f"{prefix}-{i:06d}"
    ts = T0 + i * 10
    return [
        RequestReceived(
            request_id=rid, occurred_at_ms=ts, tenant=Tenant(org_id="org-f"), requested_model="m"
        ),
        RequestFailed(
            request_id=rid,
            occurred_at_ms=ts + 3,
            status=504,
            error_code="upstream_timeout",
            error_type="timeout_error",
            reason="the provider did not answer in time",
            stage="upstream",
            latency_ms=3.0,
            provider="sim",
            provider_model="sim-small",
        ),
    ]


async def publish(
    js: JetStreamContext, topology: Topology, events: Sequence[Event], *, window: int = 256
) -> int:
    """Publish with Nats-Msg-Id = event id, pipelined; returns the last sequence."""
    last = 0
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        acks = await asyncio.gather(
            *(
                js.publish(topology.subject_for(ev), encode(ev), headers={"Nats-Msg-Id": ev.id})
                for ev in chunk
            )
        )
        last = max([last, *(a.seq for a in acks)])
    return last


async def publish_raw(js: JetStreamContext, subject: str, data: bytes, msg_id: str) -> int:
    ack = await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    return int(ack.seq)
