"""Dagster wiring for the lifecycle: aging (daily), archive and prune (monthly), telemetry rollup
(daily), systems' states, and the checks. Destructive steps run only with
CLAY_LIFECYCLE_RETENTION_ENABLED=1; otherwise they report what they would do."""

import sys
from datetime import UTC, date, datetime

import dagster as dg

from clay_pipelines import settings
from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle import checks, report
from clay_pipelines.lifecycle.access import flush_accesses
from clay_pipelines.lifecycle.aging import age_tenant
from clay_pipelines.lifecycle.policy import (
    archive_url,
    dream_retention_days,
    retention_enabled,
    telemetry_raw_days,
)
from clay_pipelines.lifecycle.systems import system_states
from clay_pipelines.lifecycle.telemetry import prune_dreams, rollup_telemetry
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform.defs import executions_table, mcp_telemetry_table, systems_registry
from clay_pipelines.resources import PostgresResource

OWNERS = ["team:platform"]
GROUP = "lifecycle"
days = dg.DailyPartitionsDefinition(start_date=settings.current().history_start, timezone="UTC", end_offset=1)
months = dg.MonthlyPartitionsDefinition(start_date=settings.current().history_start, timezone="UTC")

AGING = dg.AssetKey(["lifecycle", "execution_aging"])
ARCHIVE = dg.AssetKey(["lifecycle", "execution_archive"])
PRUNE = dg.AssetKey(["lifecycle", "prune"])


CHECKS = {
    AGING: {
        "no_row_younger_than_its_age": (
            "No execution left HOT or WARM more than a day past its tenant's threshold.",
            lambda pg, t: checks.younger_than_allowed(pg.database, t),
        ),
        "conservation": (
            "Rows by state (HOT+WARM+COLD+ARCHIVED+PRUNED) equal rows ever written minus maintenance deletes, per "
            "tenant, against the insert trigger's count; every tombstone's archive accounts for it.",
            lambda pg, t: checks.conservation(pg.database, t),
        ),
    },
    ARCHIVE: {
        "manifests_verify": (
            "Every archive's file matches its manifest and the database (SHA-256, row count, schema version).",
            lambda pg, t: checks.manifests_verify(pg.database, t, ar.ArchiveStore(archive_url())),
        ),
        "nothing_held_archived_away_or_pruned": (
            "No execution under a legal hold in force is PRUNED or ARCHIVED without its verified archive.",
            lambda pg, t: checks.held_but_gone(pg.database, t),
        ),
    },
    PRUNE: {
        "nothing_pruned_inside_retention": (
            "No archive was pruned before its retention period ended.",
            lambda pg, t: checks.pruned_inside_retention(pg.database, t),
        ),
    },
}


def _specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, description=d) for name, (d, _) in CHECKS[asset].items()]


def _check_results(asset: dg.AssetKey, postgres: PostgresResource) -> list[dg.AssetCheckResult]:
    names = postgres.tenant_names()
    results = []
    for name, (_, find) in CHECKS[asset].items():
        problems = {names[t]: p for t in postgres.tenant_ids() if (p := find(postgres, t))}
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                asset_key=asset,
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": dg.MetadataValue.json(problems)},
            )
        )
    return results


def _states_metadata(postgres: PostgresResource) -> dict[str, object]:
    rows = report.state_table(postgres.database)
    return {
        "rows_by_state": dg.MetadataValue.md(
            markdown_table(
                ["tenant", "state", "rows", "oldest access"],
                [[r.tenant, r.state, r.rows, f"{r.oldest_access:%Y-%m-%d}" if r.oldest_access else ""] for r in rows],
            )
        ),
        "bytes_per_row_by_state": dg.MetadataValue.json(report.bytes_per_state(postgres.database)),
        "holds_in_force": dg.MetadataValue.json(report.holds_in_force(postgres.database)),
    }


