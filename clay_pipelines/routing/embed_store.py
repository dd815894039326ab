"""Writing request embeddings: in bulk, per tenant, only what is missing or stale.

Rows without a vector, or embedded by another embedder or version, are encoded in batches and
written with binary COPY (pgvector's psycopg adapter) into a temporary table, then applied with one
UPDATE ... FROM per batch. COPY cannot target executions directly: it is under row-level security.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.routing.embeddings import Embedder, tag

BATCH = 5000


def embed_executions(
    db: Database,
    tenant_id: UUID,
    embedder: Embedder,
    start: datetime,
    end: datetime,
    progress: Callable[[str], None] = lambda _: None,
) -> int:
    """Embed this tenant's executions that started in [start, end); returns how many were written."""
    model = tag(embedder)
    written = 0
    while True:
        with db.tenant_transaction(tenant_id) as conn:
            rows = conn.execute(
                """
                SELECT id, user_request FROM executions
                WHERE started_at >= %s AND started_at < %s
                  AND (request_embedding IS NULL OR request_embedding_model IS DISTINCT FROM %s)
                ORDER BY started_at, id
                LIMIT %s
                """,
                (start, end, model, BATCH),
            ).fetchall()
            if not rows:
                return written
            vectors = embedder.encode([text for _, text in rows])
            conn.execute("CREATE TEMP TABLE embedding_batch (id uuid, embedding vector) ON COMMIT DROP")
            with (
                conn.cursor() as cursor,
                cursor.copy("COPY embedding_batch (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["uuid", "vector"])
                for (execution_id, _), vector in zip(rows, vectors, strict=True):
                    copy.write_row((execution_id, vector))
            conn.execute(
                "UPDATE executions e SET request_embedding = b.embedding, request_embedding_model = %s "
                "FROM embedding_batch b WHERE e.id = b.id",
                (model,),
            )
        written += len(rows)
        progress(f"{written:,} executions embedded with {model}")


def embed_systems(db: Database, tenant_id: UUID, embedder: Embedder) -> int:
    """Capability vectors of the systems this tenant owns, from description and capabilities.

    Platform-wide skills (tenant_id NULL) are embedded by the maintenance role, which can write them."""
    model = tag(embedder)
    with db.tenant_transaction(tenant_id) as conn:
        rows = conn.execute(
            "SELECT id, coalesce(description, '') || ' ' || array_to_string(capabilities, ' ') FROM systems "
            "WHERE tenant_id IS NOT NULL AND capabilities_embedding_model IS DISTINCT FROM %s",
            (model,),
        ).fetchall()
        for (system_id, _), vector in zip(rows, embedder.encode([t for _, t in rows]) if rows else [], strict=True):
            conn.execute(
                "UPDATE systems SET capabilities_embedding = %s, capabilities_embedding_model = %s WHERE id = %s",
                (vector, model, system_id),
            )
    return len(rows)


def embed_shared_systems(db: Database, embedder: Embedder) -> int:
    """Capability vectors of the platform-wide skills (tenant_id NULL), by the maintenance role:
    tenants can read them but never write them."""
    model = tag(embedder)
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_EMBEDDINGS) as conn:
        rows = conn.execute(
            "SELECT id, coalesce(description, '') || ' ' || array_to_string(capabilities, ' ') FROM systems "
            "WHERE tenant_id IS NULL AND capabilities_embedding_model IS DISTINCT FROM %s",
            (model,),
        ).fetchall()
        for (system_id, _), vector in zip(rows, embedder.encode([t for _, t in rows]) if rows else [], strict=True):
            conn.execute(
                "UPDATE systems SET capabilities_embedding = %s, capabilities_embedding_model = %s WHERE id = %s",
                (vector, model, system_id),
            )
    return len(rows)
