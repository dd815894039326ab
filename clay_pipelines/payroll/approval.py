"""ARM mode for payroll: a file version's entries are delivered to BambooHR only after someone
approves it, and an unresolved payee only after someone says who it is.

The approval is stored on the document version and in the governance_check of the file's
executions row (requires_approval, approved_by, approved_at, reason, gov_md_sections_checked), as
the platform records every ARM decision. Approving moves the version's resolved deliveries to
'pending' (the delivery sensor's queue); rejecting marks them 'rejected'. Deliveries still waiting
for a name review stay where they are and become pending when resolved, if the file is approved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.payroll.store import UNRESOLVED_EMPLOYEE, FileState, file_states
from clay_pipelines.platform import ledger

GOV_MD_SECTIONS = ["4.2", "7.1"]  # writes to a system of record; payroll approvals


class ApprovalError(ValueError):
    """An approval or resolution that cannot be applied, said in a sentence."""


@dataclass(frozen=True, kw_only=True)
class ApprovalOutcome:
    document_id: UUID
    source_file: str
    version: int
    decision: str
    deliveries_released: int
    deliveries_waiting_for_review: int


def decide_document(
    conn: psycopg.Connection, source_file: str, by: str, approve: bool, reason: str | None = None
) -> ApprovalOutcome:
    _require_email(by, "approver")
    document_id, version, execution_id = _awaiting_version(conn, source_file)
    decision = "approved" if approve else "rejected"
    conn.execute(
        "UPDATE payroll_documents SET approval_status = %s, approved_by = %s, approved_at = now(), "
        "approval_reason = %s WHERE id = %s",
        (decision, by, reason, document_id),
    )
    if execution_id is not None:
        ledger.record_governance_decision(
            conn, execution_id, _governance_decision(decision, by, reason), blocked=not approve
        )
    released, waiting = _release_deliveries(conn, document_id, approve)
    return ApprovalOutcome(
        document_id=document_id,
        source_file=source_file,
        version=version,
        decision=decision,
        deliveries_released=released,
        deliveries_waiting_for_review=waiting,
    )


def _require_email(by: str, who: str) -> None:
    if "@" not in by:
        raise ApprovalError(f"the {who} is named by an email address, got {by!r}")


def _awaiting_version(conn: psycopg.Connection, source_file: str) -> tuple[UUID, int, UUID | None]:
    """The file's live version, locked, if it still awaits a decision: (document, version, its execution)."""
    row = conn.execute(
        "SELECT id, version, approval_status, execution_id FROM payroll_documents "
        "WHERE source_file = %s AND status = 'extracted' FOR UPDATE",
        (source_file,),
    ).fetchone()
    if row is None:
        raise ApprovalError(_nothing_to_decide(conn, source_file))
    document_id, version, status, execution_id = row
    if status != "awaiting":
        raise ApprovalError(f"{source_file} version {version} was already {status}")
    return document_id, version, execution_id


def _governance_decision(decision: str, by: str, reason: str | None) -> dict[str, Any]:
    """The decision as the executions row's governance_check records every ARM decision."""
    approved = decision == "approved"
    decided_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "requires_approval": True,
        "decision": decision,
        "approved_by": by if approved else None,
        "approved_at": decided_at if approved else None,
        "rejected_by": None if approved else by,
        "rejected_at": None if approved else decided_at,
        "reason": reason,
        "gov_md_sections_checked": GOV_MD_SECTIONS,
    }


def _release_deliveries(conn: psycopg.Connection, document_id: UUID, approve: bool) -> tuple[int, int]:
    """Approved: the resolved deliveries become pending, those awaiting a name review keep waiting.
    Rejected: every one is rejected. Returns (released or rejected, still waiting for review)."""
    released = conn.execute(
        "UPDATE bamboohr_outbox SET status = %s WHERE document_id = %s AND status = 'awaiting_approval'",
        ("pending" if approve else "rejected", document_id),
    ).rowcount
    if approve:
        waiting = conn.execute(
            "SELECT count(*) FROM bamboohr_outbox WHERE document_id = %s AND status = 'awaiting_review'",
            (document_id,),
        ).fetchone()[0]
        return released, waiting
    conn.execute(
        "UPDATE bamboohr_outbox SET status = 'rejected' WHERE document_id = %s AND status = 'awaiting_review'",
        (document_id,),
    )
    return released, 0


def _nothing_to_decide(conn: psycopg.Connection, source_file: str) -> str:
    states = file_states(conn, source_file)
    if not states:
        return f"no extracted payroll file named {source_file!r} for this tenant"
    return f"{source_file} has nothing to approve: {states[0].describe()}"


def pending(conn: psycopg.Connection, everything: bool = False) -> list[FileState]:
    """The tenant's payroll files that wait for a person (approval, name review, a duplicate, a quarantined
    version), or every file with everything=True."""
    return [s for s in file_states(conn) if everything or s.needs()]


