"""Dagster wiring for constitutions: what every tenant's skills run under now, checked against the
replay of their amendments."""

import sys
from datetime import UTC, date, datetime

import dagster as dg

from clay_pipelines import settings
from clay_pipelines.db import MaintenanceJob
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform.defs import executions_table, systems_registry
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.defs import RULES, EmbedderResource
from clay_pipelines.tars import amendments, cycle, reports, watch

OWNERS = ["team:tars"]
CONSTITUTIONS = dg.AssetKey(["tars", "constitutions"])


@dg.asset(
    key=CONSTITUTIONS,
    deps=[systems_registry],
    group_name="tars",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="One row per tenant and skill: the effective constitution's hash (SHA-256 of RFC 8785 JSON), the "
    "last amendment that shaped it, and the automated changes waiting for a person's approval.",
    check_specs=[
        dg.AssetCheckSpec(
            "constitutions_equal_their_replay",
            asset=CONSTITUTIONS,
            description="Every stored constitution (each skill's base and each tenant's effective one) equals the "
            "replay of its amendments.",
        )
    ],
    automation_condition=dg.AutomationCondition.on_cron("*/30 * * * *"),
    pool="postgres",
)
def constitutions(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    table: list[list[object]] = []
    pending = 0
    names = postgres.tenant_names()
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            name = names[tenant_id]
            for row in amendments.overview(conn):
                last = row.last_amendment
                pending += row.pending_approvals
                table.append(
                    [
                        name,
                        row.system_name,
                        row.hash[:16],
                        "yes" if row.amended else "",
                        f"{last.amendment_type} by {last.approved_by}, {last.approved_at:%Y-%m-%d %H:%M}"
                        if last
                        else "",
                        row.pending_approvals or "",
                    ]
                )
    with postgres.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        mismatches = amendments.replay_mismatches(conn)
    context.log.info(f"{len(table)} tenant-skill constitutions, {pending} awaiting approval")
    return dg.MaterializeResult(
        metadata={
            "constitutions": dg.MetadataValue.md(
                markdown_table(["tenant", "skill", "hash", "amended", "last amendment", "pending"], table)
            ),
            "pending_approvals": pending,
            "tenant_skills": len(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="constitutions_equal_their_replay",
                passed=not mismatches,
                metadata={
                    "mismatches": dg.MetadataValue.md(
                        markdown_table(
                            ["tenant", "skill", "stored", "replayed"],
                            [
                                [
                                    names.get(m.tenant_id, "platform") if m.tenant_id else "platform",
                                    m.system_name,
                                    m.stored_hash[:16],
                                    m.replayed_hash[:16],
                                ]
                                for m in mismatches
                            ],
                        )
                    )
                },
            )
        ],
    )


# One partition per night (its cycle runs at 03:00 UTC). `clay run` dreams the latest night only
# (the tag); a backfill over past nights writes evaluation records that never promote.
dream_nights = dg.DailyPartitionsDefinition(start_date=settings.current().history_start, timezone="UTC", end_offset=1)
DREAM_CYCLE = dg.AssetKey(["tars", "dream_cycle"])


def _latest_night() -> date:
    return datetime.now(UTC).date()


@dg.asset(
    key=DREAM_CYCLE,
    deps=[RULES, executions_table],
    partitions_def=dream_nights,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="tars",
    kinds={"postgres", "python"},
    owners=OWNERS,
    tags={"clay/run_partitions": "latest"},
    description="TARS's dream cycle for each night: per tenant and skill with tunables, mutations of today's settings "
    "replayed through the router's own decision code over the week before the night (rules learned from the history "
    "before it), estimated from logged outcomes (doubly robust, bootstrap intervals) and decided by the rule in TARS's "
    "constitution. One dreams row per mutation; only the latest night may promote.",
    automation_condition=dg.AutomationCondition.on_cron("0 3 * * *"),
    pool="postgres",
)
def dream_cycle(
    context: dg.AssetExecutionContext, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    window = context.partition_time_window
    nights = [date.fromordinal(d) for d in range(window.start.date().toordinal(), window.end.date().toordinal())]
    names = postgres.tenant_names()
    table: list[list[object]] = []
    promoted = pending = written = 0
    for night in nights:
        latest = night == _latest_night()
        for tenant_id in postgres.tenant_ids():
            report = cycle.dream_night(
                postgres.database, tenant_id, night, embedder.get(), latest=latest, progress=context.log.info
            )
            for skill in report.skills:
                promoted += skill.promotion_status == "applied"
                pending += skill.promotion_status == "pending"
                written += skill.dreams_written
                table.append(_night_row(names[tenant_id], night, skill))
    context.log.info(f"{len(nights)} night(s): {promoted} promoted, {pending} waiting for approval")
    return dg.MaterializeResult(
        metadata={
            "nights": len(nights),
            "rows_written": written,
            "promoted": promoted,
            "pending_approval": pending,
            "dreams": dg.MetadataValue.md(
                markdown_table(
                    ["tenant", "night", "skill", "requests", "written", "outcomes", "promotion", "mutation"], table
                )
            ),
        }
    )


def _night_row(tenant: str, night: date, skill: cycle.SkillNight) -> list[object]:
    outcomes = ", ".join(f"{n} {status}" for status, n in sorted(skill.outcomes.items()))
    return [
        tenant,
        night.isoformat(),
        skill.system_name,
        skill.window_requests,
        skill.dreams_written,
        outcomes or skill.skipped_reason,
        skill.promotion_status or ("evaluation only" if skill.dreams_written else ""),
        ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (skill.promoted or {}).items()),
    ]


PROMOTIONS = dg.AssetKey(["tars", "promotions"])


@dg.asset(
    key=PROMOTIONS,
    deps=[DREAM_CYCLE],
    group_name="tars",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Dreams promoted to production and dreams waiting for a person's approval, per tenant, with the "
    "checks that every promotion is one amendment, follows from a decision record that satisfies its rule, and "
    "that no mutation left its bounds.",
    check_specs=[
        dg.AssetCheckSpec(
            "one_amendment_per_promoted_dream",
            asset=PROMOTIONS,
            description="Every promoted dream has exactly one dream_promotion amendment naming it.",
        ),
        dg.AssetCheckSpec(
            "promotions_follow_their_decision_record",
            asset=PROMOTIONS,
            description="Every promoted or waiting dream is the one its night's decision record promotes, and the "
            "record satisfies its own rule.",
        ),
        dg.AssetCheckSpec(
            "mutations_within_bounds",
            asset=PROMOTIONS,
            description="No dreamed mutation lies outside the bounds its skill declared that night.",
        ),
    ],
    automation_condition=dg.AutomationCondition.eager(),
    pool="postgres",
)
def promotions(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    names = postgres.tenant_names()
    rows: list[list[object]] = []
    problems: dict[str, list[list[object]]] = {"amendment": [], "decision": [], "bounds": []}
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            for d in reports.dreams(conn):
                if d.status in ("promoted", "pending_approval"):
                    rows.append([names[tenant_id], d.cycle_id, d.system_name, d.status, d.mutation, d.gain, str(d.id)])
            for kind, found in (
                ("amendment", reports.promotion_problems(conn)),
                ("decision", reports.decision_problems(conn)),
                ("bounds", reports.bounds_problems(conn)),
            ):
                problems[kind] += [[names[tenant_id], p.cycle_id, p.system_name, p.problem] for p in found]
    context.log.info(f"{len(rows)} promoted or waiting dreams")

    def result(check: str, kind: str) -> dg.AssetCheckResult:
        table = markdown_table(["tenant", "cycle", "skill", "problem"], problems[kind])
        return dg.AssetCheckResult(
            check_name=check, passed=not problems[kind], metadata={"problems": dg.MetadataValue.md(table)}
        )

    return dg.MaterializeResult(
        metadata={
            "promoted": sum(r[3] == "promoted" for r in rows),
            "pending_approval": sum(r[3] == "pending_approval" for r in rows),
            "dreams": dg.MetadataValue.md(
                markdown_table(["tenant", "cycle", "skill", "status", "mutation", "success gain (A)", "dream"], rows)
            ),
        },
        check_results=[
            result("one_amendment_per_promoted_dream", "amendment"),
            result("promotions_follow_their_decision_record", "decision"),
            result("mutations_within_bounds", "bounds"),
        ],
    )


@dg.asset(
    key=["tars", "amendment_watch"],
    deps=[PROMOTIONS],
    group_name="tars",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Hourly: every promotion under watch compared with the period before it; a guardrail breach rolls "
    "the amendment back (approved_by tars:amendment-watch, the figures as evidence) and alerts once.",
    automation_condition=dg.AutomationCondition.on_cron("20 * * * *"),
    pool="postgres",
)
def amendment_watch(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    names = postgres.tenant_names()
    now = datetime.now(UTC)
    checked = closed = 0
    alerts: list[list[object]] = []
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            report = watch.check_watches(conn, now)
        checked, closed = checked + report.checked, closed + report.closed
        for rolled in report.rolled_back:
            context.log.warning(
                f"{names[tenant_id]}: amendment {rolled['amendment_id']} {rolled['outcome']}: "
                + "; ".join(rolled["breaches"].values())
            )
            alerts.append(
                [names[tenant_id], rolled["amendment_id"], rolled["outcome"], "; ".join(rolled["breaches"].values())]
            )
    return dg.MaterializeResult(
        metadata={
            "watches_checked": checked,
            "watches_closed": closed,
            "rolled_back": len(alerts),
            "alerts": dg.MetadataValue.md(markdown_table(["tenant", "amendment", "outcome", "breaches"], alerts)),
        }
    )


@dg.asset(
    key=["monitoring", "dream_promotion_rate"],
    deps=[DREAM_CYCLE],
    group_name="monitoring",
    kinds={"postgres", "sql"},
    owners=OWNERS,
    description="The specification's TARS Dream Promotion Rate query per tenant: dreams and promotions per week over "
    "the last 90 days.",
    automation_condition=dg.AutomationCondition.eager(),
    pool="postgres",
)
def dream_promotion_rate(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    names = postgres.tenant_names()
    rows: list[list[object]] = []
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            rows += [[names[tenant_id], *r] for r in reports.dream_promotion_rate(conn)]
    return dg.MaterializeResult(
        metadata={
            "tenant_weeks": len(rows),
            "rates": dg.MetadataValue.md(markdown_table(["tenant", "week", "dreams", "promoted", "rate %"], rows)),
        }
    )


defs = dg.load_definitions_from_module(
    sys.modules[__name__],
)
