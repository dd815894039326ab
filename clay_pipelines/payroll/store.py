"""Writing a payroll file version to the database: one transaction per version, idempotent.

  * The same content again (same tenant, file name and SHA-256) changes nothing.
  * New content under a known file name is a new version: the previous version's entries move to
    payroll_entry_history with the reason, and the new entries take their place.
  * Every entry is written with its natural key (tenant, source_file, line_no) and, in the same
    transaction, its BambooHR delivery is queued in the outbox: awaiting approval when its payee is
    resolved, awaiting review when not (the review queue gets a row with the candidates).
  * An unreadable file is a quarantined version with its reason, and no entries.
Callers pass a connection inside a tenant transaction; nothing here commits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.payroll.model import Extraction
from clay_pipelines.payroll.names import NameResolver, Person, Resolution

UNRESOLVED_EMPLOYEE = "UNRESOLVED"  # employee_id is NOT NULL; the review queue says who it might be


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredVersion:
    document_id: UUID
    source_file: str
    version: int
    status: str
    unchanged: bool  # this exact content was already stored
    entries: int
    total_amount: Decimal
    unresolved: int
    replaced_entries: int


def _lock_file(conn: psycopg.Connection, source_file: str) -> None:
    # Two runs of the same file serialise here; the tenant is part of the key through the setting.
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(current_setting('app.tenant_id', true) || '/' || %s))",
        (source_file,),
    )


def extraction_digest(extraction: Extraction) -> str:
    """What was read from a file, as a digest: the same bytes read differently are a new version."""
    canonical = json.dumps([e.as_json() for e in extraction.entries], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _existing(
    conn: psycopg.Connection, source_file: str, digest: str, read_digest: str | None = None
) -> StoredVersion | None:
    row = conn.execute(
        "SELECT id, version, status, entry_count, coalesce(total_amount, 0) FROM payroll_documents "
        "WHERE source_file = %s AND content_hash = %s AND (%s::text IS NULL OR extraction_digest = %s) "
        "ORDER BY version DESC LIMIT 1",
        (source_file, digest, read_digest, read_digest),
    ).fetchone()
    if row is None:
        return None
    unresolved = conn.execute(
        "SELECT count(*) FROM payroll_entries WHERE document_id = %s AND employee_id = %s",
        (row[0], UNRESOLVED_EMPLOYEE),
    ).fetchone()[0]
    return StoredVersion(row[0], source_file, row[1], row[2], True, row[3], row[4], unresolved, 0)


def _supersede_previous(
    conn: psycopg.Connection, source_file: str, new_document: UUID, version: int, reason: str
) -> int:
    previous = conn.execute(
        "SELECT id, version FROM payroll_documents WHERE source_file = %s AND status = 'extracted' AND id <> %s",
        (source_file, new_document),
    ).fetchall()
    replaced = 0
    for document_id, old_version in previous:
        replaced += conn.execute(
            """
            INSERT INTO payroll_entry_history (entry, document_id, replaced_by_document_id, reason)
            SELECT to_jsonb(e) || jsonb_build_object('outbox_status', o.status, 'remote_row_id', o.remote_row_id),
                   e.document_id, %s, %s
            FROM payroll_entries e LEFT JOIN bamboohr_outbox o ON o.entry_id = e.id
            WHERE e.document_id = %s
            """,
            (new_document, reason, document_id),
        ).rowcount
        conn.execute("DELETE FROM payroll_entries WHERE document_id = %s", (document_id,))
        conn.execute(
            "UPDATE payroll_documents SET status = 'superseded', superseded_at = now(), superseded_reason = %s "
            "WHERE id = %s",
            (f"version {old_version} replaced by version {version}", document_id),
        )
    return replaced


def _next_version(conn: psycopg.Connection, source_file: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM payroll_documents WHERE source_file = %s", (source_file,)
    ).fetchone()
    return int(row[0])


def store_extraction(
    conn: psycopg.Connection,
    source_file: str,
    digest: str,
    extraction: Extraction,
    resolver: NameResolver,
) -> StoredVersion:
    _lock_file(conn, source_file)
    read_digest = extraction_digest(extraction)
    if (existing := _existing(conn, source_file, digest, read_digest)) is not None:
        return existing
    reextracted = _existing(conn, source_file, digest) is not None
    version = _next_version(conn, source_file)
    total = sum((e.amount for e in extraction.entries), Decimal(0))
    printed_total = extraction.printed_totals[-1].amount if extraction.printed_totals else None
    document_id = conn.execute(
        """
        INSERT INTO payroll_documents (source_file, content_hash, extraction_digest, version, status, pages, template,
                                       entry_count, total_amount, printed_total, warnings)
        VALUES (%s, %s, %s, %s, 'extracted', %s, %s, %s, %s, %s, %s) RETURNING id
        """,
        (
            source_file,
            digest,
            read_digest,
            version,
            extraction.pages,
            extraction.template,
            len(extraction.entries),
            total,
            printed_total,
            Jsonb(extraction.warnings),
        ),
    ).fetchone()[0]
    why = (
        f"re-extracted as version {version} of {source_file}: same content, different result "
        f"(template {extraction.template or 'generic'})"
        if reextracted
        else f"replaced by version {version} of {source_file} (content sha256 {digest[:12]})"
    )
    replaced = _supersede_previous(conn, source_file, document_id, version, why)

    unresolved = 0
    for line_no, entry in enumerate(extraction.entries, start=1):
        resolution: Resolution = resolver.resolve(entry.employee_name, entry.employee_id)
        employee_id = resolution.employee_id or UNRESOLVED_EMPLOYEE
        entry_id = conn.execute(
            """
            INSERT INTO payroll_entries (employee_id, employee_name, date, amount, reference, source_file, document_id,
                                         line_no, currency, page, printed_name, printed_employee_id, resolution)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (
                employee_id,
                resolution.employee_name or entry.employee_name,
                entry.date,
                entry.amount,
                entry.reference,
                source_file,
                document_id,
                line_no,
                entry.currency,
                entry.page,
                entry.employee_name,
                entry.employee_id,
                Jsonb({"method": resolution.method, "score": resolution.score, "reason": resolution.reason}),
            ),
        ).fetchone()[0]
        if not resolution.resolved:
            unresolved += 1
            conn.execute(
                "INSERT INTO payroll_review_queue (entry_id, printed_name, reason, candidates) VALUES (%s, %s, %s, %s)",
                (entry_id, entry.employee_name, resolution.reason, Jsonb([asdict(c) for c in resolution.candidates])),
            )
        conn.execute(
            "INSERT INTO bamboohr_outbox (entry_id, document_id, payload, status) VALUES (%s, %s, %s, %s)",
            (
                entry_id,
                document_id,
                Jsonb(_bamboohr_row(entry, employee_id)),
                "awaiting_approval" if resolution.resolved else "awaiting_review",
            ),
        )
    return StoredVersion(
        document_id, source_file, version, "extracted", False, len(extraction.entries), total, unresolved, replaced
    )


