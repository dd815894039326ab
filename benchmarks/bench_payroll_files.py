"""Payroll files per minute: the per-file pipeline (triage, extraction, checks, name resolution, one
transaction per file version) run by 1 worker process, then by 2, over the same files, same server,
same benchmark run. Each file is its own step, as the multiprocess executor runs it."""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import date
from pathlib import Path
from uuid import UUID

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.payroll import checks, store
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.sample_world.payroll_docs import generate_directory, generate_payroll_world

COPIES = 4  # the 7 sample files, four times under different names and contents: 28 files per pass


def _process(args: tuple[str, str, str, str]) -> int:
    app_url, maintenance_url, tenant, path_text = args
    path = Path(path_text)
    extraction = extract_document(path)
    assert all(o.passed for o in checks.run_checks(extraction) if o.blocking), path.name
    with Database(app_url, maintenance_url, max_pool_size=1) as db, db.tenant_transaction(UUID(tenant)) as conn:
        stored = store.store_extraction(
            conn, path.name, store.content_hash(path), extraction, store.load_resolver(conn)
        )
    return stored.entries


def run() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    root = Path(tempfile.mkdtemp(prefix="clay-bench-files-"))
    generate_payroll_world(root, 7, date(2026, 1, 15))
    sources = sorted((root / "inbox" / "oms.com").glob("*.pdf"))
    directory = generate_directory(7)
    with Database(target.app_url, target.maintenance_url) as db:
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            tenant = conn.execute(
                "INSERT INTO tenants (name, domain) VALUES ('Bench', 'bench.example') "
                "ON CONFLICT (domain) DO UPDATE SET name = EXCLUDED.name RETURNING id"
            ).fetchone()[0]
        with db.tenant_transaction(tenant) as conn:
            store.sync_directory(conn, [asdict(e) for e in directory], {e.llc: e.id for e in directory if e.llc})

    results = {}
    for workers in (1, 2):
        batch = root / f"pass-{workers}"
        batch.mkdir()
        files = []
        for copy in range(COPIES):
            for source in sources:
                files.append(batch / f"{workers}-{copy}-{source.name}")
                # A trailing PDF comment makes each copy its own content: identical bytes under another
                # name would be stored once, as a duplicate, and measure nothing.
                files[-1].write_bytes(source.read_bytes() + f"\n% copy {workers}-{copy}\n".encode())
        jobs = [(target.app_url, target.maintenance_url, str(tenant), str(f)) for f in files]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_process, jobs[:workers]))  # warm the workers (imports) outside the clock
            started = time.perf_counter()
            entries = sum(pool.map(_process, jobs[workers:]))
            seconds = time.perf_counter() - started
        results[workers] = (len(jobs) - workers, entries, seconds)
    shutil.rmtree(root, ignore_errors=True)

    print("payroll files, per-file pipeline in worker processes:")
    for workers, (count, entries, seconds) in results.items():
        print(
            f"  {workers} process(es): {count} files, {entries} entries in {seconds:.1f} s = "
            f"{60 * count / seconds:,.0f} files/min"
        )
    one, two = (60 * results[w][0] / results[w][2] for w in (1, 2))
    print(f"  ratio 2 processes / 1: {two / one:.2f}x")
