"""The lifecycle audit: one append-only row per run, tenant and transition (migration 018)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def record(
    conn: psycopg.Connection,
    *,
    run_id: str,
    action: str,
    rows: int,
    actor: str,
    from_state: str | None = None,
    to_state: str | None = None,
    dry_run: bool = False,
    detail: dict[str, Any] | None = None,
) -> None:
    """In the caller's (tenant) transaction, so the audit row commits with the change it describes."""
    conn.execute(
        "INSERT INTO lifecycle_audit (run_id, action, from_state, to_state, rows, dry_run, actor, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (run_id, action, from_state, to_state, rows, dry_run, actor, Jsonb(detail or {})),
    )
