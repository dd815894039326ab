"""Legal holds in every scope, enforced by the database; erasure from every state; conservation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pyarrow.parquet as pq
import pytest

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle import checks, holds
from clay_pipelines.lifecycle.aging import age_tenant
from clay_pipelines.lifecycle.erasure import ErasureError, erase
from tests import lifecycle_world as lw

NOW = datetime.now(UTC).replace(microsecond=0)
MONTH = date(NOW.year - 2, NOW.month, 1)
STARTED = datetime(MONTH.year, MONTH.month, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(database):
    lw.build(database)
    return database


@pytest.fixture
def store(tmp_path):
    return ar.ArchiveStore(str(tmp_path / "archive"))


def _world(db):
    """Four old executions: two by writer, one by payroll-bot, one by generalist started a week later."""
    old = NOW - timedelta(days=400)
    ids = lw.add(db, lw.ACME, accessed=old, started=STARTED, n=2)
    ids += lw.add(db, lw.ACME, accessed=old, started=STARTED, system="payroll-bot")
    ids += lw.add(db, lw.ACME, accessed=old, started=STARTED + timedelta(days=7), system="generalist")
    age_tenant(db, lw.ACME)
    return ids


SCOPES = {
    "tenant": (dict(scope="tenant"), [0, 1, 2, 3]),
    "system": (dict(scope="system", system="payroll-bot"), [2]),
    "time_range": (
        dict(scope="time_range", range_start=STARTED + timedelta(days=6), range_end=STARTED + timedelta(days=8)),
        [3],
    ),
}


@pytest.mark.parametrize("scope", [*SCOPES, "executions"])
def test_nothing_under_a_hold_is_archived_away_or_pruned(db, store, scope) -> None:
    ids = _world(db)
    kwargs, held_index = SCOPES.get(scope, (dict(scope="executions", execution_ids=None), [1]))
    if scope == "executions":
        kwargs = dict(scope="executions", execution_ids=[ids[1]])
    with db.tenant_transaction(lw.ACME) as conn:
        hold_id = holds.place(conn, reason="litigation 2026-17", placed_by="counsel@acme.test", **kwargs)
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    expected = ["COLD" if i in held_index else "ARCHIVED" for i in range(4)]
    assert lw.states(db, lw.ACME, ids) == expected
    assert (report.held, report.archived) == (len(held_index), 4 - len(held_index))
    # The database refuses it whoever asks, the maintenance role included.
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="legal hold"),
        db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn,
    ):
        conn.execute("UPDATE executions SET lifecycle_state = 'ARCHIVED' WHERE id = %s", (ids[held_index[0]],))
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="legal hold"),
        db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn,
    ):
        conn.execute("DELETE FROM executions WHERE id = %s", (ids[held_index[0]],))
    assert checks.held_but_gone(db, lw.ACME) == []
    with db.tenant_transaction(lw.ACME) as conn:
        holds.release(conn, hold_id, "counsel@acme.test")
        with pytest.raises(holds.HoldError, match="already released"):
            holds.release(conn, hold_id, "counsel@acme.test")
    assert ar.archive_month(db, lw.ACME, MONTH, store, enabled=True).archived == len(held_index)


def test_an_archive_holding_a_held_row_is_not_pruned(db, store) -> None:
    ids = _world(db)
    ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    with db.tenant_transaction(lw.ACME) as conn:
        holds.place(conn, scope="executions", execution_ids=[ids[0]], reason="audit", placed_by="dpo@acme.test")
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("UPDATE lifecycle_archives SET archived_at = now() - interval '8 years'")
    report = ar.prune(db, lw.ACME, store, enabled=True)
    assert (report.held_archives, report.rows) == (1, 0)
    assert lw.states(db, lw.ACME, ids) == ["ARCHIVED"] * 4
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="legal hold"),
        db.tenant_transaction(lw.ACME) as conn,
    ):
        conn.execute("UPDATE executions SET lifecycle_state = 'PRUNED' WHERE id = %s", (ids[0],))


def test_a_hold_cannot_be_rewritten_deleted_or_point_elsewhere(db) -> None:
    ids = _world(db)
    theirs = lw.add(db, lw.OTHER, accessed=NOW)
    with db.tenant_transaction(lw.ACME) as conn:
        hold_id = holds.place(conn, scope="tenant", reason="regulator", placed_by="dpo@acme.test")
        with pytest.raises(holds.HoldError, match="no execution"):
            holds.place(conn, scope="executions", execution_ids=theirs, reason="x", placed_by="y")
        with pytest.raises(holds.HoldError, match="no system"):
            holds.place(conn, scope="system", system="nope", reason="x", placed_by="y")
    with pytest.raises(psycopg.errors.CheckViolation), db.tenant_transaction(lw.ACME) as conn:
        conn.execute("UPDATE legal_holds SET reason = 'nothing' WHERE id = %s", (hold_id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant_transaction(lw.ACME) as conn:
        conn.execute("DELETE FROM legal_holds")
    with db.tenant_transaction(lw.OTHER) as conn:
        assert holds.holds(conn) == []
    with db.tenant_transaction(lw.ACME) as conn:
        assert [h.scope for h in holds.holds(conn, in_force_only=True)] == ["tenant"]
    assert len(ids) == 4


def test_erasure_reaches_every_state_and_keeps_counts_and_receipts(db, store) -> None:
    ids = _world(db)
    ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)  # all four ARCHIVED
    hot = lw.add(db, lw.ACME, accessed=NOW)
    cold = lw.add(db, lw.ACME, accessed=NOW - timedelta(days=100))
    age_tenant(db, lw.ACME)
    with db.tenant_transaction(lw.ACME) as conn:
        before = conn.execute("SELECT sum(cost_usd), count(*), count(receipt_signature) FROM executions").fetchone()
    by_state = erase(db, lw.ACME, [ids[0], hot[0], cold[0]], store, by="dpo@acme.test", reason="GDPR art. 17")
    assert by_state == {"ARCHIVED": 1, "HOT": 1, "COLD": 1}
    with db.tenant_transaction(lw.ACME) as conn:
        rows = conn.execute(
            "SELECT DISTINCT user_request, input_data, user_feedback, request_embedding_compact, "
            "content_erased_at IS NOT NULL FROM executions WHERE id = ANY(%s)",
            ([ids[0], hot[0], cold[0]],),
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM execution_cold_content").fetchone() == (0,)
        after = conn.execute("SELECT sum(cost_usd), count(*), count(receipt_signature) FROM executions").fetchone()
        uri = conn.execute("SELECT uri FROM lifecycle_archives WHERE status = 'archived'").fetchone()[0]
    assert rows == [("[erased]", None, None, None, True)]
    assert after == before
    archived = {r["id"]: r for r in pq.read_table(uri).to_pylist()}
    assert archived[str(ids[0])]["user_request"] == "[erased]" and archived[str(ids[0])]["input_data"] is None
    assert archived[str(ids[1])]["input_data"] is not None  # the others' content is still archived
    assert ar.verify_archives(db, lw.ACME, store) == []
    assert checks.conservation(db, lw.ACME) == []
    ar.restore(db, lw.ACME, store, execution_ids=[ids[0]])
    with db.tenant_transaction(lw.ACME) as conn:
        assert conn.execute("SELECT user_request FROM executions WHERE id = %s", (ids[0],)).fetchone() == ("[erased]",)
        conn.execute("INSERT INTO legal_holds (scope, reason, placed_by) VALUES ('tenant', 'r', 'p')")
    with pytest.raises(ErasureError, match="legal hold"):
        erase(db, lw.ACME, [ids[1]], store, by="dpo@acme.test", reason="again")


def test_conservation_holds_across_every_state_and_sees_a_tombstone_without_its_archive(db, store) -> None:
    ids = _world(db)
    lw.add(db, lw.ACME, accessed=NOW, n=2)
    ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("UPDATE lifecycle_archives SET archived_at = now() - interval '8 years'")
    ar.prune(db, lw.ACME, store, enabled=True)
    assert set(lw.states(db, lw.ACME, ids)) == {"PRUNED"}
    assert checks.conservation(db, lw.ACME) == []
    assert checks.pruned_inside_retention(db, lw.ACME) == []
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        # A tombstone whose archive says something else is found.
        conn.execute("UPDATE lifecycle_archives SET status = 'archived' WHERE status = 'pruned'")
    assert len(checks.conservation(db, lw.ACME)) == 1
