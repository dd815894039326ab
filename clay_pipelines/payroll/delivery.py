"""Delivering approved payroll entries from the outbox to BambooHR, and checking BambooHR against
payroll_entries afterwards.

One delivery run per tenant at a time (an advisory lock held for the run). Each row's outcome is
committed on its own right after its HTTP call: delivered (with BambooHR's row id, or adopted from
an ambiguous earlier attempt), dead letter (a final 4xx, with the reason), or pending again with a
later next_attempt_at. Every row sent carries the entry's id in its comment, so reconciliation and
adoption match exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from clay_pipelines.db import Database
from clay_pipelines.payroll import store
from clay_pipelines.payroll.bamboohr import BambooHRClient, DeliveryFailed

RETRY_LATER = timedelta(minutes=10)


def bamboohr_row(payload: dict[str, Any], entry_id: UUID) -> dict[str, str]:
    comment = f"{payload.get('reference') or ''} [clay:{entry_id}]".strip()
    return {
        "date": payload.get("date") or "",
        "amount": payload["amount"],
        "currency": payload.get("currency") or "",
        "comment": comment,
    }


@dataclass
class DeliveryReport:
    delivered: int = 0
    adopted: int = 0
    dead_letters: int = 0
    retry_later: int = 0
    total_amount: Decimal = Decimal(0)
    errors: list[str] = field(default_factory=list)


def due_deliveries(conn: psycopg.Connection) -> tuple[int, str]:
    """Deliveries pending and due now in the transaction's scope (a tenant, or every tenant for a
    maintenance job): how many, and the newest id (so that a new state of the queue is a new value)."""
    count, newest = conn.execute(
        "SELECT count(*), coalesce(max(id::text), '') FROM bamboohr_outbox "
        "WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
    ).fetchone()
    return int(count), newest


def deliver_pending(db: Database, tenant_id: UUID, client: BambooHRClient, limit: int = 500) -> DeliveryReport:
    report = DeliveryReport()
    started = time.perf_counter()
    with db.tenant_transaction(tenant_id) as lock:
        lock.execute("SELECT pg_advisory_xact_lock(hashtext('bamboohr-delivery/' || %s))", (str(tenant_id),))
        for outbox_id, entry_id, payload in _due_rows(db, tenant_id, limit):
            _deliver_one(db, tenant_id, client, report, outbox_id, entry_id, payload)
        with db.tenant_transaction(tenant_id) as conn:
            store.record_tool_call(
                conn,
                "upload_payroll_entries",
                {
                    "entries": report.delivered,
                    "total_amount": float(report.total_amount),
                    "dead_letters": report.dead_letters,
                    "retry_later": report.retry_later,
                },
                (time.perf_counter() - started) * 1000,
                not report.errors,
                "; ".join(report.errors[:5]) or None,
            )
    return report


def _due_rows(db: Database, tenant_id: UUID, limit: int) -> list[tuple[UUID, UUID, dict[str, Any]]]:
    with db.tenant_transaction(tenant_id) as conn:
        return conn.execute(
            """
            SELECT o.id, o.entry_id, o.payload FROM bamboohr_outbox o
            WHERE o.status = 'pending' AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
            ORDER BY o.created_at, o.id LIMIT %s
            """,
            (limit,),
        ).fetchall()


def _deliver_one(
    db: Database,
    tenant_id: UUID,
    client: BambooHRClient,
    report: DeliveryReport,
    outbox_id: UUID,
    entry_id: UUID,
    payload: dict[str, Any],
) -> None:
    """One row to BambooHR, its outcome committed right after the call: delivered, a dead letter (final),
    or pending again later."""
    try:
        result = client.add_row(payload["employee_id"], bamboohr_row(payload, entry_id))
    except DeliveryFailed as error:
        with db.tenant_transaction(tenant_id) as conn:
            conn.execute(
                "UPDATE bamboohr_outbox SET status = %s, attempts = attempts + 1, last_error = %s, "
                "next_attempt_at = CASE WHEN %s THEN NULL ELSE now() + %s END WHERE id = %s",
                ("dead_letter" if error.final else "pending", str(error), error.final, RETRY_LATER, outbox_id),
            )
        report.errors.append(f"{payload['employee_id']}: {error}")
        if error.final:
            report.dead_letters += 1
        else:
            report.retry_later += 1
        return
    with db.tenant_transaction(tenant_id) as conn:
        conn.execute(
            "UPDATE bamboohr_outbox SET status = 'delivered', attempts = attempts + 1, remote_row_id = %s, "
            "delivered_at = now(), last_error = NULL WHERE id = %s",
            (result.remote_row_id, outbox_id),
        )
    report.delivered += 1
    report.adopted += result.adopted
    report.total_amount += Decimal(payload["amount"])


@dataclass
class ReconciliationReport:
    checked_entries: int = 0
    missing_in_bamboohr: list[str] = field(default_factory=list)  # delivered here, absent there
    differing: list[str] = field(default_factory=list)  # present in both, different values
    unknown_in_bamboohr: list[str] = field(default_factory=list)  # tagged by us there, no entry here

    @property
    def clean(self) -> bool:
        return not (self.missing_in_bamboohr or self.differing or self.unknown_in_bamboohr)


def reconcile(db: Database, tenant_id: UUID, client: BambooHRClient) -> ReconciliationReport:
    """Compare delivered payroll_entries with the rows BambooHR holds for the same employees."""
    report = ReconciliationReport()
    with db.tenant_transaction(tenant_id) as conn:
        delivered = conn.execute(
            "SELECT e.id, e.employee_id, o.payload FROM payroll_entries e JOIN bamboohr_outbox o ON o.entry_id = e.id "
            "WHERE o.status = 'delivered' ORDER BY e.employee_id"
        ).fetchall()
    expected: dict[str, dict[str, dict[str, str]]] = {}
    for entry_id, employee_id, payload in delivered:
        expected.setdefault(employee_id, {})[str(entry_id)] = bamboohr_row(payload, entry_id)
    for employee_id, rows in expected.items():
        remote = {}
        for row in client.table_rows(employee_id):
            comment = str(row.get("comment", ""))
            if "[clay:" in comment:
                remote[comment.rsplit("[clay:", 1)[1].rstrip("]")] = row
        for entry_id, row in rows.items():
            report.checked_entries += 1
            there = remote.pop(entry_id, None)
            if there is None:
                report.missing_in_bamboohr.append(f"{employee_id}/{entry_id}")
            elif any(str(there.get(k, "")) != v for k, v in row.items()):
                report.differing.append(f"{employee_id}/{entry_id}")
        report.unknown_in_bamboohr += [f"{employee_id}/{entry_id}" for entry_id in remote]
    return report
