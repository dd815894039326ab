"""Dagster wiring for routing memory: request embeddings by day of started_at."""

import json
import os
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import PrivateAttr

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform.assets import executions_table, systems_registry
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.embed_store import days_to_embed, embed_executions, embed_shared_systems, embed_systems
from clay_pipelines.routing.embeddings import EMBEDDERS, Embedder, get_embedder, tag
from clay_pipelines.routing.registry import (
    dependency_problems,
    platform_dependency_problems,
    rollup_shared_systems,
    rollup_tenant_systems,
)
from clay_pipelines.routing.rule_store import (
    LearningReport,
    coverage,
    learn_rules_full,
    learn_rules_incremental,
    learner_settings,
    load_systems,
)

OWNERS = ["team:routing"]
# Days of executions.started_at. History before the start date is embedded by the first partition's
# neighbours only if moved: set CLAY_HISTORY_START to cover older data.
execution_days = dg.DailyPartitionsDefinition(
    start_date=os.environ.get("CLAY_HISTORY_START", "2024-01-01"), timezone="UTC", end_offset=1
)


class EmbedderResource(dg.ConfigurableResource):
    """Which embedder the pipelines use: hashing (default, offline), minilm, or openai."""

    name: str = "hashing"

    _embedder: Embedder | None = PrivateAttr(default=None)

    def get(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.name)
        return self._embedder

    def model_tag(self) -> str:
        """name@version without loading the model (for sensors)."""
        if self.name not in EMBEDDERS:
            get_embedder(self.name)  # raises, naming the choices
        return f"{self.name}@{EMBEDDERS[self.name].version}"


