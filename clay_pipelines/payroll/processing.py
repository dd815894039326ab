"""One run over one payroll file, whatever launched it: what each outcome stores and records.

The asset decides the order (extract, check, store); every write a run makes is here, in the
caller's tenant transaction: the file version (store.py), the inbox sighting it settles
(sightings.py) and, for new work only, the platform's record of it through the ledger: one
process_payroll_pdf tool call, and for a version (stored, a duplicate or quarantined) an executions
row of domicile-governance whose governance_check waits for approval. An unchanged re-run records
nothing; a failed check records its tool call once per content and result.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from clay_pipelines.payroll import sightings, store
from clay_pipelines.payroll.checks import CheckOutcome
from clay_pipelines.payroll.model import Extraction
from clay_pipelines.payroll.triage import UnreadableDocument
from clay_pipelines.platform import ledger

TOOL = "process_payroll_pdf"
SYSTEM = "domicile-governance"


@dataclass(frozen=True, kw_only=True)
class FileRun:
    """The file version a run works on: the file's name, its content's SHA-256, when the run started."""

    source_file: str
    digest: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)  # for the tool call's duration

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def tool_input(self) -> dict[str, Any]:
        return {"source_file": self.source_file, "sha256": self.digest}


# ---------------------------------------------------------------------------------------------
# Failed checks: nothing is written but the tool call


def failed_checks(outcomes: list[CheckOutcome]) -> list[CheckOutcome]:
    return [o for o in outcomes if o.blocking and not o.passed]


def record_failed_checks(conn: psycopg.Connection, run: FileRun, failed: list[CheckOutcome]) -> None:
    """The content's sighting settles as failed; its tool call is written once per content and result."""
    detail = "; ".join(f"{o.name}: {o.detail}" for o in failed)
    if sightings.record_outcome(conn, run.source_file, run.digest, "failed_checks", detail):
        store.record_tool_call(conn, TOOL, run.tool_input(), run.elapsed_ms(), False, detail)


def failed_checks_message(source_file: str, failed: list[CheckOutcome]) -> str:
    return f"{source_file}: nothing written, " + "; ".join(f"{o.name} failed ({o.detail})" for o in failed)


# ---------------------------------------------------------------------------------------------
# Unreadable files


def record_quarantine(conn: psycopg.Connection, run: FileRun, error: UnreadableDocument) -> store.StoredVersion:
    """The unreadable content as a quarantined version (once per content), with its failed call and execution."""
    quarantined = store.store_quarantine(conn, run.source_file, run.digest, error.reason, error.detail)
    sightings.record_outcome(conn, run.source_file, run.digest, "quarantined", error.reason, quarantined.document_id)
    if not quarantined.unchanged:
        store.record_tool_call(conn, TOOL, run.tool_input(), run.elapsed_ms(), False, str(error))
        detail = {"quarantined": error.reason, "version": quarantined.version}
        _record_execution(conn, run, "failed", detail, str(error), quarantined.document_id)
    return quarantined


