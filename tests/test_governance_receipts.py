"""Signed receipts: a chain per tenant that verifies untouched and shows every kind of tampering."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from clay_pipelines.governance import keys, receipts
from clay_pipelines.governance.completion import complete, complete_execution
from tests.governance_world import routed, two_tenants


@pytest.fixture
def tenants(fresh_db):
    return two_tenants(fresh_db)


@pytest.fixture
def signer(database, tmp_path):
    signing = keys.file_signer(tmp_path / "keys")
    with database.unscoped_transaction() as conn:
        keys.register(conn, signing)
    return signing


def _chain(database, tenant, signer, n: int = 5) -> list:
    ids = []
    with database.tenant_transaction(tenant) as conn:
        for i in range(n):
            execution = routed(conn, f"request {i}")
            complete_execution(conn, execution, "success", output={"i": i}, cost_usd=Decimal(f"0.{i + 1}0"))
            ids.append(execution)
        assert receipts.sign_pending(conn, tenant, signer) == n
        # In chain order (executions completed together are chained by id).
        return [
            r[0]
            for r in conn.execute(
                "SELECT id FROM executions WHERE id = ANY(%s) ORDER BY receipt_seq", (ids,)
            ).fetchall()
        ]


def _tamper(fresh_db, statement: str, params: tuple = ()) -> None:
    """Someone with the database's superuser: triggers off, any row changed."""
    with fresh_db.admin() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement, params)


def _verify(database, tenant, folder=None, **kwargs) -> receipts.Verification:
    with database.tenant_transaction(tenant) as conn:
        return receipts.verify_chain(conn, tenant, checkpoint_folder=folder, **kwargs)


def test_an_untouched_chain_verifies_and_survives_a_content_tombstone(database, tenants, signer) -> None:
    ids = _chain(database, tenants.alpha, signer)
    with database.tenant_transaction(tenants.alpha) as conn:
        conn.execute(
            "UPDATE executions SET user_request = '', input_data = NULL, output_data = NULL WHERE id = %s", (ids[1],)
        )
    report = _verify(database, tenants.alpha)
    assert (report.receipts, report.breaks, report.ok) == (5, [], True)


def test_an_edited_field_is_detected(fresh_db, database, tenants, signer) -> None:
    ids = _chain(database, tenants.alpha, signer)
    _tamper(fresh_db, "UPDATE executions SET cost_usd = 0.01 WHERE id = %s", (ids[2],))
    assert _verify(database, tenants.alpha).breaks == [
        f"receipt #3 (execution {ids[2]}): its fields differ from what was signed (edited)"
    ]


def test_a_deleted_receipt_is_detected(fresh_db, database, tenants, signer) -> None:
    ids = _chain(database, tenants.alpha, signer)
    _tamper(fresh_db, "DELETE FROM executions WHERE id = %s", (ids[2],))
    assert _verify(database, tenants.alpha).breaks == [
        f"receipt #3 is missing (deleted) before receipt #4 (execution {ids[3]})"
    ]


def test_a_reordering_is_detected(fresh_db, database, tenants, signer) -> None:
    ids = _chain(database, tenants.alpha, signer)
    _tamper(fresh_db, "UPDATE executions SET receipt_seq = -1 WHERE id = %s", (ids[1],))
    _tamper(fresh_db, "UPDATE executions SET receipt_seq = 2 WHERE id = %s", (ids[2],))
    _tamper(fresh_db, "UPDATE executions SET receipt_seq = 3 WHERE id = %s", (ids[1],))
    breaks = _verify(database, tenants.alpha).breaks
    assert f"receipt #2 (execution {ids[2]}): does not follow the receipt before it (reordered or relinked)" in breaks


def test_a_signature_by_another_key_is_detected(fresh_db, database, tenants, signer, tmp_path) -> None:
    ids = _chain(database, tenants.alpha, signer)
    forger = keys.file_signer(tmp_path / "forger")
    with database.tenant_transaction(tenants.alpha) as conn:
        row = conn.execute(
            f"SELECT {receipts.BODY_SQL}, e.receipt_previous_hash FROM executions e WHERE e.id = %s", (ids[4],)
        ).fetchone()
    signed = receipts.message(signer.key_id, row[11], receipts.body(row[:11], row[4]))
    import base64

    forged = base64.b64encode(forger.sign(signed)).decode()
    _tamper(fresh_db, "UPDATE executions SET receipt_signature = %s WHERE id = %s", (forged, ids[4]))
    assert _verify(database, tenants.alpha).breaks == [
        f"receipt #5 (execution {ids[4]}): the signature does not verify with key {signer.key_id} (wrong key)"
    ]


@pytest.mark.parametrize("store", ["a local folder", "an fsspec URL (the archive store)"])
def test_truncation_is_detected_against_the_latest_checkpoint(
    fresh_db, database, tenants, signer, tmp_path, store
) -> None:
    ids = _chain(database, tenants.alpha, signer)
    folder = tmp_path / "checkpoints" if store == "a local folder" else f"memory://{uuid.uuid4()}/receipt-checkpoints"
    with database.tenant_transaction(tenants.alpha) as conn:
        checkpoint = receipts.write_checkpoint(conn, tenants.alpha, signer, folder)
        assert receipts.write_checkpoint(conn, tenants.alpha, signer, folder) is None  # nothing new
    assert checkpoint is not None and checkpoint.length == 5
    exported = receipts.exported_checkpoints(folder, tenants.alpha)
    assert [(c.length, c.head_hash, c.signature) for c in exported] == [(5, checkpoint.head_hash, checkpoint.signature)]
    assert exported[0].source.endswith(f"{tenants.alpha}/000000000005.json")
    # Cut the last two receipts and rewind the head to match: the chain alone looks whole...
    with database.tenant_transaction(tenants.alpha) as conn:
        third = conn.execute("SELECT receipt_hash FROM executions WHERE id = %s", (ids[2],)).fetchone()[0]
    _tamper(fresh_db, "DELETE FROM executions WHERE id = ANY(%s)", ([ids[3], ids[4]],))
    _tamper(fresh_db, "DELETE FROM receipt_checkpoints")
    _tamper(fresh_db, "UPDATE receipt_chains SET length = 3, head_hash = %s", (third,))
    assert _verify(database, tenants.alpha).breaks == []
    # ...but not against the checkpoint exported outside the database.
    report = _verify(database, tenants.alpha, folder)
    assert len(report.breaks) == 1 and report.breaks[0].startswith("truncated: the checkpoint of ")
    assert report.breaks[0].endswith("counts 5 receipts, the chain has 3")


