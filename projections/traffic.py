"""The ``traffic_event`` read model as pure functions: which columns each
event sets (``delta``), and how two partial rows of one request combine
(``merge``).  The stores turn the same rules into SQL, so folding a batch in
memory and upserting it gives the same row as applying events one by one.

Every merge rule is commutative and idempotent, which is what makes arrival
order and redelivery irrelevant:

* ``SET``    -- the column has one owning event type; a delta that does not
  carry it leaves it alone (``COALESCE(new, old)``).
* ``MIN`` / ``MAX`` -- the smallest / largest value seen wins.
* ``RANKED`` -- several event types speak about the column (the provider is
  named by every upstream attempt, by the usage record and by the outcome);
  the delta with the highest rank wins, the rank column keeps the maximum.
* ``UNION`` -- a set of labels (comma-joined, sorted): several events add to
  it (the compliance tags of each hook stage).

Adding a column: a numbered migration for each store, a ``Column`` here and a
line in the event's ``delta`` function.  ``tests/projections`` checks that the
migrations and this table agree.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streams.events import (
    Event,
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    UpstreamResult,
    UsageRecorded,
)
from streams.events_compliance import StageDecision
from streams.events_proxy import ProxyConnection, ProxyRequest

PROJECTION = "traffic_event"
TABLE = "traffic_event"


class Rule(enum.Enum):
    SET = "set"
    MIN = "min"
    MAX = "max"
    RANKED = "ranked"
    UNION = "union"


class Kind(enum.Enum):
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TS = "ts"  # carried as epoch milliseconds, stored as a timestamp


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    rule: Rule = Rule.SET
    rank: str = ""  # the rank column of a RANKED column


# Ranks of the "route" group (provider, provider_model): the outcome names the
# provider that actually answered, so it outranks the usage record, which
# outranks any single upstream attempt (ranked by attempt number).
_ROUTE_USAGE = 1_000
_ROUTE_COMPLETED = 2_000
_ROUTE_FAILED = 3_000
# Ranks of the "outcome" group: a failure outranks a completion (a stream can
# start with 200 and then break); an abort (the reconciler's guess that the
# node died) yields to either, should the node's own outcome arrive after
# all.  (Migration 0006 doubled the ranks stored before aborts existed.)
_OUTCOME_ABORTED = 1
_OUTCOME_COMPLETED = 2
_OUTCOME_FAILED = 4

_T, _I, _F, _B, _TS = Kind.TEXT, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.TS

COLUMNS: tuple[Column, ...] = (
    Column("request_id", _T),
    Column("trace_id", _T),
    Column("first_seen_at", _TS, Rule.MIN),
    Column("received_at", _TS),
    Column("completed_at", _TS, Rule.RANKED, "outcome_rank"),
    Column("org_id", _T),
    Column("project_id", _T),
    Column("key_id", _T),
    Column("user_id", _T),
    Column("node_kind", _T),
    Column("node_id", _T),
    Column("ingress", _T),
    Column("endpoint", _T),
    Column("ingress_format", _T),
    Column("method", _T),
    Column("path", _T),
    Column("requested_model", _T),
    Column("stream", _B),
    Column("client_ip", _T),
    Column("user_agent", _T),
    Column("request_bytes", _I),
    Column("model", _T),
    Column("provider", _T, Rule.RANKED, "route_rank"),
    Column("provider_model", _T, Rule.RANKED, "route_rank"),
    Column("route_rank", _I, Rule.MAX),
    Column("upstream_attempt", _I, Rule.MAX),
    Column("upstream_status", _I, Rule.RANKED, "upstream_attempt"),
    Column("upstream_ms", _F, Rule.RANKED, "upstream_attempt"),
    Column("upstream_ttft_ms", _F, Rule.RANKED, "upstream_attempt"),
    Column("upstream_error_code", _T, Rule.RANKED, "upstream_attempt"),
    Column("routing_rule", _T, Rule.RANKED, "upstream_attempt"),
    Column("outcome", _T, Rule.RANKED, "outcome_rank"),
    Column("status", _I, Rule.RANKED, "outcome_rank"),
    Column("latency_ms", _F, Rule.RANKED, "outcome_rank"),
    Column("outcome_rank", _I, Rule.MAX),
    Column("ttft_ms", _F),
    Column("attempts", _I),
    Column("cache_status", _T),
    Column("error_code", _T),
    Column("error_type", _T),
    Column("error_stage", _T),
    Column("error_reason", _T),
    Column("prompt_tokens", _I),
    Column("completion_tokens", _I),
    Column("cached_tokens", _I),
    Column("cache_creation_tokens", _I),
    Column("reasoning_tokens", _I),
    Column("total_tokens", _I),
    Column("cost_usd", _F),
    Column("priced", _B),
    Column("usage_estimated", _B),
    Column("config_version", _T),
    # Compliance (one StageDecision per hook stage; migration 0002).
    Column("passthrough_flags", _T),
    Column("connection_hook_decision", _T),
    Column("request_hook_decision", _T),
    Column("request_hook_blocking_rule", _T),
    Column("request_hook_reason_code", _T),
    Column("request_hook_us", _I),
    Column("response_hook_decision", _T),
    Column("response_hook_blocking_rule", _T),
    Column("response_hook_reason_code", _T),
    Column("response_hook_us", _I),
    Column("response_hook_mode", _T),
    Column("compliance_tags", _T, Rule.UNION),
    # Cache (migration 0003): what a hit saved.
    Column("cache_saving_usd", _F),
    # Routing (migration 0004): the pooled credential of the final attempt.
    Column("credential_id", _T, Rule.RANKED, "upstream_attempt"),
    # The compliance proxy (migration 0005): a connection's row, or a request
    # seen inside a bumped one.
    Column("bump_status", _T),
    Column("target_host", _T),
    Column("ai_service", _T),
    Column("device_id", _T),
    Column("connection_id", _T),
    Column("bytes_up", _I),
    Column("bytes_down", _I),
    Column("credential_fingerprint", _T),
    Column("credential_class", _T),
    Column("connection_ms", _F),
    Column("connection_status", _I),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
RANK_COLUMNS: tuple[str, ...] = tuple(sorted({c.rank for c in COLUMNS if c.rank}))

Row = dict[str, Any]


# --- deltas: the columns one event sets -------------------------------------


def _received(e: RequestReceived) -> Row:
    t = e.tenant
    row: Row = {
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "first_seen_at": e.occurred_at_ms,
        "received_at": e.occurred_at_ms,
        "org_id": t.org_id,
        "project_id": t.project_id,
        "key_id": t.key_id,
        "user_id": t.user_id,
        "node_kind": e.node.kind,
        "node_id": e.node.id,
        "ingress": e.ingress,
        "endpoint": e.endpoint,
        "ingress_format": e.ingress_format,
        "method": e.method,
        "path": e.path,
        "requested_model": e.requested_model,
        "stream": e.stream,
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "request_bytes": e.body.size if e.body is not None else None,
        "passthrough_flags": ",".join(e.passthrough_flags) or None,
    }
    i = e.interception
    if i is not None:
        # A decrypted request the proxy ran through the pipeline: the same
        # columns its connection's row and a relayed request's row use.
        row.update(
            bump_status=i.bump_status or None,
            connection_id=i.connection_id or None,
            target_host=i.target_host or None,
            ai_service=i.ai_service or None,
            device_id=i.device_id or None,
            credential_fingerprint=i.credential_fingerprint or None,
            credential_class=i.credential_class or None,
        )
    return row


def _route(row: Row, provider: str, provider_model: str, rank: int) -> Row:
    # An event that names no provider (an auth failure, say) makes no claim.
    if provider or provider_model:
        row["provider"] = provider
        row["provider_model"] = provider_model
        row["route_rank"] = rank
    return row


def _upstream(e: UpstreamResult) -> Row:
    attempt = max(e.attempt, 1)
    row: Row = {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms,
        "upstream_attempt": attempt,
        "upstream_status": e.status,
        "upstream_ms": e.upstream_ms,
        "upstream_ttft_ms": e.ttft_ms,
        "upstream_error_code": e.error_code,
        "routing_rule": e.routing_rule,
        "credential_id": e.credential_id,
    }
    return _route(row, e.provider, e.provider_model, min(attempt, _ROUTE_USAGE - 1))


def _usage(e: UsageRecorded) -> Row:
    u = e.usage
    row: Row = {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms,
        "model": e.model,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
        "cache_creation_tokens": u.cache_creation_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "total_tokens": u.total_tokens or (u.prompt_tokens + u.completion_tokens),
        "cost_usd": e.cost_usd,
        "priced": e.priced,
        "usage_estimated": e.estimated,
        "config_version": e.config_version,
    }
    return _route(row, e.provider, e.provider_model, _ROUTE_USAGE)


def _completed(e: RequestCompleted) -> Row:
    row: Row = {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms,
        "completed_at": e.occurred_at_ms,
        "outcome": "completed",
        "status": e.status,
        "latency_ms": e.latency_ms,
        "outcome_rank": _OUTCOME_COMPLETED,
        "ttft_ms": e.ttft_ms,
        "attempts": e.attempts,
        "cache_status": e.cache_status,
        "cache_saving_usd": e.cache_saving_usd,
        # A cache hit records no usage: the outcome names the model too.
        "model": e.model or None,
    }
    return _route(row, e.provider, e.provider_model, _ROUTE_COMPLETED)


def _failed(e: RequestFailed) -> Row:
    row: Row = {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms,
        "completed_at": e.occurred_at_ms,
        "outcome": "failed",
        "status": e.status,
        "latency_ms": e.latency_ms,
        "outcome_rank": _OUTCOME_FAILED,
        "attempts": e.attempts,
        "error_code": e.error_code,
        "error_type": e.error_type,
        "error_stage": e.stage,
        "error_reason": e.reason,
        "model": e.model or None,  # a failed request records no usage
    }
    return _route(row, e.provider, e.provider_model, _ROUTE_FAILED)


def _labels(values: Iterable[str]) -> str | None:
    """A UNION column's value: sorted, distinct, comma-joined; None for none
    (never "", which the SQL side would read as one empty label)."""
    found = sorted({v.replace(",", ";") for v in values if v})
    return ",".join(found) or None


def _stage(e: StageDecision) -> Row:
    row: Row = {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms,
        "compliance_tags": _labels(e.tags),
    }
    if e.stage == "connection":
        row["connection_hook_decision"] = e.decision
    elif e.stage in ("request", "response"):
        p = e.stage
        row[f"{p}_hook_decision"] = e.decision
        row[f"{p}_hook_blocking_rule"] = e.blocking_rule
        row[f"{p}_hook_reason_code"] = e.reason_code
        row[f"{p}_hook_us"] = e.hooks_us
        if p == "response":
            row["response_hook_mode"] = e.streaming_mode
    return row


def _proxy_connection(e: ProxyConnection) -> Row:
    # No outcome: a connection is not a request, and the analytics rollups
    # count rows with an outcome as requests.
    t = e.tenant
    start = e.occurred_at_ms - int(e.duration_ms)
    return {
        "request_id": e.request_id,
        "first_seen_at": start,
        "received_at": start,
        "org_id": t.org_id,
        "project_id": t.project_id,
        "key_id": t.key_id,
        "user_id": t.user_id,
        "node_kind": e.node.kind,
        "node_id": e.node.id,
        "ingress": "proxy",
        "endpoint": "connect",
        "method": e.method,
        "path": f"{e.target_host}:{e.target_port}",
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "error_reason": e.reason or None,
        "bump_status": e.bump_status,
        "target_host": e.target_host,
        "ai_service": e.ai_service or None,
        "device_id": e.device_id or None,
        "connection_id": e.request_id,
        "bytes_up": e.bytes_up,
        "bytes_down": e.bytes_down,
        "connection_ms": e.duration_ms,
        "connection_status": e.status,
    }


def _proxy_request(e: ProxyRequest) -> Row:
    t = e.tenant
    failed = e.status >= 400 or e.status == 0
    return {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms - int(e.latency_ms),
        "received_at": e.occurred_at_ms - int(e.latency_ms),
        "completed_at": e.occurred_at_ms,
        "org_id": t.org_id,
        "project_id": t.project_id,
        "key_id": t.key_id,
        "user_id": t.user_id,
        "node_kind": e.node.kind,
        "node_id": e.node.id,
        "ingress": "proxy",
        "endpoint": "proxied",
        "method": e.method,
        "path": e.path,
        "requested_model": e.model or None,
        "stream": e.stream,
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "request_bytes": e.bytes_up,
        "outcome": "failed" if failed else "completed",
        "status": e.status,
        "latency_ms": e.latency_ms,
        "outcome_rank": _OUTCOME_FAILED if failed else _OUTCOME_COMPLETED,
        "error_reason": e.adapter_error or None,
        "bump_status": e.bump_status,
        "target_host": e.host,
        "ai_service": e.ai_service or None,
        "connection_id": e.connection_id,
        "bytes_up": e.bytes_up,
        "bytes_down": e.bytes_down,
        "credential_fingerprint": e.credential_fingerprint or None,
        "credential_class": e.credential_class or None,
    }


def _aborted(e: RequestAborted) -> Row:
    # Only what an abort knows: no status (the caller got whatever the
    # cut connection gave them), no provider.
    return {
        "request_id": e.request_id,
        "first_seen_at": e.occurred_at_ms,
        "completed_at": e.occurred_at_ms,
        "outcome": "aborted",
        "outcome_rank": _OUTCOME_ABORTED,
        "status": None,
        "latency_ms": None,
    }


_DELTAS: dict[type, Callable[[Any], Row]] = {
    RequestAborted: _aborted,
    RequestReceived: _received,
    UpstreamResult: _upstream,
    UsageRecorded: _usage,
    RequestCompleted: _completed,
    RequestFailed: _failed,
    StageDecision: _stage,
    ProxyConnection: _proxy_connection,
    ProxyRequest: _proxy_request,
}


def delta(event: object) -> Row | None:
    """The columns ``event`` sets, or None when it does not touch this table
    (an event type this projection ignores, or one without a request id)."""
    fn = _DELTAS.get(type(event))
    if fn is None or not isinstance(event, Event) or not event.request_id:
        return None
    return fn(event)


# --- merging partial rows -----------------------------------------------------


# name -> (rule, index of its rank column in RANK_COLUMNS or -1): merge runs
# for most events of a batch, so it works from plain tuples.
_SET, _MIN, _MAX, _RANKED, _UNION = 0, 1, 2, 3, 4
_CODE = {Rule.SET: _SET, Rule.MIN: _MIN, Rule.MAX: _MAX, Rule.RANKED: _RANKED, Rule.UNION: _UNION}
_MERGE: dict[str, tuple[int, str]] = {c.name: (_CODE[c.rule], c.rank) for c in COLUMNS}


def merge(old: Row, new: Row) -> Row:
    """Combine two partial rows of one request (in place into ``old``)."""
    # Ranks as they were before this merge (rank columns change below).
    old_ranks = {r: old.get(r) or 0 for r in RANK_COLUMNS}
    for name, value in new.items():
        code, rank = _MERGE[name]
        if code == _SET:
            if value is not None:
                old[name] = value
        elif code == _RANKED:
            if (new.get(rank) or 0) > old_ranks[rank]:
                old[name] = value
        elif code == _UNION:
            if value:
                cur = old.get(name)
                old[name] = _labels((*(cur.split(",") if cur else ()), *value.split(",")))
        elif value is not None:
            cur = old.get(name)
            if cur is None:
                old[name] = value
            elif code == _MIN:
                if value < cur:
                    old[name] = value
            elif value > cur:
                old[name] = value
    return old


def fold(events: Iterable[object]) -> dict[str, Row]:
    """One partial row per request id for a batch of events."""
    rows: dict[str, Row] = {}
    for event in events:
        d = delta(event)
        if d is None:
            continue
        rid = d["request_id"]
        cur = rows.get(rid)
        if cur is None:
            rows[rid] = d
        else:
            merge(cur, d)
    return rows
