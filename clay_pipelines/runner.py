"""Headless materialization of every asset through Dagster's own execution APIs.

Assets run in dependency order, in batches of neighbours that share a partitioning. An unpartitioned
batch is one run; a partitioned batch is one run over the whole partition range when every asset in
it has BackfillPolicy.single_run(), otherwise one run per partition. Runs are recorded in the real
instance, so they appear in the Dagster UI like any other.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.partitions.definition import PartitionsDefinition


@dataclass
class AssetSummary:
    asset: str
    partitions: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    failed: bool = False


@dataclass
class RunReport:
    assets: list[AssetSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


# Step-level DEBUG events belong in the UI's run view, not on the terminal.
_QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _single_run(node: object) -> bool:
    policy = node.backfill_policy  # type: ignore[attr-defined]
    return policy is not None and policy.max_partitions_per_run is None


def _batches(
    defs: dg.Definitions, selection: set[dg.AssetKey] | None
) -> list[tuple[PartitionsDefinition | None, bool, list[dg.AssetKey]]]:
    """Neighbours in topological order that share a partitioning and a backfill style run together."""
    graph = defs.resolve_asset_graph()
    batches: list[tuple[PartitionsDefinition | None, bool, list[dg.AssetKey]]] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable or (selection is not None and key not in selection):
            continue
        partitions_def = node.partitions_def
        single_run = partitions_def is not None and _single_run(node)
        if batches and batches[-1][0] == partitions_def and batches[-1][1] == single_run:
            batches[-1][2].append(key)
        else:
            batches.append((partitions_def, single_run, [key]))
    return batches


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    starts: dict[str, float] = {}
    seconds: dict[str, float] = defaultdict(float)
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif (
            event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
            and event.step_key in starts
        ):
            seconds[event.step_key] += entry.timestamp - starts.pop(event.step_key)
    return seconds


def materialize_everything(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: set[dg.AssetKey] | None = None,
    progress: Callable[[str], None] = print,
) -> RunReport:
    started = time.perf_counter()
    graph = defs.resolve_asset_graph()
    assets_defs = list(graph.assets_defs)
    summaries: dict[dg.AssetKey, AssetSummary] = {}
    report = RunReport()

    for partitions_def, single_run, keys in _batches(defs, selection):
        for key in keys:
            summaries[key] = AssetSummary(key.to_user_string())
        runs: list[dict[str, object]] = []
        if partitions_def is None:
            runs.append({})
        else:
            partition_keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            if not partition_keys:
                progress(f"{', '.join(k.to_user_string() for k in keys)}: no partitions yet, skipped")
                continue
            if single_run:
                runs.append(
                    {
                        "tags": {
                            "dagster/asset_partition_range_start": partition_keys[0],
                            "dagster/asset_partition_range_end": partition_keys[-1],
                        }
                    }
                )
            else:
                runs.extend({"partition_key": p} for p in partition_keys)

        names = ", ".join(k.to_user_string() for k in keys)
        progress(f"materializing {names} ({'unpartitioned' if partitions_def is None else f'{len(runs)} run(s)'})")
        for run_args in runs:
            # Only this batch's assets: upstream ones are dependencies already materialized, and a job
            # mixing backfill policies would fall back to one partition per run.
            batch_defs = [a for a in assets_defs if set(a.keys) & set(keys)]
            result = dg.materialize(
                batch_defs,
                selection=keys,
                instance=instance,
                raise_on_error=False,
                run_config=_QUIET_CONSOLE,
                **run_args,  # type: ignore[arg-type]
            )
            report.run_ids.append(result.run_id)
            step_seconds = _step_seconds(instance, result.run_id)
            # A run over a partition range reports one materialization per partition, all carrying the
            # step's metadata: count partitions each time, rows and seconds once per step.
            counted: set[tuple[str, dg.AssetKey]] = set()
            for event in result.get_asset_materialization_events():
                materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
                key = materialization.asset_key
                summary = summaries.setdefault(key, AssetSummary(key.to_user_string()))
                summary.partitions += 1
                step = event.step_key or ""
                if (step, key) in counted:
                    continue
                counted.add((step, key))
                rows = materialization.metadata.get("rows_written")
                if rows is not None:
                    summary.rows_written += int(rows.value)  # type: ignore[arg-type]
                summary.seconds += step_seconds.pop(step, 0.0)  # a multi-asset step is counted once
            if not result.success:
                for event in result.get_step_failure_events():
                    error = event.step_failure_data.error  # type: ignore[union-attr]
                    while error is not None and error.cause is not None:  # the user's exception, not Dagster's wrapper
                        error = error.cause
                    message = error.message.strip().splitlines()[0] if error else "failed"
                    report.failures.append(f"{event.step_key}: {message}")
                for key in keys:
                    if summaries[key].partitions == 0:
                        summaries[key].failed = True
    report.assets = list(summaries.values())
    report.seconds = time.perf_counter() - started
    return report


def format_report(report: RunReport) -> str:
    width = max([len(a.asset) for a in report.assets] + [5])
    lines = [f"{'asset':<{width}}  {'partitions':>10}  {'rows written':>12}  {'seconds':>8}  status"]
    for a in report.assets:
        status = "FAILED" if a.failed else "ok"
        lines.append(f"{a.asset:<{width}}  {a.partitions:>10}  {a.rows_written:>12,}  {a.seconds:>8.2f}  {status}")
    lines.append(f"{len(report.assets)} assets in {len(report.run_ids)} run(s), {report.seconds:.1f} s")
    return "\n".join(lines)
