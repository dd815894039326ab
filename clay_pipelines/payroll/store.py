"""Writing a payroll file version to the database: one transaction per version, idempotent.

  * A file has at most one live version, and it is always its current bytes': the same content as
    the live version (same tenant, file name, SHA-256 and extraction) changes nothing; any other
    content, including an earlier one put back, is a new version. The live version's entries move to
    payroll_entry_history with the reason, and the new entries take their place.
  * A renamed copy, content already live in another file of the tenant, is a 'duplicate' version
    naming the version it copies: no entries, no deliveries. If that content later stops being live
    (its file gets new content), the copy is not promoted: it stays a duplicate, reported as
    orphaned, for a person to remove or to put back where it belongs.
  * Every entry is written with its natural key (tenant, source_file, line_no) and, in the same
    transaction, its BambooHR delivery is queued in the outbox: awaiting approval when its payee is
    resolved, awaiting review when not (the review queue gets a row with the candidates).
  * An unreadable file is a quarantined version with its reason, and no entries; it does not replace
    the live version (a broken replacement keeps the last good entries until a readable one comes).
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
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from clay_pipelines.payroll.model import Extraction
from clay_pipelines.payroll.names import NameResolver, Person, Resolution
from clay_pipelines.payroll.sightings import lock_file
from clay_pipelines.platform import ledger

LOW_CONFIDENCE_REASON = "low confidence: read by OCR, confirm it against the scan"
UNRESOLVED_EMPLOYEE = "UNRESOLVED"  # employee_id is NOT NULL; the review queue says who it might be


def content_hash(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def quarantine_name(source_file: str, digest: str) -> str:
    """A quarantined file's name: one per content, so a later quarantined version never overwrites an earlier one."""
    path = Path(source_file)
    return f"{path.stem}.{digest[:16]}{path.suffix}"


@dataclass(frozen=True, kw_only=True)
class Copied:
    """What a duplicate copies: the version it was found to copy, and which file holds that content live now."""

    source_file: str
    version: int
    live_in: str | None  # None: the content is live in no file any more (the copy is orphaned)


@dataclass(frozen=True, kw_only=True)
class StoredVersion:
    document_id: UUID
    source_file: str
    version: int
    status: str
    unchanged: bool  # this exact content (and extraction) was already the live version
    entries: int
    total_amount: Decimal
    unresolved: int
    replaced_entries: int
    duplicate_of: Copied | None = None
    orphaned_copies: tuple[str, ...] = ()  # copies whose content this version stopped being live


@dataclass(frozen=True, kw_only=True)
class _Live:
    id: UUID
    version: int
    status: str
    content_hash: str
    extraction_digest: str
    entry_count: int
    total_amount: Decimal
    duplicate_of: UUID | None

    def holds(self, digest: str, read_digest: str) -> bool:
        """This content, read this way, is already what the live version is (a copy stays a copy)."""
        return self.content_hash == digest and (self.status == "duplicate" or self.extraction_digest == read_digest)


def _lock_contents(conn: psycopg.Connection, *digests: str | None) -> None:
    """Serialise on contents: two copies of one content must not both find it live nowhere, and a copy must not
    be recorded against a content another run is retiring. Taken after the file lock, in sorted order, so two
    runs never wait on each other in a circle."""
    for digest in sorted({d for d in digests if d}):
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_setting('app.tenant_id', true) || '#' || %s))", (digest,)
        )


