"""Completing and rating executions: thin wrappers over the SQL functions every client calls
(clay_complete_execution, clay_rate_execution), so Python and any other language get one behaviour.
A completion made here is signed at once when a signer is given; one made elsewhere through SQL is
signed shortly after by the receipts asset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database
from clay_pipelines.governance import receipts
from clay_pipelines.governance.keys import Signer

STATUSES = ("success", "failed", "partial", "timeout", "governance_blocked")
# SQLSTATEs the functions raise for the caller's mistakes: no such row, a bad argument, a
# completion or rating that contradicts the one recorded, a reservation moved backwards.
USER_SQLSTATES = {"P0002", "22023", "CLY01", "CLY02", "CLY03", "CLY04"}


class ExecutionError(ValueError):
    """A completion or rating the database refused: an unknown execution (or another tenant's), a
    bad value, or one that contradicts what is recorded."""


def user_error(error: psycopg.Error) -> ExecutionError | None:
    if error.sqlstate in USER_SQLSTATES:
        return ExecutionError(error.diag.message_primary or str(error))
    return None


@dataclass(frozen=True, kw_only=True)
class Completion:
    execution_id: UUID
    changed: bool  # False: completed before with these very values
    reservation_settled: bool
    signed: int = 0


def complete_execution(
    conn: psycopg.Connection,
    execution_id: UUID,
    status: str,
    *,
    output: dict[str, Any] | None = None,
    cost_usd: Decimal | None = None,
    completed_at: datetime | None = None,
    error_message: str | None = None,
) -> Completion:
    """Record the outcome in the caller's transaction (and tenant); settles its budget reservation."""
    if status not in STATUSES:
        raise ExecutionError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    try:
        row = conn.execute(
            "SELECT * FROM public.clay_complete_execution(%s, %s, %s, %s, %s, %s)",
            (execution_id, status, None if output is None else Jsonb(output), cost_usd, completed_at, error_message),
        ).fetchone()
    except psycopg.Error as error:
        raise (user_error(error) or error) from error
    assert row is not None
    return Completion(execution_id=row[0], changed=row[1], reservation_settled=row[2])


def complete(
    db: Database, tenant_id: UUID, execution_id: UUID, status: str, *, signer: Signer | None = None, **outcome: Any
) -> Completion:
    """complete_execution in the tenant's own transaction, and its receipt in the same one."""
    with db.tenant_transaction(tenant_id) as conn:
        done = complete_execution(conn, execution_id, status, **outcome)
        signed = receipts.sign_pending(conn, tenant_id, signer, execution_ids=[execution_id]) if signer else 0
    return Completion(
        execution_id=done.execution_id,
        changed=done.changed,
        reservation_settled=done.reservation_settled,
        signed=signed,
    )


def rate_execution(conn: psycopg.Connection, execution_id: UUID, stars: int, feedback: str | None = None) -> bool:
    """A person's rating, once; True when recorded now, False when this very rating was there."""
    try:
        row = conn.execute("SELECT public.clay_rate_execution(%s, %s, %s)", (execution_id, stars, feedback)).fetchone()
    except psycopg.Error as error:
        raise (user_error(error) or error) from error
    assert row is not None
    return bool(row[0])
