"""Aging HOT -> WARM -> COLD, accesses, and the router's figures across aging (migration 018)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.lifecycle.access import flush_accesses, record_access
from clay_pipelines.lifecycle.aging import age_tenant
from clay_pipelines.routing.embed_store import write_request_embeddings
from clay_pipelines.routing.rule_store import coverage, learn_rules_full
from tests import lifecycle_world as lw
from tests import routing_world as world

AS_OF = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def db(database):
    lw.build(database)
    return database


def _content(db, tenant, ids):
    """Each row's logical content (hot or cold) and vector, as the learner and a person would read it."""
    with db.tenant_transaction(tenant) as conn:
        return conn.execute(
            "SELECT e.id, e.user_request, coalesce(e.input_data, c.input_data), coalesce(e.output_data, c.output_data), "
            "coalesce(e.user_feedback, c.user_feedback), coalesce(e.suggested_improvements, c.suggested_improvements), "
            "coalesce(e.request_embedding, e.request_embedding_compact::vector)::text "
            "FROM executions e LEFT JOIN execution_cold_content c ON c.execution_id = e.id "
            "WHERE e.id = ANY(%s) ORDER BY e.id",
            (ids,),
        ).fetchall()


def test_boundary_days_29_30_31_and_89_90_91(db) -> None:
    days = [29, 30, 31, 89, 90, 91]
    ids = [lw.add(db, lw.ACME, accessed=AS_OF - timedelta(days=d))[0] for d in days]
    just_before = lw.add(db, lw.ACME, accessed=AS_OF - timedelta(days=30) + timedelta(seconds=1))[0]
    report = age_tenant(db, lw.ACME, AS_OF)
    assert lw.states(db, lw.ACME, ids) == ["HOT", "WARM", "WARM", "WARM", "COLD", "COLD"]
    assert lw.states(db, lw.ACME, [just_before]) == ["HOT"]
    # The 90- and 91-day rows went HOT -> WARM -> COLD in the one run.
    assert (report.to_warm, report.to_cold) == (5, 2)
    assert age_tenant(db, lw.ACME, AS_OF).to_warm == 0  # idempotent


def test_each_state_changes_where_the_data_is_kept(db) -> None:
    hot, warm, cold = (lw.add(db, lw.ACME, accessed=AS_OF - timedelta(days=d))[0] for d in (1, 40, 100))
    before = _content(db, lw.ACME, [hot, warm, cold])
    age_tenant(db, lw.ACME, AS_OF)
    with db.tenant_transaction(lw.ACME) as conn:
        rows = conn.execute(
            "SELECT id, request_embedding IS NOT NULL, request_embedding_compact IS NOT NULL, input_data IS NOT NULL, "
            "user_feedback IS NOT NULL, (SELECT count(*) FROM execution_cold_content c WHERE c.execution_id = e.id) "
            "FROM executions e WHERE id = ANY(%s)",
            ([hot, warm, cold],),
        ).fetchall()
    assert {r[0]: r[1:] for r in rows} == {
        hot: (True, False, True, True, 0),
        warm: (False, True, True, True, 0),
        cold: (False, True, False, False, 1),
    }
    after = _content(db, lw.ACME, [hot, warm, cold])
    # Texts and JSON are exactly as written; the vectors are the same to half precision.
    assert [r[:6] for r in after] == [r[:6] for r in before]
    for b, a in zip(before, after, strict=True):
        original = [float(x) for x in b[6].strip("[]").split(",")]
        kept = [float(x) for x in a[6].strip("[]").split(",")]
        assert max(abs(x - y) for x, y in zip(original, kept, strict=True)) < 1e-3


def test_a_vector_written_to_a_warm_or_cold_row_is_stored_compact(db) -> None:
    """A re-embed (a new embedder) writes each row's vector where its state keeps it: no full-width
    vector waits in a WARM or COLD row for the next aging run."""
    hot, warm, cold = (lw.add(db, lw.ACME, accessed=AS_OF - timedelta(days=d))[0] for d in (1, 40, 100))
    age_tenant(db, lw.ACME, AS_OF)
    vectors = lw.EMBEDDER.encode(["re-embedded one", "re-embedded two", "re-embedded three"])
    with db.tenant_transaction(lw.ACME) as conn:
        write_request_embeddings(conn, [hot, warm, cold], vectors, "hashing@2")
        rows = conn.execute(
            "SELECT id, request_embedding IS NOT NULL, request_embedding_compact IS NOT NULL, request_embedding_model, "
            "coalesce(request_embedding::halfvec, request_embedding_compact) = %s::vector::halfvec "
            "FROM executions WHERE id = ANY(%s)",
            (vectors[1], [hot, warm, cold]),
        ).fetchall()
    assert {r[0]: r[1:] for r in rows} == {
        hot: (True, False, "hashing@2", False),
        warm: (False, True, "hashing@2", True),
        cold: (False, True, "hashing@2", False),
    }
    assert age_tenant(db, lw.ACME, AS_OF).recompacted == 0