def extraction_digest(extraction: Extraction) -> str:
    """What was read from a file, as a digest: the same bytes read differently are a new version."""
    canonical = json.dumps([e.as_json() for e in extraction.entries], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _live_version(conn: psycopg.Connection, source_file: str) -> _Live | None:
    with conn.cursor(row_factory=class_row(_Live)) as cursor:
        return cursor.execute(
            "SELECT id, version, status, content_hash, extraction_digest, entry_count, "
            "coalesce(total_amount, 0) AS total_amount, duplicate_of "
            "FROM payroll_documents WHERE source_file = %s AND status IN ('extracted', 'duplicate')",
            (source_file,),
        ).fetchone()


def _live_holder(conn: psycopg.Connection, digest: str, other_than: str) -> tuple[UUID, str, int] | None:
    """The live version of another file with this content, if any (the earliest received)."""
    return conn.execute(
        "SELECT id, source_file, version FROM payroll_documents "
        "WHERE content_hash = %s AND status = 'extracted' AND source_file <> %s "
        "ORDER BY received_at, source_file LIMIT 1",
        (digest, other_than),
    ).fetchone()


def _copied(conn: psycopg.Connection, source_file: str, digest: str, duplicate_of: UUID | None) -> Copied:
    recorded = conn.execute(
        "SELECT source_file, version FROM payroll_documents WHERE id = %s", (duplicate_of,)
    ).fetchone()
    holder = _live_holder(conn, digest, source_file)
    return Copied(source_file=recorded[0], version=recorded[1], live_in=holder[1] if holder else None)


def _unresolved(conn: psycopg.Connection, document_id: UUID) -> int:
    return conn.execute(
        "SELECT count(*) FROM payroll_entries WHERE document_id = %s AND employee_id = %s",
        (document_id, UNRESOLVED_EMPLOYEE),
    ).fetchone()[0]


def _unchanged(conn: psycopg.Connection, source_file: str, live: _Live) -> StoredVersion:
    copied = _copied(conn, source_file, live.content_hash, live.duplicate_of) if live.status == "duplicate" else None
    return StoredVersion(
        document_id=live.id,
        source_file=source_file,
        version=live.version,
        status=live.status,
        unchanged=True,
        entries=live.entry_count,
        total_amount=live.total_amount,
        unresolved=_unresolved(conn, live.id),
        replaced_entries=0,
        duplicate_of=copied,
    )


def _retire(conn: psycopg.Connection, live: _Live | None, version: int) -> None:
    """The live version stops being live (first, so the new one can take its place under the one-live index)."""
    if live is not None:
        conn.execute(
            "UPDATE payroll_documents SET status = 'superseded', superseded_at = now(), superseded_reason = %s "
            "WHERE id = %s",
            (f"version {live.version} replaced by version {version}", live.id),
        )


def _move_to_history(conn: psycopg.Connection, live: _Live | None, new_document: UUID, reason: str) -> int:
    if live is None or live.status != "extracted":
        return 0
    moved = conn.execute(
        """
        INSERT INTO payroll_entry_history (entry, document_id, replaced_by_document_id, reason)
        SELECT to_jsonb(e) || jsonb_build_object('outbox_status', o.status, 'remote_row_id', o.remote_row_id),
               e.document_id, %s, %s
        FROM payroll_entries e LEFT JOIN bamboohr_outbox o ON o.entry_id = e.id
        WHERE e.document_id = %s
        """,
        (new_document, reason, live.id),
    ).rowcount
    conn.execute("DELETE FROM payroll_entries WHERE document_id = %s", (live.id,))
    return moved


def _orphaned_copies(conn: psycopg.Connection, live: _Live | None) -> tuple[str, ...]:
    """Duplicates of the content a file just stopped holding, now that it is live nowhere."""
    if live is None or live.status != "extracted":
        return ()
    rows = conn.execute(
        "SELECT c.source_file FROM payroll_documents c WHERE c.status = 'duplicate' AND c.content_hash = %s "
        "AND NOT EXISTS (SELECT 1 FROM payroll_documents o WHERE o.status = 'extracted' AND o.content_hash = %s) "
        "ORDER BY 1",
        (live.content_hash, live.content_hash),
    ).fetchall()
    return tuple(r[0] for r in rows)


def _next_version(conn: psycopg.Connection, source_file: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM payroll_documents WHERE source_file = %s", (source_file,)
    ).fetchone()
    return int(row[0])


def _earlier_version_with(conn: psycopg.Connection, source_file: str, digest: str) -> int | None:
    row = conn.execute(
        "SELECT max(version) FROM payroll_documents WHERE source_file = %s AND content_hash = %s AND status <> "
        "'quarantined'",
        (source_file, digest),
    ).fetchone()
    return row[0]


def _replacement_reason(
    conn: psycopg.Connection, source_file: str, digest: str, version: int, live: _Live | None, extraction: Extraction
) -> str:
    if live is not None and live.content_hash == digest:
        return (
            f"re-extracted as version {version} of {source_file}: same content, different result "
            f"(template {extraction.template or 'generic'})"
        )
    why = f"replaced by version {version} of {source_file} (content sha256 {digest[:12]}"
    earlier = _earlier_version_with(conn, source_file, digest)
    return why + (f", the content of version {earlier} again)" if earlier else ")")


def store_extraction(
    conn: psycopg.Connection,
    source_file: str,
    digest: str,
    extraction: Extraction,
    resolver: NameResolver,
) -> StoredVersion:
    lock_file(conn, source_file)
    live = _live_version(conn, source_file)
    _lock_contents(conn, digest, live.content_hash if live else None)
    read_digest = extraction_digest(extraction)
    if live is not None and live.holds(digest, read_digest):
        return _unchanged(conn, source_file, live)
    version = _next_version(conn, source_file)
    reextracting = live is not None and live.content_hash == digest
    holder = None if reextracting else _live_holder(conn, digest, source_file)
    if holder is not None:
        return _store_duplicate(conn, source_file, digest, version, live, holder)

    total = sum((e.amount for e in extraction.entries), Decimal(0))
    why = _replacement_reason(conn, source_file, digest, version, live, extraction)
    _retire(conn, live, version)
    document_id = _insert_version(conn, source_file, digest, read_digest, version, extraction, total)
    replaced = _move_to_history(conn, live, document_id, why)
    unresolved = _insert_entries(conn, source_file, document_id, extraction, resolver)
    return StoredVersion(
        document_id=document_id,
        source_file=source_file,
        version=version,
        status="extracted",
        unchanged=False,
        entries=len(extraction.entries),
        total_amount=total,
        unresolved=unresolved,
        replaced_entries=replaced,
        orphaned_copies=_orphaned_copies(conn, live),
    )


def _insert_version(
    conn: psycopg.Connection,
    source_file: str,
    digest: str,
    read_digest: str,
    version: int,
    extraction: Extraction,
    total: Decimal,
) -> UUID:
    """The new live version's payroll_documents row."""
    return conn.execute(
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
            extraction.printed_totals[-1].amount if extraction.printed_totals else None,
            Jsonb(extraction.warnings),
        ),
    ).fetchone()[0]


