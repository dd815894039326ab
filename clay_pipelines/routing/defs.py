"""Dagster wiring for routing memory: request embeddings by day of started_at."""

import json
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import PrivateAttr

from clay_pipelines import settings
from clay_pipelines.deploy.instance import FULL_RECLUSTER_TAG
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform.defs import executions_table, systems_registry
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing import checks
from clay_pipelines.routing.embed_store import days_to_embed, embed_executions, embed_shared_systems, embed_systems
from clay_pipelines.routing.embeddings import EMBEDDERS, Embedder, get_embedder, tag
from clay_pipelines.routing.registry import (
    platform_dependency_problems,
    rollup_shared_systems,
    rollup_tenant_systems,
    system_figures,
    tenant_dependency_problems,
)
from clay_pipelines.routing.rule_store import LearningReport, coverage, learn_rules_full, learn_rules_incremental

OWNERS = ["team:routing"]
# Days of executions.started_at. History before the start date is embedded by the first partition's
# neighbours only if moved: set CLAY_HISTORY_START to cover older data.
execution_days = dg.DailyPartitionsDefinition(start_date=settings.current().history_start, timezone="UTC", end_offset=1)


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
    names = postgres.tenant_names()
    by_tenant: dict[str, int] = {}
    for tenant_id in postgres.tenant_ids():
        written = embed_executions(postgres.database, tenant_id, model, start, end, progress=context.log.info)
        if written:
            by_tenant[names[tenant_id]] = written
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


RULES = dg.AssetKey(["routing", "routing_rules"])
RULE_CHECKS = [dg.AssetCheckSpec(c.name, asset=RULES, description=c.description) for c in checks.RULE_CHECKS]


def rule_check_results(postgres: PostgresResource, model: str) -> list[dg.AssetCheckResult]:
    """The four checks over every tenant's rules (read per tenant, under row-level security)."""
    return [
        dg.AssetCheckResult(
            check_name=outcome.name,
            asset_key=RULES,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "violations": len(outcome.violations),
                "examples": dg.MetadataValue.json(outcome.violations[:10]),
            },
        )
        for outcome in checks.run_rule_checks(postgres.database, postgres.tenant_ids(), model)
    ]


@dg.asset(
    key=RULES,
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
    names = postgres.tenant_names()
    reports: list[LearningReport] = []
    for tenant_id in postgres.tenant_ids():
        learn = learn_rules_full if config.full else learn_rules_incremental
        report = learn(postgres.database, tenant_id, tag(model), model.name, progress=context.log.info)
        context.log.info(
            f"{names[tenant_id]}: {report.mode}, {report.executions_read:,} executions read, "
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
        problems += [p for p in tenant_dependency_problems(postgres.database, tenant_id) if p not in problems]
    rows = system_figures(postgres.database)
    context.log.info(f"{changed} system rows updated; {len(problems)} dependency problems")
    return dg.MaterializeResult(
        metadata={
            "rows_written": changed,
            "systems": dg.MetadataValue.md(
                markdown_table(
                    ["system", "executions", "successful", "avg cost", "avg ms", "satisfaction", "status", "lifecycle"],
                    rows,
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


# monitoring/router_performance lives with the monitoring assets (platform/defs.py).

routing_full_recluster_job = dg.define_asset_job(
    "routing_full_recluster",
    selection=dg.AssetSelection.assets(["routing", "routing_rules"]),
    description="Re-cluster every tenant's executions into routing rules (after a backfill or an embedder change).",
    config={"ops": {"routing__routing_rules": {"config": {"full": True}}}},
    # Every tenant at once: a deployment's run queue lets one such run go at a time.
    tags={FULL_RECLUSTER_TAG: "all-tenants"},
)
request_embeddings_job = dg.define_asset_job(
    "request_embeddings",
    selection=dg.AssetSelection.assets(["routing", "request_embeddings"]),
    description="Request embeddings by day: `dagster job backfill` (or `clay deploy backfill`) makes one run per "
    "day, whose steps a deployment spreads over its Celery workers.",
)
routing_rules_job = dg.define_asset_job(
    "routing_rules_daily",
    selection=dg.AssetSelection.assets(["routing", "routing_rules"]),
    description="The incremental rule learner.",
)
routing_rules_schedule = dg.ScheduleDefinition(
    job=routing_rules_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The incremental rule learner every night at 03:00 UTC, besides the eager runs that follow new "
    "request embeddings.",
)

defs = dg.load_definitions_from_module(
    sys.modules[__name__], resources={"embedder": EmbedderResource(name=dg.EnvVar("CLAY_EMBEDDER"))}
)
