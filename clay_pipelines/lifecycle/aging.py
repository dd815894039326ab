"""HOT -> WARM -> COLD by time since last access, per tenant, set-based.

WARM: request_embedding moves to request_embedding_compact (halfvec: half the bytes; the router's
figures do not move, tests/test_lifecycle_aging.py). COLD: also input_data, output_data,
user_feedback and suggested_improvements move to execution_cold_content (compressed); the row keeps
what rollups, budgets, routing statistics and dreams read. A row older than both thresholds goes
HOT -> WARM -> COLD in one run. Aging never moves a row back: only an access does (access.py).

Boundaries: a row last accessed exactly `warm_after_days` x 24 hours before `as_of` is WARM. The
arithmetic is in hours, so it is UTC whatever the session's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import psycopg

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import audit
from clay_pipelines.lifecycle.policy import Thresholds, tenant_thresholds

_CUTOFF = "coalesce(%(as_of)s::timestamptz, now()) - make_interval(hours => 24 * %(days)s)"

# A vector written to a WARM or COLD row (re-embedding after a change of embedder) goes compact again.
_RECOMPACT = """
UPDATE executions SET request_embedding_compact = request_embedding::halfvec, request_embedding = NULL
WHERE lifecycle_state IN ('WARM', 'COLD') AND request_embedding IS NOT NULL
"""

_TO_WARM = f"""
UPDATE executions SET lifecycle_state = 'WARM',
  request_embedding_compact = coalesce(request_embedding::halfvec, request_embedding_compact), request_embedding = NULL
WHERE lifecycle_state = 'HOT' AND last_accessed_at <= {_CUTOFF}
"""

_TO_COLD = f"""
WITH moving AS (
  SELECT id FROM executions
  WHERE lifecycle_state = 'WARM' AND last_accessed_at <= {_CUTOFF}
  FOR UPDATE),
stored AS (
  INSERT INTO execution_cold_content (execution_id, tenant_id, input_data, output_data, user_feedback,
                                      suggested_improvements)
  SELECT e.id, e.tenant_id, e.input_data, e.output_data, e.user_feedback, e.suggested_improvements
  FROM executions e JOIN moving m ON m.id = e.id
  RETURNING execution_id)
UPDATE executions e SET lifecycle_state = 'COLD',
  input_data = NULL, output_data = NULL, user_feedback = NULL, suggested_improvements = NULL
FROM stored s WHERE e.id = s.execution_id
"""


@dataclass
class AgingReport:
    tenant_id: UUID
    thresholds: Thresholds
    to_warm: int = 0
    to_cold: int = 0
    recompacted: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def age_tenant(
    db: Database, tenant_id: UUID, as_of: datetime | None = None, *, run_id: str = "aging", actor: str = "lifecycle"
) -> AgingReport:
    """Move the tenant's executions to the state their last access allows, in one transaction."""
    with db.tenant_transaction(tenant_id) as conn:
        thresholds = tenant_thresholds(conn)
        report = AgingReport(tenant_id=tenant_id, thresholds=thresholds)
        report.recompacted = conn.execute(_RECOMPACT).rowcount
        report.to_warm = _run(conn, _TO_WARM, as_of, thresholds.warm_after_days)
        report.to_cold = _run(conn, _TO_COLD, as_of, thresholds.cold_after_days)
        for from_state, to_state, rows in (("HOT", "WARM", report.to_warm), ("WARM", "COLD", report.to_cold)):
            audit.record(
                conn,
                run_id=run_id,
                action="aging",
                rows=rows,
                actor=actor,
                from_state=from_state,
                to_state=to_state,
                detail={"as_of": as_of.isoformat() if as_of else None},
            )
        report.counts = state_counts(conn)
    return report


def _run(conn: psycopg.Connection, statement: str, as_of: datetime | None, days: int) -> int:
    return conn.execute(statement, {"as_of": as_of, "days": days}).rowcount


def state_counts(conn: psycopg.Connection) -> dict[str, int]:
    """The current tenant's executions per lifecycle state."""
    return dict(conn.execute("SELECT lifecycle_state, count(*) FROM executions GROUP BY 1 ORDER BY 1").fetchall())
