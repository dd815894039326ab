"""Loading executions: the loader's COPY path against row-by-row executemany INSERTs (the baseline),
same rows, same server, same process. Prints rows per second for both and the ratio."""

from __future__ import annotations

import time
from datetime import date

import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.sample_world import generator, loader

ROWS = 20_000


def _reset(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM executions")


def run() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    params = generator.WorldParameters(seed=1, scale=1, anchor=date(2026, 1, 15))
    rows = generator.generate_executions(params)[:ROWS]
    with Database(target.app_url, target.maintenance_url) as db:
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            loader._upsert_tenants_and_systems(conn)

        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            started = time.perf_counter()
            columns = loader.EXECUTION_COLUMNS
            statement = f"INSERT INTO executions ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
            conn.cursor().executemany(
                statement,
                [
                    [Jsonb(r[c]) if c in loader.JSON_COLUMNS and r[c] is not None else r[c] for c in columns]
                    for r in rows
                ],
            )
            baseline = time.perf_counter() - started
            _reset(conn)

        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            started = time.perf_counter()
            loader._copy_rows(conn, "executions", loader.EXECUTION_COLUMNS, rows)
            copy_seconds = time.perf_counter() - started
            _reset(conn)

    print(f"world load: {ROWS:,} executions")
    print(f"  executemany INSERT (baseline): {ROWS / baseline:>10,.0f} rows/s  ({baseline:.2f} s)")
    print(f"  COPY (loader):                 {ROWS / copy_seconds:>10,.0f} rows/s  ({copy_seconds:.2f} s)")
    print(f"  ratio COPY / baseline: {baseline / copy_seconds:.1f}x faster")
