"""What the payroll inbox has shown and what was done with it, shared by the inbox sensor and `clay run`.

Every content seen for a file is a sighting numbered per file (1, 2, ...: the file's content
changes, so a file put back to an earlier content is a new sighting with a new number). A run that
finishes with a sighting, whatever the outcome, marks it processed. The sensor asks for a run only
for a file whose current sighting is unprocessed, with the run key `<tenant>/<file>@<sha256>@<seq>`:
a file `clay run` already handled is not run again when the UI starts, and an earlier content put
back runs again because its sequence number is new.
Callers pass a connection inside a tenant transaction; nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

OUTCOMES = ("extracted", "duplicate", "quarantined", "failed_checks")


@dataclass(frozen=True, kw_only=True)
class Sighting:
    source_file: str
    seq: int
    content_hash: str
    processed: bool
    outcome: str | None
    detail: str | None
    document_id: UUID | None = None


def lock_file(conn: psycopg.Connection, source_file: str) -> None:
    """Everything about one file of one tenant serialises here (the tenant is in the key through the setting)."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(current_setting('app.tenant_id', true) || '/' || %s))",
        (source_file,),
    )


def _latest(conn: psycopg.Connection, source_file: str) -> Sighting | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "SELECT seq, content_hash, processed_at IS NOT NULL AS processed, outcome, detail, document_id "
            "FROM payroll_file_sightings WHERE source_file = %s ORDER BY seq DESC LIMIT 1",
            (source_file,),
        ).fetchone()
    return Sighting(source_file=source_file, **row) if row else None


def observe(conn: psycopg.Connection, source_file: str, digest: str) -> Sighting:
    """The file's current sighting for this content: the latest one if the content is the same, else a new one."""
    lock_file(conn, source_file)
    latest = _latest(conn, source_file)
    if latest is not None and latest.content_hash == digest:
        return latest
    seq = 1 if latest is None else latest.seq + 1
    conn.execute(
        "INSERT INTO payroll_file_sightings (source_file, seq, content_hash) VALUES (%s, %s, %s)",
        (source_file, seq, digest),
    )
    return Sighting(source_file=source_file, seq=seq, content_hash=digest, processed=False, outcome=None, detail=None)


def observe_all(conn: psycopg.Connection, digests: dict[str, str]) -> dict[str, Sighting]:
    """observe() for each file name -> content hash, in name order (a stable lock order)."""
    return {name: observe(conn, name, digests[name]) for name in sorted(digests)}


def record_outcome(
    conn: psycopg.Connection,
    source_file: str,
    digest: str,
    outcome: str,
    detail: str | None = None,
    document_id: UUID | None = None,
) -> bool:
    """Mark the file's sighting of this content processed; True when the outcome differs from the one recorded."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown sighting outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
    sighting = observe(conn, source_file, digest)
    if sighting.processed and (sighting.outcome, sighting.detail, sighting.document_id) == (
        outcome,
        detail,
        document_id,
    ):
        return False
    conn.execute(
        "UPDATE payroll_file_sightings SET processed_at = now(), outcome = %s, detail = %s, document_id = %s "
        "WHERE source_file = %s AND seq = %s",
        (outcome, detail, document_id, source_file, sighting.seq),
    )
    return True
