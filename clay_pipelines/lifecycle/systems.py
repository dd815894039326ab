"""systems.lifecycle_state from the system's last execution (30 / 90 / 365 days: HOT, WARM, COLD,
else ARCHIVED), over every tenant's executions (a platform skill is used by all), by the maintenance
role. Systems without executions keep their state."""

from __future__ import annotations

from clay_pipelines.db import Database, MaintenanceJob

_STATES = """
WITH last AS (SELECT system_id, max(started_at) AS at FROM executions WHERE system_id IS NOT NULL GROUP BY 1)
UPDATE systems s SET lifecycle_state = CASE
    WHEN l.at > now() - interval '30 days' THEN 'HOT'
    WHEN l.at > now() - interval '90 days' THEN 'WARM'
    WHEN l.at > now() - interval '365 days' THEN 'COLD'
    ELSE 'ARCHIVED' END
FROM last l WHERE l.system_id = s.id
RETURNING s.name, s.lifecycle_state, l.at
"""


def system_states(db: Database) -> list[tuple[str, str, object]]:
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        return sorted(conn.execute(_STATES).fetchall())