def _store_duplicate(
    conn: psycopg.Connection,
    source_file: str,
    digest: str,
    version: int,
    live: _Live | None,
    holder: tuple[UUID, str, int],
) -> StoredVersion:
    original_id, original_file, original_version = holder
    _retire(conn, live, version)
    document_id = conn.execute(
        "INSERT INTO payroll_documents (source_file, content_hash, version, status, duplicate_of) "
        "VALUES (%s, %s, %s, 'duplicate', %s) RETURNING id",
        (source_file, digest, version, original_id),
    ).fetchone()[0]
    why = (
        f"replaced by version {version} of {source_file}, a copy of {original_file} version {original_version} "
        f"(content sha256 {digest[:12]})"
    )
    replaced = _move_to_history(conn, live, document_id, why)
    return StoredVersion(
        document_id=document_id,
        source_file=source_file,
        version=version,
        status="duplicate",
        unchanged=False,
        entries=0,
        total_amount=Decimal(0),
        unresolved=0,
        replaced_entries=replaced,
        duplicate_of=Copied(source_file=original_file, version=original_version, live_in=original_file),
        orphaned_copies=_orphaned_copies(conn, live),
    )


def _insert_entries(
    conn: psycopg.Connection, source_file: str, document_id: UUID, extraction: Extraction, resolver: NameResolver
) -> int:
    """The version's entries, each with its outbox row (and review-queue row); returns how many are unresolved."""
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
        if not resolution.resolved or entry.low_confidence:
            unresolved += not resolution.resolved
            reasons = [] if resolution.resolved else [resolution.reason]
            reasons += [LOW_CONFIDENCE_REASON] if entry.low_confidence else []
            conn.execute(
                "INSERT INTO payroll_review_queue (entry_id, printed_name, reason, candidates, needs_confirmation) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    entry_id,
                    entry.employee_name,
                    "; ".join(r for r in reasons if r),
                    Jsonb([asdict(c) for c in resolution.candidates]),
                    entry.low_confidence,
                ),
            )
        conn.execute(
            "INSERT INTO bamboohr_outbox (entry_id, document_id, payload, status) VALUES (%s, %s, %s, %s)",
            (
                entry_id,
                document_id,
                Jsonb(_bamboohr_row(entry, employee_id)),
                "awaiting_approval" if resolution.resolved and not entry.low_confidence else "awaiting_review",
            ),
        )
    return unresolved


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
    """An unreadable content: a quarantined version, unless it already is the file's latest version."""
    lock_file(conn, source_file)
    latest = conn.execute(
        "SELECT id, version, status, content_hash FROM payroll_documents WHERE source_file = %s "
        "ORDER BY version DESC LIMIT 1",
        (source_file,),
    ).fetchone()
    if latest is not None and latest[2] == "quarantined" and latest[3] == digest:
        return _quarantined(latest[0], source_file, latest[1], unchanged=True)
    version = _next_version(conn, source_file)
    document_id = conn.execute(
        """
        INSERT INTO payroll_documents (source_file, content_hash, version, status, quarantine_reason, quarantine_detail,
                                       quarantined_as)
        VALUES (%s, %s, %s, 'quarantined', %s, %s, %s) RETURNING id
        """,
        (source_file, digest, version, reason, detail, quarantine_name(source_file, digest)),
    ).fetchone()[0]
    return _quarantined(document_id, source_file, version, unchanged=False)


