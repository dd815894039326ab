"""Writing request embeddings: in bulk, per tenant, only what is missing or stale.

Rows without a vector, or embedded by another embedder or version, are encoded in batches and
written with one UPDATE ... FROM per batch over arrays sent in binary: COPY cannot target executions
(it is under row-level security) and the application role has no temporary tables.

`embedder` is always an Embedder object; `embedding_model` is always its name@version tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

import numpy as np
import psycopg

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.routing.embeddings import Embedder, tag

BATCH = 5000


# Rows without a vector of this embedder. A WARM or COLD row keeps its vector in
# request_embedding_compact (halfvec, lifecycle); a tombstone (ARCHIVED, PRUNED) has no request to embed.
NEEDS_EMBEDDING = (
    "lifecycle_state IN ('HOT', 'WARM', 'COLD') AND ((request_embedding IS NULL AND request_embedding_compact IS NULL) "
    "OR request_embedding_model IS DISTINCT FROM %s)"
)


def embed_executions(
    db: Database,
    tenant_id: UUID,
    embedder: Embedder,
    start: datetime,
    end: datetime,
    progress: Callable[[str], None] = lambda _: None,
) -> int:
    """Embed this tenant's executions that started in [start, end); returns how many were written."""
    embedding_model = tag(embedder)
    written = 0
    while True:
        with db.tenant_transaction(tenant_id) as conn:
            rows = conn.execute(
                """
                SELECT id, user_request FROM executions
                WHERE started_at >= %s AND started_at < %s AND {NEEDS_EMBEDDING}
                ORDER BY started_at, id
                LIMIT %s
                """.replace("{NEEDS_EMBEDDING}", NEEDS_EMBEDDING),
                (start, end, embedding_model, BATCH),
            ).fetchall()
            if not rows:
                return written
            vectors = embedder.encode([text for _, text in rows])
            write_request_embeddings(conn, [execution_id for execution_id, _ in rows], vectors, embedding_model)
        written += len(rows)
        progress(f"{written:,} executions embedded with {embedding_model}")


def days_to_embed(db: Database, tenant_id: UUID, embedding_model: str, since: datetime) -> dict[date, int]:
    """Days (UTC, of started_at) since `since` with executions not embedded by `embedding_model`, and how many."""
    with db.tenant_transaction(tenant_id) as conn:
        rows = conn.execute(
            """
            SELECT (started_at AT TIME ZONE 'UTC')::date, count(*) FROM executions
            WHERE started_at >= %s AND {NEEDS_EMBEDDING}
            GROUP BY 1 ORDER BY 1
            """.replace("{NEEDS_EMBEDDING}", NEEDS_EMBEDDING),
            (since, embedding_model),
        ).fetchall()
    return {day: int(n) for day, n in rows}


def write_request_embeddings(
    conn: psycopg.Connection, execution_ids: Sequence[UUID], vectors: np.ndarray, embedding_model: str
) -> None:
    """Set the vector (tagged `embedding_model`) of the given executions: one UPDATE ... FROM over
    arrays sent in binary (the application role has no temporary tables). Runs in the caller's
    transaction. A WARM or COLD row gets it compact (halfvec), as the lifecycle keeps it there."""
    conn.execute(
        "UPDATE executions e SET "
        "request_embedding = CASE WHEN e.lifecycle_state = 'HOT' THEN b.embedding END, "
        "request_embedding_compact = CASE WHEN e.lifecycle_state IN ('WARM', 'COLD') THEN b.embedding::halfvec END, "
        "request_embedding_model = %s "
        "FROM unnest(%b::uuid[], %b::vector[]) AS b(id, embedding) WHERE e.id = b.id",
        (embedding_model, list(execution_ids), list(vectors)),
    )


EMBEDDED_EXECUTION_COLUMNS = (
    ("tenant_id", "uuid"),
    ("system_id", "uuid"),
    ("system_name", "text"),
    ("user_request", "text"),
    ("request_embedding", "vector"),
    ("request_embedding_model", "text"),
    ("governance_check", "jsonb"),
    ("status", "text"),
    ("started_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("cost_usd", "numeric"),
)


def copy_embedded_executions(
    conn: psycopg.Connection, rows: Iterable[tuple[Any, ...]], *, with_ids: bool = False
) -> int:
    """Bulk-load executions that arrive with their vectors (evaluation worlds, benchmarks): binary
    COPY of EMBEDDED_EXECUTION_COLUMNS, in that order, after the id when `with_ids` (a world that
    must repeat run after run; otherwise the database draws them). Needs a role that may COPY into
    executions (the maintenance role: COPY does not apply row-level security policies)."""
    columns = (("id", "uuid"), *EMBEDDED_EXECUTION_COLUMNS) if with_ids else EMBEDDED_EXECUTION_COLUMNS
    names = ", ".join(name for name, _ in columns)
    written = 0
    with conn.cursor() as cursor, cursor.copy(f"COPY executions ({names}) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)
            written += 1
    return written


def _embed_capabilities(conn: psycopg.Connection, embedder: Embedder, shared: bool) -> int:
    """Capability vectors, from description and capabilities, of the systems that lack one from
    this embedder: the platform-wide skills (tenant_id NULL) or the ones tenants own."""
    embedding_model = tag(embedder)
    owner = "tenant_id IS NULL" if shared else "tenant_id IS NOT NULL"
    rows = conn.execute(
        "SELECT id, coalesce(description, '') || ' ' || array_to_string(capabilities, ' ') FROM systems "
        f"WHERE {owner} AND capabilities_embedding_model IS DISTINCT FROM %s",
        (embedding_model,),
    ).fetchall()
    if not rows:
        return 0
    vectors = embedder.encode([text for _, text in rows])
    with conn.cursor() as cursor:
        cursor.executemany(
            "UPDATE systems SET capabilities_embedding = %s, capabilities_embedding_model = %s WHERE id = %s",
            [(vector, embedding_model, system_id) for (system_id, _), vector in zip(rows, vectors, strict=True)],
        )
    return len(rows)


def embed_systems(db: Database, tenant_id: UUID, embedder: Embedder) -> int:
    """Capability vectors of the systems this tenant owns."""
    with db.tenant_transaction(tenant_id) as conn:
        return _embed_capabilities(conn, embedder, shared=False)


def embed_shared_systems(db: Database, embedder: Embedder) -> int:
    """Capability vectors of the platform-wide skills, by the maintenance role: tenants can read
    them but never write them."""
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_EMBEDDINGS) as conn:
        return _embed_capabilities(conn, embedder, shared=True)
