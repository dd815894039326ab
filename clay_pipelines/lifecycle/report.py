"""What a person reads about the lifecycle: rows per state and tenant, the oldest row of each state,
the bytes each state costs, holds in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from clay_pipelines.db import Database, MaintenanceJob


@dataclass(frozen=True)
class StateRow:
    tenant: str
    state: str
    rows: int
    oldest_access: datetime | None


def state_table(db: Database) -> list[StateRow]:
    with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        return [
            StateRow(*r)
            for r in conn.execute(
                "SELECT t.name, e.lifecycle_state, count(*), min(e.last_accessed_at) FROM executions e "
                "JOIN tenants t ON t.id = e.tenant_id GROUP BY 1, 2 ORDER BY 1, "
                "array_position(ARRAY['HOT','WARM','COLD','ARCHIVED','PRUNED'], e.lifecycle_state)"
            )
        ]


def holds_in_force(db: Database) -> dict[str, int]:
    with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        return dict(
            conn.execute(
                "SELECT t.name, count(*) FROM legal_holds h JOIN tenants t ON t.id = h.tenant_id "
                "WHERE h.released_at IS NULL GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )


def bytes_per_state(db: Database) -> dict[str, float]:
    """Average stored bytes per row in each state: the row in executions (with its TOASTed values)
    plus, for COLD, its row in execution_cold_content. pg_column_size of the whole row counts the
    compressed size of TOASTed values."""
    with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        return {
            state: float(size)
            for state, size in conn.execute(
                "SELECT e.lifecycle_state, avg(pg_column_size(e.*) + coalesce(pg_column_size(c.*), 0))::numeric(12, 1) "
                "FROM executions e LEFT JOIN execution_cold_content c ON c.execution_id = e.id GROUP BY 1 ORDER BY 1"
            )
        }
