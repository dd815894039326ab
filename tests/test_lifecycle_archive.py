"""ARCHIVED and PRUNED: Parquet archives that verify, tombstones, restore, resumability, retention."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import psycopg
import pyarrow.parquet as pq
import pytest

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle.aging import age_tenant
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


def _old(db, n=3, tenant=lw.ACME):
    """n executions of MONTH last accessed 400 days ago, aged to COLD."""
    ids = lw.add(db, tenant, accessed=NOW - timedelta(days=400), started=STARTED, n=n)
    age_tenant(db, tenant)
    return ids


def _logical(db, ids):
    with db.tenant_transaction(lw.ACME) as conn:
        return ar.canonical_rows(ar.read_rows(conn, ids))


def test_a_dry_run_changes_nothing_and_is_audited(db, store) -> None:
    ids = _old(db)
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=False)
    assert (report.dry_run, report.eligible, report.archived) == (True, 3, 0)
    assert lw.states(db, lw.ACME, ids) == ["COLD"] * 3
    with db.tenant_transaction(lw.ACME) as conn:
        assert conn.execute(
            "SELECT action, rows, dry_run FROM lifecycle_audit WHERE action = 'archive'"
        ).fetchall() == [("archive", 3, True)]


def test_archive_then_restore_is_a_byte_identical_round_trip(db, store) -> None:
    ids = _old(db)
    recent = lw.add(db, lw.ACME, accessed=NOW - timedelta(days=10), started=STARTED)
    before = _logical(db, ids)
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    assert (report.archived, len(report.files)) == (3, 1)
    assert lw.states(db, lw.ACME, ids + recent) == ["ARCHIVED"] * 3 + ["HOT"]
    with db.tenant_transaction(lw.ACME) as conn:
        tomb = conn.execute(
            "SELECT DISTINCT user_request, input_data, output_data, user_feedback, suggested_improvements, "
            "request_embedding, request_embedding_compact, request_embedding_model, status, cost_usd, "
            "user_satisfaction, receipt_signature IS NOT NULL, duration_ms FROM executions WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM execution_cold_content").fetchone() == (0,)
        archive = conn.execute("SELECT id, status, row_count FROM lifecycle_archives").fetchone()
    # Content gone; what rollups, budgets and receipts read is kept.
    assert [t[:8] for t in tomb] == [("[archived]", None, None, None, None, None, None, None)]
    assert tomb[0][8:] == ("success", lw.Decimal("0.0125"), 4, True, 850)
    assert archive[1:] == ("archived", 3)
    table = pq.read_table(report.files[0])
    assert table.num_rows == 3 and "input_data" in table.schema.names
    assert ar.verify_archives(db, lw.ACME, store) == []
    assert ar.restore(db, lw.ACME, store, execution_ids=ids[:2]) == 2
    assert ar.restore(db, lw.ACME, store, archive_id=archive[0]) == 1
    assert lw.states(db, lw.ACME, ids) == ["WARM"] * 3
    after = _logical(db, ids)
    assert after == before


def test_a_run_killed_after_writing_is_redone_without_loss_or_duplicates(db, store, tmp_path) -> None:
    ids = _old(db, n=4)
    before = _logical(db, ids)

    def die(_archive_id):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ar.archive_month(db, lw.ACME, MONTH, store, enabled=True, after_write=die)
    assert lw.states(db, lw.ACME, ids) == ["COLD"] * 4
    # A half-written file of another killed run: garbage in place of Parquet.
    with pytest.raises(KeyboardInterrupt):
        ar.archive_month(db, lw.ACME, MONTH, store, enabled=True, after_write=die)
    with db.tenant_transaction(lw.ACME) as conn:
        half = conn.execute(
            "SELECT uri FROM lifecycle_archives WHERE status = 'writing' ORDER BY created_at"
        ).fetchall()
    assert len(half) == 1  # the second run deleted the first run's file before writing its own
    with open(half[0][0], "wb") as f:
        f.write(b"PAR1 truncated")
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    assert (report.redone, report.archived) == (1, 4)
    with db.tenant_transaction(lw.ACME) as conn:
        statuses = conn.execute("SELECT status, count(*) FROM lifecycle_archives GROUP BY 1 ORDER BY 1").fetchall()
    assert statuses == [("archived", 1), ("discarded", 2)]
    files = sorted(p.name for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert len(files) == 2  # one Parquet file and its manifest
    assert ar.archive_month(db, lw.ACME, MONTH, store, enabled=True).archived == 0  # idempotent
    ar.restore(db, lw.ACME, store, execution_ids=ids)
    assert _logical(db, ids) == before


def test_a_tampered_archive_fails_verification_and_restore(db, store) -> None:
    ids = _old(db)
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    with open(report.files[0], "r+b") as f:
        f.seek(20)
        f.write(b"\x00\x01\x02")
    assert len(ar.verify_archives(db, lw.ACME, store)) == 1
    with pytest.raises(ar.ArchiveError, match="SHA-256"):
        ar.restore(db, lw.ACME, store, execution_ids=ids)
    assert lw.states(db, lw.ACME, ids) == ["ARCHIVED"] * 3


def _backdate(db, years: int, days: int) -> None:
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute(
            "UPDATE lifecycle_archives SET archived_at = "
            "((now() AT TIME ZONE 'UTC') - make_interval(years => %s, days => %s)) AT TIME ZONE 'UTC' "
            "WHERE status = 'archived'",
            (years, days),
        )


@pytest.mark.parametrize(("days_past", "pruned"), [(-1, False), (1, True)])
def test_prune_only_after_seven_years_give_or_take_a_day(db, store, days_past, pruned) -> None:
    ids = _old(db)
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    _backdate(db, 7, days_past)
    result = ar.prune(db, lw.ACME, store, enabled=True)
    assert lw.states(db, lw.ACME, ids) == (["PRUNED"] if pruned else ["ARCHIVED"]) * 3
    assert (result.rows, result.files_deleted) == ((3, 2) if pruned else (0, 0))
    assert os.path.exists(report.files[0]) is not pruned
    if not pruned:
        # The database refuses it too, whoever asks.
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="retention"),
            db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn,
        ):
            conn.execute("UPDATE executions SET lifecycle_state = 'PRUNED' WHERE id = %s", (ids[0],))


def test_a_pruning_dry_run_deletes_nothing(db, store) -> None:
    ids = _old(db)
    report = ar.archive_month(db, lw.ACME, MONTH, store, enabled=True)
    _backdate(db, 8, 0)
    result = ar.prune(db, lw.ACME, store, enabled=False)
    assert (result.archives, result.rows, result.files_deleted) == (1, 3, 0)
    assert lw.states(db, lw.ACME, ids) == ["ARCHIVED"] * 3
    assert pq.ParquetFile(report.files[0]).metadata.num_rows == 3
