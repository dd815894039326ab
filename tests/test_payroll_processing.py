"""A payroll file's run as plain functions (payroll/processing.py): what each outcome writes, and that
new work is recorded in the ledger once, whatever launched the run and however often."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clay_pipelines.payroll import processing, store
from clay_pipelines.payroll.checks import CheckOutcome
from clay_pipelines.payroll.model import Entry, Extraction
from clay_pipelines.payroll.triage import UnreadableDocument


@pytest.fixture
def tenant(fresh_db):
    with fresh_db.admin() as conn:
        conn.execute(
            "INSERT INTO systems (tenant_id, name, type, description, capabilities, constitution) "
            "VALUES (NULL, 'domicile-governance', 'component', 'payroll and compliance', ARRAY['payroll'], '{}')"
        )
        return conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]


@pytest.fixture
def db(fresh_db, tenant):
    with fresh_db.database() as database:
        with database.tenant_transaction(tenant) as conn:
            store.sync_directory(conn, [{"id": "7", "first_name": "Ann", "last_name": "Li"}], {})
        yield database


def _extraction(*amounts: str) -> Extraction:
    return Extraction(
        source_file="jan.pdf",
        pages=1,
        template=None,
        entries=[
            Entry(employee_name="Ann Li", amount=Decimal(a), page=1, date=date(2026, 1, 30), reference=f"line {k}")
            for k, a in enumerate(amounts)
        ],
    )


def _rows(db, tenant, query: str) -> list[tuple]:
    with db.tenant_transaction(tenant) as conn:
        return conn.execute(query).fetchall()


def _executions(db, tenant) -> list[tuple]:
    return _rows(
        db,
        tenant,
        "SELECT e.system_name, s.name, e.status, e.user_request, e.error_message, e.output_data, "
        "e.governance_check->>'requires_approval' FROM executions e LEFT JOIN systems s ON s.id = e.system_id "
        "ORDER BY e.started_at",
    )


def _calls(db, tenant) -> list[tuple]:
    return _rows(
        db,
        tenant,
        "SELECT server_name, tool_name, success, error_message FROM mcp_telemetry_log ORDER BY timestamp, id",
    )


def test_a_new_version_is_recorded_once_and_an_unchanged_rerun_not_at_all(db, tenant) -> None:
    for _ in range(2):
        with db.tenant_transaction(tenant) as conn:
            stored = processing.store_version(
                conn, processing.FileRun(source_file="jan.pdf", digest="aaa"), _extraction("100.00", "250.50")
            )
    assert (stored.version, stored.unchanged, stored.entries) == (1, True, 2)
    assert _executions(db, tenant) == [
        (
            "domicile-governance",
            "domicile-governance",
            "success",
            "Process payroll PDF jan.pdf",
            None,
            {"entries": 2, "total_amount": 350.5, "source_file": "jan.pdf", "version": 1, "unresolved": 0},
            "true",
        )
    ]
    assert _calls(db, tenant) == [("domicile-governance", "process_payroll_pdf", True, None)]
    assert _rows(db, tenant, "SELECT d.version, d.execution_id = e.id FROM payroll_documents d, executions e") == [
        (1, True)
    ]
    assert _rows(db, tenant, "SELECT seq, outcome FROM payroll_file_sightings WHERE processed_at IS NOT NULL") == [
        (1, "extracted")
    ]


def test_failed_checks_record_one_call_per_content_and_result(db, tenant) -> None:
    outcomes = [
        CheckOutcome(name="no_zero_amounts", passed=False, blocking=True, detail="Ann Li"),
        CheckOutcome(name="dates_plausible", passed=False, blocking=False, detail="no dates printed"),
        CheckOutcome(name="total_reconciles", passed=True, blocking=True, detail="extracted 0 = printed 0"),
    ]
    failed = processing.failed_checks(outcomes)
    assert [o.name for o in failed] == ["no_zero_amounts"]
    assert (
        processing.failed_checks_message("jan.pdf", failed)
        == "jan.pdf: nothing written, no_zero_amounts failed (Ann Li)"
    )
    run = processing.FileRun(source_file="jan.pdf", digest="aaa")
    other_result = [CheckOutcome(name="no_zero_amounts", passed=False, blocking=True, detail="Bob")]
    for result in (failed, failed, other_result):
        with db.tenant_transaction(tenant) as conn:
            processing.record_failed_checks(conn, run, result)
    assert _calls(db, tenant) == [
        ("domicile-governance", "process_payroll_pdf", False, "no_zero_amounts: Ann Li"),
        ("domicile-governance", "process_payroll_pdf", False, "no_zero_amounts: Bob"),
    ]
    assert _executions(db, tenant) == []
    assert _rows(db, tenant, "SELECT count(*) FROM payroll_documents") == [(0,)]


def test_an_unreadable_content_is_quarantined_once_and_moved_under_its_own_name(db, tenant, tmp_path: Path) -> None:
    inbox_file = tmp_path / "inbox" / "oms.com" / "scan.pdf"
    inbox_file.parent.mkdir(parents=True)
    inbox_file.write_bytes(b"not a pdf")
    error = UnreadableDocument(inbox_file, "not_pdf", "not a PDF (it starts with 'not a pd')")
    run = processing.FileRun(source_file="scan.pdf", digest="0123456789abcdef0123")
    for _ in range(2):
        with db.tenant_transaction(tenant) as conn:
            quarantined = processing.record_quarantine(conn, run, error)
    assert (quarantined.version, quarantined.status, quarantined.unchanged) == (1, "quarantined", True)
    message = "scan.pdf: not a PDF (it starts with 'not a pd')"
    assert _calls(db, tenant) == [("domicile-governance", "process_payroll_pdf", False, message)]
    assert [(e[2], e[4], e[5]) for e in _executions(db, tenant)] == [
        ("failed", message, {"quarantined": "not_pdf", "version": 1})
    ]
    target = processing.move_to_quarantine(inbox_file, tmp_path / "quarantine" / "oms.com", run)
    assert target == tmp_path / "quarantine" / "oms.com" / "scan.0123456789abcdef.pdf"
    assert (target.read_bytes(), inbox_file.exists()) == (b"not a pdf", False)


def test_a_renamed_copy_is_a_refused_upload_and_its_leaving_retires_it(db, tenant) -> None:
    with db.tenant_transaction(tenant) as conn:
        processing.store_version(conn, processing.FileRun(source_file="jan.pdf", digest="aaa"), _extraction("10.00"))
        copy = processing.store_version(
            conn, processing.FileRun(source_file="jan-final.pdf", digest="aaa"), _extraction("10.00")
        )
    message = (
        "jan-final.pdf: the same content as jan.pdf, already stored; nothing stored for the copy "
        "(remove it from the inbox)"
    )
    assert (copy.status, processing.duplicate_message(copy)) == ("duplicate", message)
    assert [(e[2], e[4], e[5]) for e in _executions(db, tenant)] == [
        (
            "success",
            None,
            {"entries": 1, "total_amount": 10.0, "source_file": "jan.pdf", "version": 1, "unresolved": 0},
        ),
        ("failed", message, {"duplicate_of": "jan.pdf", "version": 1}),
    ]
    with db.tenant_transaction(tenant) as conn:
        gone = processing.file_gone(conn, "jan-final.pdf")
        never = processing.file_gone(conn, "never.pdf")
    assert gone.copy_retired
    assert (
        gone.description()
        == "jan-final.pdf: no longer in the inbox; no live version (version 1: the copy left the inbox)"
    )
    assert (never.copy_retired, never.state, never.description()) == (
        False,
        None,
        "never.pdf: no longer in the inbox; nothing was stored for it",
    )
