"""Dagster wiring for the execution path: receipts signed and checkpointed, budget windows opened
and swept, and budget alerts turned into runs people can see."""

import sys
from datetime import UTC, datetime, timedelta

import dagster as dg

from clay_pipelines import settings
from clay_pipelines.db import MaintenanceJob
from clay_pipelines.governance import budgets, keys, receipts
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform.defs import executions_table, resources_table
from clay_pipelines.resources import PostgresResource

OWNERS = ["team:platform"]
RECEIPTS = dg.AssetKey(["governance", "execution_receipts"])
CHECKPOINTS = dg.AssetKey(["governance", "receipt_checkpoints"])
WINDOWS = dg.AssetKey(["governance", "budget_windows"])
ALERTS = dg.AssetKey(["governance", "budget_alerts"])


def _signer(postgres: PostgresResource) -> keys.Signer:
    signing = keys.signer()
    with postgres.database.unscoped_transaction() as conn:
        keys.register(conn, signing)
    return signing


@dg.asset(
    key=RECEIPTS,
    deps=[executions_table],
    group_name="governance",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Signs every completed execution that has no receipt yet (Ed25519 over RFC 8785, one chain per "
    "tenant): completions made through SQL are signed here, shortly after.",
    automation_condition=dg.AutomationCondition.eager() | dg.AutomationCondition.on_cron("*/5 * * * *"),
    pool="postgres",
)
def execution_receipts(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    signing = _signer(postgres)
    names = postgres.tenant_names()
    signed: dict[str, int] = {}
    for tenant_id in postgres.tenant_ids():
        total = 0
        while True:
            with postgres.tenant_transaction(tenant_id) as conn:
                batch = receipts.sign_pending(conn, tenant_id, signing)
            total += batch
            if batch < receipts.BATCH:
                break
        signed[names[tenant_id]] = total
    context.log.info(f"{sum(signed.values())} receipts signed with {signing.key_id}")
    return dg.MaterializeResult(
        metadata={
            "rows_written": sum(signed.values()),
            "key_id": signing.key_id,
            "signed": dg.MetadataValue.md(markdown_table(["tenant", "receipts signed"], sorted(signed.items()))),
        }
    )


@dg.asset(
    key=CHECKPOINTS,
    deps=[RECEIPTS],
    group_name="governance",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="A signed checkpoint (tenant, count, head hash, time) of every grown receipt chain, exported to "
    "the archive store's receipt-checkpoints/ (or CLAY_RECEIPT_CHECKPOINT_DIR); then every chain is verified "
    "against its latest checkpoint.",
    check_specs=[
        dg.AssetCheckSpec(
            "every_chain_verifies",
            asset=CHECKPOINTS,
            description="Every tenant's receipt chain verifies (no edit, deletion, reordering, wrong key or truncation) "
            "and no completion waits for its receipt longer than the limit.",
        )
    ],
    automation_condition=dg.AutomationCondition.on_cron("*/15 * * * *"),
    pool="postgres",
)
def receipt_checkpoints(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    signing = _signer(postgres)
    folder = settings.receipt_checkpoint_dir()
    limit = timedelta(minutes=settings.receipt_pending_limit_minutes())
    names = postgres.tenant_names()
    rows, failing, written = [], [], 0
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            written += receipts.write_checkpoint(conn, tenant_id, signing, folder) is not None
        with postgres.tenant_transaction(tenant_id) as conn:
            report = receipts.verify_chain(conn, tenant_id, checkpoint_folder=folder, pending_limit=limit)
        rows.append([names[tenant_id], report.receipts, len(report.breaks), report.pending, report.overdue])
        if not report.ok:
            failing.append(f"{names[tenant_id]}: " + "; ".join(report.breaks[:3] or [f"{report.overdue} overdue"]))
    return dg.MaterializeResult(
        metadata={
            "rows_written": written,
            "folder": str(folder),
            "chains": dg.MetadataValue.md(markdown_table(["tenant", "receipts", "breaks", "pending", "overdue"], rows)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_chain_verifies", passed=not failing, metadata={"failing": "\n".join(failing)}
            )
        ],
    )


@dg.asset(
    key=WINDOWS,
    deps=[resources_table],
    group_name="governance",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Opens each tenant's current and next usd_budget windows from its plan, and releases budget "
    "reservations past their expiry.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_window_over_budget",
            asset=WINDOWS,
            description="No open window has used + reserved above its total budget.",
        ),
        dg.AssetCheckSpec(
            "each_alert_sent_once",
            asset=WINDOWS,
            description="Every budget alert's window records alert_sent (one alert per window, by a unique key).",
        ),
    ],
    automation_condition=dg.AutomationCondition.on_cron("*/15 * * * *"),
    pool="postgres",
)
def budget_windows(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    names = postgres.tenant_names()
    opened, released, states = [], 0, []
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            opened += [(names[tenant_id], w) for w in budgets.open_windows(conn, tenant_id, now)]
            released += budgets.expire_reservations(conn)
            states += budgets.window_states(conn, now)
    with postgres.maintenance_transaction(MaintenanceJob.BUDGET_ALERTS) as conn:
        inconsistent = budgets.alert_inconsistencies(conn)
    over = budgets.over_budget(states)
    table = markdown_table(
        ["tenant", "window", "start", "budget", "used", "reserved", "held by reservations", "alerted"],
        [
            [names[s.tenant_id], s.window_type, f"{s.window_start:%Y-%m-%d %H:%M}", s.total_budget,
             round(s.used, 2), round(s.reserved, 2), round(s.held, 2), "yes" if s.alert_sent else ""]
            for s in states
        ],
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "rows_written": len(opened) + released,
            "windows_opened": len(opened),
            "reservations_expired": released,
            "open_windows": dg.MetadataValue.md(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_window_over_budget",
                passed=not over,
                metadata={"over": ", ".join(f"{names[s.tenant_id]} {s.window_type}" for s in over)},
            ),
            dg.AssetCheckResult(
                check_name="each_alert_sent_once", passed=not inconsistent, metadata={"issues": "\n".join(inconsistent)}
            ),
        ],
    )


@dg.asset(
    key=ALERTS,
    deps=[WINDOWS],
    group_name="governance",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Budget alerts not yet notified: each is logged as a warning, listed here and recorded as notified "
    "(once: a conditional update). Runs when budget_alert_sensor sees a new alert.",
    pool="postgres",
)
def budget_alerts(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    names = postgres.tenant_names()
    with postgres.maintenance_transaction(MaintenanceJob.BUDGET_ALERTS) as conn:
        waiting = budgets.unnotified_alerts(conn)
        notified = [a for a in waiting if budgets.mark_notified(conn, a.alert_id, context.run_id)]
    for a in notified:
        context.log.warning(
            f"budget alert: {names.get(a.tenant_id, a.tenant_id)} {a.window_type} window at {a.usage_percent}% "
            f"(threshold {a.alert_threshold * 100}%)"
        )
    return dg.MaterializeResult(
        metadata={
            "rows_written": len(notified),
            "alerts": dg.MetadataValue.md(
                markdown_table(
                    ["tenant", "window", "start", "budget", "used", "reserved", "usage %", "raised"],
                    [
                        [
                            names.get(a.tenant_id, str(a.tenant_id)),
                            a.window_type,
                            f"{a.window_start:%Y-%m-%d}",
                            a.total_budget,
                            round(a.used, 2),
                            round(a.reserved, 2),
                            a.usage_percent,
                            f"{a.raised_at:%Y-%m-%d %H:%M}",
                        ]
                        for a in notified
                    ],
                )
            ),
        }
    )


@dg.sensor(
    name="budget_alert_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[ALERTS],
    description="A run of governance/budget_alerts for each new budget alert (the database raises one per window "
    "when used + reserved reaches its threshold).",
)
def budget_alert_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
    after = int(context.cursor or 0)
    with postgres.maintenance_transaction(MaintenanceJob.BUDGET_ALERTS) as conn:
        new = budgets.alerts_after(conn, after)
    if not new:
        return dg.SensorResult(run_requests=[], cursor=str(after))
    last = max(a.alert_id for a in new)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"budget-alert-{last}")], cursor=str(last))


defs = dg.load_definitions_from_module(sys.modules[__name__])