def _quarantined(document_id: UUID, source_file: str, version: int, *, unchanged: bool) -> StoredVersion:
    return StoredVersion(
        document_id=document_id,
        source_file=source_file,
        version=version,
        status="quarantined",
        unchanged=unchanged,
        entries=0,
        total_amount=Decimal(0),
        unresolved=0,
        replaced_entries=0,
    )


def retire_removed_copy(conn: psycopg.Connection, source_file: str) -> bool:
    """A duplicate whose file has left the inbox is dealt with: it stops being the file's live version.
    (A removed file's extracted version stays live: its entries are the record, the inbox only a drop folder.)"""
    lock_file(conn, source_file)
    return (
        conn.execute(
            "UPDATE payroll_documents SET status = 'superseded', superseded_at = now(), "
            "superseded_reason = 'the copy left the inbox' WHERE source_file = %s AND status = 'duplicate'",
            (source_file,),
        ).rowcount
        > 0
    )


# ---------------------------------------------------------------------------------------------
# A file's state, for a run whose file has gone and for the listing of what waits for a person


@dataclass(frozen=True, kw_only=True)
class FileState:
    source_file: str
    latest_version: int
    latest_status: str
    quarantine_reason: str | None
    quarantined_as: str | None
    latest_note: str | None  # why the latest version stopped being live, when it did
    live_version: int | None
    live_status: str | None
    approval_status: str | None
    entries: int
    open_reviews: int
    duplicate_of: Copied | None

    def describe(self) -> str:
        """The state in a sentence."""
        parts = []
        if self.latest_status == "quarantined":
            parts.append(
                f"version {self.latest_version} quarantined ({self.quarantine_reason}) as {self.quarantined_as}"
            )
        if self.live_status == "extracted":
            reviews = f", {self.open_reviews} name(s) to review" if self.open_reviews else ""
            parts.append(
                f"version {self.live_version} live: {self.entries} entries, approval {self.approval_status}{reviews}"
            )
        elif self.live_status == "duplicate" and self.duplicate_of is not None:
            copied = self.duplicate_of
            if copied.live_in is not None:
                parts.append(f"version {self.live_version} duplicates {copied.live_in}: nothing stored")
            else:
                parts.append(
                    f"version {self.live_version} copies {copied.source_file} version {copied.version}, whose content "
                    "is live in no file now: nothing stored"
                )
        elif self.latest_status == "superseded":
            parts.append(f"no live version (version {self.latest_version}: {self.latest_note})")
        elif self.live_status is None:
            parts.append("no live version")
        return "; ".join(parts)

    def needs(self) -> str | None:
        """What a person has to do about the file, or None."""
        todo = []
        if self.latest_status == "quarantined":
            todo.append("fix the file and drop it in the inbox again")
        copied = self.duplicate_of
        if self.live_status == "duplicate" and copied is not None:
            todo.append(
                f"remove the copy ({copied.live_in} holds this content)"
                if copied.live_in is not None
                else f"remove the copy, or put its content back as {copied.source_file}"
            )
        if self.live_status == "extracted" and self.approval_status == "awaiting":
            todo.append("approve or reject")
        if self.open_reviews and self.approval_status != "rejected":
            todo.append(f"resolve {self.open_reviews} name(s)")
        return "; ".join(todo) or None


