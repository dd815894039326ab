"""Dagster wiring for routing memory: request embeddings by day of started_at."""

import os
from datetime import UTC, datetime

import dagster as dg
from pydantic import PrivateAttr

from clay_pipelines.platform.assets import executions_table
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.embed_store import embed_executions
from clay_pipelines.routing.embeddings import Embedder, get_embedder, tag

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


ROUTING_ASSETS = [request_embeddings]