@dg.asset(
    key=AGING,
    deps=[executions_table],
    check_specs=_specs(AGING),
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"postgres", "pgvector"},
    owners=OWNERS,
    description="Buffered accesses applied (WARM and COLD rows read again become HOT), then HOT -> WARM (vector as "
    "halfvec) -> COLD (content to compressed storage) by days since last access, as of the partition's end (UTC). "
    "Never moves a row back; a backfill is harmless.",
    automation_condition=dg.AutomationCondition.on_cron("30 0 * * *"),
    pool="postgres",
)
def execution_aging(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    as_of = min(context.partition_time_window.end.astimezone(UTC), datetime.now(UTC))
    names = postgres.tenant_names()
    rows = []
    for tenant_id in postgres.tenant_ids():
        flushed = flush_accesses(postgres.database, tenant_id, run_id=context.run.run_id)
        aged = age_tenant(postgres.database, tenant_id, as_of, run_id=context.run.run_id)
        rows.append([names[tenant_id], flushed.accesses, flushed.rehydrated, aged.to_warm, aged.to_cold])
    return dg.MaterializeResult(
        metadata={
            "as_of": as_of.isoformat(timespec="seconds"),
            "transitions": dg.MetadataValue.md(
                markdown_table(["tenant", "accesses", "made HOT", "HOT->WARM", "WARM->COLD"], rows)
            ),
            "rows_written": sum(r[3] + r[4] for r in rows),
            **_states_metadata(postgres),
        },
        check_results=_check_results(AGING, postgres),
    )


@dg.asset(
    key=ARCHIVE,
    deps=[AGING],
    check_specs=_specs(ARCHIVE),
    partitions_def=months,
    group_name=GROUP,
    kinds={"parquet", "postgres"},
    owners=OWNERS,
    description="Each tenant's executions of the month past the archive threshold (365 days without access) written "
    "as Parquet with a manifest, read back and verified, then tombstoned. Held rows stay. A dry run (counts only) "
    "unless CLAY_LIFECYCLE_RETENTION_ENABLED=1.",
    pool="postgres",
)
def execution_archive(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    month = date.fromisoformat(context.partition_key)
    enabled, store = retention_enabled(), ar.ArchiveStore(archive_url())
    names = postgres.tenant_names()
    rows = []
    for tenant_id in postgres.tenant_ids():
        r = ar.archive_month(postgres.database, tenant_id, month, store, enabled=enabled, run_id=context.run.run_id)
        rows.append([names[tenant_id], r.eligible, r.held, r.archived, len(r.files), r.redone])
    return dg.MaterializeResult(
        metadata={
            "dry_run": not enabled,
            "store": store.url,
            "archives": dg.MetadataValue.md(
                markdown_table(["tenant", "eligible", "held", "archived", "files", "redone"], rows)
            ),
            "rows_written": sum(r[3] for r in rows),
        },
        check_results=_check_results(ARCHIVE, postgres),
    )


@dg.asset(
    key=PRUNE,
    deps=[ARCHIVE],
    check_specs=_specs(PRUNE),
    partitions_def=months,
    group_name=GROUP,
    kinds={"parquet", "postgres"},
    owners=OWNERS,
    description="Archives past their retention period (7 years after archiving, or the tenant's longer period): "
    "rows become PRUNED tombstones, then the files go; archives holding a held row stay. Dreams never promoted "
    "age out after CLAY_DREAM_RETENTION_DAYS. A dry run unless CLAY_LIFECYCLE_RETENTION_ENABLED=1.",
    pool="postgres",
)
def prune(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    enabled, store = retention_enabled(), ar.ArchiveStore(archive_url())
    names = postgres.tenant_names()
    rows = []
    for tenant_id in postgres.tenant_ids():
        r = ar.prune(postgres.database, tenant_id, store, enabled=enabled, run_id=context.run.run_id)
        dreams = prune_dreams(postgres.database, tenant_id, dream_retention_days(), enabled=enabled)
        rows.append([names[tenant_id], r.archives, r.rows, r.held_archives, r.files_deleted, dreams])
    return dg.MaterializeResult(
        metadata={
            "dry_run": not enabled,
            "pruned": dg.MetadataValue.md(
                markdown_table(["tenant", "archives", "rows", "held archives", "files deleted", "dreams"], rows)
            ),
        },
        check_results=_check_results(PRUNE, postgres),
    )


@dg.asset(
    key=["lifecycle", "telemetry_rollup"],
    deps=[mcp_telemetry_table],
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"postgres", "sql"},
    owners=OWNERS,
    description="MCP tool calls older than CLAY_TELEMETRY_RAW_DAYS rolled up per UTC day and tool (calls, errors, "
    "p50/p95/max latency, and a histogram of every call's outcome and latency that monitoring/tool_health reads "
    "in their place) into mcp_telemetry_daily, then deleted. A dry run unless "
    "CLAY_LIFECYCLE_RETENTION_ENABLED=1.",
    automation_condition=dg.AutomationCondition.on_cron("45 0 * * *"),
    pool="postgres",
)
def telemetry_rollup(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    enabled, raw_days = retention_enabled(), telemetry_raw_days()
    names = postgres.tenant_names()
    by_tenant = {
        names[t]: rollup_telemetry(postgres.database, t, raw_days, enabled=enabled, run_id=context.run.run_id)
        for t in postgres.tenant_ids()
    }
    return dg.MaterializeResult(
        metadata={"dry_run": not enabled, "older_than_days": raw_days, "calls": dg.MetadataValue.json(by_tenant)}
    )


@dg.asset(
    key=["lifecycle", "system_states"],
    deps=[executions_table, systems_registry],
    group_name=GROUP,
    kinds={"postgres", "sql"},
    owners=OWNERS,
    description="systems.lifecycle_state from each system's last execution: HOT within 30 days, WARM within 90, "
    "COLD within 365, else ARCHIVED.",
    automation_condition=dg.AutomationCondition.on_cron("0 1 * * *"),
    pool="postgres",
)
def lifecycle_system_states(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    rows = system_states(postgres.database)
    return dg.MaterializeResult(
        metadata={
            "systems": dg.MetadataValue.md(
                markdown_table(["system", "state", "last execution"], [[n, s, f"{at:%Y-%m-%d}"] for n, s, at in rows])
            ),
            "rows_written": len(rows),
        }
    )


defs = dg.load_definitions_from_module(sys.modules[__name__])
