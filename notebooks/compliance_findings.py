# %% [markdown]
# # Compliance findings
#
# What the compliance engine found and did: requests blocked or redacted per
# day, findings per organisation and key, hooks that failed open or closed,
# and the access denials the gateway itself made (bad keys, models a key may
# not use).
#
# The verdict columns are filled from the compliance engine's `hook.verdict`
# and `hook.stage` events.  A file recorded before that engine ran (or with no
# hooks configured) has none: this notebook then says so and still charts the
# access denials.

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
    SELECT CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
           CAST(coalesce(sum(verdict_approve + verdict_redact + verdict_block), 0) AS BIGINT)
               AS hook_verdicts,
           CAST(coalesce(sum(blocked), 0) AS BIGINT) AS blocked,
           CAST(coalesce(sum(redacted), 0) AS BIGINT) AS redacted,
           CAST(coalesce(sum(findings), 0) AS BIGINT) AS findings,
           CAST(coalesce(sum(verdict_error), 0) AS BIGINT) AS hook_errors
    FROM analytics.rollup_day
    """
)
has_verdicts = totals["hook_verdicts"][0] > 0 or totals["blocked"][0] > 0
if not has_verdicts:
    print(
        "No compliance verdicts in this data yet: the compliance engine records them "
        "(hook.verdict / hook.stage events). The verdict charts are skipped; "
        "the access denials below are charted from the gateway's own errors."
    )
totals

# %% [markdown]
# ## Blocked and redacted requests per day

# %%
outcomes = q(
    """
    SELECT CAST(bucket AS DATE) AS day,
           CAST(sum(blocked) AS BIGINT) AS blocked,
           CAST(sum(redacted) AS BIGINT) AS redacted,
           CAST(sum(requests) - sum(blocked) - sum(redacted) AS BIGINT) AS clean
    FROM analytics.rollup_day GROUP BY ALL ORDER BY day
    """
)
if has_verdicts:
    fig, ax = plt.subplots(figsize=(9, 4))
    days = [d.isoformat() for d in outcomes["day"]]
    ax.bar(days, outcomes["blocked"].to_list(), label="blocked", color="tab:red")
    ax.bar(
        days,
        outcomes["redacted"].to_list(),
        bottom=outcomes["blocked"].to_list(),
        label="redacted",
        color="tab:orange",
    )
    ax.set_ylabel("requests")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("Requests blocked or redacted by the compliance engine, per day")
    save(fig, "compliance_outcomes_per_day.png")
outcomes.with_columns(
    (pl.col("blocked") / (pl.col("blocked") + pl.col("redacted") + pl.col("clean")) * 100)
    .round(2)
    .alias("blocked_pct")
)

# %% [markdown]
# ## Findings by organisation and key

# %%
findings = q(
    """
    SELECT org_id, project_id, key_id,
           CAST(sum(findings) AS BIGINT) AS findings,
           CAST(sum(blocked) AS BIGINT) AS blocked,
           CAST(sum(redacted) AS BIGINT) AS redacted,
           CAST(sum(requests) AS BIGINT) AS requests
    FROM analytics.rollup_day WHERE key_id <> ''
    GROUP BY ALL HAVING sum(findings) > 0 OR sum(blocked) > 0
    ORDER BY findings DESC
    """
)
if has_verdicts and not findings.is_empty():
    top = findings.head(10)
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{o}/{k}" for o, k in zip(top["org_id"], top["key_id"], strict=True)]
    ax.barh(labels, top["findings"].to_list(), color="tab:purple")
    ax.invert_yaxis()
    ax.set_xlabel("findings (sensitive spans detected)")
    ax.set_title("Findings by key")
    save(fig, "findings_by_key.png")
findings

# %% [markdown]
# ## Hooks that failed
# A hook that errors or times out is applied by its fail mode (open: approve,
# closed: block); either way it deserves a look.

# %%
q(
    """
    SELECT CAST(bucket AS DATE) AS day, org_id, CAST(sum(verdict_error) AS BIGINT) AS hook_errors
    FROM analytics.rollup_day GROUP BY ALL HAVING sum(verdict_error) > 0 ORDER BY ALL
    """
)

# %% [markdown]
# ## Access denials by the gateway
# Requests refused before any provider saw them: invalid or expired keys
# (401) and models a key may not use (403).  Compliance blocks are counted
# above, not here.

# %%
denials = q(
    """
    SELECT day, error_code, count(*) AS requests
    FROM analytics.requests
    WHERE status IN (401, 403) AND NOT blocked
    GROUP BY ALL ORDER BY ALL
    """
)
fig, ax = plt.subplots(figsize=(9, 4))
if denials.is_empty():
    empty(ax, "no access denials")
else:
    wide = denials.pivot(on="error_code", index="day", values="requests").fill_null(0).sort("day")
    days = [d.isoformat() for d in wide["day"]]
    bottom = [0] * wide.height
    for code in sorted(c for c in wide.columns if c != "day"):
        values = wide[code].to_list()
        ax.bar(days, values, bottom=bottom, label=code)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    ax.set_ylabel("requests")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", rotation=30)
ax.set_title("Access denials per day")
save(fig, "access_denials_per_day.png")
q(
    """
    SELECT org_id, key_id, error_code, count(*) AS requests
    FROM analytics.requests
    WHERE status IN (401, 403) AND NOT blocked
    GROUP BY ALL ORDER BY requests DESC LIMIT 10
    """
)
