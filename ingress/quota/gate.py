"""The hot-path quota check: estimate, then reserve on every applicable
counter (budgets on every axis, RPM, TPM) in one Valkey Lua call.

The reservation is what makes a hard cap hold under concurrency: a request
is admitted only if settled spend + every outstanding reservation + its own
worst case fits, atomically.  processors/quota later settles the
reservation against the request's UsageRecorded event (by request id) and
the difference goes back; a reservation nobody settles expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from prometheus_client import Counter as PromCounter

from ingress.quota.estimate import estimate_prompt_tokens, output_budget
from ingress.quota.resp import PipelinedValkey, StoreStalled
from ingress.routing.breaker import Breakers
from streams.config_routing import Breaker as BreakerConfig
from streams.quota_counters import NANO, ROLLING_LUA, Counter, Limit, QuotaPolicy, Subject

if TYPE_CHECKING:
    from adapters.canonical import ChatRequest
    from streams.config import Price
    from streams.config_snapshot import ConfigSnapshot

_HERE = Path(__file__).parent
RESERVE_LUA = ROLLING_LUA + (_HERE / "reserve.lua").read_text()
RELEASE_LUA = (_HERE / "release.lua").read_text()
_PURGE_PER_CALL = 32  # expired reservations released per call (amortised)
# The most one reservation holds on a counter.  The script's numbers are
# doubles (exact to 2**53) and its INCRBY takes what they print as, so a
# larger worst case (max_tokens 2**31 x 128 choices at a dear price is
# 10**18 nano-dollars) made the call fail and the request answer "quota
# store unreachable".  Clamped, it still exceeds every limit under 2**53
# (9 million dollars, 9 * 10**15 tokens): rejected where enforced, held in
# full where not.
MAX_AMOUNT = 2**53

DECISIONS = PromCounter("nexus_quota_decisions_total", "quota checks by outcome", ["outcome", "code"])
STORE_FAILURES = PromCounter(
    "nexus_quota_store_failures_total",
    "Quota store calls that got no answer, by reason (timeout | error | breaker_open)",
    ["reason"],
)
STORE = "quota-store"  # the breaker's target name (nexus_circuit_breaker_state{target})

Outcome = Literal["admit", "reject"]


class QuotaUnavailable(RuntimeError):
    """The store gave no answer (down, hung past the deadline, or its
    breaker is open): the gateway refuses with 503 (or, configured to fail
    open, serves without a reservation); it never reads this as a verdict."""

    def __init__(self, why: str, retry_after_s: float = 1.0) -> None:
        super().__init__(why)
        self.retry_after_s = retry_after_s


class CounterState(msgspec.Struct, frozen=True):
    limit_id: str
    counter_id: str
    unit: str  # usd | tokens | requests
    action: str
    window_id: str
    limit: float  # in the unit
    spent: float  # settled
    held: float  # reserved by requests in flight (this one excluded)
    request: float  # this request's reservation
    resets_at_ms: int

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.spent - self.held)


class QuotaDecision:
    """What the gateway acts on.  The per-counter view (``counters``,
    ``warnings``, ``headers()``) is built only when asked for: most admitted
    requests never need more than ``admitted`` and ``model``."""

    __slots__ = (
        "_amounts",
        "_raw",
        "_spec",
        "_states",
        "error_code",
        "estimated_prompt_tokens",
        "limit_id",
        "message",
        "model",
        "outcome",
        "output_cap",
        "requested_model",
        "reserved",
        "reserved_output_tokens",
        "retry_after_s",
    )

    def __init__(
        self,
        *,
        outcome: Outcome,
        model: str,
        requested_model: str,
        estimated_prompt_tokens: int = 0,
        reserved_output_tokens: int = 0,
    ) -> None:
        self.outcome: Outcome = outcome
        self.model = model  # the model to forward to (the target after a downgrade)
        self.requested_model = requested_model
        self.reserved = False  # a reservation is held: settled by the usage event or release()
        self.error_code = ""  # QUOTA_EXCEEDED | RATE_LIMITED | QUOTA_MODEL_UNPRICED
        self.message = ""
        self.limit_id = ""  # the limit that decided a reject
        self.retry_after_s: int | None = None
        self.estimated_prompt_tokens = estimated_prompt_tokens
        self.reserved_output_tokens = reserved_output_tokens
        # Set when a hard (or downgrade) budget or a TPM limit applies:
        # forward max_tokens no larger than this, and cut a stream off past
        # it (ingress.quota.stream.StreamMeter), so usage stays in the hold.
        self.output_cap: int | None = None
        self._spec: Sequence[Counter] = ()
        self._amounts: Sequence[int] = ()
        self._raw: Sequence[Any] = ()
        self._states: list[CounterState] | None = None

    def __repr__(self) -> str:
        return f"QuotaDecision({self.outcome}, model={self.model!r}, code={self.error_code!r})"

    @property
    def admitted(self) -> bool:
        return self.outcome == "admit"

    @property
    def downgraded(self) -> bool:
        return self.model != self.requested_model

    @property
    def counters(self) -> list[CounterState]:
        if self._states is None:
            states = []
            for i, c in enumerate(self._spec):
                lim = c.limit
                states.append(
                    CounterState(
                        limit_id=lim.id,
                        counter_id=c.cid,
                        unit=lim.unit,
                        action=lim.action,
                        window_id=c.window_id,
                        limit=lim.limit_display,
                        spent=_to_unit(lim, int(self._raw[1 + 2 * i])),
                        held=_to_unit(lim, int(self._raw[2 + 2 * i])),
                        request=_to_unit(lim, self._amounts[i]),
                        resets_at_ms=c.resets_at_ms,
                    )
                )
            self._states = states
        return self._states

    @property
    def warnings(self) -> list[str]:
        """Soft, track-only and downgrade budgets at or past an alert
        threshold or their limit, e.g. ``team-soft=85%``."""
        out = []
        for c, st in zip(self._spec, self.counters, strict=True):
            if c.limit.action not in ("soft", "track", "downgrade") or st.limit <= 0:
                continue
            used = (st.spent + st.held + st.request) / st.limit
            if used >= 1.0 or any(used >= t for t in c.limit.alert_at):
                out.append(f"{c.limit.id}={used:.0%}")
        return out

    def headers(self) -> dict[str, str]:
        return quota_headers(self)


def _fmt(unit: str, v: float) -> str:
    return f"{v:.6f}" if unit == "usd" else str(int(v))


def quota_headers(d: QuotaDecision) -> dict[str, str]:
    """X-Nexus-Quota-* (the original's names) for the tightest budget, plus
    OpenAI-style x-ratelimit-* for rate limits."""
    h: dict[str, str] = {}
    budgets = [c for c in d.counters if c.unit != "requests" and not c.limit_id.endswith(".tpm")]
    if budgets:
        tight = min(budgets, key=lambda c: c.remaining / c.limit if c.limit else 0.0)
        h["X-Nexus-Quota-Limit"] = f"{_fmt(tight.unit, tight.limit)} {tight.unit} ({tight.limit_id})"
        h["X-Nexus-Quota-Used"] = _fmt(tight.unit, tight.spent + tight.held + tight.request)
        h["X-Nexus-Quota-Remaining"] = _fmt(
            tight.unit, max(0.0, tight.limit - tight.spent - tight.held - tight.request)
        )
        h["X-Nexus-Quota-Reset"] = str(tight.resets_at_ms // 1000)
    for c in d.counters:
        kind = "requests" if c.unit == "requests" else "tokens" if c.limit_id.endswith(".tpm") else ""
        if not kind:
            continue
        h[f"x-ratelimit-limit-{kind}"] = str(int(c.limit))
        h[f"x-ratelimit-remaining-{kind}"] = str(int(max(0.0, c.limit - c.spent - c.held - c.request)))
    warnings = d.warnings
    if warnings:
        h["X-Nexus-Quota-Warning"] = ", ".join(warnings)
    if d.downgraded:
        h["X-Nexus-Quota-Downgrade"] = d.model
        h["X-Nexus-Quota-Original-Model"] = d.requested_model
    if d.retry_after_s is not None:
        h["Retry-After"] = str(d.retry_after_s)
    return h


def _to_unit(lim: Limit, v: float) -> float:
    return v / NANO if lim.unit == "usd" else v


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class QuotaGate:
    """One per gateway process (per config snapshot); cheap to rebuild when
    the snapshot changes since the Lua scripts are cached by sha."""

    def __init__(
        self,
        client: Any,  # valkey.asyncio.Valkey
        policy: QuotaPolicy,
        *,
        provider_kinds: dict[str, str] | None = None,
        clock: Callable[[], int] = _now_ms,
        timeout_s: float = 5.0,
        breaker_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        store = policy.config.store
        # A hung store is noticed by the pipelined client (the gateway's):
        # requests waiting and not a byte from the store for
        # quotas.store.timeout_ms fail them at once (ingress.quota.resp).
        # A deadline per call is only the backstop (other clients): measured
        # on the caller's side it also counts our own queueing (a pool
        # connection, a busy event loop), which a burst made exceed 250 ms
        # with the store answering in microseconds.
        if isinstance(client, PipelinedValkey):
            client.stall_s = store.timeout_ms / 1000
        # One deadline per call, here: the gateway's pool runs without
        # valkey-py's per-socket-operation timeouts, which cost a task and
        # two timers on every command (a few percent of a request's CPU).
        self.timeout_s = timeout_s
        # Past a few failures the store is not asked at all: each request
        # is answered at once instead of waiting on it in turn (a hung store
        # held every quota-checked request for 5 s, and they piled up until
        # the gateway shed all traffic as "at capacity").
        b = store.breaker
        self.breaker = Breakers(
            BreakerConfig(failures=b.failures, window_s=b.window_s, open_s=b.open_s, half_open_probes=1),
            clock=breaker_clock,
        )
        self._compensating: set[asyncio.Task[None]] = set()
        self.policy = policy
        self.provider_kinds = provider_kinds or {}
        self.clock = clock
        self._reserve = client.register_script(RESERVE_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._metric: dict[tuple[str, str], Any] = {}
        self._args: dict[int, tuple[Sequence[Counter], list[str], list[str]]] = {}

    @classmethod
    def from_snapshot(cls, client: Any, snapshot: ConfigSnapshot, key_prefix: str, **kw: Any) -> QuotaGate:
        kinds = {p.name: p.kind for p in snapshot.config.providers}
        return cls(client, QuotaPolicy(snapshot.config, key_prefix), provider_kinds=kinds, **kw)

    # -- estimate --------------------------------------------------------

    def estimate(self, req: ChatRequest, model: str, provider: str = "") -> tuple[int, int]:
        """(prompt tokens, output tokens to reserve) for a chat request."""
        model = self.policy.canonical_model(model)
        provider = provider or self.policy.model_provider.get(model, "")
        kind = self.provider_kinds.get(provider, "openai")
        prompt = estimate_prompt_tokens(req, kind, model)
        out = output_budget(req, self.policy.max_output.get(model, 0), self.policy.config.default_max_tokens)
        return prompt, out

    # -- check + reserve -------------------------------------------------

    async def check(
        self,
        *,
        request_id: str,
        org: str,
        project: str = "",
        key: str = "",
        user: str = "",
        model: str,
        provider: str = "",
        prompt_tokens: int,
        max_output_tokens: int,
        now_ms: int | None = None,
    ) -> QuotaDecision:
        """Decide and, when admitted, hold the reservation.  Call before
        forwarding; the request's UsageRecorded event (same request_id)
        settles it, or call release() when no usage will be recorded."""
        now = self.clock() if now_ms is None else now_ms
        requested = self.policy.canonical_model(model)
        subject = Subject(
            org=org,
            project=project,
            key=key,
            user=user,
            provider=provider or self.policy.model_provider.get(requested, ""),
            model=requested,
        )
        decision = await self._attempt(request_id, subject, requested, prompt_tokens, max_output_tokens, now)
        if decision.outcome == "reject" and decision.error_code == "downgrade":
            target = self.policy.canonical_model(decision.model)
            down = msgspec.structs.replace(
                subject, model=target, provider=self.policy.model_provider.get(target, "")
            )
            decision = await self._attempt(
                request_id, down, requested, prompt_tokens, max_output_tokens, now, downgraded=True
            )
        label = (
            "downgrade" if decision.admitted and decision.downgraded else decision.outcome,
            decision.error_code,
        )
        child = self._metric.get(label)
        if child is None:
            child = self._metric[label] = DECISIONS.labels(*label)
        child.inc()
        return decision

    def _amount(self, lim: Limit, price: Price | None, prompt: int, out: int) -> int:
        if lim.unit == "requests":
            return 1
        if lim.unit == "tokens":
            return min(prompt + out, MAX_AMOUNT)
        assert price is not None
        # The worst case: every prompt token at the dearest input rate and
        # every output token at the dearest output rate.
        p_in = max(price.input, price.cache_write or 0.0, price.cached_input or 0.0)
        p_out = max(price.output, price.reasoning or 0.0)
        return min(math.ceil((prompt * p_in + out * p_out) * NANO / 1_000_000), MAX_AMOUNT)

    async def _attempt(
        self,
        request_id: str,
        s: Subject,
        requested: str,
        prompt: int,
        out: int,
        now: int,
        *,
        downgraded: bool = False,
    ) -> QuotaDecision:
        counters = self.policy.counters(s, now)
        base = QuotaDecision(
            outcome="admit",
            model=s.model,
            requested_model=requested,
            estimated_prompt_tokens=prompt,
            reserved_output_tokens=out,
        )
        if not counters:
            return base
        price = self.policy.prices.get(s.model)
        if price is None and any(c.limit.unit == "usd" for c in counters):
            usd = next(c for c in counters if c.limit.unit == "usd")
            base.outcome = "reject"
            base.error_code = "QUOTA_MODEL_UNPRICED"
            base.limit_id = usd.limit.id
            base.message = (
                f"model {s.model!r} has no price and USD budget {usd.limit.id!r} applies; "
                "refusing rather than spending unmetered"
            )
            return base
        amounts = [self._amount(c.limit, price, prompt, out) for c in counters]

        def enforced(c: Counter) -> bool:
            return c.limit.action == "hard" or (c.limit.action == "downgrade" and not downgraded)

        raw = await self._call(request_id, counters, amounts, now, enforced)
        status = int(raw[0])
        if status == -1:
            base.outcome = "reject"
            base.error_code = "DUPLICATE_REQUEST_ID"
            base.message = "this request id already holds a reservation"
            return base
        base._spec, base._amounts, base._raw = counters, amounts, raw
        if status == 1:
            base.reserved = True
            if any(enforced(c) and c.limit.unit != "requests" for c in counters):
                base.output_cap = out
            return base
        failing = [
            i
            for i, c in enumerate(counters)
            if enforced(c) and int(raw[1 + 2 * i]) + int(raw[2 + 2 * i]) + amounts[i] > c.limit.limit
        ]
        hard = [i for i in failing if counters[i].limit.action == "hard"]
        if not hard and failing:
            # Only downgrade budgets are over: retry on the cheaper model.
            target = counters[failing[0]].limit.downgrade_to or s.model
            if self.policy.canonical_model(target) != s.model:
                base.outcome = "reject"
                base.error_code = "downgrade"
                base.model = target
                return base
            hard = failing
        first = counters[hard[0] if hard else 0]
        base.outcome = "reject"
        base.limit_id = first.limit.id
        rate = first.limit.id.endswith((".rpm", ".tpm"))
        base.error_code = "RATE_LIMITED" if rate else "QUOTA_EXCEEDED"
        base.retry_after_s = max(1, math.ceil((first.resets_at_ms - now) / 1000))
        what = "rate limit" if rate else "budget"
        base.message = f"{what} {first.limit.id!r} exhausted for this request"
        return base

    async def _call(
        self,
        request_id: str,
        counters: Sequence[Counter],
        amounts: Sequence[int],
        now: int,
        enforced: Callable[[Counter], bool],
        *,
        mode: str = "reserve",
    ) -> list[Any]:
        keys = self.policy.keys
        ttl_ms = int(self.policy.config.reservation_ttl_s * 1000)
        # The policy hands out the same counters list for a subject all
        # through one second: reuse the per-counter parts of the arguments.
        hit = self._args.get(id(counters))
        if hit is None or hit[0] is not counters:
            if len(self._args) > 10_000:
                self._args.clear()
            kv_tail = [k for c in counters for k in (c.spent_key, c.held_key)]
            heads = [f"{1 if c.rolling else 0},{c.bucket},{c.nbuckets},{c.limit.limit}," for c in counters]
            hit = self._args[id(counters)] = (counters, kv_tail, heads)
        kv = [keys.res_expiry, keys.reservation(request_id), *hit[1]]
        packed = "".join(
            f"{head}{amount},{1 if enforced(c) else 0};"
            for head, amount, c in zip(hit[2], amounts, counters, strict=True)
        )
        argv = [mode, now, now + ttl_ms, keys.res_prefix, request_id, _PURGE_PER_CALL, packed]
        return await self._ask(self._reserve(keys=kv, args=argv), request_id if mode == "reserve" else "")

    async def _ask(self, call: Any, reserving: str) -> list[Any]:
        """One script call under the deadline and the breaker.  ``reserving``:
        the request id whose reservation the call may make."""
        if not self.breaker.allow(STORE):
            call.close()  # never sent
            STORE_FAILURES.labels("breaker_open").inc()
            raise QuotaUnavailable("quota store breaker open", self.breaker.config.open_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                result: list[Any] = await call
        except (TimeoutError, StoreStalled) as exc:  # silent past quotas.store.timeout_ms, or the backstop
            self._failed("timeout", reserving)
            raise QuotaUnavailable("quota store not answering") from exc
        except asyncio.CancelledError:  # the caller went away: no verdict on the store
            self.breaker.release(STORE)
            self._compensate(reserving)
            raise
        except Exception as exc:  # connection refused or lost, an error reply
            self._failed("error", reserving)
            raise QuotaUnavailable("quota store unreachable") from exc
        self.breaker.success(STORE)
        return result

    def _failed(self, reason: str, reserving: str) -> None:
        STORE_FAILURES.labels(reason).inc()
        self.breaker.failure(STORE)
        self._compensate(reserving)

    def _compensate(self, request_id: str) -> None:
        """A reserve we gave up on may still run once the store wakes (its
        command is written): queue its release behind it, so that a request
        we refused holds nothing.  On the pipelined client, one connection
        in order, the release runs after the reserve; on a pool it may run
        first, and the hold then lasts until the reservation's expiry."""
        if not request_id:
            return
        task = asyncio.get_running_loop().create_task(self._release_quietly(request_id))
        self._compensating.add(task)
        task.add_done_callback(self._compensating.discard)

    async def _release_quietly(self, request_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.release(request_id)

    async def release(self, request_id: str) -> int:
        """Give back a reservation that no usage event will settle (the
        request failed before the provider billed anything)."""
        keys = self.policy.keys
        async with asyncio.timeout(self.timeout_s):
            n: int = await self._release(
                keys=[keys.res_expiry, keys.reservation(request_id)], args=[request_id]
            )
        return n

    async def peek(self, counters: Sequence[Counter], now: int) -> list[tuple[int, int]]:
        """(spent, held) of counters, without reserving (for /v1/usage)."""
        if not counters:
            return []
        raw = await self._call("", counters, [0] * len(counters), now, lambda c: False, mode="peek")
        return [(int(raw[1 + 2 * i]), int(raw[2 + 2 * i])) for i in range(len(counters))]