def file_states(conn: psycopg.Connection, source_file: str | None = None) -> list[FileState]:
    """Every payroll file of the tenant (or one), by name: its latest version and its live one."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            """
            WITH latest AS (
              SELECT DISTINCT ON (source_file) source_file, version, status, quarantine_reason, quarantined_as,
                     superseded_reason
              FROM payroll_documents WHERE %(file)s::text IS NULL OR source_file = %(file)s
              ORDER BY source_file, version DESC
            )
            SELECT l.source_file, l.version AS latest_version, l.status AS latest_status, l.quarantine_reason,
                   l.quarantined_as, l.superseded_reason AS latest_note, v.version AS live_version,
                   v.status AS live_status, v.approval_status, coalesce(v.entry_count, 0) AS entries,
                   (SELECT count(*) FROM payroll_review_queue q JOIN payroll_entries e ON e.id = q.entry_id
                    WHERE e.document_id = v.id AND q.status = 'open') AS open_reviews,
                   v.content_hash AS live_hash, v.duplicate_of AS live_duplicate_of
            FROM latest l
            LEFT JOIN payroll_documents v ON v.source_file = l.source_file AND v.status IN ('extracted', 'duplicate')
            ORDER BY l.source_file
            """,
            {"file": source_file},
        ).fetchall()
    return [_file_state(conn, row) for row in rows]


def _file_state(conn: psycopg.Connection, row: dict[str, Any]) -> FileState:
    digest, duplicate_of = row.pop("live_hash"), row.pop("live_duplicate_of")
    is_copy = row["live_status"] == "duplicate"
    return FileState(**row, duplicate_of=_copied(conn, row["source_file"], digest, duplicate_of) if is_copy else None)


def link_execution(conn: psycopg.Connection, document_id: UUID, execution_id: UUID) -> None:
    """The version's executions row, where its approval is recorded too."""
    conn.execute("UPDATE payroll_documents SET execution_id = %s WHERE id = %s", (execution_id, document_id))


def record_tool_call(
    conn: psycopg.Connection,
    tool_name: str,
    input_data: dict[str, Any],
    execution_time_ms: float,
    success: bool,
    error_message: str | None = None,
) -> None:
    """The MCP telemetry row of a payroll tool step (server domicile-governance). Callers write one per new
    outcome (a new version, a new failure), never for an unchanged re-run."""
    ledger.log_tool_call(
        conn,
        ledger.ToolCall(
            server_name="domicile-governance",
            tool_name=tool_name,
            input_data=input_data,
            execution_time_ms=execution_time_ms,
            success=success,
            error_message=error_message,
        ),
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


@dataclass(frozen=True, kw_only=True)
class DirectoryFile:
    """A tenant's directory kept as files (when BambooHR is not its source): <tenant>.json, a list of
    people, and optionally <tenant>.llc.json, LLC name -> employee id."""

    tenant_ref: str  # the tenant's name, domain or id
    people: list[dict[str, Any]]
    llc_mapping: dict[str, str]


def directory_files(folder: Path) -> list[DirectoryFile]:
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".llc.json"):
            continue
        llc_path = path.with_name(f"{path.stem}.llc.json")
        found.append(
            DirectoryFile(
                tenant_ref=path.stem,
                people=json.loads(path.read_text()),
                llc_mapping=json.loads(llc_path.read_text()) if llc_path.exists() else {},
            )
        )
    return found


def cached_llc_mapping(conn: psycopg.Connection) -> dict[str, str]:
    """The tenant's cached LLC mapping: LLC name -> employee id."""
    return dict(conn.execute("SELECT llc_name, employee_id FROM llc_mappings").fetchall())


def load_resolver(conn: psycopg.Connection) -> NameResolver:
    with conn.cursor(row_factory=class_row(Person)) as cursor:
        people = cursor.execute(
            "SELECT employee_id, first_name, last_name, middle_name, preferred_name FROM employee_directory "
            "ORDER BY employee_id"
        ).fetchall()
    return NameResolver(people, cached_llc_mapping(conn))
