"""One dream night end to end for one tenant: wall time and peak memory, against the replay alone.

The world of bench_dream_replay (400 kinds of request, 30 systems, 384-dimensional vectors), with
CLAY_BENCH_DREAM_WINDOW executions (default 100,000) in the week before the night and 40,000 in the
months before it, and the router's tunables declared. The night runs tars/cycle.dream_night as the
dream_cycle asset does: rules learned in memory from the history before the window, the window
replayed under today's settings and 10 mutations, doubly robust estimates with a bootstrap, the
decision rule, dreams rows written. The baseline in the same run is one in-memory learning pass over
the same history (what any night must do first): the ratio says what replay, estimation, the
bootstrap and the decision cost on top of it.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from benchmarks.bench_dream_replay import DIM, MODEL, SPREAD, SYSTEMS, TENANT, _create_world, _kinds, _system_id
from benchmarks.bench_routing_scale import PeakMemory, PrecomputedVectors
from benchmarks.own_database import run_in_own_database
from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.routing.embed_store import copy_embedded_executions
from clay_pipelines.routing.rule_store import learn_in_memory
from clay_pipelines.tars import amendments, cycle

WINDOW = int(os.environ.get("CLAY_BENCH_DREAM_WINDOW", "100000"))
HISTORY = 40_000
TUNABLES = {
    "routing_confidence_threshold": {"type": "number", "min": 0.05, "max": 0.95, "step": 0.05},
    "capability_match_threshold": {"type": "number", "min": 0.1, "max": 0.8, "step": 0.05},
}


def run() -> None:
    run_in_own_database("clay_bench_dream_cycle", _run)


def _run() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    rng = np.random.default_rng(11)
    centres, kind_system = _kinds(rng)
    night = (datetime.now(UTC) + timedelta(days=1)).date()  # the coming night: today's constitution holds
    moment = cycle.moment_of(night)
    with Database(target.app_url, target.maintenance_url) as db:
        _create_world(db, centres, kind_system)
        with db.tenant_transaction(TENANT) as conn:
            amendments.amend(
                conn,
                amendments.Change(
                    system="clay-consigliere",
                    changes={"tunables": TUNABLES},
                    by="bench@dreams.example",
                    reason="declare the router's tunables",
                ),
            )
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            copy_embedded_executions(conn, _executions(centres, kind_system, rng, moment, HISTORY, (8, 90)))
            copy_embedded_executions(conn, _executions(centres, kind_system, rng, moment, WINDOW, (0.01, 7)))
        with psycopg.connect(target.admin_url, autocommit=True) as admin:
            admin.execute("ANALYZE")
        print(f"dream cycle: {WINDOW:,} executions in the window, {HISTORY:,} before it, {SYSTEMS} systems")
        with PeakMemory() as memory:
            started = time.perf_counter()
            report = cycle.dream_night(db, TENANT, night, PrecomputedVectors(), latest=False)
            seconds = time.perf_counter() - started
        with db.tenant_transaction(TENANT) as conn:
            started = time.perf_counter()
            learn_in_memory(conn, MODEL, "minilm", started_before=moment - timedelta(days=7))
            learning = time.perf_counter() - started
    (skill,) = report.skills
    print(f"  baseline, one in-memory learning pass over the history: {learning:.1f} s")
    print(
        f"  the night: {seconds:.1f} s, peak memory +{memory.peak_mb - memory.start_mb:,.0f} MB; "
        f"{skill.window_requests:,} window requests, {skill.dreams_written} dreams, outcomes {skill.outcomes}"
    )
    print(f"  ratio night / learning pass: {seconds / learning:.1f}x")


def _executions(
    centres: np.ndarray,
    kind_system: np.ndarray,
    rng: np.random.Generator,
    moment: datetime,
    n: int,
    days: tuple[float, float],
) -> Any:
    kinds = rng.integers(len(centres), size=n)
    wrong = rng.random(n) < 0.10
    systems = np.where(wrong, (kind_system[kinds] + rng.integers(1, SYSTEMS, n)) % SYSTEMS, kind_system[kinds])
    vectors = (centres[kinds] + rng.normal(0.0, SPREAD, (n, DIM))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(n):
        at = moment - timedelta(days=float(rng.uniform(*days)))
        success = not wrong[i] and rng.random() < 0.95
        yield (
            TENANT,
            _system_id(int(systems[i])),
            f"skill-{int(systems[i]):02d}",
            f"request of kind {int(kinds[i])}",
            vectors[i],
            MODEL,
            Jsonb({"requires_approval": False}),
            "success" if success else "failed",
            at,
            at + timedelta(milliseconds=int(rng.integers(200, 4000))),
            Decimal("0.0100"),
        )
