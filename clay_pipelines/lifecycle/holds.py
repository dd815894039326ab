"""Legal holds: nothing under a hold in force is archived away, pruned, erased or deleted.

The database enforces it (migration 018: clay_executions_lifecycle_guard refuses the transition,
whoever asks); the jobs also leave held rows out, so that one held row does not stop a whole run.
Scopes: the whole tenant, a system, a time range of started_at [start, end), a list of executions.
A hold is never deleted: it is released, by someone, at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg

from clay_pipelines.lifecycle import audit

SCOPES = ("tenant", "system", "time_range", "executions")


class HoldError(ValueError):
    """A hold that cannot be placed or released as asked."""


@dataclass(frozen=True, kw_only=True)
class Hold:
    id: UUID
    scope: str
    system_name: str | None
    range_start: datetime | None
    range_end: datetime | None
    execution_ids: list[UUID] | None
    reason: str
    placed_by: str
    placed_at: datetime
    released_by: str | None
    released_at: datetime | None


def place(
    conn: psycopg.Connection,
    *,
    scope: str,
    reason: str,
    placed_by: str,
    system: str | None = None,
    range_start: datetime | None = None,
    range_end: datetime | None = None,
    execution_ids: list[UUID] | None = None,
) -> UUID:
    """A new hold in the current tenant (its transaction); the system is named, the executions must exist."""
    if scope not in SCOPES:
        raise HoldError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    if not reason.strip() or not placed_by.strip():
        raise HoldError("a hold needs a reason and who places it")
    system_id = None
    if scope == "system":
        row = conn.execute(
            "SELECT id FROM systems WHERE name = %s ORDER BY tenant_id NULLS LAST LIMIT 1", (system,)
        ).fetchone()
        if row is None:
            raise HoldError(f"no system named {system!r} in this tenant")
        system_id = row[0]
    if scope == "time_range" and not (range_start and range_end and range_start < range_end):
        raise HoldError("a time-range hold needs a start before its end")
    if scope == "executions":
        ids = list(dict.fromkeys(execution_ids or []))
        if not ids:
            raise HoldError("an executions hold needs at least one execution id")
        found = {r[0] for r in conn.execute("SELECT id FROM executions WHERE id = ANY(%s)", (ids,))}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise HoldError(f"no execution {missing[0]} in this tenant")
        execution_ids = ids
    hold_id = conn.execute(
        "INSERT INTO legal_holds (scope, system_id, range_start, range_end, execution_ids, reason, placed_by) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            scope,
            system_id,
            range_start if scope == "time_range" else None,
            range_end if scope == "time_range" else None,
            execution_ids if scope == "executions" else None,
            reason,
            placed_by,
        ),
    ).fetchone()[0]
    audit.record(
        conn,
        run_id=str(hold_id),
        action="hold_place",
        rows=0,
        actor=placed_by,
        detail={"scope": scope, "reason": reason},
    )
    return hold_id


def release(conn: psycopg.Connection, hold_id: UUID, released_by: str, reason: str = "") -> None:
    if not released_by.strip():
        raise HoldError("say who releases the hold")
    row = conn.execute("SELECT released_at FROM legal_holds WHERE id = %s FOR UPDATE", (hold_id,)).fetchone()
    if row is None:
        raise HoldError(f"no legal hold {hold_id} in this tenant")
    if row[0] is not None:
        raise HoldError(f"legal hold {hold_id} was already released at {row[0]:%Y-%m-%d %H:%M} UTC")
    conn.execute("UPDATE legal_holds SET released_by = %s, released_at = now() WHERE id = %s", (released_by, hold_id))
    audit.record(conn, run_id=str(hold_id), action="hold_release", rows=0, actor=released_by, detail={"reason": reason})


def holds(conn: psycopg.Connection, *, in_force_only: bool = False) -> list[Hold]:
    rows = conn.execute(
        "SELECT h.id, h.scope, s.name, h.range_start, h.range_end, h.execution_ids, h.reason, h.placed_by, "
        "h.placed_at, h.released_by, h.released_at FROM legal_holds h LEFT JOIN systems s ON s.id = h.system_id "
        "WHERE NOT %s OR h.released_at IS NULL ORDER BY h.placed_at, h.id",
        (in_force_only,),
    ).fetchall()
    return [Hold(**dict(zip(Hold.__dataclass_fields__, r, strict=True))) for r in rows]
