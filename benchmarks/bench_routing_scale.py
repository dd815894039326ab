"""Routing memory at scale: rule learning over 1,000,000 executions (full re-cluster, then the daily
incremental run as the ratio against it) with wall time and peak memory, and route() over the
resulting rules: p50/p99 latency through the HNSW index against an exact scan (the baseline), and
recall@5 of the nearest rules against the exact scan.

The executions carry synthetic 384-dimensional vectors (the dimension of minilm@1, so the router
uses the real HNSW indexes of migration 010): 12,000 kinds of request in 600 topics (kinds of one
topic about 0.6 alike, so a request's nearest rules after its own are its topic's neighbours, as with
real intents), requests scattered around their kind (cosine about 0.75 to its centre, about what
sentence embeddings give for paraphrases), served by 200 systems; 10% of executions went to a wrong
system and failed.
Encoding a million texts would measure the embedder, not the learner: embedders are measured by
bench_routing_embeddings. CLAY_BENCH_EXECUTIONS changes the size (default 1,000,000).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from benchmarks.own_database import run_in_own_database
from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.routing.embed_store import copy_embedded_executions
from clay_pipelines.routing.router import nearest_rules, route
from clay_pipelines.routing.rule_store import learn_rules_full, learn_rules_incremental

EXECUTIONS = int(os.environ.get("CLAY_BENCH_EXECUTIONS", "1000000"))
KINDS = 12_000
TOPICS = 600
SYSTEMS = 200
DIM = 384
SPREAD = 0.045  # per-dimension noise: cosine to the centre about 1 / sqrt(1 + DIM * SPREAD**2) = 0.75
WRONG_SYSTEM = 0.10
NEW_PER_DAY = 20_000  # the incremental run's new executions
QUERIES = 1_000
CHUNK = 50_000
TENANT = uuid.uuid5(uuid.NAMESPACE_URL, "clay-bench/routing-scale")
T = TypeVar("T")


class PrecomputedVectors:
    """The embedder the router is told about: minilm@1's name and dimension; requests arrive with
    their vectors, so encode() is never called."""

    name = "minilm"
    version = 1
    dim = DIM

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("the benchmark passes every vector to route()")


class PeakMemory:
    """Peak resident memory of this process while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def _timed(action: Callable[[], T]) -> tuple[T, float, PeakMemory]:
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
    return result, seconds, memory


def _system_id(index: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"clay-bench/system/{index}")


def _create_world(db: Database) -> None:
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, domain, subscription_tier) VALUES (%s, 'Scale', 'scale.example', 'enterprise')",
            (TENANT,),
        )
        catch_all = {
            "skill": "clay-consigliere",
            "requires_approval": [],
            "parameters": {"routing_confidence_threshold": 0.5, "min_rule_executions": 50, "catch_all": True},
        }
        rows: list[tuple[Any, ...]] = [
            (uuid.uuid5(uuid.NAMESPACE_URL, "clay-bench/catch-all"), "clay-consigliere", "agent", Jsonb(catch_all))
        ]
        rows += [
            (_system_id(i), f"skill-{i:03d}", "component", Jsonb({"skill": f"skill-{i:03d}", "requires_approval": []}))
            for i in range(SYSTEMS)
        ]
        conn.cursor().executemany(
            "INSERT INTO systems (id, tenant_id, name, type, constitution) VALUES (%s, %s, %s, %s, %s)",
            [(system_id, TENANT, name, kind, constitution) for system_id, name, kind, constitution in rows],
        )


