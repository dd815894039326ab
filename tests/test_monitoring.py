"""Platform monitoring queries and their assets, on constructed data with known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.platform import monitoring
from clay_pipelines.platform.defs import budget_usage, router_performance, tool_health
from clay_pipelines.resources import PostgresResource

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _tenant(conn, name: str):
    return conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]


def test_tool_health_numbers(fresh_db) -> None:
    with fresh_db.admin() as conn:
        tenant = _tenant(conn, "T")
        calls = [("bamboohr", "add_table_row", 100, True)] * 8 + [("bamboohr", "add_table_row", 900, False)] * 2
        calls += [("notion", "search", 6000, True)] * 3 + [("notion", "search", 7000, True)]
        calls += [("old", "tool", 10, False)]  # outside the window
        for k, (server, tool, ms, ok) in enumerate(calls):
            when = NOW - timedelta(days=30) if server == "old" else NOW - timedelta(minutes=k)
            conn.execute(
                "INSERT INTO mcp_telemetry_log (tenant_id, server_name, tool_name, execution_time_ms, success, timestamp)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (tenant, server, tool, ms, ok, when),
            )
    with fresh_db.database() as db, db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        health = monitoring.tool_health(conn, NOW - timedelta(days=7), NOW + timedelta(seconds=1))
    assert [(h.server_name, h.tool_name, h.total_calls, h.errors, h.error_rate, h.avg_ms) for h in health] == [
        ("bamboohr", "add_table_row", 10, 2, Decimal("20.00"), Decimal("100.0")),
        ("notion", "search", 4, 0, Decimal("0.00"), Decimal("6250.0")),
    ]
    assert [h.error_prone for h in health] == [True, False]
    assert [h.slow for h in health] == [False, True]


def test_budget_alert_is_sent_once(dagster_env) -> None:
    now = datetime.now(UTC)
    with dagster_env.admin() as conn:
        tenant = _tenant(conn, "Budgeted")
        over = conn.execute(
            "INSERT INTO resources (tenant_id, resource_type, window_type, window_start, window_end, total_budget,"
            " used, reserved) VALUES (%s, 'usd_budget', 'monthly', %s, %s, 1000, 700, 150) RETURNING id",
            (tenant, now - timedelta(days=3), now + timedelta(days=27)),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO resources (tenant_id, resource_type, window_type, window_start, window_end, total_budget,"
            " used) VALUES (%s, 'api_calls', 'daily', %s, %s, 100, 10)",
            (tenant, now - timedelta(hours=1), now + timedelta(hours=23)),
        )
        conn.execute(  # closed window, over budget: not this asset's business any more
            "INSERT INTO resources (tenant_id, resource_type, window_type, window_start, window_end, total_budget,"
            " used) VALUES (%s, 'usd_budget', 'daily', %s, %s, 10, 50)",
            (tenant, now - timedelta(days=5), now - timedelta(days=4)),
        )
    resources = {"postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url)}
    with dg.instance_for_test() as instance:
        first = dg.materialize([budget_usage], instance=instance, resources=resources)
        dg.materialize([budget_usage], instance=instance, resources=resources)
    metadata = first.asset_materializations_for_node("monitoring__budget_usage")[0].metadata
    assert metadata["open_windows"].value == 2
    assert metadata["over_threshold"].value == 1
    # One alert path: the database raised the alert as the window crossed its threshold (the closed
    # window too, when it was written); the report writes none of its own, however often it runs.
    assert metadata["rows_written"].value == 0
    with dagster_env.admin() as conn:
        alerted = {r[0] for r in conn.execute("SELECT id FROM resources WHERE alert_sent")}
        assert {r[0] for r in conn.execute("SELECT resource_id FROM budget_alerts")} == alerted
        assert over in alerted and len(alerted) == 2
    check = first.get_asset_check_evaluations()[0]
    assert (check.check_name, check.passed) == ("no_budget_overdrawn", True)


def test_tool_health_asset_reports_checks_with_the_materialization(dagster_env) -> None:
    with dagster_env.admin() as conn:
        tenant = _tenant(conn, "T")
        for ok in (True, False, False):
            conn.execute(
                "INSERT INTO mcp_telemetry_log (tenant_id, server_name, tool_name, execution_time_ms, success)"
                " VALUES (%s, 'bamboohr', 'add_table_row', 8000, %s)",
                (tenant, ok),
            )
    resources = {"postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([tool_health], instance=instance, resources=resources)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["no_slow_tools"].passed is False
    assert checks["error_rates_below_10_percent"].passed is False
    assert (
        "bamboohr/add_table_row (66.67%)" in checks["error_rates_below_10_percent"].metadata["error_prone_tools"].value
    )
    metadata = result.asset_materializations_for_node("monitoring__tool_health")[0].metadata
    assert metadata["calls"].value == 3
    assert "| bamboohr | add_table_row | 3 | 2 | 66.67 | 8000.0 |" in metadata["tool_health"].value


def _routed_requests(conn) -> tuple[str, str, object]:
    """Alpha: three requests one day (two succeed; confidences 0.8, 0.6 and none), one the next (no
    confidence), one 40 days ago; Beta: one failed request. Noon UTC, so every day is the same day in
    any session time zone."""
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    earlier, later = noon - timedelta(days=3), noon - timedelta(days=1)
    alpha, beta = _tenant(conn, "Alpha"), _tenant(conn, "Beta")
    rows = [
        (alpha, earlier, "success", Decimal("0.8")),
        (alpha, earlier + timedelta(minutes=5), "success", Decimal("0.6")),
        (alpha, earlier + timedelta(minutes=9), "failed", None),
        (alpha, later, "success", None),
        (alpha, noon - timedelta(days=40), "success", Decimal("0.9")),  # older than the 30 days
        (beta, earlier, "failed", Decimal("0.5")),
    ]
    for tenant, started, status, confidence in rows:
        conn.execute(
            "INSERT INTO executions (tenant_id, system_name, user_request, governance_check, status, started_at, "
            "routing_confidence) VALUES (%s, 'clay-consigliere', 'a request', '{}', %s, %s, %s)",
            (tenant, status, started, confidence),
        )
    return earlier.date().isoformat(), later.date().isoformat(), alpha


def test_router_performance_is_the_tenants_last_30_days_by_day(fresh_db) -> None:
    with fresh_db.admin() as conn:
        earlier, later, alpha = _routed_requests(conn)
    with fresh_db.database() as db, db.tenant_transaction(alpha) as conn:
        days = monitoring.router_performance(conn)
    assert days == [
        monitoring.RouterDay(date=later, total_requests=1, avg_confidence=None, successful=1, success_rate=100.0),
        monitoring.RouterDay(date=earlier, total_requests=3, avg_confidence=0.7, successful=2, success_rate=66.67),
    ]
    assert monitoring.overall_success_rate(days) == 75.0
    assert monitoring.overall_success_rate([]) == 0.0


def test_router_performance_asset_names_tenants_in_its_table(dagster_env) -> None:
    with dagster_env.admin() as conn:
        earlier, later, _ = _routed_requests(conn)
    resources = {"postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([router_performance], instance=instance, resources=resources)
    metadata = result.asset_materializations_for_node("monitoring__router_performance")[0].metadata
    assert (metadata["tenant_days"].value, metadata["requests_30d"].value) == (3, 5)
    assert metadata["success_rate_30d"].value == 60.0
    assert [r.data for r in metadata["by_day"].value.records] == [
        {
            "tenant": "Alpha",
            "date": later,
            "total_requests": 1,
            "avg_confidence": None,
            "successful": 1,
            "success_rate": 100.0,
        },
        {
            "tenant": "Alpha",
            "date": earlier,
            "total_requests": 3,
            "avg_confidence": 0.7,
            "successful": 2,
            "success_rate": 66.67,
        },
        {
            "tenant": "Beta",
            "date": earlier,
            "total_requests": 1,
            "avg_confidence": 0.5,
            "successful": 0,
            "success_rate": 0.0,
        },
    ]
    assert [c.name for c in metadata["by_day"].value.schema.columns] == [
        "tenant",
        "date",
        "total_requests",
        "avg_confidence",
        "successful",
        "success_rate",
    ]
