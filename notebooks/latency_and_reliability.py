# %% [markdown]
# # Latency and reliability
#
# How fast and how reliably each model and provider answers: latency
# percentiles, the p95 over time, error rates and what the errors were, and
# time to first token for streamed requests.
#
# Percentiles cannot be averaged or summed: p95 of a model over a week is not
# the mean of its daily p95s.  The rollups hold exact percentiles per bucket
# and dimension combination; any other grouping is computed here from
# `analytics.requests`, the per-request facts.

# %%
# ruff: noqa: B018 - a bare expression ending a cell is how a notebook shows a table
import matplotlib.pyplot as plt
import polars as pl
from _nexus import empty, q, save

# %% [markdown]
# ## Latency percentiles by model (whole period)

# %%
by_model = q(
    """
    SELECT model,
           count(*) AS requests,
           quantile_cont(latency_ms, 0.5) AS p50_ms,
           quantile_cont(latency_ms, 0.95) AS p95_ms,
           quantile_cont(latency_ms, 0.99) AS p99_ms
    FROM analytics.requests
    WHERE outcome IS NOT NULL AND latency_ms IS NOT NULL AND model <> '' AND provider <> ''
    GROUP BY model ORDER BY p95_ms DESC
    """
)
fig, ax = plt.subplots(figsize=(9, 4.2))
if by_model.is_empty():
    empty(ax, "no completed requests yet")
else:
    models = by_model["model"].to_list()
    width = 0.27
    for i, col in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        xs = [x + (i - 1) * width for x in range(len(models))]
        ax.bar(xs, by_model[col].to_list(), width=width, label=col.removesuffix("_ms"))
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize="small")
ax.set_title("Latency percentiles by model")
save(fig, "latency_percentiles_by_model.png")
by_model

# %% [markdown]
# ## p95 latency per hour, by provider

# %%
hourly = q(
    """
    SELECT date_trunc('hour', ts) AS hour, provider, quantile_cont(latency_ms, 0.95) AS p95_ms
    FROM analytics.requests
    WHERE outcome IS NOT NULL AND latency_ms IS NOT NULL AND provider <> ''
    GROUP BY ALL ORDER BY hour
    """
)
fig, ax = plt.subplots(figsize=(9, 3.8))
if hourly.is_empty():
    empty(ax, "no routed requests yet")
else:
    for (provider,), rows in hourly.group_by("provider", maintain_order=True):
        ax.plot(rows["hour"].to_list(), rows["p95_ms"].to_list(), label=provider, linewidth=1)
    ax.set_ylabel("p95 latency (ms)")
    ax.legend(fontsize="small")
    fig.autofmt_xdate()
ax.set_title("p95 latency per hour by provider")
save(fig, "latency_p95_per_hour.png")

# %% [markdown]
# ## Error rate by provider per day
# Requests rejected before routing (a bad key, a model the key may not use, a
# compliance block) never reached a provider: they are in the table as
# `(not routed)` but not in the chart, where they would read as a provider
# failing 100% of the time.

# %%
errors = q(
    """
    SELECT CAST(bucket AS DATE) AS day,
           CASE WHEN provider = '' THEN '(not routed)' ELSE provider END AS provider,
           CAST(sum(requests) AS BIGINT) AS requests, CAST(sum(errors) AS BIGINT) AS errors,
           CAST(sum(errors_4xx) AS BIGINT) AS errors_4xx, CAST(sum(errors_5xx) AS BIGINT) AS errors_5xx
    FROM analytics.rollup_day GROUP BY ALL ORDER BY ALL
    """
).with_columns((pl.col("errors") / pl.col("requests") * 100).alias("error_rate_pct"))
fig, ax = plt.subplots(figsize=(9, 3.8))
if errors.is_empty():
    empty(ax, "no traffic recorded yet")
else:
    routed = errors.filter(pl.col("provider") != "(not routed)")
    for (provider,), rows in routed.group_by("provider", maintain_order=True):
        ax.plot(
            [d.isoformat() for d in rows["day"]], rows["error_rate_pct"].to_list(), marker="o", label=provider
        )
    ax.set_ylim(bottom=0)
    ax.set_ylabel("errors (% of requests)")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", rotation=30)
ax.set_title("Error rate by provider per day")
save(fig, "error_rate_by_provider.png")
errors.group_by("provider").agg(
    pl.sum("requests"), pl.sum("errors_4xx"), pl.sum("errors_5xx"), pl.sum("errors")
).with_columns((pl.col("errors") / pl.col("requests") * 100).round(2).alias("error_rate_pct")).sort(
    "provider"
)

# %% [markdown]
# ## What the errors were

# %%
q(
    """
    SELECT status, error_code, error_stage, provider, count(*) AS requests
    FROM analytics.requests
    WHERE outcome = 'failed' OR status >= 400
    GROUP BY ALL ORDER BY requests DESC
    """
)

# %% [markdown]
# ## Time to first token (streamed requests)

# %%
ttft = q(
    """
    SELECT model, ttft_ms FROM analytics.requests
    WHERE stream AND ttft_ms IS NOT NULL AND outcome = 'completed'
    """
)
fig, ax = plt.subplots(figsize=(9, 3.8))
if ttft.is_empty():
    empty(ax, "no streamed requests yet")
else:
    for (model,), rows in ttft.group_by("model", maintain_order=True):
        ax.hist(rows["ttft_ms"].to_list(), bins=40, alpha=0.55, label=model)
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("requests")
    ax.legend(fontsize="small")
ax.set_title("Time to first token, streamed requests")
save(fig, "ttft_distribution.png")
ttft.group_by("model").agg(
    pl.len().alias("streamed"),
    pl.col("ttft_ms").median().alias("median_ttft_ms"),
).sort("median_ttft_ms")
