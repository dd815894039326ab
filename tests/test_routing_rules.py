"""Rule learning and the router, on a constructed world whose right answers are known."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.routing.embeddings import HashingEmbedder, tag
from clay_pipelines.routing.learning import wilson_lower_bound
from clay_pipelines.routing.router import route
from clay_pipelines.routing.rule_store import learn_rules_full, learn_rules_incremental
from tests import routing_world as world

MODEL = "hashing@1"


@pytest.fixture
def acme(fresh_db):
    with fresh_db.database() as db:
        world.build(db)
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows())
        yield db


def _rules(db, tenant=world.ACME) -> list[tuple]:
    with db.tenant_transaction(tenant) as conn:
        return conn.execute(
            """
            SELECT r.id, s.name, array(SELECT a.name FROM unnest(r.alternative_systems) WITH ORDINALITY u(id, n)
                                       JOIN systems a ON a.id = u.id ORDER BY u.n),
                   r.based_on_executions, r.success_rate, r.confidence_score, r.is_active, r.auto_generated,
                   r.request_pattern
            FROM routing_rules r LEFT JOIN systems s ON s.id = r.recommended_system_id
            ORDER BY s.name, r.created_at
            """
        ).fetchall()


def test_wilson_lower_bound_prefers_evidence() -> None:
    bounds = wilson_lower_bound(np.array([9, 90, 0]), np.array([10, 100, 0]))
    assert bounds[0] < bounds[1] and bounds[2] == 0.0
    assert round(float(bounds[1]), 3) == 0.826


def test_learning_recommends_the_system_that_does_best_with_the_runners_up(acme) -> None:
    report = learn_rules_full(acme, world.ACME, MODEL, "hashing")
    assert (report.created, report.updated, report.deactivated) == (2, 0, 0)
    rules = _rules(acme)
    summary = [(r[1], r[2], r[3], r[4], r[6], r[7]) for r in rules]
    # payroll: bot 54/60 beats generalist 3/30; email: only writer, 76/80.
    assert summary == [
        ("payroll-bot", ["generalist"], 90, Decimal("0.6333"), True, True),
        ("writer", [], 80, Decimal("0.9500"), True, True),
    ]
    assert all(0 <= r[5] <= 1 for r in rules)
    assert rules[0][8] in world.payroll_texts(60) and rules[1][8] in world.email_texts(80)


def test_rules_keep_their_identity_and_people_rules_are_untouched(acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    before = {r[1]: r[0] for r in _rules(acme)}
    with acme.tenant_transaction(world.ACME) as conn:
        human = conn.execute(
            "INSERT INTO routing_rules (request_pattern, request_embedding, request_embedding_model, "
            "recommended_system_id, confidence_score, auto_generated, created_by, based_on_executions) "
            "VALUES ('expense report', %s, %s, %s, 0.9, false, 'ops@acme.test', 3) RETURNING *",
            (HashingEmbedder().encode(["expense report"])[0], MODEL, world.SYSTEMS["generalist"]),
        ).fetchone()
    again = learn_rules_full(acme, world.ACME, MODEL, "hashing")
    assert (again.created, again.updated, again.deactivated) == (0, 2, 0)
    assert {r[1]: r[0] for r in _rules(acme) if r[7]} == before
    # More of the same kind: the incremental path adds them to the existing rules, creates none.
    world.add_executions(acme, world.ACME, world.email_rows(20), days_ago=1)
    incremental = learn_rules_incremental(acme, world.ACME, MODEL, "hashing")
    assert incremental.created == 0 and incremental.assigned == 20
    assert {r[1]: (r[0], r[3]) for r in _rules(acme) if r[7]} == {
        "payroll-bot": (before["payroll-bot"], 90),
        "writer": (before["writer"], 100),
    }
    with acme.tenant_transaction(world.ACME) as conn:
        assert conn.execute("SELECT * FROM routing_rules WHERE id = %s", (human[0],)).fetchone() == human


def test_a_rule_whose_support_is_gone_is_deactivated_not_deleted(acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    writer_rule = next(r[0] for r in _rules(acme) if r[1] == "writer")
    # The application may not delete executions (migration 018); a maintenance job may.
    with acme.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("DELETE FROM executions WHERE tenant_id = %s AND system_name = 'writer'", (world.ACME,))
    report = learn_rules_full(acme, world.ACME, MODEL, "hashing")
    assert report.deactivated == 1
    with acme.tenant_transaction(world.ACME) as conn:
        row = conn.execute(
            "SELECT is_active, deactivation_reason, (SELECT count(*) FROM routing_rule_prototypes WHERE rule_id = %s) "
            "FROM routing_rules WHERE id = %s",
            (writer_rule, writer_rule),
        ).fetchone()
    assert row == (False, "no longer supported", 0)


def test_router_paths_and_the_reason_for_every_fallback(acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    from clay_pipelines.routing.embed_store import embed_shared_systems

    embed_shared_systems(acme, HashingEmbedder())
    embedder = HashingEmbedder()

    decision = route(acme, world.ACME, "please run payroll for March", embedder)
    assert (decision.system_name, decision.path) == ("payroll-bot", "rule")
    assert decision.alternatives[0] == "generalist" and decision.fallbacks == []
    assert decision.requires_approval and decision.approval_actions == ["upload_payroll_entries"]

    # The recommended system goes into maintenance: the rule's alternative takes over.
    with acme.maintenance_transaction(world.MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("UPDATE systems SET status = 'maintenance' WHERE name = 'payroll-bot'")
    decision = route(acme, world.ACME, "please run payroll for March", embedder)
    assert (decision.system_name, decision.path, decision.fallbacks) == (
        "generalist",
        "rule",
        ["payroll-bot is not active"],
    )

    # Nothing like any rule, but a system's capabilities fit: the capability match.
    decision = route(acme, world.ACME, "drafting emails and notes", embedder)
    assert decision.path in ("rule", "capability") and decision.system_name == "writer"
    decision = route(acme, world.ACME, "general purpose assistant", embedder)
    assert (decision.path, decision.system_name) == ("capability", "generalist")
    assert (
        decision.fallbacks[0].startswith("best rule ") and "routing_confidence_threshold 0.6" in decision.fallbacks[0]
    )

    # Nothing fits at all: the catch-all.
    decision = route(acme, world.ACME, "zebra quantum banana xylophone", embedder)
    assert (decision.path, decision.system_name) == ("catch_all", "clay-consigliere")
    assert len(decision.fallbacks) == 2 and decision.fallbacks[1].startswith("nearest capability ")


def test_over_budget_system_falls_back_to_the_alternative(acme, fresh_db) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    world.rewrite_completed_costs(fresh_db, 0)  # only the spend below counts this month
    with acme.tenant_transaction(world.ACME) as conn:
        conn.execute(
            "INSERT INTO resources (resource_type, window_type, window_start, window_end, total_budget, used, "
            "system_quotas) VALUES ('usd_budget', 'monthly', date_trunc('month', now()), "
            "date_trunc('month', now()) + interval '1 month', 100, 1, %s)",
            (world.Jsonb({"payroll-bot": {"usd_budget": 0.5}}),),
        )
        conn.execute(
            "INSERT INTO executions (system_id, system_name, user_request, governance_check, status, started_at, "
            "completed_at, cost_usd) VALUES (%s, 'payroll-bot', 'x', '{}', 'success', now(), now(), 0.75)",
            (world.SYSTEMS["payroll-bot"],),
        )
    decision = route(acme, world.ACME, "run payroll for March", HashingEmbedder())
    assert decision.system_name == "generalist"
    assert decision.fallbacks == ["payroll-bot has spent its monthly quota (0.75 of 0.50 USD)"]


def test_routing_is_logged_as_an_execution_and_the_rule_use_recorded(acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    decision = route(acme, world.ACME, "run payroll for May", HashingEmbedder(), dry_run=False)
    with acme.tenant_transaction(world.ACME) as conn:
        row = conn.execute(
            "SELECT system_name, status, completed_at, routing_path, routing_confidence, governance_check, "
            "request_embedding_model, routing_propensity FROM executions WHERE id = %s",
            (decision.execution_id,),
        ).fetchone()
        used = conn.execute(
            "SELECT times_used, last_used_at IS NOT NULL FROM routing_rules WHERE id = %s", (decision.rule_id,)
        ).fetchone()
    assert row[:3] == ("payroll-bot", "partial", None)
    assert row[7] == 1  # no exploration in this world: the rule's choice, with certainty
    assert row[3] == [world.SYSTEMS["clay-consigliere"], world.SYSTEMS["payroll-bot"]]
    assert float(row[4]) == decision.confidence
    assert row[5] == {"requires_approval": True, "actions_requiring_approval": ["upload_payroll_entries"]}
    assert row[6] == MODEL and used == (1, True)


def test_router_queries_see_only_the_tenants_own_rules(acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    decision = route(acme, world.OTHER, "run payroll for March", HashingEmbedder())
    assert decision.path != "rule" and decision.rule_id is None
    assert decision.fallbacks[0] == "no active routing rule for embedder hashing@1"
    with acme.tenant_transaction(world.OTHER) as conn:
        assert conn.execute("SELECT count(*) FROM routing_rule_prototypes").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM routing_memberships").fetchone()[0] == 0


def test_a_new_embedder_version_retires_the_old_rules(acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    report = learn_rules_full(acme, world.ACME, "hashing@2", "hashing")  # nothing embedded with it yet
    assert report.deactivated == 2 and report.active_rules == 0
    assert {r[6] for r in _rules(acme)} == {False}
    assert tag(HashingEmbedder()) == MODEL


def test_eval_routing_names_the_bad_file_and_row(tmp_path, capsys) -> None:
    from clay_pipelines.cli import main

    train = tmp_path / "train.csv"
    train.write_text("text,label\nrun payroll,payroll\n,payroll\n")
    assert main(["eval", "routing", "--train", str(train), "--test", str(train)]) == 2
    assert capsys.readouterr().err.strip() == f"clay: error: {train}, row 3: empty text"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("request,intent\nhello,greet\n")
    assert main(["eval", "routing", "--train", str(wrong), "--test", str(train)]) == 2
    assert "expected the columns text,label, found ['request', 'intent']" in capsys.readouterr().err


def test_near_duplicate_rules_of_one_system_merge_into_the_older_one(acme) -> None:
    from clay_pipelines.routing.rule_store import merge_near_duplicates

    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    with acme.tenant_transaction(world.ACME) as conn:
        older, embedding = conn.execute(
            "SELECT id, request_embedding FROM routing_rules WHERE recommended_system_id = %s",
            (world.SYSTEMS["writer"],),
        ).fetchone()
        younger = conn.execute(
            "INSERT INTO routing_rules (request_pattern, request_embedding, request_embedding_model, "
            "recommended_system_id, confidence_score, auto_generated, created_by, created_at) "
            "VALUES ('a note to the team', %s, %s, %s, 0.5, true, 'routing-learner', now() + interval '1 second') "
            "RETURNING id",
            (embedding, MODEL, world.SYSTEMS["writer"]),
        ).fetchone()[0]
        conn.execute(
            "UPDATE routing_memberships SET rule_id = %s WHERE execution_id IN "
            "(SELECT execution_id FROM routing_memberships WHERE rule_id = %s LIMIT 30)",
            (younger, older),
        )
        assert merge_near_duplicates(conn, MODEL, 0.8) == {younger: older}
        assert conn.execute(
            "SELECT rule_id, count(*) FROM routing_memberships WHERE rule_id IN (%s, %s) GROUP BY 1",
            (older, younger),
        ).fetchall() == [(older, 80)]
        assert conn.execute(
            "SELECT is_active, deactivation_reason FROM routing_rules WHERE id = %s", (younger,)
        ).fetchone() == (False, f"merged into {older}")
        assert merge_near_duplicates(conn, MODEL, 0.8) == {}  # nothing left to merge


def test_governance_blocked_and_unfinished_executions_are_no_evidence_anywhere(acme) -> None:
    """One definition (routing/evidence.py) for the learner's reader, the rules' statistics and the
    registry's rollups: executions governance blocked, or routed and not completed, are requests of
    their kind (members, support) but say nothing about how the system did."""
    from psycopg import sql

    from clay_pipelines.routing.registry import rollup_shared_systems
    from clay_pipelines.routing.rule_store import execution_batches, load_systems

    texts = world.payroll_texts(20)
    world.add_executions(acme, world.ACME, [(text, "payroll-bot", "governance_blocked") for text in texts])
    with acme.tenant_transaction(world.ACME) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO executions (system_id, system_name, user_request, request_embedding, request_embedding_model, "
            "governance_check, status, started_at, cost_usd, user_satisfaction) "
            "VALUES (%s, 'payroll-bot', %s, %s, %s, '{}', 'partial', now() - interval '1 day' + %s, 5.00, 1)",
            # Distinct start times: the learner reads in (started_at, id) order, and ties would leave
            # the order, and with it the clusters, to the random ids.
            [
                (world.SYSTEMS["payroll-bot"], text, vector, MODEL, timedelta(seconds=i))
                for i, (text, vector) in enumerate(zip(texts, HashingEmbedder().encode(texts), strict=True))
            ],
        )
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    with acme.tenant_transaction(world.ACME) as conn:
        completed = {
            status: set(flags)
            for status, flags in conn.execute(
                "SELECT status, array_agg(DISTINCT completed_at IS NOT NULL) FROM executions GROUP BY 1"
            )
        }
        catalog = load_systems(conn)
        flags: dict[str, set[bool]] = {}
        statuses = dict(conn.execute("SELECT id, status FROM executions").fetchall())
        for batch in execution_batches(conn, sql.SQL("TRUE"), (), catalog.column()):
            for execution_id, flag in zip(batch.ids, batch.counted.tolist(), strict=True):
                flags.setdefault(statuses[execution_id], set()).add(flag)
        payroll = conn.execute(
            "SELECT based_on_executions, success_rate, avg_cost_usd FROM routing_rules WHERE recommended_system_id = %s",
            (world.SYSTEMS["payroll-bot"],),
        ).fetchall()
    assert completed == {"success": {True}, "failed": {True}, "governance_blocked": {True}, "partial": {False}}
    assert flags == {"success": {True}, "failed": {True}, "governance_blocked": {False}, "partial": {False}}
    # 125 members, of which 87 are evidence (57 successes: 0.6552), every one of them at 0.01 USD; the
    # other 38 are blocked or unfinished requests of the kind, members but not evidence.
    assert payroll == [(125, Decimal("0.6552"), Decimal("0.010000"))]
    rollup_shared_systems(acme)
    with acme.maintenance_transaction(world.MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        figures = conn.execute(
            "SELECT total_executions, successful_executions, avg_cost_usd, avg_user_satisfaction FROM systems "
            "WHERE name = 'payroll-bot'"
        ).fetchone()
    assert figures == (60, 54, Decimal("0.010000"), Decimal("4.700"))


def test_learning_in_memory_as_of_a_moment_sees_nothing_after_it(acme) -> None:
    """Dreams learn the rules as they were: executions that started later shape nothing, and nothing
    is written."""
    from datetime import UTC, datetime, timedelta

    from clay_pipelines.routing.rule_store import learn_in_memory

    world.add_executions(acme, world.ACME, world.email_rows(80), days_ago=1)  # after the moment
    moment = datetime.now(UTC) - timedelta(days=3)
    with acme.tenant_transaction(world.ACME) as conn:
        before = learn_in_memory(conn, "hashing@1", "hashing", started_before=moment)
        everything = learn_in_memory(conn, "hashing@1", "hashing", started_before=datetime.now(UTC))
        rules_stored = conn.execute("SELECT count(*) FROM routing_rules").fetchone()[0]
    names = before.catalog.names
    assert before.executions == 170 and everything.executions == 250
    assert sorted(names[r.recommended] for r in before.rules) == ["payroll-bot", "writer"]
    assert [r.executions for r in sorted(before.rules, key=lambda r: names[r.recommended])] == [90, 80]
    assert all(0.0 < s <= 1.0 for s in before.member_similarity)
    assert rules_stored == 0
