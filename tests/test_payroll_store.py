"""Storing payroll file versions: idempotent, versioned with an audit trail, outbox in the same transaction."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from clay_pipelines.payroll import sightings, store
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
        entries=[
            Entry(employee_name=name, amount=Decimal(amount), page=1, date=date(2026, 1, 30), currency="USD")
            for name, amount in entries
        ],
    )


def _store(db, tenant, extraction: Extraction, digest: str, file: str = "run.pdf") -> store.StoredVersion:
    with db.tenant_transaction(tenant) as conn:
        return store.store_extraction(conn, file, digest, extraction, store.load_resolver(conn))


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
    bad.entries.append(
        Entry(employee_name="Bob Scott", amount=Decimal("1.00"), page=1, date=None)
    )  # payroll_entries.date is NOT NULL
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


V1 = (("MCCOY, KEVIN", "100.00"), ("Bob Scott", "250.50"))
V2 = (("MCCOY, KEVIN", "110.00"),)


def _entries(db, tenant) -> list[tuple]:
    return _rows(db, tenant, "SELECT source_file, employee_id, amount::text FROM payroll_entries ORDER BY 1, line_no")


def test_an_earlier_content_put_back_is_a_new_version_with_its_entries(db, tenant) -> None:
    _store(db, tenant, _extraction(*V1), "v1")
    _store(db, tenant, _extraction(*V2), "v2")
    back = _store(db, tenant, _extraction(*V1), "v1")
    assert (back.unchanged, back.version, back.status, back.replaced_entries) == (False, 3, "extracted", 1)
    assert _entries(db, tenant) == [("run.pdf", "10001", "100.00"), ("run.pdf", "10049", "250.50")]
    assert _rows(db, tenant, "SELECT version, status, content_hash FROM payroll_documents ORDER BY version") == [
        (1, "superseded", "v1"),
        (2, "superseded", "v2"),
        (3, "extracted", "v1"),
    ]
    assert _rows(db, tenant, "SELECT reason FROM payroll_entry_history WHERE entry->>'amount' = '110.00'") == [
        ("replaced by version 3 of run.pdf (content sha256 v1, the content of version 1 again)",)
    ]
    assert _rows(db, tenant, "SELECT o.status FROM bamboohr_outbox o") == [("awaiting_approval",)] * 2
    # And the same content once more is the live version: nothing changes.
    again = _store(db, tenant, _extraction(*V1), "v1")
    assert (again.unchanged, again.version, again.document_id) == (True, 3, back.document_id)
    assert _rows(db, tenant, "SELECT count(*) FROM payroll_documents") == [(3,)]


def test_the_database_allows_one_live_version_per_file(db, tenant) -> None:
    first = _store(db, tenant, _extraction(*V1), "v1")
    with pytest.raises(psycopg.errors.UniqueViolation, match="payroll_documents_one_live_version"):
        _rows(
            db,
            tenant,
            "INSERT INTO payroll_documents (source_file, content_hash, version, status) "
            "VALUES ('run.pdf', 'v9', 9, 'extracted') RETURNING id",
        )
    assert first.version == 1


def test_a_renamed_copy_is_a_duplicate_and_stores_nothing(db, tenant) -> None:
    original = _store(db, tenant, _extraction(*V1), "same", file="jan.pdf")
    copy = _store(db, tenant, _extraction(*V1), "same", file="jan-copy.pdf")
    assert (copy.status, copy.version, copy.entries, copy.unchanged) == ("duplicate", 1, 0, False)
    assert copy.duplicate_of == store.Copied(source_file="jan.pdf", version=1, live_in="jan.pdf")
    assert _entries(db, tenant) == [("jan.pdf", "10001", "100.00"), ("jan.pdf", "10049", "250.50")]
    assert _rows(db, tenant, "SELECT count(*), count(DISTINCT document_id) FROM bamboohr_outbox") == [(2, 1)]
    assert _rows(db, tenant, "SELECT source_file, status, duplicate_of FROM payroll_documents ORDER BY 1") == [
        ("jan-copy.pdf", "duplicate", original.document_id),
        ("jan.pdf", "extracted", None),
    ]
    again = _store(db, tenant, _extraction(*V1), "same", file="jan-copy.pdf")
    assert (again.unchanged, again.status, again.document_id) == (True, "duplicate", copy.document_id)
    with db.tenant_transaction(tenant) as conn:
        (state,) = store.file_states(conn, "jan-copy.pdf")
    assert state.describe() == "version 1 duplicates jan.pdf: nothing stored"
    assert state.needs() == "remove the copy (jan.pdf holds this content)"


def test_a_copy_is_not_promoted_when_its_original_is_replaced_it_is_reported_orphaned(db, tenant) -> None:
    _store(db, tenant, _extraction(*V1), "x", file="jan.pdf")
    _store(db, tenant, _extraction(*V1), "x", file="copy.pdf")
    replaced = _store(db, tenant, _extraction(*V2), "y", file="jan.pdf")
    assert replaced.orphaned_copies == ("copy.pdf",)
    # Run the copy again: still a duplicate, of content that is live nowhere; its entries do not come back.
    copy = _store(db, tenant, _extraction(*V1), "x", file="copy.pdf")
    assert (copy.unchanged, copy.status, copy.duplicate_of) == (
        True,
        "duplicate",
        store.Copied(source_file="jan.pdf", version=1, live_in=None),
    )
    assert _entries(db, tenant) == [("jan.pdf", "10001", "110.00")]
    with db.tenant_transaction(tenant) as conn:
        (state,) = store.file_states(conn, "copy.pdf")
    assert state.describe() == (
        "version 1 copies jan.pdf version 1, whose content is live in no file now: nothing stored"
    )
    assert state.needs() == "remove the copy, or put its content back as jan.pdf"
    # The original's content put back: the copy duplicates it again.
    _store(db, tenant, _extraction(*V1), "x", file="jan.pdf")
    again = _store(db, tenant, _extraction(*V1), "x", file="copy.pdf")
    assert again.duplicate_of == store.Copied(source_file="jan.pdf", version=1, live_in="jan.pdf")


def test_a_file_whose_new_content_is_a_copy_retires_its_entries(db, tenant) -> None:
    _store(db, tenant, _extraction(*V1), "x", file="jan.pdf")
    _store(db, tenant, _extraction(*V2), "y", file="feb.pdf")
    became_copy = _store(db, tenant, _extraction(*V1), "x", file="feb.pdf")
    assert (became_copy.status, became_copy.version, became_copy.replaced_entries) == ("duplicate", 2, 1)
    assert _entries(db, tenant) == [("jan.pdf", "10001", "100.00"), ("jan.pdf", "10049", "250.50")]
    assert _rows(db, tenant, "SELECT reason FROM payroll_entry_history") == [
        ("replaced by version 2 of feb.pdf, a copy of jan.pdf version 1 (content sha256 x)",)
    ]
    # New content for the copy makes it a file of its own again.
    own = _store(db, tenant, _extraction(("Bob Scott", "7.00")), "z", file="feb.pdf")
    assert (own.status, own.version, own.replaced_entries) == ("extracted", 3, 0)
    assert _rows(
        db, tenant, "SELECT version, status FROM payroll_documents WHERE source_file = 'feb.pdf' ORDER BY 1"
    ) == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "extracted"),
    ]


def test_an_unreadable_replacement_keeps_the_live_version_and_each_content_is_quarantined_once(db, tenant) -> None:
    _store(db, tenant, _extraction(*V1), "good")

    def quarantine(digest: str) -> store.StoredVersion:
        with db.tenant_transaction(tenant) as conn:
            return store.store_quarantine(conn, "run.pdf", digest, "not_a_pdf", "not a PDF")

    first, again, other = quarantine("bad1"), quarantine("bad1"), quarantine("bad2")
    assert [(q.version, q.unchanged) for q in (first, again, other)] == [(2, False), (2, True), (3, False)]
    assert _rows(db, tenant, "SELECT version, status, quarantined_as FROM payroll_documents ORDER BY 1") == [
        (1, "extracted", None),
        (2, "quarantined", "run.bad1.pdf"),
        (3, "quarantined", "run.bad2.pdf"),
    ]
    assert len(_entries(db, tenant)) == 2
    # The good content put back is still the live version: nothing new.
    assert _store(db, tenant, _extraction(*V1), "good").unchanged
    with db.tenant_transaction(tenant) as conn:
        (state,) = store.file_states(conn, "run.pdf")
    assert state.describe() == (
        "version 3 quarantined (not_a_pdf) as run.bad2.pdf; version 1 live: 2 entries, approval awaiting"
    )


def test_sightings_number_each_content_change_and_record_each_outcome_once(db, tenant) -> None:
    with db.tenant_transaction(tenant) as conn:
        seen = [sightings.observe(conn, "run.pdf", digest).seq for digest in ("a", "a", "b", "a")]
        assert seen == [1, 1, 2, 3]
        assert sightings.record_outcome(conn, "run.pdf", "a", "failed_checks", "total_reconciles: off") is True
        assert sightings.record_outcome(conn, "run.pdf", "a", "failed_checks", "total_reconciles: off") is False
        assert sightings.record_outcome(conn, "run.pdf", "a", "failed_checks", "no_zero_amounts: 1") is True
        assert sightings.observe(conn, "run.pdf", "a").processed
        # A content processed now, then seen again after another: a new, unprocessed sighting.
        assert sightings.observe(conn, "run.pdf", "c") == sightings.Sighting(
            source_file="run.pdf", seq=4, content_hash="c", processed=False, outcome=None, detail=None
        )
    assert _rows(
        db, tenant, "SELECT seq, content_hash, processed_at IS NOT NULL, outcome FROM payroll_file_sightings ORDER BY 1"
    ) == [(1, "a", False, None), (2, "b", False, None), (3, "a", True, "failed_checks"), (4, "c", False, None)]


def test_migration_013_applies_again_unchanged(fresh_db, db, tenant) -> None:
    from clay_pipelines import settings

    with fresh_db.admin() as conn, conn.transaction():
        conn.execute((settings.SQL_DIR / "013_payroll_file_versions.sql").read_text())
    _store(db, tenant, _extraction(*V1), "v1")
    with pytest.raises(psycopg.errors.UniqueViolation, match="payroll_documents_one_live_version"):
        _rows(
            db,
            tenant,
            "INSERT INTO payroll_documents (source_file, content_hash, version, status) "
            "VALUES ('run.pdf', 'v2', 2, 'duplicate') RETURNING id",
        )


def test_a_copy_cannot_point_at_another_tenants_document(fresh_db, db, tenant) -> None:
    original = _store(db, tenant, _extraction(*V1), "x", file="jan.pdf")
    with fresh_db.admin() as conn:
        other = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Else', 'else.com') RETURNING id").fetchone()[
            0
        ]
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="duplicate_of"):
        _rows(
            db,
            other,
            "INSERT INTO payroll_documents (source_file, content_hash, version, status, duplicate_of) "
            f"VALUES ('jan.pdf', 'x', 1, 'duplicate', '{original.document_id}') RETURNING id",
        )


def test_a_tenant_without_a_directory_sends_every_payee_to_review(fresh_db, tenant) -> None:
    with fresh_db.database() as database:
        stored = _store(database, tenant, _extraction(*V1), "v1")
        assert (stored.entries, stored.unresolved) == (2, 2)
        assert _rows(database, tenant, "SELECT DISTINCT reason FROM payroll_review_queue") == [
            ("the tenant's employee directory is empty",)
        ]


def test_an_approver_or_reviewer_is_named_by_email_address(db, tenant) -> None:
    from clay_pipelines.payroll.approval import ApprovalError, decide_document, resolve_entry

    _store(db, tenant, _extraction(("Smith", "10.00")), "x")
    with db.tenant_transaction(tenant) as conn:
        entry = conn.execute("SELECT entry_id FROM payroll_review_queue").fetchone()[0]
        with pytest.raises(ApprovalError) as approver:
            decide_document(conn, "run.pdf", "preston", approve=True)
        with pytest.raises(ApprovalError) as reviewer:
            resolve_entry(conn, entry, "10001", "hr")
    assert str(approver.value) == "the approver is named by an email address, got 'preston'"
    assert str(reviewer.value) == "the reviewer is named by an email address, got 'hr'"
    assert _rows(db, tenant, "SELECT approval_status FROM payroll_documents") == [("awaiting",)]
    assert _rows(db, tenant, "SELECT status FROM payroll_review_queue") == [("open",)]
