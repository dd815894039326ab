"""What an access is, and how accesses reach executions without an UPDATE storm.

An access is a person or a client reading an execution: `clay executions show`, an export, a
receipt check, a restore on request. The pipelines reading their own memory (rule learning, rollups,
dreams, this lifecycle) are not accesses, or nothing would ever age.

An access is one INSERT into execution_access_buffer. `flush_accesses` drains a tenant's buffer and
applies it in one set-based UPDATE per batch: last_accessed_at = greatest(...), access_count += n,
and a WARM or COLD execution becomes HOT again (a COLD one's content comes back from cold storage,
its vector back to full width). An ARCHIVED or PRUNED execution is counted but stays where it is:
it comes back only through `clay archive restore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import psycopg

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import audit

ACCESS_KINDS = ("show", "export", "receipt_check", "restore")
BATCH = 10_000


def record_access(conn: psycopg.Connection, execution_id: UUID, kind: str = "show") -> None:
    """One access, in the caller's tenant transaction (a row of another tenant is refused by the
    same-tenant trigger exactly like an id that does not exist)."""
    if kind not in ACCESS_KINDS:
        raise ValueError(f"unknown access kind {kind!r}; one of {', '.join(ACCESS_KINDS)}")
    conn.execute("INSERT INTO execution_access_buffer (execution_id, kind) VALUES (%s, %s)", (execution_id, kind))


_DRAIN = """
WITH drained AS (
  DELETE FROM execution_access_buffer
  WHERE id IN (SELECT id FROM execution_access_buffer ORDER BY id LIMIT %s)
  RETURNING execution_id, accessed_at)
SELECT execution_id, max(accessed_at), count(*)::int FROM drained GROUP BY execution_id
"""

# One statement for the whole batch. Rows WARM or COLD become HOT: the vector back to full width,
# COLD content back from execution_cold_content (whose rows are then deleted).
_APPLY = """
UPDATE executions e SET
  last_accessed_at = greatest(e.last_accessed_at, a.accessed_at),
  access_count = coalesce(e.access_count, 0) + a.n,
  lifecycle_state = CASE WHEN e.lifecycle_state IN ('WARM', 'COLD') THEN 'HOT' ELSE e.lifecycle_state END,
  request_embedding = CASE WHEN e.lifecycle_state IN ('WARM', 'COLD')
    THEN coalesce(e.request_embedding, e.request_embedding_compact::vector) ELSE e.request_embedding END,
  request_embedding_compact = CASE WHEN e.lifecycle_state IN ('WARM', 'COLD')
    THEN NULL ELSE e.request_embedding_compact END,
  input_data = CASE WHEN e.lifecycle_state = 'COLD' THEN c.input_data ELSE e.input_data END,
  output_data = CASE WHEN e.lifecycle_state = 'COLD' THEN c.output_data ELSE e.output_data END,
  user_feedback = CASE WHEN e.lifecycle_state = 'COLD' THEN c.user_feedback ELSE e.user_feedback END,
  suggested_improvements = CASE WHEN e.lifecycle_state = 'COLD'
    THEN c.suggested_improvements ELSE e.suggested_improvements END
FROM unnest(%s::uuid[], %s::timestamptz[], %s::int[]) AS a(execution_id, accessed_at, n)
LEFT JOIN execution_cold_content c ON c.execution_id = a.execution_id
WHERE e.id = a.execution_id
"""


@dataclass
class FlushReport:
    accesses: int = 0
    executions: int = 0
    rehydrated: int = 0  # WARM or COLD made HOT


def flush_accesses(db: Database, tenant_id: UUID, run_id: str = "flush", actor: str = "lifecycle") -> FlushReport:
    """Apply the tenant's buffered accesses, BATCH executions per transaction, until the buffer is empty."""
    report = FlushReport()
    while True:
        with db.tenant_transaction(tenant_id) as conn:
            rows = conn.execute(_DRAIN, (BATCH,)).fetchall()
            if not rows:
                return report
            ids = [r[0] for r in rows]
            woken = conn.execute(
                "SELECT count(*) FROM executions WHERE id = ANY(%s) AND lifecycle_state IN ('WARM', 'COLD')", (ids,)
            ).fetchone()[0]
            conn.execute(_APPLY, (ids, [r[1] for r in rows], [r[2] for r in rows]))
            conn.execute(
                "DELETE FROM execution_cold_content c USING executions e "
                "WHERE c.execution_id = e.id AND e.id = ANY(%s) AND e.lifecycle_state = 'HOT'",
                (ids,),
            )
            accesses = sum(r[2] for r in rows)
            audit.record(
                conn,
                run_id=run_id,
                action="access",
                rows=accesses,
                actor=actor,
                to_state="HOT",
                detail={"executions": len(ids), "rehydrated": woken},
            )
        report.accesses += accesses
        report.executions += len(ids)
        report.rehydrated += woken
