"""A small world for the lifecycle tests: two tenants, the routing world's skills, executions whose
last access is set exactly."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from psycopg.types.json import Jsonb

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.routing.embeddings import HashingEmbedder, tag
from tests import routing_world as world

ACME, OTHER = world.ACME, world.OTHER
EMBEDDER = HashingEmbedder()
MODEL = tag(EMBEDDER)


def build(db: Database) -> None:
    world.build(db)


def add(
    db: Database,
    tenant_id: UUID,
    *,
    accessed: datetime,
    started: datetime | None = None,
    system: str = "writer",
    n: int = 1,
    request: str = "draft an email to the board about pricing",
) -> list[UUID]:
    """n executions last accessed at `accessed` (started an hour before it unless given), with content
    in every content column and a vector."""
    started = started or accessed - timedelta(hours=1)
    vectors = EMBEDDER.encode([f"{request} #{i}" for i in range(n)])
    with db.tenant_transaction(tenant_id) as conn:
        ids = []
        for i in range(n):
            row = conn.execute(
                "INSERT INTO executions (system_id, system_name, user_request, request_embedding, "
                "request_embedding_model, input_data, output_data, governance_check, status, started_at, "
                "completed_at, cost_usd, user_satisfaction, user_feedback, suggested_improvements, "
                "receipt_signature, last_accessed_at, access_count) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'success', %s, %s, %s, 4, %s, %s, %s, %s, 2) RETURNING id",
                (
                    world.SYSTEMS[system],
                    system,
                    f"{request} #{i}",
                    vectors[i],
                    MODEL,
                    Jsonb({"prompt": f"{request} #{i}", "attachments": ["a.pdf"] * 3}),
                    Jsonb({"answer": "Dear board, " + "pricing " * 20, "tokens": 120 + i}),
                    Jsonb({"requires_approval": False}),
                    started + timedelta(seconds=i),
                    started + timedelta(seconds=i, milliseconds=850),
                    Decimal("0.0125"),
                    f"good answer {i}",
                    Jsonb({"tone": "warmer"}),
                    f"sig-{i}",
                    accessed,
                ),
            ).fetchone()
            ids.append(row[0])
    return ids


def states(db: Database, tenant_id: UUID, ids: list[UUID]) -> list[str]:
    with db.tenant_transaction(tenant_id) as conn:
        found = dict(conn.execute("SELECT id, lifecycle_state FROM executions WHERE id = ANY(%s)", (ids,)).fetchall())
    return [found[i] for i in ids]


def set_accessed(db: Database, tenant_id: UUID, ids: list[UUID], accessed: datetime) -> None:
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("UPDATE executions SET last_accessed_at = %s WHERE id = ANY(%s)", (accessed, ids))
