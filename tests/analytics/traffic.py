"""Realistic traffic as the gateway emits it, for the analytics tests and the
notebooks: the event sequences of successful (unary and streamed) requests,
upstream failures with retries, timeouts and authentication failures, spread
over several days, several orgs, projects, keys, models and providers.

Deterministic for a seed, and it remembers what it generated (``Expected``) so
tests compare rollups against the truth rather than against themselves.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from streams.events import (
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
from streams.events_compliance import HookVerdict, SpanFound, StageDecision
from streams.jetstream import connect, ensure_streams
from streams.publisher import Publisher
from streams.topology import Topology

# public model -> (provider, provider model, $ per 1M prompt, $ per 1M completion, median latency ms)
MODELS: dict[str, tuple[str, str, float, float, float]] = {
    "gpt-4o": ("openai", "gpt-4o-2024-08-06", 2.5, 10.0, 900.0),
    "gpt-4o-mini": ("openai", "gpt-4o-mini", 0.15, 0.6, 350.0),
    "claude-sonnet": ("anthropic", "claude-sonnet-4-5", 3.0, 15.0, 1100.0),
    "llama-70b": ("groq", "llama-3.3-70b-versatile", 0.59, 0.79, 250.0),
}
TENANTS: tuple[tuple[str, str, str], ...] = (
    ("org_acme", "proj_support", "vk_acme_support"),
    ("org_acme", "proj_search", "vk_acme_search"),
    ("org_acme", "proj_search", "vk_acme_batch"),
    ("org_globex", "proj_agents", "vk_globex_agents"),
    ("org_initech", "proj_reports", "vk_initech_reports"),
)
NODE = Node(kind="gateway", id="gw-test-1")
DAY_MS = 86_400_000


@dataclass
class Expected:
    """What was generated, per request id (completed or failed requests)."""

    requests: int = 0
    errors: int = 0
    cost_usd: Decimal = Decimal(0)
    total_tokens: int = 0
    latency_by_model: dict[str, list[float]] = field(default_factory=dict)
    requests_by_org: dict[str, int] = field(default_factory=dict)
    blocked: int = 0
    redacted: int = 0
    findings: int = 0


def uuid7_at(ms: int, rng: random.Random) -> str:
    """A UUIDv7 for a request received at ``ms``, as the gateway makes it."""
    rand = rng.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _cost(model: str, prompt: int, completion: int) -> float:
    _, _, p_in, p_out, _ = MODELS[model]
    return round((prompt * p_in + completion * p_out) / 1_000_000, 10)


def _verdict(
    common: dict[str, object], at_ms: int, hook: str, verdict: str, rule: str, spans: int
) -> HookVerdict:
    effective = "approve" if verdict in ("error", "timeout") else verdict
    return HookVerdict(
        **common,  # type: ignore[arg-type]
        occurred_at_ms=at_ms,
        stage="request",
        hook=hook,
        hook_type={"pii": "pii-detector", "secrets": "secret-scanner", "keywords": "keyword-filter"}[hook],
        verdict=verdict,
        effective=effective,
        reason_code={"approve": "", "redact": "pii_detected", "block": "secret_detected"}.get(
            verdict, "hook_timeout"
        ),
        rule=rule,
        spans=[SpanFound(entity=rule, start=10 * i, end=10 * i + 8) for i in range(spans)],
        elapsed_us=250,
    )


def compliance_events(
    rng: random.Random, common: dict[str, object], at_ms: int, expected: Expected
) -> tuple[list[Event], bool]:
    """What the request-stage hooks said (org_acme and org_globex run hooks);
    returns the events and whether the request was blocked."""
    tenant = common["tenant"]
    assert isinstance(tenant, Tenant)
    if tenant.org_id not in ("org_acme", "org_globex"):
        return [], False
    roll = rng.random()
    at = at_ms + 1
    if roll < 0.04:
        spans = rng.randint(1, 2)
        expected.blocked += 1
        expected.findings += spans
        return [
            _verdict(common, at, "pii", "approve", "", 0),
            _verdict(common, at, "secrets", "block", "AWS_ACCESS_KEY", spans),
            StageDecision(
                **common,
                occurred_at_ms=at,
                stage="request",
                decision="block",  # type: ignore[arg-type]
                blocking_hook="secrets",
                blocking_rule="AWS_ACCESS_KEY",
                reason_code="secret_detected",
                hooks_run=2,
                hooks_us=600,
            ),
        ], True
    if roll < 0.14:
        spans = rng.randint(1, 4)
        expected.redacted += 1
        expected.findings += spans
        return [
            _verdict(
                common,
                at,
                "pii",
                "redact",
                rng.choice(("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")),
                spans,
            ),
            _verdict(common, at, "secrets", "approve", "", 0),
            StageDecision(
                **common,
                occurred_at_ms=at,
                stage="request",
                decision="redact",  # type: ignore[arg-type]
                redacted=True,
                hooks_run=2,
                hooks_us=700,
            ),
        ], False
    verdict = "timeout" if roll > 0.99 else "approve"
    return [
        _verdict(common, at, "pii", "approve", "", 0),
        _verdict(common, at, "secrets", verdict, "", 0),
        StageDecision(
            **common,
            occurred_at_ms=at,
            stage="request",
            decision="approve",  # type: ignore[arg-type]
            hooks_run=2,
            hooks_us=400,
        ),
    ], False


def request_events(
    rng: random.Random, at_ms: int, expected: Expected, compliance: bool = True
) -> list[Event]:
    """The events of one request received at ``at_ms``."""
    org, project, key = rng.choice(TENANTS)
    tenant = Tenant(org_id=org, project_id=project, key_id=key)
    model = rng.choices(list(MODELS), weights=(3, 6, 2, 2))[0]
    provider, provider_model, _, _, median = MODELS[model]
    rid = uuid7_at(at_ms, rng)
    common = {"request_id": rid, "trace_id": rid, "node": NODE, "tenant": tenant}
    stream = rng.random() < 0.4
    roll = rng.random()
    expected.requests += 1
    expected.requests_by_org[org] = expected.requests_by_org.get(org, 0) + 1

    if roll < 0.03:  # bad key: rejected before a tenant is known
        expected.errors += 1
        return [
            RequestFailed(
                **{**common, "tenant": Tenant()},
                occurred_at_ms=at_ms,
                status=401,
                error_code="invalid_api_key",
                error_type="authentication_error",
                reason="virtual key not found",
                stage="auth",
                latency_ms=round(rng.uniform(0.3, 2.0), 3),
            )
        ]
    received = RequestReceived(
        **common,
        occurred_at_ms=at_ms,
        endpoint="chat",
        path="/v1/chat/completions",
        requested_model=model,
        stream=stream,
    )
    if roll < 0.045:  # the key may not use this model
        expected.errors += 1
        return [
            received,
            RequestFailed(
                **common,
                occurred_at_ms=at_ms + 1,
                status=403,
                error_code="model_not_allowed",
                error_type="permission_error",
                reason="model not in the key's allowed list",
                stage="route",
                latency_ms=round(rng.uniform(0.5, 3.0), 3),
            ),
        ]
    hooks, blocked = compliance_events(rng, common, at_ms, expected) if compliance else ([], False)
    if blocked:
        expected.errors += 1
        return [
            received,
            *hooks,
            RequestFailed(
                **common,
                occurred_at_ms=at_ms + 2,
                status=403,
                error_code="content_blocked",
                error_type="compliance_error",
                reason="a request-stage hook blocked the request",
                stage="hooks",
                latency_ms=round(rng.uniform(1.0, 6.0), 3),
            ),
        ]
    latency = round(rng.lognormvariate(0, 0.45) * median, 3)
    if roll < 0.10:  # upstream trouble: 429 / 502 / 504 after retries
        expected.errors += 1
        status = rng.choice((429, 502, 504))
        attempts = rng.randint(1, 3)
        events: list[Event] = [received, *hooks]
        for attempt in range(1, attempts + 1):
            events.append(
                UpstreamResult(
                    **common,
                    occurred_at_ms=at_ms + attempt * 200,
                    provider=provider,
                    provider_model=provider_model,
                    attempt=attempt,
                    status=status,
                    upstream_ms=round(latency / attempts, 3),
                    error_code={429: "rate_limited", 502: "upstream_error", 504: "upstream_timeout"}[status],
                )
            )
        events.append(
            RequestFailed(
                **common,
                occurred_at_ms=at_ms + int(latency),
                status=status,
                error_code={429: "rate_limited", 502: "upstream_error", 504: "upstream_timeout"}[status],
                error_type="upstream_error",
                reason="upstream failed after retries",
                stage="upstream",
                latency_ms=latency,
                provider=provider,
                provider_model=provider_model,
            )
        )
        expected.latency_by_model.setdefault(model, []).append(latency)
        return events

    prompt = rng.randint(50, 4000)
    completion = rng.randint(10, 800)
    cached = rng.choice((0, 0, prompt // 2))
    reasoning = completion // 3 if model == "claude-sonnet" and rng.random() < 0.5 else 0
    cost = _cost(model, prompt, completion)
    ttft = round(latency * rng.uniform(0.1, 0.3), 3) if stream else None
    expected.cost_usd += Decimal(str(cost))
    expected.total_tokens += prompt + completion
    expected.latency_by_model.setdefault(model, []).append(latency)
    end = at_ms + int(latency)
    return [
        received,
        *hooks,
        UpstreamResult(
            **common,
            occurred_at_ms=end - 1,
            provider=provider,
            provider_model=provider_model,
            status=200,
            upstream_ms=round(latency * 0.95, 3),
            ttft_ms=ttft,
        ),
        UsageRecorded(
            **common,
            occurred_at_ms=end,
            provider=provider,
            provider_model=provider_model,
            model=model,
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=cached,
                reasoning_tokens=reasoning,
            ),
            cost_usd=cost,
            config_version="cfg-1",
        ),
        RequestCompleted(
            **common,
            occurred_at_ms=end,
            status=200,
            latency_ms=latency,
            ttft_ms=ttft,
            provider=provider,
            provider_model=provider_model,
        ),
    ]


def generate(
    n_requests: int, *, days: int = 3, seed: int = 7, end_ms: int | None = None, compliance: bool = True
) -> tuple[list[Event], Expected]:
    """``n_requests`` requests spread over the ``days`` days before ``end_ms``
    (busier in working hours), in the order a gateway would emit them."""
    rng = random.Random(seed)
    end = end_ms if end_ms is not None else (1_790_000_000_000 // DAY_MS) * DAY_MS
    start = end - days * DAY_MS
    expected = Expected()
    stamped: list[tuple[int, int, Event]] = []
    for i in range(n_requests):
        at = start + int(rng.triangular(0, days * DAY_MS, days * DAY_MS * 0.6))
        for j, ev in enumerate(request_events(rng, at, expected, compliance)):
            stamped.append((ev.occurred_at_ms, i * 10 + j, ev))
    stamped.sort(key=lambda t: (t[0], t[1]))
    return [ev for _, _, ev in stamped], expected


async def publish(nats_url: str, topology: Topology, events: list[Event], outbox_dir: Path) -> None:
    """Publish through the real publisher and wait until JetStream holds them.

    ``Publisher.flush`` can return while a batch is still in flight (its
    buffer is empty and the outbox not yet written), so completion is judged
    by the stream's own message count."""
    nc = await connect(nats_url, name="analytics-test-publish")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    before = int((await js.stream_info(topology.traffic_stream)).state.messages)
    pub = Publisher(nats_url, topology, outbox_dir / "outbox.sqlite", name="analytics-test")
    await pub.start()
    try:
        async with asyncio.timeout(10):
            while not pub.connected:  # straight to JetStream, not via the outbox
                await asyncio.sleep(0.01)
        for ev in events:
            pub.emit(ev)
        await pub.flush(timeout=60)
        async with asyncio.timeout(60):
            while int((await js.stream_info(topology.traffic_stream)).state.messages) < before + len(events):
                await asyncio.sleep(0.05)
    finally:
        await pub.close()
        await nc.close()
