"""mcp_telemetry_log older than the configured age, rolled up per day (UTC) and tool into
mcp_telemetry_daily (calls, errors, p50/p95/max latency), then deleted: in one transaction per tenant,
so a killed run leaves either both or neither. A day rolled up twice (late rows) adds its counts; its
percentiles are then the calls-weighted mean of the two rollups' (an approximation, stated here)."""

from __future__ import annotations

from uuid import UUID

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import audit

_ROLLUP = """
WITH gone AS (
  DELETE FROM mcp_telemetry_log WHERE timestamp < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                                   - make_interval(days => %(days)s)
  RETURNING tenant_id, timestamp, server_name, tool_name, success, execution_time_ms),
daily AS (
  SELECT tenant_id, (timestamp AT TIME ZONE 'UTC')::date AS day, server_name, tool_name, count(*) AS calls,
         count(*) FILTER (WHERE success IS NOT TRUE) AS errors,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms) AS p50,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms) AS p95,
         max(execution_time_ms) AS mx
  FROM gone GROUP BY 1, 2, 3, 4)
INSERT INTO mcp_telemetry_daily AS d (tenant_id, day, server_name, tool_name, calls, errors, p50_ms, p95_ms, max_ms)
SELECT tenant_id, day, server_name, tool_name, calls, errors, round(p50::numeric, 1), round(p95::numeric, 1), mx
FROM daily
ON CONFLICT (tenant_id, day, server_name, tool_name) DO UPDATE SET
  p50_ms = round((d.p50_ms * d.calls + excluded.p50_ms * excluded.calls) / (d.calls + excluded.calls), 1),
  p95_ms = round((d.p95_ms * d.calls + excluded.p95_ms * excluded.calls) / (d.calls + excluded.calls), 1),
  max_ms = greatest(d.max_ms, excluded.max_ms),
  calls = d.calls + excluded.calls, errors = d.errors + excluded.errors, rolled_up_at = now()
RETURNING calls
"""

_WOULD = """
SELECT count(*) FROM mcp_telemetry_log
WHERE timestamp < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => %(days)s)
"""


def rollup_telemetry(db: Database, tenant_id: UUID, days: int, *, enabled: bool, run_id: str = "telemetry") -> int:
    """Raw calls rolled up and deleted (or, not enabled, that would be); whole UTC days only."""
    with db.tenant_transaction(tenant_id) as conn:
        if not enabled:
            n = conn.execute(_WOULD, {"days": days}).fetchone()[0]
        else:
            n = sum(r[0] for r in conn.execute(_ROLLUP, {"days": days}).fetchall())
        audit.record(
            conn, run_id=run_id, action="telemetry_rollup", rows=n, actor="lifecycle", dry_run=not enabled,
            detail={"older_than_days": days},
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
