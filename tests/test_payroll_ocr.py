"""Scans: OCR when tesseract is installed, every entry low-confidence, none delivered before a person
confirms it (the whole file or one entry)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clay_pipelines.payroll import ocr, store
from clay_pipelines.payroll.approval import ApprovalError, confirm_entries, decide_document, resolve_entry
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.model import Entry, Extraction
from clay_pipelines.payroll.templates import TemplateSet
from clay_pipelines.payroll.triage import UnreadableDocument
from clay_pipelines.sample_world.payroll_docs import generate_directory
from tests import payroll_trait_pdfs as docs

needs_tesseract = pytest.mark.skipif(not ocr.available(), reason=f"OCR tests: {ocr.INSTALL_HINT}")


def _scan(tmp_path: Path) -> Path:
    rows = [("DOE, JOHN", "E1001", "1,234.56"), ("SMITH, ANNA B", "E1002", "2,500.00"), ("LEE, KIM", "E1003", "980.10")]
    source = docs.grid_register(
        tmp_path / "register.pdf", ("Payee Name", "Employee ID", "Net Pay"), rows, (150, 80, 80)
    )
    return docs.scan_of(source, tmp_path / "scan.pdf")


@needs_tesseract
def test_a_scan_is_read_by_ocr_and_every_entry_is_low_confidence(tmp_path: Path) -> None:
    extraction = extract_document(_scan(tmp_path), template_set=TemplateSet([]))
    assert [(e.employee_name, e.employee_id, str(e.amount)) for e in extraction.entries] == [
        ("DOE, JOHN", "E1001", "1234.56"),
        ("SMITH, ANNA B", "E1002", "2500.00"),
        ("LEE, KIM", "E1003", "980.10"),
    ]
    assert all(e.low_confidence and e.extractor.startswith("ocr+") for e in extraction.entries)
    assert extraction.entries[0].as_json()["confidence"] == "low"
    assert extraction.warnings[0].startswith("read by OCR")


def test_without_tesseract_a_scan_is_unreadable_and_the_reason_names_the_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr.shutil, "which", lambda name: None)
    with pytest.raises(UnreadableDocument) as error:
        extract_document(_scan(tmp_path))
    assert error.value.reason == "no_text_layer"
    assert error.value.detail.endswith("install tesseract (Debian: apt-get install tesseract-ocr)")


# ---------------------------------------------------------------------------------------------
# Review and confirmation (database)


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
        yield database, directory


def _store_scan(database, tenant, names: list[str]) -> None:
    entries = [
        Entry(employee_name=n, amount=Decimal("10.00") * (k + 1), page=1, date=date(2026, 1, 30), low_confidence=True)
        for k, n in enumerate(names)
    ]
    extraction = Extraction(source_file="scan.pdf", pages=1, template=None, entries=entries)
    with database.tenant_transaction(tenant) as conn:
        store.store_extraction(conn, "scan.pdf", "d1", extraction, store.load_resolver(conn))


def _outbox(database, tenant) -> list[tuple[str, str]]:
    with database.tenant_transaction(tenant) as conn:
        return conn.execute(
            "SELECT e.printed_name, o.status FROM bamboohr_outbox o JOIN payroll_entries e ON e.id = o.entry_id "
            "ORDER BY e.line_no"
        ).fetchall()


def test_low_confidence_entries_wait_for_confirmation_even_when_the_file_is_approved(db, tenant) -> None:
    database, directory = db
    known = f"{directory[0].first_name} {directory[0].last_name}"
    _store_scan(database, tenant, [known, "Nobody Atall"])
    with database.tenant_transaction(tenant) as conn:
        queue = conn.execute(
            "SELECT printed_name, needs_confirmation, reason FROM payroll_review_queue ORDER BY printed_name"
        ).fetchall()
        decide_document(conn, "scan.pdf", "boss@oms.com", approve=True)
    assert [(q[0], q[1]) for q in queue] == sorted([(known, True), ("Nobody Atall", True)])
    assert all(store.LOW_CONFIDENCE_REASON in q[2] for q in queue)
    assert _outbox(database, tenant) == [(known, "awaiting_review"), ("Nobody Atall", "awaiting_review")]

    with database.tenant_transaction(tenant) as conn:
        outcome = confirm_entries(conn, "scan.pdf", "clerk@oms.com")
    assert (outcome.confirmed, outcome.released, outcome.waiting_for_name) == (2, 1, 1)
    assert _outbox(database, tenant) == [(known, "pending"), ("Nobody Atall", "awaiting_review")]

    with database.tenant_transaction(tenant) as conn:  # named now, and confirmed before: released
        entry = conn.execute("SELECT id FROM payroll_entries WHERE printed_name = 'Nobody Atall'").fetchone()[0]
        assert resolve_entry(conn, entry, directory[1].id, "clerk@oms.com") == "pending"
        with pytest.raises(ApprovalError, match="no entry waiting for confirmation"):
            confirm_entries(conn, "scan.pdf", "clerk@oms.com")


def test_naming_an_unconfirmed_entry_does_not_release_it_and_one_entry_can_be_confirmed(db, tenant) -> None:
    database, directory = db
    _store_scan(database, tenant, ["Nobody Atall", "Someone Else"])
    with database.tenant_transaction(tenant) as conn:
        first, second = [r[0] for r in conn.execute("SELECT id FROM payroll_entries ORDER BY line_no").fetchall()]
        assert resolve_entry(conn, first, directory[1].id, "clerk@oms.com") == "awaiting_review"
        outcome = confirm_entries(conn, "scan.pdf", "clerk@oms.com", first)
    assert (outcome.confirmed, outcome.released) == (1, 1)
    assert _outbox(database, tenant) == [("Nobody Atall", "awaiting_approval"), ("Someone Else", "awaiting_review")]
    with database.tenant_transaction(tenant) as conn, pytest.raises(ApprovalError, match="named by an email address"):
        confirm_entries(conn, "scan.pdf", "clerk", second)
