"""What people and checks read about dreams: a night's dreams, promotions and the problems a check
looks for, the specification's promotion-rate query. Plain functions over a connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from clay_pipelines.tars import amendments as am
from clay_pipelines.tars import constitution as c
from clay_pipelines.tars import decision


@dataclass(frozen=True, kw_only=True)
class DreamRow:
    id: UUID
    system_name: str
    cycle_id: str
    status: str
    mutation: dict[str, Any]
    decision: str
    gain: float | None  # the success-rate difference estimated on half A (pessimistic)
    interval: tuple[float | None, float | None] | None
    evaluation_only: bool
    amendment_id: UUID | None
    pending_amendment_id: UUID | None


def dreams(conn: psycopg.Connection, *, cycle_id: str | None = None, pending: bool = False) -> list[DreamRow]:
    """The tenant's dreams, newest night first: of one cycle, or only those waiting for approval."""
    rows = conn.execute(
        """
        SELECT id, system_name, cycle_id, status, mutations->'mutation', outcome->>'decision',
               outcome->'entry'->'half_a'->'success_rate'->'difference', evaluation_only, amendment_id, pending_amendment_id
        FROM dreams
        WHERE (%(cycle)s::text IS NULL OR cycle_id = %(cycle)s) AND (NOT %(pending)s OR status = 'pending_approval')
        ORDER BY night DESC NULLS LAST, system_name, status, mutation_hash
        """,
        {"cycle": cycle_id, "pending": pending},
    ).fetchall()
    return [_dream_row(r) for r in rows]


def _dream_row(r: tuple) -> DreamRow:
    primary = r[6]
    gain = interval = None
    if isinstance(primary, dict):
        gain = primary.get("estimate")
        interval = (primary.get("lower"), primary.get("upper"))
    return DreamRow(
        id=r[0],
        system_name=r[1],
        cycle_id=r[2],
        status=r[3],
        mutation=r[4] or {},
        decision=r[5] or "",
        gain=gain,
        interval=interval,
        evaluation_only=r[7],
        amendment_id=r[8],
        pending_amendment_id=r[9],
    )


def dream(conn: psycopg.Connection, dream_id: UUID) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, system_name, cycle_id, status, mutations, test_input, normal_output, dream_output, outcome, "
        "dreamed_at, dream_duration_ms, approved_by, approved_at, amendment_id, pending_amendment_id, evaluation_only "
        "FROM dreams WHERE id = %s",
        (dream_id,),
    ).fetchone()
    if row is None:
        raise am.AmendmentError(f"no dream {dream_id} in this tenant")
    names = [
        "id",
        "system_name",
        "cycle_id",
        "status",
        "mutations",
        "test_input",
        "normal_output",
        "dream_output",
        "outcome",
        "dreamed_at",
        "dream_duration_ms",
        "approved_by",
        "approved_at",
        "amendment_id",
        "pending_amendment_id",
        "evaluation_only",
    ]
    return dict(zip(names, row, strict=True))


def night_record(conn: psycopg.Connection, system_id: UUID, cycle_id: str) -> dict[str, Any] | None:
    """The night's decision record as the rule wrote it, rebuilt from its dreams rows."""
    rows = conn.execute(
        "SELECT mutations->'mutation', outcome FROM dreams WHERE system_id = %s AND cycle_id = %s "
        "AND outcome ? 'record' ORDER BY mutation_hash",
        (system_id, cycle_id),
    ).fetchall()
    if not rows:
        return None
    family = rows[0][1]["record"]
    entries = {row[1]["entry"]["hash"]: {**row[1]["entry"], "mutation": row[0]} for row in rows}
    ordered = [entries[h] for h in family["proposal_order"]]
    return {k: v for k, v in family.items() if k != "proposal_order"} | {"proposals": ordered}


@dataclass(frozen=True, kw_only=True)
class Problem:
    dream_id: UUID
    system_name: str
    cycle_id: str
    problem: str