def test_unsigned_completions_are_pending_with_their_age_not_breaks(fresh_db, database, tenants, signer) -> None:
    _chain(database, tenants.alpha, signer, n=2)
    with database.tenant_transaction(tenants.alpha) as conn:
        recent = routed(conn, started=datetime.now(UTC) - timedelta(hours=3))
        complete_execution(conn, recent, "failed", completed_at=datetime.now(UTC) - timedelta(hours=2))
        complete_execution(conn, routed(conn), "success")
    report = _verify(database, tenants.alpha)
    assert (report.breaks, report.pending, report.overdue) == ([], 2, 1)
    assert report.oldest_pending > timedelta(hours=2) and not report.ok


def test_receipts_are_append_only_for_the_application_role(database, tenants, signer) -> None:
    ids = _chain(database, tenants.alpha, signer, n=1)
    for statement in (
        "UPDATE executions SET receipt_signature = 'x' WHERE id = %s",
        "UPDATE executions SET system_name = 'other' WHERE id = %s",
    ):
        with pytest.raises(psycopg.Error, match="signed receipt"), database.tenant_transaction(tenants.alpha) as conn:
            conn.execute(statement, (ids[0],))
    # Deleting is not the application's at all (only the lifecycle removes content).
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table executions"),
        database.tenant_transaction(tenants.alpha) as conn,
    ):
        conn.execute("DELETE FROM executions WHERE id = %s", (ids[0],))
    with pytest.raises(psycopg.Error, match="only grows"), database.tenant_transaction(tenants.alpha) as conn:
        conn.execute("UPDATE receipt_chains SET length = 0")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), database.tenant_transaction(tenants.alpha) as conn:
        conn.execute("DELETE FROM receipt_checkpoints")


def test_concurrent_signers_never_fork_a_chain(database, tenants, signer) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        for i in range(40):
            complete_execution(conn, routed(conn, f"r{i}"), "success", cost_usd=Decimal("0.01"))
    barrier = threading.Barrier(2)

    def sign() -> None:
        barrier.wait()
        with database.tenant_transaction(tenants.alpha) as conn:
            receipts.sign_pending(conn, tenants.alpha, signer, limit=25)

    threads = [threading.Thread(target=sign) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = _verify(database, tenants.alpha)
    assert (report.receipts, report.breaks, report.pending) == (40, [], 0)


def test_completion_through_python_signs_at_once_and_another_tenant_sees_nothing(database, tenants, signer) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
    done = complete(database, tenants.alpha, execution, "success", signer=signer, cost_usd=Decimal("0.3"))
    assert (done.changed, done.signed) == (True, 1)
    with database.tenant_transaction(tenants.beta) as conn:
        for table in ("receipt_chains", "receipt_checkpoints", "executions"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        assert receipts.sign_pending(conn, tenants.beta, signer) == 0
    assert _verify(database, tenants.beta).receipts == 0


def test_key_files_are_0600_rotation_keeps_old_keys_verifying(database, tenants, signer, tmp_path) -> None:
    folder = tmp_path / "keys"
    pem = next(folder.glob("*.pem"))
    assert os.stat(pem).st_mode & 0o777 == 0o600
    _chain(database, tenants.alpha, signer, n=2)
    rotated = keys.rotate(folder)
    assert keys.file_signer(folder).key_id == rotated.key_id != signer.key_id
    with database.unscoped_transaction() as conn:
        keys.register(conn, rotated)
        assert keys.retire_others(conn, rotated.key_id) == 1
    _chain(database, tenants.alpha, rotated, n=2)
    report = _verify(database, tenants.alpha)
    assert (report.receipts, report.breaks) == (4, [])
    os.chmod(folder / pem.name, 0o644)
    (folder / keys.CURRENT).write_text(signer.key_id)
    with pytest.raises(keys.ReceiptKeyError, match="readable by its owner only"):
        keys.file_signer(folder)


def test_checkpoints_go_to_the_archive_store_unless_a_folder_is_named(monkeypatch, tmp_path) -> None:
    from clay_pipelines import settings

    monkeypatch.delenv("CLAY_RECEIPT_CHECKPOINT_DIR", raising=False)
    monkeypatch.setenv("CLAY_ARCHIVE_URL", "s3://clay-archive/prod/")
    assert settings.receipt_checkpoint_dir() == "s3://clay-archive/prod/receipt-checkpoints"
    monkeypatch.delenv("CLAY_ARCHIVE_URL")
    monkeypatch.setenv("CLAY_STATE_DIR", str(tmp_path))
    assert settings.receipt_checkpoint_dir() == f"{tmp_path.resolve()}/archive/receipt-checkpoints"
    monkeypatch.setenv("CLAY_RECEIPT_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    assert settings.receipt_checkpoint_dir() == str((tmp_path / "elsewhere").resolve())