def _requests(
    centres: np.ndarray, kind_system: np.ndarray, n: int, rng: np.random.Generator, start: datetime, span: timedelta
) -> Iterator[tuple[Any, ...]]:
    """Execution rows in chunks: a kind of request, a vector around its centre, who served it."""
    for offset in range(0, n, CHUNK):
        size = min(CHUNK, n - offset)
        kinds = rng.integers(len(centres), size=size)
        vectors = centres[kinds] + rng.normal(0.0, SPREAD, (size, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        wrong = rng.random(size) < WRONG_SYSTEM
        right = kind_system[kinds]
        systems = np.where(wrong, (right + rng.integers(1, SYSTEMS, size)) % SYSTEMS, right)
        success = ~wrong & (rng.random(size) < 0.95)
        seconds = rng.random(size) * span.total_seconds()
        durations = rng.integers(200, 4000, size)
        for i in range(size):
            at = start + timedelta(seconds=float(seconds[i]))
            yield (
                TENANT,
                _system_id(int(systems[i])),
                f"skill-{int(systems[i]):03d}",
                f"request of kind {int(kinds[i])}",
                vectors[i],
                "minilm@1",
                Jsonb({"requires_approval": False}),
                "success" if success[i] else "failed",
                at,
                at + timedelta(milliseconds=int(durations[i])),
                Decimal("0.0100"),
            )


def _load(db: Database, rows: Iterator[tuple[Any, ...]]) -> int:
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        return copy_embedded_executions(conn, rows)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def run() -> None:
    run_in_own_database("clay_bench_routing_scale", _run)


def _run() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    rng = np.random.default_rng(11)
    centres, kind_system = _kinds(rng)
    now = datetime.now(UTC)
    with Database(target.app_url, target.maintenance_url) as db:
        _create_world(db)
        _load_history(db, target.admin_url, centres, kind_system, rng, now)
        active_rules = _learn(db, centres, kind_system, rng, now)
        queries = centres[rng.integers(KINDS, size=QUERIES)] + rng.normal(0.0, SPREAD, (QUERIES, DIM))
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        _route(db, queries, active_rules)


def _kinds(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every kind of request's centre (unit rows) and its own system."""
    topics = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    own = rng.normal(size=(KINDS, DIM)).astype(np.float32)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    centres = topics[np.arange(KINDS) % TOPICS] + 0.8 * own  # kinds of a topic: cosine about 0.6
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Each kind's own system, at random: a topic's kinds mostly go to different systems.
    return centres, rng.integers(SYSTEMS, size=KINDS)


def _load_history(
    db: Database,
    admin_url: str,
    centres: np.ndarray,
    kind_system: np.ndarray,
    rng: np.random.Generator,
    now: datetime,
) -> None:
    """A year of executions, then fresh planner statistics."""
    started = time.perf_counter()
    history = now - timedelta(days=366)
    loaded = _load(db, _requests(centres, kind_system, EXECUTIONS, rng, history, timedelta(days=365)))
    load_s = time.perf_counter() - started
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("ANALYZE executions")
    print(f"routing at scale: {loaded:,} executions ({KINDS:,} kinds of request, {SYSTEMS} systems, {DIM} dims)")
    print(f"  loaded with binary COPY in {load_s:.1f} s ({loaded / load_s:,.0f} rows/s)")


def _progress(message: str) -> None:
    print(f"    {message}", flush=True)


def _grown(memory: PeakMemory) -> str:
    return f"peak memory {memory.peak_mb:,.0f} MB (+{memory.peak_mb - memory.start_mb:,.0f} MB)"


def _learn(db: Database, centres: np.ndarray, kind_system: np.ndarray, rng: np.random.Generator, now: datetime) -> int:
    """The full re-cluster, then a day of new executions and the incremental run; returns the
    active rules after it."""
    full, full_s, full_memory = _timed(lambda: learn_rules_full(db, TENANT, "minilm@1", "minilm", progress=_progress))
    print(
        f"  full re-cluster:   {full_s:>7.1f} s, {_grown(full_memory)}; {full.active_rules:,} active rules, "
        f"{full.assigned:,} memberships"
    )
    _load(db, _requests(centres, kind_system, NEW_PER_DAY, rng, now - timedelta(days=1), timedelta(hours=23)))
    incremental, incremental_s, incremental_memory = _timed(
        lambda: learn_rules_incremental(db, TENANT, "minilm@1", "minilm", progress=_progress)
    )
    print(
        f"  incremental ({NEW_PER_DAY:,} new executions): {incremental_s:>7.1f} s, {_grown(incremental_memory)}; "
        f"{incremental.assigned:,} joined rules, {incremental.created:,} created, "
        f"{incremental.active_rules:,} active rules"
    )
    print(f"  ratio full / incremental: {full_s / incremental_s:.1f}x")
    return incremental.active_rules


def _route(db: Database, queries: np.ndarray, active_rules: int) -> None:
    """route() latency through HNSW against the exact scan, and the HNSW path's recall."""
    embedder = PrecomputedVectors()
    latencies: dict[bool, list[float]] = {False: [], True: []}
    for exact in (True, False, True, False):  # alternate, so neither gets the warmer cache
        for vector in queries[: QUERIES // 2] if exact else queries[QUERIES // 2 :]:
            started = time.perf_counter()
            route(db, TENANT, "benchmark request", embedder, vector=vector, exact=exact)
            latencies[exact].append((time.perf_counter() - started) * 1000)
    hits, first = _recall(db, queries, embedder)
    hnsw_p50, hnsw_p99 = _percentiles(latencies[False])
    exact_p50, exact_p99 = _percentiles(latencies[True])
    print(f"  route() over {active_rules:,} rules, {QUERIES:,} requests each way:")
    print(f"    exact scan (baseline): p50 {exact_p50:6.2f} ms  p99 {exact_p99:6.2f} ms")
    print(f"    HNSW:                  p50 {hnsw_p50:6.2f} ms  p99 {hnsw_p99:6.2f} ms")
    print(f"    ratio exact / HNSW: p50 {exact_p50 / hnsw_p50:.1f}x, p99 {exact_p99 / hnsw_p99:.1f}x")
    print(f"    recall@5 of HNSW against the exact scan: {hits / (5 * QUERIES):.3f}")
    print(f"    same nearest rule as the exact scan:     {first / QUERIES:.3f}")


def _recall(db: Database, queries: np.ndarray, embedder: PrecomputedVectors) -> tuple[int, int]:
    """(nearest five rules the HNSW path shares with the exact scan, summed; queries whose nearest
    rule is the same)."""
    hits = first = 0
    with db.tenant_transaction(TENANT) as conn:
        for vector in queries:
            approximate = [c.rule_id for c in nearest_rules(conn, vector, embedder, k=5)]
            exact = [c.rule_id for c in nearest_rules(conn, vector, embedder, k=5, exact=True)]
            hits += len(set(approximate) & set(exact))
            first += bool(approximate) and bool(exact) and approximate[0] == exact[0]
    return hits, first