def _bamboohr_row(entry: Any, employee_id: str) -> dict[str, Any]:
    return {
        "employee_id": employee_id,
        "date": entry.date.isoformat() if entry.date else None,
        "amount": str(entry.amount),
        "currency": entry.currency,
        "reference": entry.reference,
    }


def store_quarantine(
    conn: psycopg.Connection, source_file: str, digest: str, reason: str, detail: str
) -> StoredVersion:
    _lock_file(conn, source_file)
    if (existing := _existing(conn, source_file, digest)) is not None:
        return existing
    version = _next_version(conn, source_file)
    document_id = conn.execute(
        """
        INSERT INTO payroll_documents (source_file, content_hash, version, status, quarantine_reason, quarantine_detail)
        VALUES (%s, %s, %s, 'quarantined', %s, %s) RETURNING id
        """,
        (source_file, digest, version, reason, detail),
    ).fetchone()[0]
    return StoredVersion(document_id, source_file, version, "quarantined", False, 0, Decimal(0), 0, 0)


def record_tool_call(
    conn: psycopg.Connection,
    tool_name: str,
    input_data: dict[str, Any],
    execution_time_ms: float,
    success: bool,
    error_message: str | None = None,
) -> None:
    """The MCP telemetry row every payroll tool step writes (server domicile-governance)."""
    conn.execute(
        "INSERT INTO mcp_telemetry_log (server_name, tool_name, input_data, execution_time_ms, success, error_message) "
        "VALUES ('domicile-governance', %s, %s, %s, %s, %s)",
        (tool_name, Jsonb(input_data), round(execution_time_ms, 1), success, error_message),
    )


# ---------------------------------------------------------------------------------------------
# The directory cache


def sync_directory(conn: psycopg.Connection, people: list[dict[str, Any]], llc_mapping: dict[str, str]) -> int:
    """Replace the tenant's cached directory and LLC mapping with these (one transaction, the caller's)."""
    conn.execute("DELETE FROM employee_directory")
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO employee_directory (employee_id, first_name, middle_name, last_name, preferred_name, details) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (
                    p["id"],
                    p["first_name"],
                    p.get("middle_name") or "",
                    p["last_name"],
                    p.get("preferred_name"),
                    Jsonb({k: v for k, v in p.items() if k not in ("id", "first_name", "middle_name", "last_name")}),
                )
                for p in people
            ],
        )
    conn.execute("DELETE FROM llc_mappings")
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO llc_mappings (llc_name, employee_id, created_by) VALUES (%s, %s, 'directory sync')",
            sorted(llc_mapping.items()),
        )
    return len(people)


def load_resolver(conn: psycopg.Connection) -> NameResolver:
    people = [
        Person(*row)
        for row in conn.execute(
            "SELECT employee_id, first_name, last_name, middle_name, preferred_name FROM employee_directory "
            "ORDER BY employee_id"
        )
    ]
    mapping = dict(conn.execute("SELECT llc_name, employee_id FROM llc_mappings").fetchall())
    return NameResolver(people, mapping)
