"""Headless materialization of every asset through Dagster's own execution APIs.

Assets run in dependency order, in batches of neighbours that share a partitioning. An unpartitioned
batch is one run; a partitioned batch is one run over the whole partition range when every asset in
it has BackfillPolicy.single_run(), otherwise one run per partition. Runs are recorded in the real
instance, so they appear in the Dagster UI like any other.

The runs execute in this process: no run launcher watches them and Dagster's run monitoring does
not cover them. So each run is tagged with the host and process that runs it, and before it starts
anything `materialize_everything` ends this host's unfinished runs whose process is gone (killed
outright, the machine restarted) and frees the pool slots they held; otherwise those slots stay
taken and the next run waits for them forever.
"""

from __future__ import annotations

import difflib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.partitions.definition import PartitionsDefinition
from dagster._core.execution.plan.objects import StepFailureData
from dagster._utils.error import SerializableErrorInfo

from clay_pipelines.processes import ProcessIdentity

RUN_HOST_TAG = "clay/host"
RUN_PID_TAG = "clay/pid"
RUN_PROCESS_STARTED_TAG = "clay/process_started"
# The daemon cannot relaunch a run that executed in another process; the next `clay run` is its retry.
_NO_DAEMON_RETRY = {"dagster/max_retries": "0"}
_ENGINE_EVENT = dg.DagsterEventType.ENGINE_EVENT
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass
class AssetSummary:
    asset: str
    partitions: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    failed_runs: int = 0  # runs that did not materialize it (its step or an upstream one failed)

    @property
    def failed(self) -> bool:
        return self.failed_runs > 0

    @property
    def status(self) -> str:
        if not self.failed:
            return "ok"
        return "FAILED" if self.partitions == 0 else f"{self.failed_runs} FAILED"


@dataclass(frozen=True)
class StepFailure:
    """One failed step: its assets, the partition (a key, or `first...last` for a range) and why."""

    assets: tuple[str, ...]
    partition: str | None
    reason: str
    run_id: str
    traceback: str = ""  # the whole error, causes included, for CLAY_DEBUG=1

    def line(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"{', '.join(self.assets)}{where}: {self.reason}"


@dataclass
class RunReport:
    assets: list[AssetSummary] = field(default_factory=list)
    failures: list[StepFailure] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    ended_stale_runs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


class SelectionError(ValueError):
    """--select names something that cannot be materialized; the message names it."""


# ---------------------------------------------------------------------------------------------
# Runs of processes that are gone


def run_tags(identity: ProcessIdentity) -> dict[str, str]:
    return {
        RUN_HOST_TAG: identity.host,
        RUN_PID_TAG: str(identity.pid),
        RUN_PROCESS_STARTED_TAG: f"{identity.started:.3f}",
        **_NO_DAEMON_RETRY,
    }


def _identity_of(run: dg.DagsterRun) -> ProcessIdentity | None:
    try:
        return ProcessIdentity(
            run.tags[RUN_HOST_TAG], int(run.tags[RUN_PID_TAG]), float(run.tags[RUN_PROCESS_STARTED_TAG])
        )
    except (KeyError, ValueError):
        return None


def free_pool_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Give back the pool slots (and queued claims) a run holds; a no-op when it holds none."""
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def _end_run(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    instance.report_run_failed(run, message)
    free_pool_slots(instance, run.run_id)


def end_stale_runs(instance: dg.DagsterInstance, host: str | None = None) -> list[str]:
    """Fail the unfinished runs that processes of this host left behind when they died, and free
    their pool slots; free the slots finished runs still hold. Returns the ids of the runs ended.

    Only this host's: whether a process elsewhere still runs cannot be told from here."""
    host = host or ProcessIdentity.current().host
    ended = []
    for run in instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED, tags={RUN_HOST_TAG: host})):
        owner = _identity_of(run)
        if owner is None or owner.is_alive():
            continue
        _end_run(instance, run, f"Process {owner.pid} on {owner.host}, which ran this run in process, is gone.")
        ended.append(run.run_id)
    free_slots_of_finished_runs(instance)
    return ended


