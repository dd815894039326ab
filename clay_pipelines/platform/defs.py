"""Dagster wiring for platform monitoring, and the external assets other programs write."""

import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import dagster as dg

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform import monitoring
from clay_pipelines.resources import PostgresResource

OWNERS = ["team:platform"]


def _written_elsewhere(table: str, description: str, written_by: str) -> dg.AssetSpec:
    """A platform table other programs write: lineage starts where the data really starts."""
    return dg.AssetSpec(
        key=["platform", table],
        description=description,
        group_name="platform",
        kinds={"postgres"},
        owners=OWNERS,
        metadata={"table": f"public.{table}", "written_by": written_by},
    )


executions_table = _written_elsewhere(
    "executions",
    "Every Clay routing decision and its outcome, written by the router (skills/clay-consigliere).",
    "clay-consigliere router",
)
mcp_telemetry_table = _written_elsewhere(
    "mcp_telemetry_log",
    "Every MCP tool call (BambooHR, Notion, memvid, ...), written by the MCP servers.",
    "MCP servers",
)
resources_table = _written_elsewhere(
    "resources",
    "Budget windows per tenant (hourly to monthly), reserved and used by the platform's billing.",
    "platform billing",
)
systems_registry = _written_elsewhere(
    "systems", "The skills registry: one row per skill with its constitution (MANIFEST.json).", "skill deployments"
)


HEALTH_WINDOW = timedelta(days=7)


@dg.asset(
    key=["monitoring", "tool_health"],
    deps=[mcp_telemetry_table],
    group_name="monitoring",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Error rate and latency per MCP server and tool over the last 7 days (the spec's monitoring queries), "
    "from the raw calls and, for days already rolled up by lifecycle/telemetry_rollup, mcp_telemetry_daily.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_slow_tools",
            asset=["monitoring", "tool_health"],
            description="No tool averages over 5 s on successful calls.",
        ),
        dg.AssetCheckSpec(
            "error_rates_below_10_percent",
            asset=["monitoring", "tool_health"],
            description="No tool fails more than 10% of its calls.",
        ),
    ],
    automation_condition=dg.AutomationCondition.on_cron("0 * * * *"),
    pool="postgres",
)
def tool_health(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    until = datetime.now(UTC)
    with postgres.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        health = monitoring.tool_health(conn, until - HEALTH_WINDOW, until)
    slow = [h for h in health if h.slow]
    error_prone = [h for h in health if h.error_prone]
    for h in error_prone:
        context.log.warning(f"{h.server_name}/{h.tool_name}: {h.error_rate}% of {h.total_calls} calls failed")
    table = markdown_table(
        ["server", "tool", "calls", "errors", "error %", "avg ms", "p95 ms"],
        [[h.server_name, h.tool_name, h.total_calls, h.errors, h.error_rate, h.avg_ms, h.p95_ms] for h in health],
    )
    return dg.MaterializeResult(
        metadata={
            "tools": len(health),
            "calls": sum(h.total_calls for h in health),
            "window": f"{(until - HEALTH_WINDOW).isoformat(timespec='minutes')} .. {until.isoformat(timespec='minutes')}",
            "tool_health": dg.MetadataValue.md(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_slow_tools",
                passed=not slow,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"slow_tools": ", ".join(f"{h.server_name}/{h.tool_name} ({h.avg_ms} ms)" for h in slow)},
            ),
            dg.AssetCheckResult(
                check_name="error_rates_below_10_percent",
                passed=not error_prone,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "error_prone_tools": ", ".join(
                        f"{h.server_name}/{h.tool_name} ({h.error_rate}%)" for h in error_prone
                    )
                },
            ),
        ],
    )


@dg.asset(
    key=["monitoring", "budget_usage"],
    deps=[resources_table],
    group_name="monitoring",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Usage of every open budget window (alerts are raised once per window by the database and "
    "delivered by governance/budget_alerts).",
    check_specs=[
        dg.AssetCheckSpec(
            "no_budget_overdrawn",
            asset=["monitoring", "budget_usage"],
            description="No open budget window has a negative available amount.",
        ),
    ],
    automation_condition=dg.AutomationCondition.on_cron("*/15 * * * *"),
    pool="postgres",
)
def budget_usage(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    with postgres.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        # Alerts are raised by the database as windows cross their threshold (migration 019) and
        # delivered by governance/budget_alerts: this asset reports, it does not alert.
        usage = monitoring.open_budget_usage(conn, now)
    overdrawn = [u for u in usage if u.available < 0]
    table = markdown_table(
        ["tenant", "resource", "window", "budget", "used", "reserved", "available", "usage %", "alerted"],
        [
            [
                u.tenant_name,
                u.resource_type,
                u.window_type,
                u.total_budget,
                round(u.used, 2),
                u.reserved,
                round(u.available, 2),
                u.usage_percent,
                "yes" if u.alert_sent else "",
            ]
            for u in usage
        ],
    )
    return dg.MaterializeResult(
        metadata={
            "open_windows": len(usage),
            "over_threshold": sum(1 for u in usage if u.over_threshold),
            "rows_written": 0,
            "budget_usage": dg.MetadataValue.md(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_budget_overdrawn",
                passed=not overdrawn,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "overdrawn": ", ".join(f"{u.tenant_name} {u.resource_type} {u.window_type}" for u in overdrawn)
                },
            )
        ],
    )


ROUTER_DAY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("tenant", "string"),
        dg.TableColumn("date", "string"),
        dg.TableColumn("total_requests", "int"),
        dg.TableColumn("avg_confidence", "float"),
        dg.TableColumn("successful", "int"),
        dg.TableColumn("success_rate", "float"),
    ]
)


@dg.asset(
    key=["monitoring", "router_performance"],
    deps=[executions_table],
    group_name="monitoring",
    kinds={"postgres", "sql"},
    owners=OWNERS,
    description="The specification's Clay Router Performance query per tenant: requests, average routing "
    "confidence and success rate per day over the last 30 days.",
    automation_condition=dg.AutomationCondition.on_cron("5 0 * * *"),
    pool="postgres",
)
def router_performance(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    names = postgres.tenant_names()
    days: list[tuple[str, monitoring.RouterDay]] = []
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            days += [(names[tenant_id], day) for day in monitoring.router_performance(conn)]
    total = sum(day.total_requests for _, day in days)
    context.log.info(f"{len(days)} tenant-days, {total:,} requests")
    return dg.MaterializeResult(
        metadata={
            "tenant_days": len(days),
            "requests_30d": total,
            "success_rate_30d": dg.MetadataValue.float(monitoring.overall_success_rate([day for _, day in days])),
            "by_day": dg.MetadataValue.table(
                [dg.TableRecord({"tenant": name, **asdict(day)}) for name, day in days], schema=ROUTER_DAY_SCHEMA
            ),
        }
    )


monitoring_job = dg.define_asset_job(
    "platform_monitoring",
    selection=dg.AssetSelection.groups("monitoring"),
    description="Every monitoring asset (tool health, budgets, router performance, dream promotion rate), on demand.",
)

# The platform database is the platform's resource; every domain's assets ask for it by name.
defs = dg.load_definitions_from_module(
    sys.modules[__name__],
    resources={
        "postgres": PostgresResource(
            app_dsn=dg.EnvVar("CLAY_APP_DATABASE_URL"),
            maintenance_dsn=dg.EnvVar("CLAY_MAINTENANCE_DATABASE_URL"),
        )
    },
)
