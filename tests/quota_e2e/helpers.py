"""What the quota end-to-end tests share: SDK clients, the figures of a
burst, reading the gateway's /v1/usage and the events on JetStream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from ingress.quota.pricing import price_usage
from streams import codec
from streams.config import Price
from streams.events import Usage
from tests.quota_e2e.conftest import PRICE, QuotaStack

PRICE_OBJ = Price(input=PRICE["input"], output=PRICE["output"])


def sdk(stack: QuotaStack, key_id: str) -> openai.AsyncOpenAI:
    # The SDK's own client class (its default pool holds 1000 connections).
    http = openai.DefaultAsyncHttpxClient(timeout=130)
    return openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys[key_id], max_retries=0, http_client=http)


def cost(prompt: int, completion: int) -> float:
    return price_usage(PRICE_OBJ, Usage(prompt_tokens=prompt, completion_tokens=completion))


@dataclass
class Burst:
    admitted: int = 0
    rejected: int = 0
    spend_usd: float = 0.0  # what the admitted requests cost, from the usage the SDK saw
    tokens: int = 0
    max_prompt: int = 0
    reject_codes: set[str] = field(default_factory=set)
    reject_headers: list[dict[str, str]] = field(default_factory=list)
    ok_headers: list[dict[str, str]] = field(default_factory=list)


async def one_call(
    c: openai.AsyncOpenAI, burst: Burst, i: int, *, model: str, max_tokens: int, stream: bool
) -> None:
    kw: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {i}: tell me about quotas and budgets"}],
        "max_tokens": max_tokens,
    }
    try:
        if stream:
            raw_s = await c.chat.completions.with_raw_response.create(
                **kw, stream=True, stream_options={"include_usage": True}
            )
            headers = dict(raw_s.headers)
            usage = None
            async for chunk in raw_s.parse():
                if chunk.usage is not None:
                    usage = chunk.usage
        else:
            raw = await c.chat.completions.with_raw_response.create(**kw)
            headers = dict(raw.headers)
            usage = raw.parse().usage
    except openai.RateLimitError as exc:
        burst.rejected += 1
        body = exc.body if isinstance(exc.body, dict) else {}
        burst.reject_codes.add(str(body.get("code")))
        burst.reject_headers.append(dict(exc.response.headers))
        return
    assert usage is not None, "every admitted call reports usage"
    burst.admitted += 1
    burst.spend_usd += cost(usage.prompt_tokens, usage.completion_tokens)
    burst.tokens += usage.prompt_tokens + usage.completion_tokens
    burst.max_prompt = max(burst.max_prompt, usage.prompt_tokens)
    burst.ok_headers.append(headers)


async def burst_of(
    c: openai.AsyncOpenAI, n: int, *, model: str, max_tokens: int, start: int = 0, into: Burst | None = None
) -> Burst:
    burst = into or Burst()
    await asyncio.gather(
        *(
            one_call(c, burst, start + i, model=model, max_tokens=max_tokens, stream=i % 2 == 1)
            for i in range(n)
        )
    )
    return burst


async def usage_of(stack: QuotaStack, key_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as h:
        r = await h.get(stack.url + "/usage", headers={"Authorization": f"Bearer {stack.keys[key_id]}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def limit(usage: dict[str, Any], limit_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [lim for lim in usage["limits"] if lim["id"] == limit_id]
    assert len(found) == 1, usage
    return found[0]


async def settled(stack: QuotaStack) -> None:
    assert await stack.publisher.flush(10)
    assert await stack.proc.wait_until_caught_up(10)


class Collector:
    """Every event of one type on the test's traffic stream, as it arrives."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._nc: Any = None

    async def start(self, nats_url: str, subject: str) -> None:
        import nats

        self._nc = await nats.connect(nats_url)
        js = self._nc.jetstream()

        async def got(msg: Any) -> None:
            self.events.append(codec.decode(msg.data))

        await js.subscribe(subject, cb=got, ordered_consumer=True)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
