"""The lifecycle's checks, per tenant: each returns the problems found (none: it passes)."""

from __future__ import annotations

from uuid import UUID

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle.policy import tenant_thresholds


def conservation(db: Database, tenant_id: UUID) -> list[str]:
    """Rows in the database (HOT, WARM, COLD) + ARCHIVED + PRUNED tombstones = rows ever written
    minus rows deleted by maintenance, against the count the insert trigger keeps; and every
    tombstone's archive accounts for it."""
    with db.tenant_transaction(tenant_id) as conn:
        states = dict(conn.execute("SELECT lifecycle_state, count(*) FROM executions GROUP BY 1").fetchall())
        counted = conn.execute("SELECT written, deleted FROM execution_counts").fetchone() or (0, 0)
        orphans = conn.execute(
            "SELECT count(*) FROM executions e LEFT JOIN lifecycle_archives a ON a.id = e.archive_id "
            "WHERE e.lifecycle_state IN ('ARCHIVED', 'PRUNED') AND (a.id IS NULL "
            "OR a.status <> CASE e.lifecycle_state WHEN 'ARCHIVED' THEN 'archived' ELSE 'pruned' END)"
        ).fetchone()[0]
    problems = []
    if sum(states.values()) != counted[0] - counted[1]:
        problems.append(
            f"{sum(states.values())} rows by state ({states}) but {counted[0]} written - {counted[1]} deleted"
        )
    if orphans:
        problems.append(f"{orphans} tombstones whose archive is missing or in another state")
    return problems


def younger_than_allowed(db: Database, tenant_id: UUID) -> list[str]:
    """Rows left HOT or WARM past their tenant's thresholds (the daily aging is behind)."""
    with db.tenant_transaction(tenant_id) as conn:
        t = tenant_thresholds(conn)
        rows = conn.execute(
            "SELECT lifecycle_state, count(*) FROM executions WHERE "
            "(lifecycle_state = 'HOT' AND last_accessed_at <= now() - make_interval(hours => 24 * %s)) "
            "OR (lifecycle_state = 'WARM' AND last_accessed_at <= now() - make_interval(hours => 24 * %s)) GROUP BY 1",
            (t.warm_after_days + 1, t.cold_after_days + 1),
        ).fetchall()
    return [f"{n} {state} rows older than their threshold plus a day" for state, n in rows]


def pruned_inside_retention(db: Database, tenant_id: UUID) -> list[str]:
    with db.tenant_transaction(tenant_id) as conn:
        n = conn.execute(
            "SELECT count(*) FROM lifecycle_archives a WHERE a.status = 'pruned' "
            "AND a.pruned_at < clay_admin.archive_retained_until(a.id)"
        ).fetchone()[0]
    return [f"{n} archives pruned inside their retention period"] if n else []


def held_but_gone(db: Database, tenant_id: UUID) -> list[str]:
    """Rows under a hold in force that are PRUNED, or ARCHIVED without a verified file."""
    with db.tenant_transaction(tenant_id) as conn:
        n = conn.execute(
            "SELECT count(*) FROM executions e LEFT JOIN lifecycle_archives a ON a.id = e.archive_id "
            "WHERE clay_admin.execution_held(e.tenant_id, e.system_id, e.started_at, e.id) "
            "AND (e.lifecycle_state = 'PRUNED' OR (e.lifecycle_state = 'ARCHIVED' AND a.status IS DISTINCT FROM 'archived'))"
        ).fetchone()[0]
    return [f"{n} held executions pruned or without their archive"] if n else []


def manifests_verify(db: Database, tenant_id: UUID, store: ar.ArchiveStore) -> list[str]:
    return ar.verify_archives(db, tenant_id, store)