@dg.asset(
    key=["routing", "request_embeddings"],
    deps=[executions_table],
    partitions_def=execution_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="routing",
    kinds={"pgvector", "python"},
    owners=OWNERS,
    description=(
        "executions.request_embedding for the requests that started on these days: rows without a vector or "
        "embedded by another embedder version. A backfill over the whole range re-embeds after a change of embedder."
    ),
    automation_condition=dg.AutomationCondition.on_cron("15 * * * *"),
    pool="postgres",
)
def request_embeddings(
    context: dg.AssetExecutionContext, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    window = context.partition_time_window  # the whole range of a single-run backfill
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    model = embedder.get()
    by_tenant: dict[str, int] = {}
    for tenant_id in postgres.tenant_ids():
        written = embed_executions(postgres.database, tenant_id, model, start, end, progress=context.log.info)
        if written:
            by_tenant[str(tenant_id)] = written
    total = sum(by_tenant.values())
    context.log.info(f"{total:,} executions embedded with {tag(model)} between {start:%Y-%m-%d} and {end:%Y-%m-%d}")
    return dg.MaterializeResult(
        metadata={
            "embedder": tag(model),
            "dimensions": model.dim,
            "window": f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}",
            "partitions": len(context.partition_keys),
            "rows_written": total,
            "by_tenant": dg.MetadataValue.json(by_tenant),
            "embedded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


@dg.asset(
    key=["routing", "system_capability_embeddings"],
    deps=[systems_registry],
    group_name="routing",
    kinds={"pgvector", "python"},
    owners=OWNERS,
    description="systems.capabilities_embedding from each system's description and capabilities (the router's "
    "capability fallback). Platform-wide skills are written by the maintenance role.",
    automation_condition=dg.AutomationCondition.on_cron("0 * * * *"),
    pool="postgres",
)
def system_capability_embeddings(
    context: dg.AssetExecutionContext, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    model = embedder.get()
    written = embed_shared_systems(postgres.database, model)
    for tenant_id in postgres.tenant_ids():
        written += embed_systems(postgres.database, tenant_id, model)
    context.log.info(f"{written} systems embedded with {tag(model)}")
    return dg.MaterializeResult(metadata={"embedder": tag(model), "rows_written": written})


class RoutingRulesConfig(dg.Config):
    """full: re-cluster every execution (after a backfill or an embedder change); otherwise the
    incremental path assigns new executions to existing rules and clusters only what is left."""

    full: bool = False


RULE_CHECKS = [
    dg.AssetCheckSpec(
        "rules_have_enough_support",
        asset=["routing", "routing_rules"],
        description="Every active learned rule is backed by at least min_rule_executions executions.",
    ),
    dg.AssetCheckSpec(
        "confidence_in_unit_interval",
        asset=["routing", "routing_rules"],
        description="Every rule's confidence_score lies in [0, 1].",
    ),
    dg.AssetCheckSpec(
        "recommended_system_active",
        asset=["routing", "routing_rules"],
        description="Every active rule recommends a system that exists and is active.",
    ),
    dg.AssetCheckSpec(
        "no_near_duplicate_rules",
        asset=["routing", "routing_rules"],
        description="No two active rules of a tenant recommend the same system from nearly the same centroid.",
    ),
]


def rule_check_results(postgres: PostgresResource, model: str) -> list[dg.AssetCheckResult]:
    """The four checks over every tenant's rules (read per tenant, under row-level security)."""
    problems: dict[str, list[str]] = {spec.name: [] for spec in RULE_CHECKS}
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            settings = learner_settings(load_systems(conn))
            for rule_id, support in conn.execute(
                "SELECT id, based_on_executions FROM routing_rules WHERE is_active AND auto_generated "
                "AND coalesce(based_on_executions, 0) < %s",
                (settings.min_rule_executions,),
            ):
                problems["rules_have_enough_support"].append(f"{rule_id}: {support} executions")
            for rule_id, confidence in conn.execute(
                "SELECT id, confidence_score FROM routing_rules WHERE confidence_score NOT BETWEEN 0 AND 1"
            ):
                problems["confidence_in_unit_interval"].append(f"{rule_id}: {confidence}")
            for rule_id, status in conn.execute(
                "SELECT r.id, coalesce(s.status, 'missing') FROM routing_rules r "
                "LEFT JOIN systems s ON s.id = r.recommended_system_id "
                "WHERE r.is_active AND (s.id IS NULL OR s.status <> 'active')"
            ):
                problems["recommended_system_active"].append(f"{rule_id}: system {status}")
            for a, b, similarity in conn.execute(
                """
                SELECT a.id, b.id, 1 - (a.request_embedding <=> b.request_embedding) FROM routing_rules a
                JOIN routing_rules b ON a.id < b.id AND a.recommended_system_id = b.recommended_system_id
                  AND a.request_embedding_model = b.request_embedding_model
                WHERE a.is_active AND b.is_active AND a.request_embedding_model = %s
                  AND 1 - (a.request_embedding <=> b.request_embedding) >= %s
                """,
                (model, settings.identity_similarity),
            ):
                problems["no_near_duplicate_rules"].append(f"{a} ~ {b} ({float(similarity):.3f})")
    return [
        dg.AssetCheckResult(
            check_name=name,
            asset_key=["routing", "routing_rules"],
            passed=not found,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"violations": len(found), "examples": dg.MetadataValue.json(found[:10])},
        )
        for name, found in problems.items()
    ]


@dg.asset(
    key=["routing", "routing_rules"],
    deps=[request_embeddings, system_capability_embeddings],
    check_specs=RULE_CHECKS,
    group_name="routing",
    kinds={"pgvector", "scikitlearn", "python"},
    owners=OWNERS,
    description="routing_rules learned per tenant from embedded executions and their outcomes: clusters backed by "
    "at least min_rule_executions executions, the system that does best on them, the runners-up, a confidence. "
    "Incremental by default; run with full=true to re-cluster everything.",
    automation_condition=dg.AutomationCondition.eager(),
    pool="postgres",
)
def routing_rules(
    context: dg.AssetExecutionContext,
    config: RoutingRulesConfig,
    postgres: PostgresResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    model = embedder.get()
    reports: list[LearningReport] = []
    for tenant_id in postgres.tenant_ids():
        learn = learn_rules_full if config.full else learn_rules_incremental
        report = learn(postgres.database, tenant_id, tag(model), model.name, progress=context.log.info)
        context.log.info(
            f"tenant {tenant_id}: {report.mode}, {report.executions_read:,} executions read, "
            f"{report.created} created, {report.updated} updated, {report.deactivated} deactivated"
        )
        reports.append(report)
    covered = total = 0
    for report in reports:
        c, t = coverage(postgres.database, report.tenant_id, tag(model))
        covered, total = covered + c, total + t
    top = sorted((r for report in reports for r in report.top_rules), key=lambda r: -r["support"])[:10]
    return dg.MaterializeResult(
        metadata={
            "embedder": tag(model),
            "mode": "full" if config.full else "incremental",
            "rows_written": sum(r.created + r.updated + r.deactivated for r in reports),
            "rules_created": sum(r.created for r in reports),
            "rules_updated": sum(r.updated for r in reports),
            "rules_deactivated": sum(r.deactivated for r in reports),
            "active_rules": sum(r.active_rules for r in reports),
            "executions_read": sum(r.executions_read for r in reports),
            "coverage_30d": dg.MetadataValue.float(round(covered / total, 4) if total else 0.0),
            "top_rules": dg.MetadataValue.md(
                markdown_table(
                    ["pattern", "system", "support", "confidence", "success rate"],
                    [(r["pattern"], r["system"], r["support"], r["confidence"], r["success_rate"]) for r in top],
                )
            ),
        },
        check_results=rule_check_results(postgres, tag(model)),
    )


@dg.asset(
    key=["routing", "system_rollups"],
    deps=[executions_table, systems_registry],
    check_specs=[
        dg.AssetCheckSpec(
            "dependency_graph_sound",
            asset=["routing", "system_rollups"],
            description="depends_on has no cycle and names only existing systems.",
        ),
    ],
    group_name="routing",
    kinds={"postgres", "sql"},
    owners=OWNERS,
    description="systems.total_executions, successful_executions, avg_cost_usd, avg_execution_time_ms, "
    "avg_user_satisfaction and reverse_dependencies, recomputed from executions with set-based SQL.",
    automation_condition=dg.AutomationCondition.on_cron("10 * * * *"),
    pool="postgres",
)
def system_rollups(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    changed = rollup_shared_systems(postgres.database)
    problems = platform_dependency_problems(postgres.database)
    for tenant_id in postgres.tenant_ids():
        changed += rollup_tenant_systems(postgres.database, tenant_id)
        with postgres.tenant_transaction(tenant_id) as conn:
            problems += [p for p in dependency_problems(conn) if p not in problems]
    with postgres.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        rows = conn.execute(
            "SELECT name, total_executions, successful_executions, avg_cost_usd, avg_execution_time_ms, "
            "avg_user_satisfaction, status FROM systems ORDER BY total_executions DESC, name"
        ).fetchall()
    context.log.info(f"{changed} system rows updated; {len(problems)} dependency problems")
    return dg.MaterializeResult(
        metadata={
            "rows_written": changed,
            "systems": dg.MetadataValue.md(
                markdown_table(
                    ["system", "executions", "successful", "avg cost", "avg ms", "satisfaction", "status"], rows
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="dependency_graph_sound",
                passed=not problems,
                metadata={"problems": dg.MetadataValue.json([f"{p.kind}: {p.detail}" for p in problems])},
            )
        ],
    )


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
    table_rows: list[dg.TableRecord] = []
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            name = conn.execute("SELECT name FROM tenants WHERE id = %s", (tenant_id,)).fetchone()[0]
            for date, total, confidence, successful, rate in conn.execute(ROUTER_PERFORMANCE_SQL):
                table_rows.append(
                    dg.TableRecord(
                        {
                            "tenant": name,
                            "date": date.date().isoformat(),
                            "total_requests": int(total),
                            "avg_confidence": None if confidence is None else round(float(confidence), 4),
                            "successful": int(successful),
                            "success_rate": float(rate),
                        }
                    )
                )
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("tenant", "string"),
            dg.TableColumn("date", "string"),
            dg.TableColumn("total_requests", "int"),
            dg.TableColumn("avg_confidence", "float"),
            dg.TableColumn("successful", "int"),
            dg.TableColumn("success_rate", "float"),
        ]
    )
    total = sum(r.data["total_requests"] for r in table_rows)
    successful = sum(r.data["successful"] for r in table_rows)
    context.log.info(f"{len(table_rows)} tenant-days, {total:,} requests")
    return dg.MaterializeResult(
        metadata={
            "tenant_days": len(table_rows),
            "requests_30d": total,
            "success_rate_30d": dg.MetadataValue.float(round(100.0 * successful / total, 2) if total else 0.0),
            "by_day": dg.MetadataValue.table(table_rows, schema=schema),
        }
    )


# New executions arrive all day; the sensor looks back this far (older days are backfill work).
NEW_EXECUTIONS_LOOKBACK = timedelta(days=2)


@dg.sensor(
    name="new_executions_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[dg.AssetKey(["routing", "request_embeddings"])],
    description="Executions of the last two days without a vector from the current embedder: one "
    "request_embeddings run per day that has some (routing_rules follows, eagerly).",
)
def new_executions_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.SensorResult:
    model = embedder.model_tag()
    since = datetime.now(UTC) - NEW_EXECUTIONS_LOOKBACK
    waiting: dict[str, int] = {}
    for tenant_id in postgres.tenant_ids():
        for day, count in days_to_embed(postgres.database, tenant_id, model, since).items():
            waiting[day.isoformat()] = waiting.get(day.isoformat(), 0) + count
    valid = set(execution_days.get_partition_keys())
    requests = [
        # The run key names what is waiting: the same rows never ask twice, new rows ask again.
        dg.RunRequest(run_key=f"{day}:{model}:{count}", partition_key=day)
        for day, count in sorted(waiting.items())
        if day in valid
    ]
    if requests:
        context.log.info(f"executions waiting for {model}: {waiting}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(waiting, sort_keys=True))


ROUTING_SENSORS = [new_executions_sensor]

ROUTING_ASSETS = [request_embeddings, system_capability_embeddings, routing_rules, system_rollups, router_performance]

routing_full_recluster_job = dg.define_asset_job(
    "routing_full_recluster",
    selection=dg.AssetSelection.assets(["routing", "routing_rules"]),
    description="Re-cluster every tenant's executions into routing rules (after a backfill or an embedder change).",
    config={"ops": {"routing__routing_rules": {"config": {"full": True}}}},
)
routing_rules_job = dg.define_asset_job(
    "routing_rules_daily",
    selection=dg.AssetSelection.assets(["routing", "routing_rules"]),
    description="The incremental rule learner.",
)
routing_rules_schedule = dg.ScheduleDefinition(
    job=routing_rules_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
ROUTING_JOBS = [routing_full_recluster_job, routing_rules_job]
ROUTING_SCHEDULES = [routing_rules_schedule]
