"""The specification's monitoring queries, as plain functions over a connection.

Tool health and budget usage are cross-tenant by nature (they rank tools and tenants), so callers
run them in a maintenance transaction for the PLATFORM_ANALYTICS job. Router performance is per
tenant: callers run it in each tenant's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import psycopg

from clay_pipelines.lifecycle.telemetry import DAILY_CALLS

SLOW_TOOL_MS = 5000  # the specification's "slow tools (> 5 seconds)"
ERROR_RATE_ALERT = Decimal("10")  # percent


@dataclass(frozen=True)
class ToolHealth:
    server_name: str
    tool_name: str
    total_calls: int
    errors: int
    error_rate: Decimal  # percent, 2 decimals, as the specification's query rounds it
    avg_ms: Decimal | None  # over successful calls
    p95_ms: Decimal | None

    @property
    def slow(self) -> bool:
        return self.avg_ms is not None and self.avg_ms > SLOW_TOOL_MS

    @property
    def error_prone(self) -> bool:
        return self.error_rate > ERROR_RATE_ALERT


# The calls of a window: raw rows, and the calls of the rolled-up days (lifecycle/telemetry.py) that lie
# wholly inside it, one row per call from their histograms. The raw rows of a day are deleted in the
# transaction that rolls it up, so no call is counted twice; a rolled-up day cut by the window's edge is
# left out, because its calls' times are gone.
_WINDOW_CALLS = f"""
SELECT server_name, tool_name, success, execution_time_ms FROM mcp_telemetry_log
WHERE timestamp >= %(since)s AND timestamp < %(until)s
UNION ALL
SELECT d.server_name, d.tool_name, h.success, h.ms FROM mcp_telemetry_daily d {DAILY_CALLS}
WHERE d.day::timestamp AT TIME ZONE 'UTC' >= %(since)s AND (d.day + 1)::timestamp AT TIME ZONE 'UTC' <= %(until)s
"""


def tool_health(conn: psycopg.Connection, since: datetime, until: datetime) -> list[ToolHealth]:
    """Error rate by tool and average latency of successful calls, worst error rate first: the
    specification's queries, over the raw calls and the rolled-up days of [since, until)."""
    rows = conn.execute(
        f"""
        WITH calls AS ({_WINDOW_CALLS})
        SELECT server_name, tool_name,
               count(*) AS total_calls,
               count(*) FILTER (WHERE success = false) AS errors,
               round(100.0 * count(*) FILTER (WHERE success = false) / count(*), 2) AS error_rate,
               round(avg(execution_time_ms) FILTER (WHERE success = true), 1) AS avg_ms,
               round((percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms)
                      FILTER (WHERE success = true))::numeric, 1) AS p95_ms
        FROM calls
        GROUP BY server_name, tool_name
        ORDER BY error_rate DESC, server_name, tool_name
        """,
        {"since": since, "until": until},
    ).fetchall()
    return [ToolHealth(*row) for row in rows]


@dataclass(frozen=True)
class BudgetUsage:
    resource_id: UUID
    tenant_name: str
    resource_type: str
    window_type: str
    total_budget: Decimal
    used: Decimal
    reserved: Decimal
    available: Decimal
    usage_percent: Decimal
    alert_threshold: Decimal
    alert_sent: bool

    @property
    def over_threshold(self) -> bool:
        return self.usage_percent >= self.alert_threshold * 100


def open_budget_usage(conn: psycopg.Connection, at: datetime) -> list[BudgetUsage]:
    """Every budget window open at `at`, with its usage; the specification's alert query, all windows."""
    rows = conn.execute(
        """
        SELECT r.id, t.name, r.resource_type, r.window_type, r.total_budget, r.used, r.reserved, r.available,
               round(100.0 * (r.used + r.reserved) / NULLIF(r.total_budget, 0), 2) AS usage_percent,
               r.alert_threshold, r.alert_sent
        FROM resources r
        JOIN tenants t ON r.tenant_id = t.id
        WHERE r.window_start <= %s AND r.window_end > %s
        ORDER BY usage_percent DESC NULLS LAST, t.name, r.resource_type, r.window_type
        """,
        (at, at),
    ).fetchall()
    return [BudgetUsage(*row[:8], row[8] if row[8] is not None else Decimal(0), *row[9:]) for row in rows]


# The specification's Clay Router Performance query, as it is written there.
ROUTER_PERFORMANCE_SQL = """
SELECT DATE_TRUNC('day', started_at) AS date, COUNT(*) AS total_requests,
       AVG(routing_confidence) AS avg_confidence,
       SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS successful,
       ROUND(100.0 * SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) / COUNT(*), 2) AS success_rate
FROM executions
WHERE started_at >= NOW() - INTERVAL '30 days'
GROUP BY date
ORDER BY date DESC
"""


@dataclass(frozen=True, kw_only=True)
class RouterDay:
    """One day of one tenant's routed requests."""

    date: str  # ISO day
    total_requests: int
    avg_confidence: float | None  # None when no request of the day has a routing confidence
    successful: int
    success_rate: float  # percent, 2 decimals


def router_performance(conn: psycopg.Connection) -> list[RouterDay]:
    """The last 30 days of the transaction's tenant, most recent day first."""
    return [
        RouterDay(
            date=day.date().isoformat(),
            total_requests=int(total),
            avg_confidence=None if confidence is None else round(float(confidence), 4),
            successful=int(successful),
            success_rate=float(rate),
        )
        for day, total, confidence, successful, rate in conn.execute(ROUTER_PERFORMANCE_SQL)
    ]


def overall_success_rate(days: list[RouterDay]) -> float:
    """Percent of successful requests over all the days, 2 decimals; 0.0 with no requests."""
    total = sum(d.total_requests for d in days)
    return round(100.0 * sum(d.successful for d in days) / total, 2) if total else 0.0