def resolve_entry(conn: psycopg.Connection, entry_id: UUID, employee_id: str, by: str) -> str:
    """Say who an unresolved payee is; returns the delivery's new status."""
    _require_email(by, "reviewer")
    review = conn.execute(
        "SELECT q.id, q.status, d.approval_status, q.needs_confirmation AND q.confirmed_at IS NULL "
        "FROM payroll_review_queue q "
        "JOIN payroll_entries e ON e.id = q.entry_id JOIN payroll_documents d ON d.id = e.document_id "
        "WHERE q.entry_id = %s FOR UPDATE OF q",
        (entry_id,),
    ).fetchone()
    if review is None:
        raise ApprovalError(f"entry {entry_id} is not in the review queue")
    if review[1] != "open":
        raise ApprovalError(f"entry {entry_id} was already resolved")
    person = conn.execute(
        "SELECT first_name || ' ' || last_name FROM employee_directory WHERE employee_id = %s", (employee_id,)
    ).fetchone()
    if person is None:
        raise ApprovalError(f"no employee {employee_id!r} in this tenant's directory")
    conn.execute(
        "UPDATE payroll_entries SET employee_id = %s, employee_name = %s, updated_at = now(), "
        "resolution = %s WHERE id = %s",
        (employee_id, person[0], Jsonb({"method": "manual", "by": by}), entry_id),
    )
    unconfirmed = review[3]  # read by OCR and not yet confirmed: named now, still waiting
    conn.execute(
        "UPDATE payroll_review_queue SET status = %s, resolved_employee_id = %s, resolved_by = %s, "
        "resolved_at = now() WHERE id = %s",
        ("open" if unconfirmed else "resolved", employee_id, by, review[0]),
    )
    new_status = "awaiting_review" if unconfirmed else _released_status(review[2])
    conn.execute(
        "UPDATE bamboohr_outbox SET status = %s, payload = payload || %s WHERE entry_id = %s",
        (new_status, Jsonb({"employee_id": employee_id}), entry_id),
    )
    return new_status


def _released_status(approval_status: str) -> str:
    """An entry no person still has to look at: delivered once the file is approved."""
    return {"approved": "pending", "rejected": "rejected"}.get(approval_status, "awaiting_approval")


@dataclass(frozen=True, kw_only=True)
class ConfirmOutcome:
    source_file: str
    version: int
    confirmed: int
    released: int  # deliveries no longer waiting for a person (pending, or awaiting the file's approval)
    waiting_for_name: int  # confirmed, but the payee is still to be named (clay payroll resolve)


def confirm_entries(
    conn: psycopg.Connection, source_file: str, by: str, entry_id: UUID | None = None
) -> ConfirmOutcome:
    """A person confirms low-confidence entries (read by OCR) of the file's live version: all of them, or one.
    Confirmed entries whose payee is known leave the review queue; their delivery follows the file's approval."""
    _require_email(by, "confirmer")
    row = conn.execute(
        "SELECT id, version, approval_status FROM payroll_documents WHERE source_file = %s AND status = 'extracted' "
        "FOR UPDATE",
        (source_file,),
    ).fetchone()
    if row is None:
        raise ApprovalError(_nothing_to_decide(conn, source_file))
    document_id, version, approval_status = row
    open_rows = conn.execute(
        "SELECT q.id, q.entry_id, q.resolved_employee_id IS NOT NULL OR e.employee_id <> %s "
        "FROM payroll_review_queue q JOIN payroll_entries e ON e.id = q.entry_id "
        "WHERE e.document_id = %s AND q.needs_confirmation AND q.confirmed_at IS NULL "
        "AND (%s::uuid IS NULL OR q.entry_id = %s::uuid) FOR UPDATE OF q",
        (UNRESOLVED_EMPLOYEE, document_id, entry_id, entry_id),
    ).fetchall()
    if not open_rows:
        what = f"entry {entry_id}" if entry_id else "no entry"
        raise ApprovalError(f"{source_file} version {version}: {what} waiting for confirmation")
    released = waiting = 0
    for queue_id, queued_entry, named in open_rows:
        conn.execute(
            "UPDATE payroll_review_queue SET confirmed_by = %s, confirmed_at = now(), status = %s WHERE id = %s",
            (by, "resolved" if named else "open", queue_id),
        )
        if named:
            released += conn.execute(
                "UPDATE bamboohr_outbox SET status = %s WHERE entry_id = %s AND status = 'awaiting_review'",
                (_released_status(approval_status), queued_entry),
            ).rowcount
        else:
            waiting += 1
    return ConfirmOutcome(
        source_file=source_file, version=version, confirmed=len(open_rows), released=released, waiting_for_name=waiting
    )