def move_to_quarantine(path: Path, quarantine: Path, run: FileRun) -> Path:
    """The file out of the inbox, under a name of its own per content (an earlier one is never overwritten).
    Called after the version is committed: if the move fails, the next run moves it (same name)."""
    target = quarantine / store.quarantine_name(run.source_file, run.digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
    return target


# ---------------------------------------------------------------------------------------------
# A readable file that passed its checks


def store_version(conn: psycopg.Connection, run: FileRun, extraction: Extraction) -> store.StoredVersion:
    """The extraction as the file's version (or the live version it equals), and the record of new work."""
    stored = store.store_extraction(conn, run.source_file, run.digest, extraction, store.load_resolver(conn))
    sightings.record_outcome(conn, run.source_file, run.digest, stored.status, document_id=stored.document_id)
    if not stored.unchanged:  # an unchanged re-run is no new work: no tool call, no execution recorded
        _record_new_version(conn, run, stored)
    return stored


def _record_new_version(conn: psycopg.Connection, run: FileRun, stored: store.StoredVersion) -> None:
    """A new version's tool call and executions row; a duplicate is a refused upload."""
    if stored.status == "duplicate":
        message = duplicate_message(stored)
        store.record_tool_call(conn, TOOL, run.tool_input(), run.elapsed_ms(), False, message)
        detail = {"duplicate_of": stored.duplicate_of.source_file, "version": stored.version}  # type: ignore[union-attr]
        _record_execution(conn, run, "failed", detail, message, stored.document_id)
        return
    summary = {"entries": stored.entries, "total_amount": float(stored.total_amount), "source_file": run.source_file}
    store.record_tool_call(conn, TOOL, summary, run.elapsed_ms(), True)
    detail = {**summary, "version": stored.version, "unresolved": stored.unresolved}
    _record_execution(conn, run, "success", detail, None, stored.document_id)


def duplicate_message(stored: store.StoredVersion) -> str:
    copied = stored.duplicate_of
    assert copied is not None
    if copied.live_in is not None:
        return (
            f"{stored.source_file}: the same content as {copied.live_in}, already stored; nothing stored for the copy "
            f"(remove it from the inbox)"
        )
    return (
        f"{stored.source_file}: a copy of {copied.source_file} version {copied.version}, which {copied.source_file} "
        f"has since replaced; nothing stored (remove the copy, or put it back as {copied.source_file})"
    )


def orphaned_copies_message(stored: store.StoredVersion) -> str | None:
    if not stored.orphaned_copies:
        return None
    return (
        f"{stored.source_file}: its previous content is live nowhere now, and these copies of it are left as "
        f"duplicates for a person to remove: {', '.join(stored.orphaned_copies)}"
    )


def _record_execution(
    conn: psycopg.Connection,
    run: FileRun,
    status: str,
    detail: dict[str, Any],
    error: str | None,
    document_id: UUID,
) -> None:
    """The version as an executions row of domicile-governance; its governance_check awaits approval."""
    system = conn.execute("SELECT id FROM systems WHERE name = %s", (SYSTEM,)).fetchone()
    governance = {
        "requires_approval": True,
        "action": "upload_payroll_entries",
        "approved_by": None,
        "approved_at": None,
        "reason": None,
        "gov_md_sections_checked": [],
    }
    execution_id = ledger.log_execution(
        conn,
        ledger.ExecutionRecord(
            system_id=system[0] if system else None,
            system_name=SYSTEM,
            user_request=f"Process payroll PDF {run.source_file}",
            routing_path=[system[0]] if system else [],
            input_data={"source_file": run.source_file, "document_id": str(document_id)},
            output_data=detail,
            governance_check=governance,
            status=status,
            error_message=error,
            started_at=run.started_at,
            completed_at=datetime.now(UTC),
        ),
    )
    store.link_execution(conn, document_id, execution_id)


# ---------------------------------------------------------------------------------------------
# A file that has left the inbox


@dataclass(frozen=True, kw_only=True)
class GoneFile:
    """A file no longer in the inbox (quarantined, removed): a state to report, not a failure."""

    source_file: str
    copy_retired: bool  # a duplicate that left: its record stops being live
    state: store.FileState | None  # None: nothing was ever stored for it

    def description(self) -> str:
        quarantined = self.state is not None and self.state.latest_status == "quarantined"
        where = "moved to quarantine" if quarantined else "no longer in the inbox"
        return f"{self.source_file}: {where}; " + (self.state.describe() if self.state else "nothing was stored for it")


def file_gone(conn: psycopg.Connection, source_file: str) -> GoneFile:
    retired = store.retire_removed_copy(conn, source_file)
    states = store.file_states(conn, source_file)
    return GoneFile(source_file=source_file, copy_retired=retired, state=states[0] if states else None)
