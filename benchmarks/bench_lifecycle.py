"""Benchmark lifecycle: CLAY_BENCH_LIFECYCLE_EXECUTIONS executions (default 1,000,000) spread over 3
years for one tenant, each with a 384-dimension vector and content in every content column.

1. The daily aging run (about 1% of rows changing state) against one full-table UPDATE in the same run.
2. Archiving a month: rows per second written and verified, against pyarrow writing the same rows
   from memory.
3. Bytes per row in each state (the row with its TOASTed values, plus its cold content), and the
   relations' and indexes' sizes.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
import pyarrow.parquet as pq

from benchmarks.own_database import run_in_own_database
from clay_pipelines import settings
from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle.aging import age_tenant

TENANT = UUID("00000000-0000-0000-0000-0000000b1fe0")
DIM = 384
SPAN_DAYS = 3 * 365


def run() -> None:
    run_in_own_database("clay_bench_lifecycle", _run)


_FILL = f"""
INSERT INTO executions (tenant_id, system_name, user_request, request_embedding, request_embedding_model,
  input_data, output_data, governance_check, status, started_at, completed_at, cost_usd, user_satisfaction,
  user_feedback, suggested_improvements, last_accessed_at, access_count)
SELECT %(tenant)s, 'writer', 'draft an email about the quarterly numbers #' || g,
  (SELECT array_agg(sin(g * 0.001 + d))::real[] FROM generate_series(1, {DIM}) d)::vector, 'bench@1',
  jsonb_build_object('prompt', 'draft an email about the quarterly numbers #' || g, 'tokens', g %% 500),
  jsonb_build_object('answer', repeat('Dear team, the quarter closed well. ', 6), 'tokens', 200 + g %% 50),
  '{{"requires_approval": false}}', 'success', t, t + interval '850 milliseconds', 0.0125, 1 + g %% 5,
  'useful, thanks #' || g, '{{"tone": "warmer"}}', t + interval '1 hour', 1
FROM (SELECT g, %(start)s::timestamptz + (g::float8 / %(n)s) * interval '{SPAN_DAYS} days' AS t
      FROM generate_series(%(from)s, %(to)s) g) s
"""


def _build(db: Database, n: int, now: datetime) -> None:
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, domain) VALUES (%s, 'Bench', 'bench.example') ON CONFLICT DO NOTHING",
            (TENANT,),
        )
        conn.execute("DELETE FROM executions WHERE tenant_id = %s", (TENANT,))
    start = now - timedelta(days=SPAN_DAYS)
    step = 50_000
    for first in range(1, n + 1, step):
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            conn.execute(
                _FILL, {"tenant": TENANT, "start": start, "n": n, "from": first, "to": min(n, first + step - 1)}
            )


def _vacuum(target) -> None:
    with psycopg.connect(target.admin_url, autocommit=True) as admin:
        admin.execute("VACUUM ANALYZE executions, execution_cold_content")


def _sizes(target) -> dict[str, int]:
    with psycopg.connect(target.admin_url, autocommit=True) as admin:
        admin.execute("VACUUM ANALYZE executions, execution_cold_content")
        return dict(
            admin.execute(
                "SELECT r, pg_total_relation_size(r) FROM unnest(ARRAY['executions', 'execution_cold_content']) r"
            ).fetchall()
        ) | {
            "executions indexes": admin.execute("SELECT pg_indexes_size('executions')").fetchone()[0],
        }


def _run() -> None:
    n = int(settings.env("CLAY_BENCH_LIFECYCLE_EXECUTIONS") or 1_000_000)
    target = resolve_target()
    apply_migrations(target.admin_url)
    now = datetime.now(UTC)
    with Database(target.app_url, target.maintenance_url) as db:
        started = time.perf_counter()
        _build(db, n, now)
        print(
            f"lifecycle: {n:,} executions over 3 years ({DIM}-dim vectors) built in {time.perf_counter() - started:.0f} s"
        )
        before = _sizes(target)
        # The state of the previous day, then the day measured: rows whose last access crosses 30 or 90
        # days in the days between (about 1% of the rows). Bringing a fresh table to its state moves
        # nearly every row at once; the VACUUM stands for the autovacuum a day between runs allows
        # (without it the measured run wades through a million dead index entries).
        age_tenant(db, TENANT, now - timedelta(days=6))
        _vacuum(target)
        with db.tenant_transaction(TENANT) as conn:
            states_before = dict(conn.execute("SELECT lifecycle_state, count(*) FROM executions GROUP BY 1").fetchall())
        started = time.perf_counter()
        report = age_tenant(db, TENANT, now)
        aging = time.perf_counter() - started
        changed = report.to_warm + report.to_cold
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            started = time.perf_counter()
            conn.execute("UPDATE executions SET access_count = access_count WHERE tenant_id = %s", (TENANT,))
            full = time.perf_counter() - started
        print(f"  states before the measured day: {states_before}")
        print(
            f"  daily aging: {changed:,} rows changed state ({100 * changed / n:.2f}%: {report.to_warm:,} HOT -> WARM, "
            f"{report.to_cold:,} WARM -> COLD) in {aging:.2f} s; "
            f"one full-table UPDATE {full:.2f} s; ratio {full / aging:.1f}x"
        )

        month = (now - timedelta(days=500)).date().replace(day=1)
        store = ar.ArchiveStore(tempfile.mkdtemp(prefix="clay-bench-archive-"))
        started = time.perf_counter()
        archived = ar.archive_month(db, TENANT, month, store, enabled=True)
        seconds = time.perf_counter() - started
        table = pq.read_table(archived.files[0]) if archived.files else None
        if table is not None:
            started = time.perf_counter()
            pq.write_table(table, tempfile.mktemp(suffix=".parquet"), compression="zstd")
            memory = time.perf_counter() - started
            print(
                f"  archive {month:%Y-%m}: {archived.archived:,} rows written, verified and tombstoned in {seconds:.2f} s "
                f"({archived.archived / seconds:,.0f} rows/s); pyarrow writing the same rows from memory "
                f"{memory:.3f} s ({table.num_rows / memory:,.0f} rows/s); ratio {seconds / memory:.1f}x"
            )
        after = _sizes(target)
        with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
            per_state = conn.execute(
                "SELECT e.lifecycle_state, count(*), avg(pg_column_size(e.*))::int, "
                "avg(coalesce(pg_column_size(c.*), 0))::int FROM executions e "
                "LEFT JOIN execution_cold_content c ON c.execution_id = e.id GROUP BY 1 ORDER BY 1"
            ).fetchall()
        print("  bytes per row by state (row incl. TOASTed values + cold content):")
        for state, count, row_bytes, cold_bytes in per_state:
            print(
                f"    {state:<9} {count:>9,} rows  {row_bytes:>6,} + {cold_bytes:>4,} = {row_bytes + cold_bytes:>6,} bytes"
            )
        print(f"  relation sizes before aging: { {k: f'{v / 2**20:,.0f} MiB' for k, v in before.items()} }")
        print(
            f"  relation sizes after (VACUUMed, not FULL): { {k: f'{v / 2**20:,.0f} MiB' for k, v in after.items()} }"
        )
