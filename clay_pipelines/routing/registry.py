"""The systems registry's figures, kept true from executions, and its dependency graph.

Rollups are set-based SQL. A tenant's own systems are rolled up from that tenant's executions in
a tenant transaction; the platform-wide skills (tenant_id NULL) serve every tenant, so their
figures are rolled up across tenants by the maintenance role (MaintenanceJob.SYSTEM_ROLLUPS).
Only executions that count as evidence (routing/evidence.py) are rolled up: a routed request that
has not completed has no outcome yet, and a governance refusal says nothing about the system.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import psycopg
from psycopg import sql

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.routing.evidence import counts_as_evidence

_ROLLUP = sql.SQL("""
WITH figures AS (
  SELECT s.id,
         count(e.id) AS total,
         count(e.id) FILTER (WHERE e.status = 'success') AS successful,
         coalesce(avg(e.cost_usd), 0) AS cost,
         coalesce(round(avg(e.duration_ms)), 0)::integer AS duration,
         avg(e.user_satisfaction) AS satisfaction
  FROM systems s
  LEFT JOIN executions e ON e.system_id = s.id AND {evidence}
  WHERE {scope}
  GROUP BY s.id
)
UPDATE systems s SET
  total_executions = f.total, successful_executions = f.successful,
  avg_cost_usd = round(f.cost, 6), avg_execution_time_ms = f.duration,
  avg_user_satisfaction = round(f.satisfaction, 3), updated_at = now()
FROM figures f
WHERE s.id = f.id
  AND (s.total_executions, s.successful_executions, s.avg_cost_usd, s.avg_execution_time_ms, s.avg_user_satisfaction)
      IS DISTINCT FROM (f.total, f.successful, round(f.cost, 6), f.duration, round(f.satisfaction, 3))
""")

_REVERSE_DEPENDENCIES = sql.SQL("""
WITH reverse AS (
  SELECT s.id, coalesce(array_agg(d.id ORDER BY d.name) FILTER (WHERE d.id IS NOT NULL), '{{}}') AS dependents
  FROM systems s LEFT JOIN systems d ON s.id = ANY(d.depends_on) AND {dependents}
  WHERE {scope}
  GROUP BY s.id
)
UPDATE systems s SET reverse_dependencies = r.dependents, updated_at = now()
FROM reverse r WHERE s.id = r.id AND s.reverse_dependencies IS DISTINCT FROM r.dependents
""")
_SHARED = sql.SQL("s.tenant_id IS NULL")
_TENANTS_OWN = sql.SQL("s.tenant_id IS NOT NULL")


def _rollup(scope: sql.Composable) -> sql.Composed:
    return _ROLLUP.format(scope=scope, evidence=counts_as_evidence("e"))


def rollup_shared_systems(db: Database) -> int:
    """Figures and reverse dependencies of the platform-wide skills; returns rows changed."""
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        changed = conn.execute(_rollup(_SHARED)).rowcount
        # Every tenant reads the platform's skills: their dependents are platform skills only, never
        # a tenant's own systems (whose ids and number are that tenant's business).
        changed += conn.execute(
            _REVERSE_DEPENDENCIES.format(scope=_SHARED, dependents=sql.SQL("d.tenant_id IS NULL"))
        ).rowcount
    return changed


def rollup_tenant_systems(db: Database, tenant_id: UUID) -> int:
    """Figures and reverse dependencies of the tenant's own systems, from its own executions."""
    with db.tenant_transaction(tenant_id) as conn:
        changed = conn.execute(_rollup(_TENANTS_OWN)).rowcount
        changed += conn.execute(_REVERSE_DEPENDENCIES.format(scope=_TENANTS_OWN, dependents=sql.SQL("TRUE"))).rowcount
    return changed


@dataclass(frozen=True, kw_only=True)
class GraphProblem:
    kind: str  # cycle | dangling
    detail: str


def dependency_problems(conn: psycopg.Connection) -> list[GraphProblem]:
    """Cycles in depends_on and ids that name no system, among the systems this transaction sees."""
    rows = conn.execute("SELECT id, name, depends_on FROM systems").fetchall()
    names = {r[0]: r[1] for r in rows}
    graph = {r[0]: list(r[2] or []) for r in rows}
    dangling = [
        GraphProblem(kind="dangling", detail=f"{names[s]} depends on {d}, which is no system")
        for s, deps in graph.items()
        for d in deps
        if d not in names
    ]
    walk_order = sorted(graph, key=lambda s: names[s])
    cycles = [
        GraphProblem(kind="cycle", detail=" -> ".join(names[c] for c in cycle)) for cycle in _cycles(graph, walk_order)
    ]
    return dangling + cycles


_ON_PATH, _DONE = 1, 2


def _cycles(graph: dict[UUID, list[UUID]], walk_order: list[UUID]) -> list[list[UUID]]:
    """Every cycle a depth-first walk from the nodes in `walk_order` meets, its first node repeated at
    the end. Iterative, with an explicit stack of (node, next dependency to visit); ids that name no
    node are skipped."""
    found: list[list[UUID]] = []
    state: dict[UUID, int] = {}
    for start in walk_order:
        if state.get(start):
            continue
        stack: list[tuple[UUID, int]] = [(start, 0)]
        path: list[UUID] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = _ON_PATH
                path.append(node)
            deps = [d for d in graph[node] if d in graph]
            if i == len(deps):
                state[node] = _DONE
                path.pop()
                continue
            stack.append((node, i + 1))
            following = deps[i]
            if state.get(following) == _ON_PATH:
                found.append([*path[path.index(following) :], following])
            elif not state.get(following):
                stack.append((following, 0))
    return found


def platform_dependency_problems(db: Database) -> list[GraphProblem]:
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        return dependency_problems(conn)


def tenant_dependency_problems(db: Database, tenant_id: UUID) -> list[GraphProblem]:
    """The graph as the tenant sees it: its own systems and the platform's skills."""
    with db.tenant_transaction(tenant_id) as conn:
        return dependency_problems(conn)


def system_figures(db: Database) -> list[tuple]:
    """Every system's rolled-up figures, most executions first: (name, total, successful, avg cost,
    avg ms, satisfaction, status, lifecycle state from its last execution)."""
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        return conn.execute(
            "SELECT name, total_executions, successful_executions, avg_cost_usd, avg_execution_time_ms, "
            "avg_user_satisfaction, status, lifecycle_state FROM systems ORDER BY total_executions DESC, name"
        ).fetchall()