def free_slots_of_finished_runs(instance: dg.DagsterInstance) -> None:
    """Free the pool slots that finished (or deleted) runs still hold.

    The daemon does this (run_monitoring.free_slots_after_run_end_seconds) when it runs; without it
    such slots stay taken. A run `clay run` executed in process is freed at once; any other after the
    same delay as the daemon's, which lets a step process that outlived its run finish first.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    delay = instance.run_monitoring_settings.get("free_slots_after_run_end_seconds") or 0
    for run_id in storage.get_concurrency_run_ids():
        record = instance.get_run_record_by_id(run_id)
        if record is None or (
            record.dagster_run.is_finished
            and (_identity_of(record.dagster_run) is not None or (record.end_time or 0) + delay <= time.time())
        ):
            free_pool_slots(instance, run_id)


def end_runs_of_process(instance: dg.DagsterInstance, identity: ProcessIdentity, message: str) -> list[str]:
    """Fail the unfinished runs `identity` started (a process that is about to exit) and free their slots."""
    tags = {k: v for k, v in run_tags(identity).items() if k.startswith("clay/")}
    runs = instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED, tags=tags))
    for run in runs:
        _end_run(instance, run, message)
    return [run.run_id for run in runs]


def settle_runs_of_workers(instance: dg.DagsterInstance, pids: Iterable[int], since: float, message: str) -> list[str]:
    """After a process tree that ran runs (`clay dev`: its daemon, code servers and run workers) has
    been stopped: the runs (created after `since`) whose worker was one of `pids` are failed if they
    are unfinished (a killed worker cannot report its run's end), and their pool slots are freed
    (nothing of them runs any more). Returns the ids of the runs failed."""
    workers = {str(pid) for pid in pids}
    ended = []
    for record in instance.get_run_records(dg.RunsFilter(created_after=datetime.fromtimestamp(since, UTC))):
        run = record.dagster_run
        if not any(_started_by(entry, workers) for entry in instance.all_logs(run.run_id, of_type=_ENGINE_EVENT)):
            continue
        if run.is_finished:
            free_pool_slots(instance, run.run_id)
        else:
            _end_run(instance, run, message)
            ended.append(run.run_id)
    return ended


def _started_by(entry: dg.EventLogEntry, pids: set[str]) -> bool:
    """Whether this is a run worker's "Started process for run (pid: N)" event, N one of `pids`."""
    data = entry.dagster_event.engine_event_data if entry.dagster_event else None
    pid = data.metadata.get("pid") if data else None
    return pid is not None and str(pid.value) in pids and entry.message.startswith("Started process for run")


# ---------------------------------------------------------------------------------------------
# Materialization


def resolve_selection(defs: dg.Definitions, names: Sequence[str]) -> set[dg.AssetKey]:
    """The asset keys `names` (as `group/name`) stand for; SelectionError names any that is unknown
    or cannot be materialized here."""
    graph = defs.resolve_asset_graph()
    every = {key.to_user_string(): key for key in graph.get_all_asset_keys()}
    materializable = sorted(name for name, key in every.items() if graph.get(key).is_materializable)
    external = [n for n in names if n in every and n not in materializable]
    if external:
        raise SelectionError(
            f"{', '.join(external)}: written by other programs (external), nothing to materialize here"
        )
    unknown = [n for n in names if n not in every]
    if unknown:
        close = difflib.get_close_matches(unknown[0], materializable, n=1)
        hint = f"did you mean {close[0]}?" if close else f"assets: {', '.join(materializable)}"
        raise SelectionError(f"unknown asset{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} ({hint})")
    return {every[n] for n in names}


def _console(level: str) -> dict[str, object]:
    # The console logger prints every step failure with its traceback; the run's events stay in the
    # instance (the Dagster UI) whatever this level is.
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def _single_run(node: object) -> bool:
    policy = node.backfill_policy  # type: ignore[attr-defined]
    return policy is not None and policy.max_partitions_per_run is None


# An asset tagged so is materialized for its newest partition only by `clay run` (a nightly cycle:
# running every past night is a backfill a person asks for).
LATEST_ONLY_TAG = ("clay/run_partitions", "latest")


def _latest_only(node: object) -> bool:
    return node.tags.get(LATEST_ONLY_TAG[0]) == LATEST_ONLY_TAG[1]  # type: ignore[attr-defined]


def _batches(
    defs: dg.Definitions, selection: set[dg.AssetKey] | None
) -> list[tuple[PartitionsDefinition | None, bool, bool, list[dg.AssetKey]]]:
    """Neighbours in topological order that share a partitioning, a backfill style and the latest-only
    tag run together."""
    graph = defs.resolve_asset_graph()
    batches: list[tuple[PartitionsDefinition | None, bool, bool, list[dg.AssetKey]]] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable or (selection is not None and key not in selection):
            continue
        partitions_def = node.partitions_def
        single_run = partitions_def is not None and _single_run(node)
        latest = partitions_def is not None and _latest_only(node)
        if batches and batches[-1][:3] == (partitions_def, single_run, latest):
            batches[-1][3].append(key)
        else:
            batches.append((partitions_def, single_run, latest, [key]))
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


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return " ".join(lines[0].split()) if lines else ""


def _reason(data: StepFailureData | None) -> str:
    """What a person needs: the Failure's description, or the user's exception (not Dagster's wrapper)."""
    if data is None:
        return "failed"
    if data.user_failure_data is not None and data.user_failure_data.description:
        return _first_line(data.user_failure_data.description)
    error = data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return _first_line(error.message) if error is not None else "failed"


def _failures(
    result: dg.ExecuteInProcessResult, assets_by_step: dict[str, tuple[str, ...]], partition: str | None
) -> list[StepFailure]:
    failures = [
        StepFailure(
            assets_by_step.get(event.step_key or "", (event.step_key or "?",)),
            partition,
            _reason(event.step_failure_data),
            result.run_id,
            _traceback(event.step_failure_data.error if event.step_failure_data else None),
        )
        for event in result.get_step_failure_events()
    ]
    if failures:
        return failures
    # The run failed around its steps (a resource that would not start, configuration).
    run_failure = next((e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE), None)
    error = getattr(run_failure.event_specific_data, "error", None) if run_failure else None
    while error is not None and error.cause is not None:
        error = error.cause
    reason = _first_line(error.message if error else (run_failure.message or "") if run_failure else "")
    every_asset = tuple(sorted({a for assets in assets_by_step.values() for a in assets}))
    error = getattr(run_failure.event_specific_data, "error", None) if run_failure else None
    return [StepFailure(every_asset, partition, reason or "the run failed", result.run_id, _traceback(error))]


def _traceback(error: SerializableErrorInfo | None) -> str:
    return error.to_string() if error is not None else ""


def _partition_label(run_args: dict[str, object]) -> str | None:
    if "partition_key" in run_args:
        return str(run_args["partition_key"])
    tags = run_args.get("tags") or {}
    start = tags.get("dagster/asset_partition_range_start")  # type: ignore[union-attr]
    return f"{start}...{tags['dagster/asset_partition_range_end']}" if start else None  # type: ignore[index]


def materialize_everything(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: set[dg.AssetKey] | None = None,
    progress: Callable[[str], None] = print,
    console_log_level: str = "CRITICAL",
) -> RunReport:
    started = time.perf_counter()
    report = RunReport()
    report.ended_stale_runs = end_stale_runs(instance)
    if report.ended_stale_runs:
        progress(
            f"ended {len(report.ended_stale_runs)} run(s) left unfinished by `clay run` processes that are gone "
            f"(their pool slots are free again): {', '.join(report.ended_stale_runs)}"
        )
    tags = run_tags(ProcessIdentity.current())
    graph = defs.resolve_asset_graph()
    assets_defs = list(graph.assets_defs)
    summaries: dict[dg.AssetKey, AssetSummary] = {}

    for partitions_def, single_run, latest_only, keys in _batches(defs, selection):
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
            if latest_only:
                partition_keys = partition_keys[-1:]
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
        # Only this batch's assets: upstream ones are dependencies already materialized, and a job
        # mixing backfill policies would fall back to one partition per run.
        batch_defs = [a for a in assets_defs if set(a.keys) & set(keys)]
        assets_by_step = {a.node_def.name: tuple(k.to_user_string() for k in a.keys if k in keys) for a in batch_defs}
        for run_args in runs:
            result = dg.materialize(
                batch_defs,
                selection=keys,
                instance=instance,
                raise_on_error=False,
                run_config=_console(console_log_level),
                tags={**tags, **run_args.get("tags", {})},  # type: ignore[dict-item]
                partition_key=run_args.get("partition_key"),  # type: ignore[arg-type]
            )
            # In-process steps give their slots back as they end; a step that died mid-claim might not.
            free_pool_slots(instance, result.run_id)
            report.run_ids.append(result.run_id)
            step_seconds = _step_seconds(instance, result.run_id)
            # A run over a partition range reports one materialization per partition, all carrying the
            # step's metadata: count partitions each time, rows and seconds once per step.
            counted: set[tuple[str, dg.AssetKey]] = set()
            materialized: set[dg.AssetKey] = set()
            for event in result.get_asset_materialization_events():
                materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
                key = materialization.asset_key
                summary = summaries.setdefault(key, AssetSummary(key.to_user_string()))
                summary.partitions += 1
                materialized.add(key)
                step = event.step_key or ""
                if (step, key) in counted:
                    continue
                counted.add((step, key))
                rows = materialization.metadata.get("rows_written")
                if rows is not None:
                    summary.rows_written += int(rows.value)  # type: ignore[arg-type]
                summary.seconds += step_seconds.pop(step, 0.0)  # a multi-asset step is counted once
            if not result.success:
                report.failures.extend(_failures(result, assets_by_step, _partition_label(run_args)))
                for key in set(keys) - materialized:
                    summaries[key].failed_runs += 1
    report.assets = list(summaries.values())
    report.seconds = time.perf_counter() - started
    return report


def format_report(report: RunReport) -> str:
    width = max([len(a.asset) for a in report.assets] + [5])
    lines = [f"{'asset':<{width}}  {'partitions':>10}  {'rows written':>12}  {'seconds':>8}  status"]
    for a in report.assets:
        lines.append(f"{a.asset:<{width}}  {a.partitions:>10}  {a.rows_written:>12,}  {a.seconds:>8.2f}  {a.status}")
    lines.append(f"{len(report.assets)} assets in {len(report.run_ids)} run(s), {report.seconds:.1f} s")
    return "\n".join(lines)


def failure_summary(report: RunReport) -> str:
    """One line: how many steps failed, of which assets."""
    by_asset: dict[str, int] = defaultdict(int)
    for failure in report.failures:
        by_asset[", ".join(failure.assets)] += 1
    parts = [f"{count} of {asset}" if count > 1 else asset for asset, count in by_asset.items()]
    return f"{len(report.failures)} step(s) failed ({'; '.join(parts)})"
