"""`clay run`'s engine: dependency order, partition ranges in one run, failures named."""

import dagster as dg

from clay_pipelines.runner import format_report, materialize_everything

days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-04")
seen_ranges: list[list[str]] = []


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    seen_ranges.append(list(context.partition_keys))
    return dg.MaterializeResult(metadata={"rows_written": len(context.partition_keys)})


@dg.asset(partitions_def=days)
def per_day(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows_written": 10})


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), tags={"clay/run_partitions": "latest"})
def nightly(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    seen_ranges.append(list(context.partition_keys))
    return dg.MaterializeResult(metadata={"rows_written": 1})


@dg.asset
def upstream() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows_written": 5})


@dg.asset(deps=[upstream])
def broken() -> None:
    raise RuntimeError("source table is missing")


def test_partitioned_assets_run_over_the_range_and_per_partition() -> None:
    seen_ranges.clear()
    defs = dg.Definitions(assets=[ranged, per_day])
    with dg.instance_for_test() as instance:
        report = materialize_everything(defs, instance, progress=lambda _: None)
    assert report.ok
    assert seen_ranges == [["2026-01-01", "2026-01-02", "2026-01-03"]]
    summary = {a.asset: (a.partitions, a.rows_written) for a in report.assets}
    assert summary == {"ranged": (3, 3), "per_day": (3, 30)}
    assert len(report.run_ids) == 4  # one for the range, three for the days


def test_failures_are_named_and_the_report_says_so() -> None:
    defs = dg.Definitions(assets=[upstream, broken])
    with dg.instance_for_test() as instance:
        report = materialize_everything(defs, instance, progress=lambda _: None)
        assert instance.get_run_by_id(report.run_ids[0]).status == dg.DagsterRunStatus.FAILURE
    assert not report.ok
    assert [(f.assets, f.partition, f.reason) for f in report.failures] == [
        (("broken",), None, "RuntimeError: source table is missing")
    ]
    assert report.failures[0].line() == "broken: RuntimeError: source table is missing"
    table = format_report(report)
    assert "broken" in table and "FAILED" in table
    assert [(a.asset, a.rows_written, a.failed) for a in report.assets] == [("upstream", 5, False), ("broken", 0, True)]


def test_an_asset_tagged_latest_runs_for_its_newest_partition_only() -> None:
    seen_ranges.clear()
    defs = dg.Definitions(assets=[ranged, nightly])
    with dg.instance_for_test() as instance:
        report = materialize_everything(defs, instance, progress=lambda _: None)
    assert report.ok
    assert sorted(seen_ranges, key=len) == [["2026-01-03"], ["2026-01-01", "2026-01-02", "2026-01-03"]]
