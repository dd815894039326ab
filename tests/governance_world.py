"""Two tenants, one skill each, and helpers the governance tests share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from psycopg.types.json import Jsonb

from clay_pipelines.platform.ledger import ExecutionRecord, log_execution


@dataclass(frozen=True)
class Tenants:
    alpha: UUID
    beta: UUID


def two_tenants(test_db) -> Tenants:
    with test_db.admin() as conn:
        alpha = conn.execute(
            "INSERT INTO tenants (name, domain) VALUES ('Alpha', 'alpha.test') RETURNING id"
        ).fetchone()[0]
        beta = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Beta', 'beta.test') RETURNING id").fetchone()[
            0
        ]
        conn.execute(
            "INSERT INTO systems (tenant_id, name, type, constitution, avg_cost_usd) VALUES "
            "(NULL, 'writer', 'agent', %s, 0.5)",
            (Jsonb({"parameters": {"tone": "plain"}}),),
        )
    return Tenants(alpha, beta)


def routed(conn, request: str = "draft a memo", *, started: datetime | None = None) -> UUID:
    """An execution as the router logs one: partial, not completed."""
    return log_execution(
        conn,
        ExecutionRecord(
            system_id=None,
            system_name="writer",
            user_request=request,
            status="partial",
            governance_check={"requires_approval": False},
            started_at=started or datetime.now(UTC) - timedelta(seconds=5),
        ),
    )


def window(conn, total: str, *, window_type: str = "monthly", quotas: dict | None = None) -> UUID:
    """An open usd_budget window of the transaction's tenant."""
    now = datetime.now(UTC)
    return conn.execute(
        "INSERT INTO resources (resource_type, window_type, window_start, window_end, total_budget, system_quotas) "
        "VALUES ('usd_budget', %s, %s, %s, %s, %s) RETURNING id",
        (window_type, now - timedelta(hours=1), now + timedelta(days=1), Decimal(total), Jsonb(quotas or {})),
    ).fetchone()[0]