def test_an_access_makes_warm_and_cold_rows_hot_again_with_their_content(db) -> None:
    warm, cold = (lw.add(db, lw.ACME, accessed=AS_OF - timedelta(days=d))[0] for d in (40, 100))
    before = _content(db, lw.ACME, [warm, cold])
    age_tenant(db, lw.ACME, AS_OF)
    with db.tenant_transaction(lw.ACME) as conn:
        for _ in range(3):
            record_access(conn, cold)
        record_access(conn, warm, "export")
    report = flush_accesses(db, lw.ACME)
    assert (report.accesses, report.executions, report.rehydrated) == (4, 2, 2)
    assert lw.states(db, lw.ACME, [warm, cold]) == ["HOT", "HOT"]
    with db.tenant_transaction(lw.ACME) as conn:
        counts = dict(conn.execute("SELECT id, access_count FROM executions WHERE id = ANY(%s)", ([warm, cold],)))
        assert conn.execute("SELECT count(*) FROM execution_cold_content").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM execution_access_buffer").fetchone() == (0,)
        recent = conn.execute(
            "SELECT bool_and(last_accessed_at > %s) FROM executions WHERE id = ANY(%s)",
            (AS_OF - timedelta(days=2), [warm, cold]),
        ).fetchone()[0]
    assert counts == {warm: 3, cold: 5}
    assert recent is True
    assert [r[:6] for r in _content(db, lw.ACME, [warm, cold])] == [r[:6] for r in before]
    assert flush_accesses(db, lw.ACME).accesses == 0  # the buffer was drained once


def test_an_access_to_another_tenants_execution_is_refused_like_a_missing_one(db) -> None:
    theirs = lw.add(db, lw.OTHER, accessed=AS_OF)[0]
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.tenant_transaction(lw.ACME) as conn:
        record_access(conn, theirs)


def test_a_tenant_may_keep_data_longer_never_shorter(db) -> None:
    ids = lw.add(db, lw.ACME, accessed=AS_OF - timedelta(days=40))
    with db.tenant_transaction(lw.ACME) as conn:
        conn.execute(
            "INSERT INTO lifecycle_policies (warm_after_days, cold_after_days, updated_by) VALUES (60, 120, 'dpo@acme.test')"
        )
    age_tenant(db, lw.ACME, AS_OF)
    assert lw.states(db, lw.ACME, ids) == ["HOT"]
    with pytest.raises(psycopg.errors.CheckViolation), db.tenant_transaction(lw.ACME) as conn:
        conn.execute("UPDATE lifecycle_policies SET retention_years = 6")
    with pytest.raises(psycopg.errors.CheckViolation), db.tenant_transaction(lw.ACME) as conn:
        conn.execute("UPDATE lifecycle_policies SET warm_after_days = 10")


def _rules(db, tenant):
    with db.tenant_transaction(tenant) as conn:
        return sorted(
            conn.execute(
                "SELECT request_pattern, recommended_system_id, based_on_executions, round(success_rate, 6) "
                "FROM routing_rules WHERE is_active"
            ).fetchall()
        )


def test_the_router_learns_the_same_rules_from_warm_and_cold_vectors(db) -> None:
    for tenant in (world.ACME, world.OTHER):
        world.add_executions(db, tenant, world.payroll_rows() + world.email_rows())
    before = {}
    for tenant in (world.ACME, world.OTHER):
        learn_rules_full(db, tenant, lw.MODEL, "hashing")
        before[tenant] = (_rules(db, tenant), coverage(db, tenant, lw.MODEL))
    assert all(rules for rules, _ in before.values())
    # Aging as of 40 days ahead makes every row WARM; 100 days ahead, COLD.
    for days, state in ((40, "WARM"), (100, "COLD")):
        for tenant in (world.ACME, world.OTHER):
            age_tenant(db, tenant, datetime.now(UTC) + timedelta(days=days))
            with db.tenant_transaction(tenant) as conn:
                assert conn.execute("SELECT array_agg(DISTINCT lifecycle_state) FROM executions").fetchone()[0] == [
                    state
                ]
            learn_rules_full(db, tenant, lw.MODEL, "hashing")
            assert (_rules(db, tenant), coverage(db, tenant, lw.MODEL)) == before[tenant]


def test_every_row_ever_written_is_counted_by_the_database(db) -> None:
    lw.add(db, lw.ACME, accessed=AS_OF, n=3)
    lw.add(db, lw.OTHER, accessed=AS_OF, n=2)
    with db.tenant_transaction(lw.ACME) as conn:
        assert conn.execute("SELECT tenant_id, written, deleted FROM execution_counts").fetchall() == [(lw.ACME, 3, 0)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE execution_counts SET written = 0")
    with db.tenant_transaction(lw.ACME) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM executions")
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("DELETE FROM executions WHERE tenant_id = %s", (lw.OTHER,))
        assert conn.execute(
            "SELECT written, deleted FROM execution_counts WHERE tenant_id = %s", (lw.OTHER,)
        ).fetchone() == (2, 2)
