# %% [markdown]
# # Cost and usage
#
# Where the money and the tokens go: cost per organisation per day, tokens per
# model, traffic per hour and the most expensive keys.  Reads the analytics
# schema (docs/analytics-schema.md) from the DuckDB file in
# `NEXUS_ANALYTICS_DB` (default `~/.nexus/analytics.duckdb`), or from a Parquet
# export in `NEXUS_ANALYTICS_PARQUET` (`nexus analytics export --out DIR`), and
# writes its charts as PNG files to `NEXUS_NOTEBOOK_OUT` (default `charts/`).

# %%
# ruff: noqa: B018 - a bare expression ending a cell is how a notebook shows a table
import matplotlib.pyplot as plt
import polars as pl
from _nexus import empty, q, save

# %% [markdown]
# ## Totals

# %%
totals = q(
    """
    SELECT CAST(sum(requests) AS BIGINT) AS requests, CAST(sum(errors) AS BIGINT) AS errors,
           CAST(sum(total_tokens) AS BIGINT) AS tokens,
           CAST(sum(cost_usd) AS DOUBLE) AS cost_usd,
           CAST(sum(cache_savings_usd) AS DOUBLE) AS cache_savings_usd,
           CAST(min(bucket) AS DATE) AS first_day, CAST(max(bucket) AS DATE) AS last_day
    FROM analytics.rollup_day
    """
)
totals

# %% [markdown]
# ## Cost per day by organisation
# Organisations that spent nothing (requests rejected before a tenant is
# known carry no org) are left out of the chart.

# %%
daily = q(
    """
    SELECT CAST(bucket AS DATE) AS day, CASE WHEN org_id = '' THEN '(none)' ELSE org_id END AS org,
           CAST(sum(cost_usd) AS DOUBLE) AS cost_usd
    FROM analytics.rollup_day GROUP BY ALL ORDER BY ALL
    """
)
fig, ax = plt.subplots(figsize=(9, 4.5))
if daily.is_empty():
    empty(ax, "no traffic recorded yet")
else:
    wide = daily.pivot(on="org", index="day", values="cost_usd").fill_null(0).sort("day")
    days = [d.isoformat() for d in wide["day"]]
    bottom = [0.0] * wide.height
    paying = sorted(c for c in wide.columns if c != "day" and wide[c].sum() > 0)
    for org in paying:
        values = wide[org].to_list()
        ax.bar(days, values, bottom=bottom, label=org)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("USD")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", rotation=30)
ax.set_title("Cost per day by organisation")
save(fig, "cost_by_org_per_day.png")

# %% [markdown]
# ## Tokens by model
# Cached prompt tokens are a subset of prompt tokens, reasoning tokens a
# subset of completion tokens; the bars split them out.

# %%
tokens = q(
    """
    SELECT model,
           CAST(sum(prompt_tokens) AS BIGINT) AS prompt, CAST(sum(cached_tokens) AS BIGINT) AS cached,
           CAST(sum(completion_tokens) AS BIGINT) AS completion,
           CAST(sum(reasoning_tokens) AS BIGINT) AS reasoning,
           CAST(sum(cost_usd) AS DOUBLE) AS cost_usd, CAST(sum(requests) AS BIGINT) AS requests
    FROM analytics.rollup_day WHERE model <> '' GROUP BY model ORDER BY cost_usd DESC
    """
).with_columns(
    (pl.col("prompt") - pl.col("cached")).alias("prompt_uncached"),
    (pl.col("completion") - pl.col("reasoning")).alias("completion_visible"),
    (pl.col("cost_usd") / pl.col("requests") * 1000).alias("usd_per_1k_requests"),
)
fig, ax = plt.subplots(figsize=(9, 4))
if tokens.is_empty():
    empty(ax, "no usage recorded yet")
else:
    left = [0] * tokens.height
    models = tokens["model"].to_list()
    for part in ("prompt_uncached", "cached", "completion_visible", "reasoning"):
        values = tokens[part].to_list()
        ax.barh(models, values, left=left, label=part.replace("_", " "))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("tokens")
    ax.legend(fontsize="small")
ax.set_title("Tokens by model")
save(fig, "tokens_by_model.png")
tokens.select("model", "requests", "cost_usd", "usd_per_1k_requests")

# %% [markdown]
# ## Traffic per hour

# %%
hourly = q(
    """
    SELECT bucket AS hour, CAST(sum(requests) AS BIGINT) AS requests, CAST(sum(errors) AS BIGINT) AS errors
    FROM analytics.rollup_hour GROUP BY ALL ORDER BY hour
    """
)
fig, ax = plt.subplots(figsize=(9, 3.8))
if hourly.is_empty():
    empty(ax, "no traffic recorded yet")
else:
    ax.plot(hourly["hour"].to_list(), hourly["requests"].to_list(), label="requests")
    ax.plot(hourly["hour"].to_list(), hourly["errors"].to_list(), label="errors", color="tab:red")
    ax.set_ylabel("per hour")
    ax.legend(fontsize="small")
    fig.autofmt_xdate()
ax.set_title("Requests per hour")
save(fig, "requests_per_hour.png")

# %% [markdown]
# ## The most expensive keys

# %%
q(
    """
    SELECT org_id, project_id, key_id, CAST(sum(requests) AS BIGINT) AS requests,
           CAST(sum(total_tokens) AS BIGINT) AS tokens,
           CAST(sum(cost_usd) AS DOUBLE) AS cost_usd
    FROM analytics.rollup_day WHERE key_id <> ''
    GROUP BY ALL ORDER BY cost_usd DESC LIMIT 10
    """
)