def promotion_problems(conn: psycopg.Connection) -> list[Problem]:
    """Promoted dreams without exactly one amendment (of type dream_promotion, naming the dream)."""
    rows = conn.execute(
        """
        SELECT d.id, d.system_name, d.cycle_id,
               (SELECT count(*) FROM constitutional_amendments a
                WHERE a.amendment_type = 'dream_promotion' AND a.evidence->>'dream_id' = d.id::text) AS amendments,
               d.amendment_id IS NOT NULL
        FROM dreams d WHERE d.status = 'promoted'
        """
    ).fetchall()
    return [
        Problem(dream_id=r[0], system_name=r[1], cycle_id=r[2], problem=f"{r[3]} dream_promotion amendments, not 1")
        for r in rows
        if r[3] != 1 or not r[4]
    ]


def decision_problems(conn: psycopg.Connection) -> list[Problem]:
    """Promoted or waiting dreams whose night's decision record does not satisfy its own rule, or
    that the record did not promote."""
    out: list[Problem] = []
    for dream_id, system_id, name, cycle_id, mutation_hash in conn.execute(
        "SELECT id, system_id, system_name, cycle_id, mutation_hash FROM dreams "
        "WHERE status IN ('promoted', 'pending_approval') ORDER BY cycle_id"
    ).fetchall():
        record = night_record(conn, system_id, cycle_id)
        if record is None:
            out.append(Problem(dream_id=dream_id, system_name=name, cycle_id=cycle_id, problem="no decision record"))
            continue
        broken = decision.violations(record)
        if broken:
            out.append(Problem(dream_id=dream_id, system_name=name, cycle_id=cycle_id, problem="; ".join(broken[:3])))
        elif record.get("promote") != mutation_hash:
            out.append(Problem(dream_id=dream_id, system_name=name, cycle_id=cycle_id, problem="not the one promoted"))
    return out


def bounds_problems(conn: psycopg.Connection) -> list[Problem]:
    """Dreamed mutations outside the bounds their skill declared on that night."""
    out: list[Problem] = []
    constitutions: dict[tuple[UUID, str], dict[str, Any]] = {}
    tenant_id = am.current_tenant(conn)
    for dream_id, system_id, name, cycle_id, mutation, moment in conn.execute(
        "SELECT id, system_id, system_name, cycle_id, mutations->'mutation', dreamed_at FROM dreams "
        "WHERE status <> 'skipped' ORDER BY cycle_id"
    ).fetchall():
        key = (system_id, cycle_id)
        if key not in constitutions:
            constitutions[key] = am.replay(conn, am.skill(conn, system_id), tenant_id, at=moment)
        try:
            c.check_automated(constitutions[key], mutation or {})
        except c.ConstitutionError as error:
            out.append(Problem(dream_id=dream_id, system_name=name, cycle_id=cycle_id, problem=str(error)))
    return out


DREAM_PROMOTION_RATE_SQL = """
SELECT DATE_TRUNC('week', dreamed_at) AS week, COUNT(*) AS total_dreams,
       SUM(CASE WHEN promoted_to_production THEN 1 ELSE 0 END) AS promoted,
       ROUND(100.0 * SUM(CASE WHEN promoted_to_production THEN 1 ELSE 0 END) / COUNT(*), 2) AS promotion_rate
FROM dreams
WHERE dreamed_at >= NOW() - INTERVAL '90 days'
GROUP BY week
ORDER BY week DESC
"""


def dream_promotion_rate(conn: psycopg.Connection) -> list[tuple[str, int, int, float]]:
    """The specification's TARS Dream Promotion Rate query, for the transaction's tenant."""
    return [
        (week.date().isoformat(), int(total), int(promoted), float(rate))
        for week, total, promoted, rate in conn.execute(DREAM_PROMOTION_RATE_SQL)
    ]
