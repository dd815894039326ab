"""The execution path: reservations per second and p99 latency with 8 concurrent clients against a
bare UPDATE of one row by the same clients; receipts signed per second against raw Ed25519 signing
of the same bytes; chain verification per second. Same server, same process."""

from __future__ import annotations

import statistics
import threading
import time
from datetime import timedelta
from decimal import Decimal

import psycopg

from benchmarks.own_database import run_in_own_database
from clay_pipelines.db import Database
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.governance import budgets, keys, receipts

CLIENTS = 8
PER_CLIENT = 250
RECEIPTS = 5000


def _clients(app_url: str, tenant, work) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        with psycopg.connect(app_url, autocommit=True) as conn:
            mine = []
            for _ in range(PER_CLIENT):
                began = time.perf_counter()
                with conn.transaction():
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                    work(conn)
                mine.append(time.perf_counter() - began)
            with lock:
                latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] * 1000


def _body() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('Bench') RETURNING id").fetchone()[0]
        window = conn.execute(
            "INSERT INTO resources (tenant_id, resource_type, window_type, window_start, window_end, total_budget) "
            "VALUES (%s, 'usd_budget', 'monthly', now() - interval '1 day', now() + interval '1 day', 1e9) RETURNING id",
            (tenant,),
        ).fetchone()[0]
    bare_s, bare = _clients(
        target.app_url,
        tenant,
        lambda c: c.execute("UPDATE resources SET reserved = reserved + 0.01 WHERE id = %s", (window,)),
    )
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        conn.execute("UPDATE resources SET reserved = 0, alert_sent = false WHERE id = %s", (window,))
    reserve_s, reserved = _clients(
        target.app_url, tenant, lambda c: budgets.reserve(c, "writer", Decimal("0.01"), timedelta(minutes=5))
    )
    n = CLIENTS * PER_CLIENT
    print(f"governance: {CLIENTS} clients x {PER_CLIENT} transactions on one window")
    print(f"  bare UPDATE of one row: {n / bare_s:,.0f}/s, p99 {_p99(bare):.2f} ms")
    print(f"  clay_reserve_budget:    {n / reserve_s:,.0f}/s, p99 {_p99(reserved):.2f} ms")
    print(f"  ratio (reservations / bare updates): {bare_s / reserve_s:.2f}x")

    with Database(target.app_url, target.maintenance_url) as db:
        with db.tenant_transaction(tenant) as conn:
            conn.execute(
                "INSERT INTO executions (system_name, user_request, governance_check, status, started_at, "
                "completed_at, cost_usd) SELECT 'writer', 'r' || i, '{\"requires_approval\": false}', 'success', "
                "now() - interval '1 minute', now(), 0.01 FROM generate_series(1, %s) i",
                (RECEIPTS,),
            )
        signer = keys.FileSigner.from_private(keys.Ed25519PrivateKey.generate())
        with db.unscoped_transaction() as conn:
            keys.register(conn, signer)
        started = time.perf_counter()
        signed = 0
        while signed < RECEIPTS:
            with db.tenant_transaction(tenant) as conn:
                signed += receipts.sign_pending(conn, tenant, signer)
        sign_s = time.perf_counter() - started
        with db.tenant_transaction(tenant) as conn:
            rows = conn.execute(f"SELECT {receipts.BODY_SQL}, e.receipt_previous_hash FROM executions e").fetchall()
        messages = [receipts.message(signer.key_id, r[11], receipts.body(r[:11], r[4])) for r in rows]
        started = time.perf_counter()
        for m in messages:
            signer.sign(m)
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        with db.tenant_transaction(tenant) as conn:
            report = receipts.verify_chain(conn, tenant)
        verify_s = time.perf_counter() - started
    assert report.ok and report.receipts == RECEIPTS, report.breaks[:3]
    print(f"  receipts signed (database, chain, {RECEIPTS:,}): {RECEIPTS / sign_s:,.0f}/s")
    print(f"  raw Ed25519 signing of the same bytes: {RECEIPTS / raw_s:,.0f}/s")
    print(f"  ratio (raw / receipts): {sign_s / raw_s:.1f}x")
    print(f"  chain verification: {RECEIPTS / verify_s:,.0f} receipts/s")


def run() -> None:
    run_in_own_database("clay_bench_governance", _body)
