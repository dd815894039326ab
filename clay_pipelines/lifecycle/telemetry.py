"""mcp_telemetry_log older than the configured age, rolled up per day (UTC) and tool into
mcp_telemetry_daily (calls, errors, p50/p95/max latency), then deleted: in one transaction per tenant,
so a killed run leaves either both or neither.

Each daily row also keeps the day's calls as a histogram (latency_success, latency_ms, latency_calls:
each distinct outcome and latency with its number of calls, migration 025). The monitoring assets
read it for the days whose raw rows are gone (platform/monitoring.py), and a day rolled up again
(rows that arrived late) is recomputed from its histogram and the new rows, exactly.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import audit

# Whole UTC days only: before the start of the UTC day `days` days before `as_of` (default now).
_CUTOFF = (
    "date_trunc('day', coalesce(%(as_of)s::timestamptz, now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
    "- make_interval(days => %(days)s)"
)

# A daily row's calls, one row per call, from its histogram (alias d).
DAILY_CALLS = """
CROSS JOIN LATERAL unnest(d.latency_success, d.latency_ms, d.latency_calls) AS h(success, ms, calls)
CROSS JOIN LATERAL generate_series(1, h.calls)
"""

_ROLLUP = f"""
WITH gone AS (
  DELETE FROM mcp_telemetry_log WHERE timestamp < {_CUTOFF}
  RETURNING tenant_id, (timestamp AT TIME ZONE 'UTC')::date AS day, server_name, tool_name, success,
            execution_time_ms AS ms),
earlier AS (
  SELECT d.tenant_id, d.day, d.server_name, d.tool_name, h.success, h.ms FROM mcp_telemetry_daily d {DAILY_CALLS}
  WHERE (d.tenant_id, d.day, d.server_name, d.tool_name) IN (SELECT tenant_id, day, server_name, tool_name FROM gone)),
calls AS (SELECT * FROM gone UNION ALL SELECT * FROM earlier),
figures AS (
  SELECT tenant_id, day, server_name, tool_name, count(*) AS calls,
         count(*) FILTER (WHERE success = false) AS errors,
         round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1) AS p50,
         round((percentile_cont(0.95) WITHIN GROUP (ORDER BY ms))::numeric, 1) AS p95,
         max(ms) AS mx
  FROM calls GROUP BY 1, 2, 3, 4),
histogram AS (
  SELECT tenant_id, day, server_name, tool_name, array_agg(success ORDER BY success, ms) AS success,
         array_agg(ms ORDER BY success, ms) AS ms, array_agg(n ORDER BY success, ms) AS n
  FROM (SELECT tenant_id, day, server_name, tool_name, success, ms, count(*) AS n FROM calls GROUP BY 1, 2, 3, 4, 5, 6) c
  GROUP BY 1, 2, 3, 4),
written AS (
  INSERT INTO mcp_telemetry_daily AS d (tenant_id, day, server_name, tool_name, calls, errors, p50_ms, p95_ms, max_ms,
                                        latency_success, latency_ms, latency_calls)
  SELECT f.tenant_id, f.day, f.server_name, f.tool_name, f.calls, f.errors, f.p50, f.p95, f.mx, h.success, h.ms, h.n
  FROM figures f JOIN histogram h USING (tenant_id, day, server_name, tool_name)
  ON CONFLICT (tenant_id, day, server_name, tool_name) DO UPDATE SET
    calls = excluded.calls, errors = excluded.errors, p50_ms = excluded.p50_ms, p95_ms = excluded.p95_ms,
    max_ms = excluded.max_ms, latency_success = excluded.latency_success, latency_ms = excluded.latency_ms,
    latency_calls = excluded.latency_calls, rolled_up_at = now()
  RETURNING 1)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM written)
"""

_WOULD = f"SELECT count(*) FROM mcp_telemetry_log WHERE timestamp < {_CUTOFF}"


def rollup_telemetry(
    db: Database,
    tenant_id: UUID,
    days: int,
    *,
    enabled: bool,
    run_id: str = "telemetry",
    as_of: datetime | None = None,
) -> int:
    """Raw calls rolled up and deleted (or, not enabled, that would be): those before the UTC day
    `days` days before `as_of` (default now)."""
    params = {"days": days, "as_of": as_of}
    with db.tenant_transaction(tenant_id) as conn:
        if not enabled:
            n, daily_rows = conn.execute(_WOULD, params).fetchone()[0], 0
        else:
            n, daily_rows = conn.execute(_ROLLUP, params).fetchone()
        audit.record(
            conn, run_id=run_id, action="telemetry_rollup", rows=n, actor="lifecycle", dry_run=not enabled,
            detail={"older_than_days": days, "daily_rows_written": daily_rows},
        )  # fmt: skip
    return n


def prune_dreams(db: Database, tenant_id: UUID, days: int, *, enabled: bool, run_id: str = "dreams") -> int:
    """Dreams never promoted, older than `days`, that nothing references (an amendment watch keeps its
    dream), deleted; amendments are kept for as long as their system exists."""
    condition = (
        "NOT coalesce(promoted_to_production, false) AND amendment_id IS NULL AND pending_amendment_id IS NULL "
        "AND dreamed_at < now() - make_interval(days => %(days)s) "
        "AND NOT EXISTS (SELECT 1 FROM amendment_watches w WHERE w.dream_id = dreams.id)"
    )
    with db.tenant_transaction(tenant_id) as conn:
        if enabled:
            n = conn.execute(f"DELETE FROM dreams WHERE {condition}", {"days": days}).rowcount
        else:
            n = conn.execute(f"SELECT count(*) FROM dreams WHERE {condition}", {"days": days}).fetchone()[0]
        audit.record(
            conn, run_id=run_id, action="dream_retention", rows=n, actor="lifecycle", dry_run=not enabled,
            detail={"older_than_days": days},
        )  # fmt: skip
    return n
