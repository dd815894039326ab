"""Storing payroll file versions: idempotent, versioned with an audit trail, outbox in the same transaction."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clay_pipelines.payroll import store
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.model import Entry, Extraction
from clay_pipelines.sample_world.payroll_docs import generate_directory, generate_payroll_world


@pytest.fixture
def tenant(fresh_db):
    with fresh_db.admin() as conn:
        return conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]


@pytest.fixture
def db(fresh_db, tenant):
    directory = generate_directory(7)
    with fresh_db.database() as database:
        with database.tenant_transaction(tenant) as conn:
            store.sync_directory(conn, [asdict(e) for e in directory], {e.llc: e.id for e in directory if e.llc})
        yield database


def _extraction(*entries: tuple[str, str]) -> Extraction:
    return Extraction(
        source_file="run.pdf",
        pages=1,
        template=None,
        entries=[Entry(name, Decimal(amount), 1, date=date(2026, 1, 30), currency="USD") for name, amount in entries],
    )


def _store(db, tenant, extraction: Extraction, digest: str) -> store.StoredVersion:
    with db.tenant_transaction(tenant) as conn:
        return store.store_extraction(conn, "run.pdf", digest, extraction, store.load_resolver(conn))


def _rows(db, tenant, query: str) -> list[tuple]:
    with db.tenant_transaction(tenant) as conn:
        return conn.execute(query).fetchall()


def test_same_content_twice_writes_once(db, tenant) -> None:
    extraction = _extraction(("MCCOY, KEVIN", "100.00"), ("Bob Scott", "250.50"))
    first = _store(db, tenant, extraction, "aaa")
    again = _store(db, tenant, extraction, "aaa")
    assert (first.version, first.unchanged, first.entries) == (1, False, 2)
    assert (again.version, again.unchanged, again.document_id) == (1, True, first.document_id)
    assert _rows(
        db, tenant, "SELECT line_no, employee_id, employee_name, amount FROM payroll_entries ORDER BY line_no"
    ) == [
        (1, "10001", "Kevin McCoy", Decimal("100.00")),
        (2, "10049", "Robert Scott", Decimal("250.50")),
    ]
    assert _rows(db, tenant, "SELECT status, payload->>'employee_id' FROM bamboohr_outbox ORDER BY 2") == [
        ("awaiting_approval", "10001"),
        ("awaiting_approval", "10049"),
    ]


def test_corrected_file_replaces_the_old_version_and_keeps_it_in_the_audit(db, tenant) -> None:
    _store(db, tenant, _extraction(("MCCOY, KEVIN", "100.00"), ("Bob Scott", "250.50")), "v1")
    second = _store(db, tenant, _extraction(("MCCOY, KEVIN", "110.00")), "v2")
    assert (second.version, second.replaced_entries, second.entries) == (2, 2, 1)
    assert _rows(db, tenant, "SELECT employee_id, amount FROM payroll_entries") == [("10001", Decimal("110.00"))]
    assert _rows(db, tenant, "SELECT version, status FROM payroll_documents ORDER BY version") == [
        (1, "superseded"),
        (2, "extracted"),
    ]
    history = _rows(db, tenant, "SELECT entry->>'amount', reason FROM payroll_entry_history ORDER BY 1")
    assert [h[0] for h in history] == ["100.00", "250.50"]
    assert all(h[1] == "replaced by version 2 of run.pdf (content sha256 v2)" for h in history)
    assert _rows(db, tenant, "SELECT count(*) FROM bamboohr_outbox") == [(1,)]
    # Dropping the superseded content again is recognised and changes nothing: no silent revert.
    third = _store(db, tenant, _extraction(("MCCOY, KEVIN", "100.00"), ("Bob Scott", "250.50")), "v1")
    assert (third.unchanged, third.version, third.status) == (True, 1, "superseded")
    assert _rows(db, tenant, "SELECT employee_id, amount FROM payroll_entries") == [("10001", Decimal("110.00"))]


def test_unresolved_payees_go_to_review_and_wait(db, tenant) -> None:
    stored = _store(
        db, tenant, _extraction(("Smith", "10.00"), ("Acme Staffing LLC", "20.00"), ("NM Studio LLC", "30.00")), "x"
    )
    assert stored.unresolved == 2
    queue = _rows(
        db, tenant, "SELECT printed_name, reason, candidates->0->>'name' FROM payroll_review_queue ORDER BY 1"
    )
    assert queue == [
        (
            "Acme Staffing LLC",
            "an organisation not in the LLC mapping (companies are never fuzzy-matched to people)",
            None,
        ),
        ("Smith", "only one name is printed; a surname alone never resolves", "Alvaro Smith"),
    ]
    outbox = _rows(
        db,
        tenant,
        "SELECT e.printed_name, o.status FROM bamboohr_outbox o JOIN payroll_entries e ON e.id = o.entry_id ORDER BY 1",
    )
    assert outbox == [
        ("Acme Staffing LLC", "awaiting_review"),
        ("NM Studio LLC", "awaiting_approval"),
        ("Smith", "awaiting_review"),
    ]
    assert _rows(db, tenant, "SELECT employee_id FROM payroll_entries WHERE printed_name = 'Smith'") == [
        ("UNRESOLVED",)
    ]


def test_a_failure_midway_leaves_nothing_half_written(db, tenant) -> None:
    bad = _extraction(("MCCOY, KEVIN", "100.00"))
    bad.entries.append(Entry("Bob Scott", Decimal("1.00"), 1, date=None))  # payroll_entries.date is NOT NULL
    with pytest.raises(Exception, match='null value in column "date"'):
        _store(db, tenant, bad, "broken")
    assert _rows(db, tenant, "SELECT count(*) FROM payroll_entries") == [(0,)]
    assert _rows(db, tenant, "SELECT count(*) FROM payroll_documents") == [(0,)]
    assert _rows(db, tenant, "SELECT count(*) FROM bamboohr_outbox") == [(0,)]


def test_quarantine_and_tool_telemetry(db, tenant) -> None:
    with db.tenant_transaction(tenant) as conn:
        stored = store.store_quarantine(conn, "scan.pdf", "h1", "no_text_layer", "no text layer: a scan, OCR is needed")
        store.record_tool_call(
            conn,
            "process_payroll_pdf",
            {"source_file": "scan.pdf"},
            12.34,
            False,
            "scan.pdf: no text layer: a scan, OCR is needed",
        )
    assert stored.status == "quarantined"
    assert _rows(db, tenant, "SELECT status, quarantine_reason, entry_count FROM payroll_documents") == [
        ("quarantined", "no_text_layer", 0)
    ]
    assert _rows(
        db, tenant, "SELECT server_name, tool_name, success, error_message, execution_time_ms FROM mcp_telemetry_log"
    ) == [
        (
            "domicile-governance",
            "process_payroll_pdf",
            False,
            "scan.pdf: no text layer: a scan, OCR is needed",
            Decimal("12.3"),
        )
    ]


def test_sample_register_end_to_end(db, tenant, tmp_path: Path) -> None:
    generate_payroll_world(tmp_path, 7, date(2026, 1, 15))
    pdf = sorted((tmp_path / "inbox" / "oms.com").glob("payroll-register-*.pdf"))[0]
    truth = json.loads((tmp_path / "truth" / f"{pdf.stem}.json").read_text())
    extraction = extract_document(pdf)
    with db.tenant_transaction(tenant) as conn:
        stored = store.store_extraction(conn, pdf.name, store.content_hash(pdf), extraction, store.load_resolver(conn))
    assert stored.total_amount == Decimal(truth["total"])
    rows = _rows(db, tenant, "SELECT employee_id, amount::text FROM payroll_entries ORDER BY line_no")
    assert rows == [(e["expected_employee_id"], e["amount"]) for e in truth["entries"]]
    assert stored.unresolved == 0


def test_reextraction_with_a_different_result_is_a_new_version(db, tenant) -> None:
    """A backfill after a template change reads the same bytes again: a changed result replaces the old one."""
    first = _store(db, tenant, _extraction(("MCCOY, KEVIN", "100.00")), "same-bytes")
    unchanged = _store(db, tenant, _extraction(("MCCOY, KEVIN", "100.00")), "same-bytes")
    improved = _store(db, tenant, _extraction(("MCCOY, KEVIN", "100.00"), ("Bob Scott", "5.00")), "same-bytes")
    assert (first.version, unchanged.unchanged, improved.version, improved.replaced_entries) == (1, True, 2, 1)
    assert _rows(db, tenant, "SELECT reason FROM payroll_entry_history") == [
        ("re-extracted as version 2 of run.pdf: same content, different result (template generic)",)
    ]
    assert _rows(db, tenant, "SELECT count(*) FROM payroll_entries") == [(2,)]
