"""The routing assets through Dagster: routing_rules with its checks and metadata, system rollups
with exact figures, and an embedder change carried through re-embedding to re-learned rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import pytest

from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing import embeddings
from clay_pipelines.routing.defs import (
    EmbedderResource,
    new_executions_sensor,
    request_embeddings,
    routing_rules,
    system_rollups,
)
from clay_pipelines.routing.embed_store import embed_executions
from clay_pipelines.routing.embeddings import HashingEmbedder
from clay_pipelines.routing.router import route
from clay_pipelines.routing.rule_store import learn_rules_full, learn_rules_incremental
from tests import routing_world as world


@pytest.fixture
def acme_env(dagster_env):
    with dagster_env.database() as db:
        world.build(db)
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows())
    return dagster_env


def _resources(env) -> dict:
    return {
        "postgres": PostgresResource(app_dsn=env.app_url, maintenance_dsn=env.maintenance_url),
        "embedder": EmbedderResource(name="hashing"),
    }


def _materialize(env, assets: list, **kwargs) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(assets, instance=instance, resources=_resources(env), **kwargs)


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_routing_rules_asset_reports_its_checks_and_what_it_learned(acme_env) -> None:
    result = _materialize(acme_env, [routing_rules])
    assert result.success
    metadata = _metadata(result, "routing__routing_rules")
    assert (metadata["mode"], metadata["rules_created"], metadata["rules_updated"]) == ("incremental", 2, 0)
    assert (metadata["active_rules"], metadata["executions_read"], metadata["coverage_30d"]) == (2, 170, 1.0)
    table = metadata["top_rules"].splitlines()
    assert table[0] == "| pattern | system | support | confidence | success rate |"
    assert [row.split(" | ")[1:3] for row in table[2:]] == [["payroll-bot", "90"], ["writer", "80"]]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "rules_have_enough_support": True,
        "confidence_in_unit_interval": True,
        "recommended_system_active": True,
        "no_near_duplicate_rules": True,
    }

    # A rule written by people points at a system that has since been retired: the check names it.
    with acme_env.database() as db, db.tenant_transaction(world.ACME) as conn:
        human = conn.execute(
            "INSERT INTO routing_rules (request_pattern, request_embedding, request_embedding_model, "
            "recommended_system_id, confidence_score, auto_generated, created_by) "
            "VALUES ('expense report', %s, 'hashing@1', %s, 0.9, false, 'ops@acme.test') RETURNING id",
            (HashingEmbedder().encode(["expense report"])[0], world.SYSTEMS["generalist"]),
        ).fetchone()[0]
    with acme_env.admin() as conn:
        conn.execute("UPDATE systems SET status = 'deprecated' WHERE id = %s", (world.SYSTEMS["generalist"],))
    again = _materialize(acme_env, [routing_rules], raise_on_error=False)
    checks = {c.check_name: c for c in again.get_asset_check_evaluations()}
    assert checks["recommended_system_active"].passed is False
    assert checks["recommended_system_active"].metadata["examples"].value == [f"{human}: system deprecated"]
    assert [c for c, e in checks.items() if not e.passed] == ["recommended_system_active"]
    # The learned payroll rule no longer offers the retired system as an alternative.
    metadata = _metadata(again, "routing__routing_rules")
    assert (metadata["rules_created"], metadata["rules_deactivated"], metadata["active_rules"]) == (0, 0, 3)
    with acme_env.admin() as conn:
        alternatives = conn.execute(
            "SELECT alternative_systems FROM routing_rules WHERE auto_generated AND recommended_system_id = %s",
            (world.SYSTEMS["payroll-bot"],),
        ).fetchone()[0]
    assert alternatives == []


def test_system_rollups_asset_writes_exact_figures_and_checks_the_graph(acme_env) -> None:
    with acme_env.admin() as conn:
        conn.execute(
            "UPDATE systems SET depends_on = ARRAY[%s]::uuid[] WHERE id = %s",
            (world.SYSTEMS["generalist"], world.SYSTEMS["writer"]),
        )
    result = _materialize(acme_env, [system_rollups])
    with acme_env.admin() as conn:
        rows = conn.execute(
            "SELECT name, total_executions, successful_executions, avg_cost_usd, avg_execution_time_ms, "
            "avg_user_satisfaction, reverse_dependencies FROM systems ORDER BY name"
        ).fetchall()
    # payroll-bot: rows 0-59, every tenth failed; generalist: rows 60-89, one in ten succeeded;
    # writer: rows 90-169, one in twenty failed. Durations 700 + 10 * (row % 7) ms; satisfaction 5 or 2.
    assert rows == [
        ("clay-consigliere", 0, 0, Decimal("0.000000"), 0, None, []),
        ("generalist", 30, 3, Decimal("0.010000"), 731, Decimal("2.300"), [world.SYSTEMS["writer"]]),
        ("payroll-bot", 60, 54, Decimal("0.010000"), 729, Decimal("4.700"), []),
        ("writer", 80, 76, Decimal("0.010000"), 730, Decimal("4.850"), []),
    ]
    assert [(c.check_name, c.passed) for c in result.get_asset_check_evaluations()] == [
        ("dependency_graph_sound", True)
    ]
    table = result.get_asset_materialization_events()[0].materialization.metadata["systems"].value
    assert table.splitlines()[0].rstrip(" |").endswith("status | lifecycle")
    assert all(line.rstrip(" |").endswith("HOT") for line in table.splitlines()[2:])  # each system's state
    assert _materialize(acme_env, [system_rollups]).success
    with acme_env.admin() as conn:
        assert conn.execute("SELECT name, total_executions FROM systems ORDER BY name").fetchall() == [
            (r[0], r[1]) for r in rows
        ]  # idempotent
        conn.execute(
            "UPDATE systems SET depends_on = ARRAY[%s]::uuid[] WHERE id = %s",
            (world.SYSTEMS["writer"], world.SYSTEMS["generalist"]),
        )
    cycle = _materialize(acme_env, [system_rollups], raise_on_error=False)
    check = cycle.get_asset_check_evaluations()[0]
    assert check.passed is False
    assert check.metadata["problems"].value == ["cycle: generalist -> writer -> generalist"]


class _NextVersion(HashingEmbedder):
    version = 2


def test_an_embedder_change_re_embeds_and_re_learns_through_the_assets(acme_env, monkeypatch) -> None:
    assert _materialize(acme_env, [routing_rules]).success
    monkeypatch.setitem(embeddings.EMBEDDERS, "hashing", _NextVersion)
    # The backfill over the executions' days re-embeds them with the new version, in one run.
    with acme_env.admin() as conn:
        days = conn.execute(
            "SELECT min(started_at AT TIME ZONE 'UTC')::date, max(started_at AT TIME ZONE 'UTC')::date FROM executions"
        ).fetchone()
    embedded = _materialize(
        acme_env,
        [request_embeddings],
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
    )
    embedded_metadata = _metadata(embedded, "routing__request_embeddings")
    assert (embedded_metadata["rows_written"], embedded_metadata["by_tenant"]) == (170, {"Acme": 170})
    relearned = _metadata(_materialize(acme_env, [routing_rules]), "routing__routing_rules")
    assert (relearned["embedder"], relearned["rules_created"], relearned["rules_deactivated"]) == ("hashing@2", 2, 2)
    with acme_env.admin() as conn:
        rules = conn.execute(
            "SELECT s.name, r.request_embedding_model, r.is_active, r.deactivation_reason FROM routing_rules r "
            "JOIN systems s ON s.id = r.recommended_system_id ORDER BY r.is_active, s.name"
        ).fetchall()
    assert rules == [
        ("payroll-bot", "hashing@1", False, "embedder changed to hashing@2"),
        ("writer", "hashing@1", False, "embedder changed to hashing@2"),
        ("payroll-bot", "hashing@2", True, None),
        ("writer", "hashing@2", True, None),
    ]
    with acme_env.database() as db:
        decision = route(db, world.ACME, "run payroll for November", _NextVersion())
    assert (decision.path, decision.system_name, decision.embedder) == ("rule", "payroll-bot", "hashing@2")


def test_incremental_reads_only_recent_executions_once_rules_exist(acme_env) -> None:
    with acme_env.database() as db:
        learn_rules_full(db, world.ACME, "hashing@1", "hashing")
        world.add_executions(db, world.ACME, world.email_rows(20), days_ago=60)  # older than the window
        world.add_executions(db, world.ACME, world.email_rows(20), days_ago=1)
        report = learn_rules_incremental(db, world.ACME, "hashing@1", "hashing")
        assert (report.executions_read, report.assigned, report.created) == (20, 20, 0)
        # The full re-cluster takes everything again.
        full = learn_rules_full(db, world.ACME, "hashing@1", "hashing")
        assert (full.executions_read, full.created) == (210, 0)
        with db.tenant_transaction(world.ACME) as conn:
            support = conn.execute(
                "SELECT r.based_on_executions FROM routing_rules r JOIN systems s ON s.id = r.recommended_system_id "
                "WHERE s.name = 'writer' AND r.is_active"
            ).fetchone()[0]
    assert support == 120


def test_new_executions_sensor_asks_for_each_day_with_executions_to_embed(acme_env) -> None:
    resources = _resources(acme_env)

    def tick() -> dg.SensorResult:
        with (
            dg.instance_for_test() as instance,
            dg.build_sensor_context(instance=instance, resources=resources) as context,
        ):
            return new_executions_sensor(context)

    assert tick().run_requests == []  # the world's executions are five days old and embedded already
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date().isoformat()
    with acme_env.database() as db:
        with db.tenant_transaction(world.ACME) as conn:
            for text in ("run payroll for December", "draft an email to the board", "process the payroll"):
                conn.execute(
                    "INSERT INTO executions (system_id, system_name, user_request, status, started_at, governance_check) "
                    "VALUES (%s, 'payroll-bot', %s, 'partial', %s, '{\"requires_approval\": false}')",
                    (world.SYSTEMS["payroll-bot"], text, now),
                )
        result = tick()
        assert [(r.partition_key, r.run_key) for r in result.run_requests] == [(today, f"{today}:hashing@1:3")]
        assert result.cursor == f'{{"{today}": 3}}'
        start = datetime.fromisoformat(today).replace(tzinfo=UTC)
        assert embed_executions(db, world.ACME, HashingEmbedder(), start, start + timedelta(days=1)) == 3
    assert tick().run_requests == []


def test_a_drifting_rules_members_are_measured_again_and_rejoin_it(acme_env) -> None:
    with acme_env.database() as db:
        learn_rules_full(db, world.ACME, "hashing@1", "hashing")
        with db.tenant_transaction(world.ACME) as conn:
            writer_rule = conn.execute(
                "SELECT r.id FROM routing_rules r JOIN systems s ON s.id = r.recommended_system_id "
                "WHERE s.name = 'writer'"
            ).fetchone()[0]
            # Its recent members now look far less alike than the rule's similarity floor.
            conn.execute("UPDATE routing_memberships SET similarity = -0.5 WHERE rule_id = %s", (writer_rule,))
        report = learn_rules_incremental(db, world.ACME, "hashing@1", "hashing")
        # Its members are read again and measured against its prototypes: they still fit, so they
        # rejoin it (members that no longer fit would be clustered anew).
        assert (report.drifting, report.executions_read, report.assigned, report.created) == (1, 80, 80, 0)
        with db.tenant_transaction(world.ACME) as conn:
            rules = conn.execute(
                "SELECT id, based_on_executions, is_active FROM routing_rules r WHERE id = %s", (writer_rule,)
            ).fetchall()
            lowest = conn.execute(
                "SELECT min(similarity) FROM routing_memberships WHERE rule_id = %s", (writer_rule,)
            ).fetchone()[0]
    assert rules == [(writer_rule, 80, True)]
    assert lowest > 0  # measured again
