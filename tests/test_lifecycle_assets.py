"""The lifecycle assets on the sample world (400 days ending 2026-01-15): several states after aging,
the same rules per tenant before and after, checks passing, destructive steps dry by default."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.lifecycle.defs import (
    execution_aging,
    execution_archive,
    lifecycle_system_states,
    prune,
    telemetry_rollup,
)
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.embed_store import embed_executions
from clay_pipelines.routing.embeddings import HashingEmbedder, tag
from clay_pipelines.routing.rule_store import coverage, learn_rules_full

ANCHOR_DAY = "2026-01-14"  # the world's last day: aging as of its end


def _materialize(world_db, assets, **kwargs) -> dg.ExecuteInProcessResult:
    resources = {"postgres": PostgresResource(app_dsn=world_db.app_url, maintenance_dsn=world_db.maintenance_url)}
    with dg.instance_for_test() as instance:
        return dg.materialize(assets, instance=instance, resources=resources, **kwargs)


def _states(world_db) -> dict[str, int]:
    with world_db.database() as db, db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        return dict(conn.execute("SELECT lifecycle_state, count(*) FROM executions GROUP BY 1").fetchall())


def _rules(db, tenant_id):
    with db.tenant_transaction(tenant_id) as conn:
        return sorted(
            conn.execute(
                "SELECT request_pattern, recommended_system_id, based_on_executions, round(success_rate, 6) "
                "FROM routing_rules WHERE is_active"
            ).fetchall()
        )


@pytest.fixture
def world_env(world_db, monkeypatch, tmp_path):
    monkeypatch.setenv("CLAY_ARCHIVE_URL", str(tmp_path / "archive"))
    monkeypatch.delenv("CLAY_LIFECYCLE_RETENTION_ENABLED", raising=False)
    return world_db


def test_aging_the_sample_world_leaves_several_states_and_the_same_rules(world_env) -> None:
    embedder = HashingEmbedder()
    model = tag(embedder)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    before = {}
    with world_env.database() as db:
        tenants = db.tenant_ids()
        for tenant_id in tenants:
            embed_executions(db, tenant_id, embedder, start, end)
            learn_rules_full(db, tenant_id, model, "hashing")
            first = (_rules(db, tenant_id), coverage(db, tenant_id, model, days=2000))
            learn_rules_full(db, tenant_id, model, "hashing")
            # The learner is deterministic: a second pass over the same vectors learns the same rules.
            assert (_rules(db, tenant_id), coverage(db, tenant_id, model, days=2000)) == first
            before[tenant_id] = (_rules(db, tenant_id), coverage(db, tenant_id, model, days=2000))
    assert all(rules for rules, _ in before.values())

    result = _materialize(world_env, [execution_aging], partition_key=ANCHOR_DAY)
    assert result.success
    states = _states(world_env)
    assert set(states) == {"HOT", "WARM", "COLD"} and states["COLD"] > states["WARM"] > 0 and states["HOT"] > 0
    assert sum(states.values()) == 20_000
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    # Aged as of the world's last day, months ago: by today's clock HOT and WARM rows are overdue.
    assert checks == {"no_row_younger_than_its_age": False, "conservation": True}

    # The learner reads every vector at half precision whatever the row's state (rule_store.EXECUTION_VECTOR),
    # in time order: the rules and the coverage of every tenant are exactly those learned before aging.
    with world_env.database() as db:
        for tenant_id in tenants:
            learn_rules_full(db, tenant_id, model, "hashing")
            assert (_rules(db, tenant_id), coverage(db, tenant_id, model, days=2000)) == before[tenant_id]

    # Destructive steps are dry runs by default: they count, change nothing.
    archive = _materialize(world_env, [execution_archive], partition_key="2025-01-01")
    assert archive.success
    metadata = archive.asset_materializations_for_node("lifecycle__execution_archive")[0].metadata
    assert metadata["dry_run"].value is True and metadata["rows_written"].value == 0
    assert _materialize(world_env, [prune], partition_key="2025-01-01").success
    assert _states(world_env) == states


def test_system_states_and_the_telemetry_dry_run(world_env) -> None:
    with world_env.database() as db, db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        calls = conn.execute("SELECT count(*) FROM mcp_telemetry_log").fetchone()[0]
    assert _materialize(world_env, [lifecycle_system_states, telemetry_rollup], partition_key=ANCHOR_DAY).success
    with world_env.database() as db, db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        assert conn.execute("SELECT count(*) FROM mcp_telemetry_log").fetchone()[0] == calls
        states = {r[0] for r in conn.execute("SELECT DISTINCT lifecycle_state FROM systems")}
    assert states <= {"HOT", "WARM", "COLD", "ARCHIVED"}
