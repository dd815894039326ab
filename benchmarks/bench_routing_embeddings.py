"""Request embeddings, two measurements, each against a baseline in the same process:

1. encoding throughput per embedder: batched, as the request_embeddings asset encodes, against one
   request at a time, as the router encodes (the baseline). Every embedder that can run here is
   measured: hashing always, minilm with the optional extra, openai only when OPENAI_API_KEY is set.
2. writing vectors: the asset's path (one UPDATE ... FROM over arrays sent in binary) against
   row-by-row executemany UPDATEs (the baseline), same rows, same server. Executions carry no vector
   index (migration 015), so this is what the request_embeddings asset pays per row.
"""

from __future__ import annotations

import os
import time
from datetime import date

import numpy as np
import psycopg

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.routing.embed_store import write_request_embeddings
from clay_pipelines.routing.embeddings import Embedder, HashingEmbedder, get_embedder, tag
from clay_pipelines.sample_world import generator, loader

TEXTS = 4_000  # batched encoding
SINGLE = 300  # one at a time (the baseline)
WRITE_ROWS = 5_000


def _embedders() -> list[Embedder]:
    out: list[Embedder] = [HashingEmbedder()]
    try:
        out.append(get_embedder("minilm"))
    except (RuntimeError, ImportError) as error:
        print(f"  minilm not measured: {error}")
    if os.environ.get("OPENAI_API_KEY"):
        out.append(get_embedder("openai"))
    else:
        print("  openai not measured: OPENAI_API_KEY is not set")
    return out


def _throughput(embedder: Embedder, texts: list[str]) -> None:
    embedder.encode(texts[:8])  # warm-up: model load, projection matrix
    started = time.perf_counter()
    for text in texts[:SINGLE]:
        embedder.encode([text])
    single = SINGLE / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(texts), 1000):
        embedder.encode(texts[start : start + 1000])
    batched = len(texts) / (time.perf_counter() - started)
    print(f"  {tag(embedder):<10} one at a time (baseline): {single:>8,.0f} requests/s ({1000 / single:.1f} ms each)")
    print(f"  {tag(embedder):<10} batched ({len(texts):,}):          {batched:>8,.0f} requests/s")
    print(f"  {tag(embedder):<10} ratio batched / baseline: {batched / single:.1f}x")


def _clear(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE executions SET request_embedding = NULL, request_embedding_model = NULL")


def _write(db: Database, rows: list[dict], vectors: np.ndarray, embedding_model: str, rounds: int = 3) -> None:
    """Both paths in alternation, `rounds` times each (UPDATEs leave dead tuples behind, so a fixed
    order would favour whichever runs first); the median of each is compared."""
    ids = [row["id"] for row in rows]
    timings: dict[str, list[float]] = {"baseline": [], "copy": []}
    for _ in range(rounds):
        for path in ("baseline", "copy"):
            with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
                started = time.perf_counter()
                if path == "baseline":
                    conn.cursor().executemany(
                        "UPDATE executions SET request_embedding = %s, request_embedding_model = %s WHERE id = %s",
                        [
                            (vector, embedding_model, execution_id)
                            for execution_id, vector in zip(ids, vectors, strict=True)
                        ],
                    )
                else:
                    write_request_embeddings(conn, ids, vectors, embedding_model)
                timings[path].append(time.perf_counter() - started)
                _clear(conn)
    baseline, copy_seconds = (float(np.median(timings[path])) for path in ("baseline", "copy"))
    n = len(ids)
    print(f"  executemany UPDATE (baseline): {n / baseline:>8,.0f} rows/s  (median of {rounds}: {baseline:.2f} s)")
    print(
        f"  binary arrays + UPDATE FROM:   {n / copy_seconds:>8,.0f} rows/s  (median of {rounds}: {copy_seconds:.2f} s)"
    )
    print(f"  ratio arrays / baseline: {baseline / copy_seconds:.2f}x faster")


def run() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    params = generator.WorldParameters(seed=2, scale=1, anchor=date(2026, 1, 15))
    rows = generator.generate_executions(params)
    texts = [row["user_request"] for row in rows[:TEXTS]]
    print(f"request embeddings: {len(texts):,} requests from the sample world")
    for embedder in _embedders():
        _throughput(embedder, texts)

    hashing = HashingEmbedder()
    embedding_model = tag(hashing)
    written = rows[:WRITE_ROWS]
    vectors = hashing.encode([row["user_request"] for row in written])
    with Database(target.app_url, target.maintenance_url) as db:
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            loader._upsert_tenants_and_systems(conn)
            conn.execute("DELETE FROM executions")
            loader._copy_rows(conn, "executions", loader.EXECUTION_COLUMNS, written)
        print(f"writing {len(written):,} {embedding_model} vectors ({hashing.dim} dims):")
        _write(db, written, vectors, embedding_model)
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            conn.execute("DELETE FROM executions")
