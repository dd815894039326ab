"""Dream nights against the database: point in time, idempotent rows, evaluation-only backfills,
promotion through an amendment (or a pending approval), and the watch that rolls a promotion back."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from psycopg.types.json import Jsonb

from clay_pipelines.routing.embeddings import HashingEmbedder, tag
from clay_pipelines.tars import amendments as am
from clay_pipelines.tars import cycle, watch
from clay_pipelines.tars.proposals import KINDS
from tests import routing_world as world

TUNABLES = {
    "routing_confidence_threshold": {"type": "number", "min": 0.05, "max": 0.95, "step": 0.05},
    "capability_match_threshold": {"type": "number", "min": 0.1, "max": 0.8, "step": 0.05},
}
THRESHOLD = "parameters.routing_confidence_threshold"


@pytest.fixture
def acme(fresh_db):
    with fresh_db.database() as db:
        world.build(db)
        # The router was created declaring its tunables (before any night dreamed here).
        with fresh_db.admin() as conn:
            conn.execute("ALTER TABLE systems DISABLE TRIGGER base_constitution_is_amended")
            conn.execute(
                "UPDATE systems SET constitution = constitution || %s WHERE name = 'clay-consigliere'",
                (Jsonb({"tunables": TUNABLES}),),
            )
            conn.execute("ALTER TABLE systems ENABLE TRIGGER base_constitution_is_amended")
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows(), days_ago=30)
        world.add_executions(db, world.ACME, world.payroll_rows(40, 20) + world.email_rows(40), days_ago=12)
        world.add_executions(db, world.ACME, world.payroll_rows(30, 10) + world.email_rows(30), days_ago=3)
        yield db


def _dreams(db, night) -> list[tuple]:
    with db.tenant_transaction(world.ACME) as conn:
        return conn.execute(
            "SELECT mutation_hash, status, evaluation_only, test_input FROM dreams WHERE cycle_id = %s ORDER BY 1",
            (cycle.cycle_id_for(night),),
        ).fetchall()


def test_a_backfilled_night_sees_only_its_past_and_never_promotes(acme) -> None:
    night = (datetime.now(UTC) - timedelta(days=10)).date()
    report = cycle.dream_night(acme, world.ACME, night, HashingEmbedder(), latest=False)
    (skill,) = report.skills
    assert skill.system_name == "clay-consigliere" and skill.dreams_written == 10
    rows = _dreams(acme, night)
    assert {r[1] for r in rows} <= {"rejected", "inconclusive", "not_selected", "promotable", "skipped"}
    assert all(r[2] for r in rows)  # evaluation only
    test_input = next(r[3] for r in rows if r[3])
    moment = cycle.moment_of(night)
    with acme.tenant_transaction(world.ACME) as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM executions WHERE started_at >= %s AND started_at < %s AND completed_at < %s "
                "ORDER BY started_at, id",
                (moment - timedelta(days=7), moment, moment),
            )
        ]
    assert test_input["window_requests"] == len(ids) == 100  # the batch of 12 days ago, nothing later
    assert test_input["execution_ids_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
    assert test_input["history_requests"] == 170
    with acme.tenant_transaction(world.ACME) as conn:
        kinds = conn.execute(
            "SELECT mutations->>'proposed_as', count(*) FROM dreams WHERE cycle_id = %s AND status <> 'skipped' "
            "GROUP BY 1",
            (cycle.cycle_id_for(night),),
        ).fetchall()
    # Ten proposals for two router thresholds: four one-step moves, four far points, two joint moves.
    assert dict(kinds) == {KINDS["one_step"]: 4, KINDS["across"]: 4, KINDS["joint"]: 2}

    # Run again, and after more history arrives: the night is what it was, nothing new is written.
    world.add_executions(acme, world.ACME, world.email_rows(20), days_ago=1)
    again = cycle.dream_night(acme, world.ACME, night, HashingEmbedder(), latest=False)
    assert again.skills[0].dreams_written == 0
    assert _dreams(acme, night) == rows


def _promotable_dream(db, mutation: dict) -> str:
    """A dream the rule promoted (the statistics are tests/test_dream_decision.py's)."""
    night = datetime.now(UTC).date()
    with db.tenant_transaction(world.ACME) as conn:
        return conn.execute(
            "INSERT INTO dreams (system_id, system_name, cycle_id, mutations, outcome, mutation_hash, status, night) "
            "VALUES (%s, 'clay-consigliere', %s, %s, %s, 'h1', 'promotable', %s) RETURNING id",
            (
                world.SYSTEMS["clay-consigliere"],
                cycle.cycle_id_for(night),
                Jsonb({"mutation": mutation}),
                Jsonb({"decision": "promote", "entry": {"confirmation": {"primary": {"gain": 0.06}}}}),
                night,
            ),
        ).fetchone()[0]


def _promote(db) -> tuple[str, dict | None]:
    with db.tenant_transaction(world.ACME) as conn:
        skill = am.skill(conn, "clay-consigliere")
        return cycle.promote(conn, skill, cycle.cycle_id_for(datetime.now(UTC).date()), watch_days=7)


def test_a_promotion_is_a_dream_promotion_amendment_and_opens_a_watch(acme) -> None:
    dream_id = _promotable_dream(acme, {THRESHOLD: 0.65})
    assert _promote(acme) == ("applied", {THRESHOLD: 0.65})
    assert _promote(acme) == ("none", None)  # once
    with acme.tenant_transaction(world.ACME) as conn:
        status, amendment_id, by = conn.execute(
            "SELECT status, amendment_id, approved_by FROM dreams WHERE id = %s", (dream_id,)
        ).fetchone()
        amendment = am.get_amendment(conn, amendment_id)
        keys = conn.execute("SELECT keys FROM amendment_watches WHERE amendment_id = %s", (amendment_id,)).fetchone()
        assert am.effective(conn, "clay-consigliere").constitution["parameters"]["routing_confidence_threshold"] == 0.65
    assert (status, by) == ("promoted", cycle.ACTOR)
    assert (amendment.amendment_type, amendment.approved_by) == ("dream_promotion", cycle.ACTOR)
    assert (
        amendment.evidence["dream_id"] == str(dream_id)
        and amendment.evidence["decision_record"]["decision"] == "promote"
    )
    assert keys == (["/parameters/routing_confidence_threshold"],)


def test_where_approval_is_required_a_promotion_waits_for_a_person(acme) -> None:
    with acme.tenant_transaction(world.ACME) as conn:
        am.amend(
            conn,
            am.Change(
                system="clay-consigliere",
                changes={"requires_approval": ["delete", "amend_constitution"]},
                by="ops@acme.test",
                reason="ARM mode",
            ),
        )
    dream_id = _promotable_dream(acme, {THRESHOLD: 0.65})
    assert _promote(acme)[0] == "pending"
    with acme.tenant_transaction(world.ACME) as conn:
        assert conn.execute("SELECT status FROM dreams WHERE id = %s", (dream_id,)).fetchone() == ("pending_approval",)
        assert cycle.approve_dream(conn, dream_id, "boss@acme.test", approve=True, reason="fine") == "promoted"
        row = conn.execute("SELECT status, approved_by FROM dreams WHERE id = %s", (dream_id,)).fetchone()
        with pytest.raises(am.AmendmentError, match="is promoted, not waiting"):
            cycle.approve_dream(conn, dream_id, "boss@acme.test", approve=True, reason=None)
    assert row == ("promoted", "boss@acme.test")


def test_a_guardrail_breach_after_a_promotion_rolls_it_back_once(acme) -> None:
    _promotable_dream(acme, {THRESHOLD: 0.65})
    with acme.tenant_transaction(world.ACME) as conn:
        before = am.effective(conn, "clay-consigliere").hash
    _promote(acme)
    # After the promotion: every request fails, ten times dearer.
    world.add_executions(
        acme, world.ACME, [(t, "payroll-bot", "failed") for t in world.payroll_texts(60)], days_ago=0, cost="0.1"
    )
    with acme.tenant_transaction(world.ACME) as conn:
        conn.execute("UPDATE amendment_watches SET opened_at = now() - interval '1 hour'")
    later = datetime.now(UTC) + timedelta(hours=2)
    with acme.tenant_transaction(world.ACME) as conn:
        report = watch.check_watches(conn, later)
    assert len(report.rolled_back) == 1 and report.rolled_back[0]["outcome"] == "rolled back"
    assert set(report.rolled_back[0]["breaches"]) >= {"cost_per_request", "success_rate"}
    with acme.tenant_transaction(world.ACME) as conn:
        assert am.effective(conn, "clay-consigliere").hash == before
        undo = am.amendments(conn, world.SYSTEMS["clay-consigliere"], world.ACME, platform=False)[-1]
        assert undo.approved_by == watch.WATCHER and undo.evidence["breaches"]
        again = watch.check_watches(conn, later)
    assert (again.checked, again.rolled_back) == (0, [])  # one alert, not one per check


def test_the_dream_assets_report_the_night_and_check_the_promotions(acme, fresh_db) -> None:
    import dagster as dg

    from clay_pipelines.resources import PostgresResource
    from clay_pipelines.routing.defs import EmbedderResource
    from clay_pipelines.tars.defs import dream_cycle, dream_promotion_rate, promotions

    resources = {
        "postgres": PostgresResource(app_dsn=fresh_db.app_url, maintenance_dsn=fresh_db.maintenance_url),
        "embedder": EmbedderResource(name="hashing"),
    }
    night = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    with dg.instance_for_test() as instance:
        first = dg.materialize([dream_cycle], instance=instance, resources=resources, partition_key=night)
        metadata = {
            k: v.value for k, v in first.asset_materializations_for_node("tars__dream_cycle")[0].metadata.items()
        }
        _promotable_dream(acme, {THRESHOLD: 0.65})
        _promote(acme)
        checked = dg.materialize([promotions, dream_promotion_rate], instance=instance, resources=resources)
    assert metadata["nights"] == 1 and metadata["promoted"] == 0  # a past night never promotes
    row = metadata["dreams"].splitlines()[2].split(" | ")
    assert row[0] == "| Acme" and row[1] == night and row[2] == "clay-consigliere" and row[6] == "evaluation only"
    evaluations = {e.check_name: e for e in checked.get_asset_check_evaluations()}
    assert evaluations["one_amendment_per_promoted_dream"].passed
    assert evaluations["mutations_within_bounds"].passed
    # The hand-made promotion above has no decision record behind it: the check says so.
    decision_check = evaluations["promotions_follow_their_decision_record"]
    assert not decision_check.passed and "no decision record" in decision_check.metadata["problems"].value


def test_a_night_reads_the_same_vectors_whatever_state_aging_left_the_executions_in(acme, fresh_db) -> None:
    # The learner reads every vector at half precision so that aging (WARM keeps only a halfvec)
    # changes no rule; the night re-learns the rules, so it must read them the same way.
    night = datetime.now(UTC).date()
    moment = cycle.moment_of(night)
    since = moment - timedelta(days=40)
    micro = np.eye(1, 1536, dtype=np.float32)

    def logged() -> tuple[list[str], np.ndarray]:
        with acme.tenant_transaction(world.ACME) as conn:
            read = cycle._logged(conn, tag(HashingEmbedder()), since, moment, moment, micro)
        return read.ids, read.vectors

    hot_ids, hot_vectors = logged()
    with fresh_db.admin() as conn:
        aged = conn.execute(
            "UPDATE executions SET lifecycle_state = 'WARM', request_embedding_compact = request_embedding::halfvec,"
            " request_embedding = NULL WHERE request_embedding IS NOT NULL"
        ).rowcount
    warm_ids, warm_vectors = logged()
    assert aged == len(hot_ids) == 340
    assert warm_ids == hot_ids
    assert np.array_equal(warm_vectors, hot_vectors)


def test_the_sample_world_night_promotes_a_router_setting_and_rejects_several(
    world_db,
) -> None:
    """The night after the sample world's last day: dreams for every tenant, at least one promotion (or
    one held for a person) and several rejections."""
    from datetime import date

    from clay_pipelines.routing.embed_store import embed_executions, embed_shared_systems, embed_systems

    embedder, night = HashingEmbedder(), date(2026, 1, 16)  # the world ends on 2026-01-15
    statuses: dict[str, dict[str, int]] = {}
    with world_db.database() as db:
        embed_shared_systems(db, embedder)
        for domain in ("oms.com", "northwind.io"):
            tenant = db.resolve_tenant(domain)
            embed_systems(db, tenant, embedder)
            embed_executions(db, tenant, embedder, datetime(2025, 1, 1, tzinfo=UTC), cycle.moment_of(night))
            cycle.dream_night(db, tenant, night, embedder, latest=True)
            with db.tenant_transaction(tenant) as conn:
                statuses[domain] = dict(conn.execute("SELECT status, count(*) FROM dreams GROUP BY 1").fetchall())
    assert sum(s.get("promoted", 0) + s.get("pending_approval", 0) for s in statuses.values()) >= 1, statuses
    assert sum(s.get("rejected", 0) for s in statuses.values()) >= 3, statuses
    assert all(s.get("promoted", 0) + s.get("pending_approval", 0) <= 1 for s in statuses.values())  # one a night
