"""Dream replay throughput: logged requests re-decided per second per arm, against route() per request.

A throwaway tenant gets synthetic 384-dimensional executions (400 kinds of request in 40 topics,
served by 30 systems, as in bench_routing_scale at a smaller size) and rules learned by the
pipeline's own learner. The baseline is route() (dry run, through the HNSW indexes) on a few hundred
requests. The replay then takes 100,000 requests: their nearest rules and capability neighbours
are found once in bulk with numpy (exact cosine over the rules' prototypes), and each arm (today's
settings, the routing threshold one step lower, and a strict 0.9) re-decides every request with the
router's own decide(). The ratio printed is replay requests per second per arm over route() requests per second.
The requests route() decided are replayed too, and the share where both chose the same system and
path is printed (route() reads HNSW neighbours, the replay exact ones).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from benchmarks.bench_routing_scale import PrecomputedVectors
from benchmarks.own_database import run_in_own_database
from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import resolve_target
from clay_pipelines.routing.embed_store import copy_embedded_executions
from clay_pipelines.routing.router import RoutingContext, RuleCandidate, route, routing_context
from clay_pipelines.routing.rule_store import LEARNER, as_array, learn_rules_full, load_systems
from clay_pipelines.tars.replay import (
    ReplayRequests,
    RuleIndex,
    nearest_capability_lists,
    nearest_rule_candidates,
    replay,
)

TENANT = uuid.uuid5(uuid.NAMESPACE_URL, "clay-bench/dream-replay")
EXECUTIONS = 40_000
KINDS = 400
TOPICS = 40
SYSTEMS = 30
DIM = 384
SPREAD = 0.045
ROUTED = 300  # route() calls, the baseline
REPLAYED = int(os.environ.get("CLAY_BENCH_REPLAY_REQUESTS", "100000"))
THRESHOLD = 0.6
MODEL = "minilm@1"


def _system_id(index: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"clay-bench/dream-replay/system/{index}")


def run() -> None:
    run_in_own_database("clay_bench_dream_replay", _run)


def _run() -> None:
    target = resolve_target()
    apply_migrations(target.admin_url)
    rng = np.random.default_rng(5)
    centres, kind_system = _kinds(rng)
    with Database(target.app_url, target.maintenance_url) as db:
        _create_world(db, centres, kind_system)
        with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
            copy_embedded_executions(conn, _executions(centres, kind_system, rng))
        with psycopg.connect(target.admin_url, autocommit=True) as admin:
            admin.execute("ANALYZE")
        learned = learn_rules_full(db, TENANT, MODEL, "minilm")
        print(f"dream replay: {EXECUTIONS:,} executions, {learned.active_rules:,} active rules, {SYSTEMS} systems")
        routed_vectors = _requests(centres, ROUTED, rng)
        decisions, route_seconds = _route(db, routed_vectors)
        index, capabilities, context = _load(db, routed_vectors[0])
    route_rate = ROUTED / sum(route_seconds)
    print(
        f"  route() per request (baseline): {route_rate:,.0f} requests/s "
        f"(p50 {statistics.median(route_seconds) * 1000:.2f} ms over {ROUTED} requests)"
    )
    vectors = _requests(centres, REPLAYED, rng)
    started = time.perf_counter()
    requests = ReplayRequests(
        candidates=nearest_rule_candidates(vectors, index),
        capabilities=nearest_capability_lists(vectors, capabilities[1], capabilities[0]),
    )
    neighbours = time.perf_counter() - started
    # Today's settings, one step lower, and a strict threshold that sends many requests elsewhere.
    arms = [
        {},
        {"routing_confidence_threshold": round(context.threshold - 0.05, 2)},
        {"routing_confidence_threshold": 0.9},
    ]
    started = time.perf_counter()
    choices = replay(requests, context, arms)
    per_arm = (time.perf_counter() - started) / len(arms)
    changed = ", ".join(f"{float((arm.system != choices[0].system).mean()):.1%}" for arm in choices[1:])
    print(f"  nearest rules and capabilities of {REPLAYED:,} requests in bulk: {neighbours:.1f} s (once for all arms)")
    print(
        f"  replay: {REPLAYED / per_arm:,.0f} requests/s per arm ({len(arms)} arms; choices differing from today's: {changed})"
    )
    print(f"  ratio replay per arm / route(): {REPLAYED / per_arm / route_rate:.0f}x")
    with_neighbours = REPLAYED / (per_arm + neighbours)
    print(
        f"  counting the bulk search for one arm alone: {with_neighbours:,.0f} requests/s, "
        f"{with_neighbours / route_rate:.0f}x"
    )
    same = _agreement(routed_vectors, decisions, index, capabilities, context)
    print(f"  same system and path as route() on its {ROUTED} requests: {same:.3f}")


def _kinds(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    topics = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    own = rng.normal(size=(KINDS, DIM)).astype(np.float32)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    centres = topics[np.arange(KINDS) % TOPICS] + 0.8 * own
    return centres / np.linalg.norm(centres, axis=1, keepdims=True), rng.integers(SYSTEMS, size=KINDS)


def _create_world(db: Database, centres: np.ndarray, kind_system: np.ndarray) -> None:
    """The tenant, its catch-all (the router's constitution) and its systems, each with a capability
    vector: the mean of the kinds it serves, so capability neighbours mean something."""
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, domain, subscription_tier) VALUES (%s, 'Dreams', 'dreams.example', 'pro')",
            (TENANT,),
        )
        router = {
            "skill": "clay-consigliere",
            "requires_approval": [],
            "parameters": {
                "routing_confidence_threshold": THRESHOLD,
                "capability_match_threshold": 0.35,
                "min_rule_executions": 50,
                "catch_all": True,
            },
        }
        rows: list[tuple[Any, ...]] = [
            (uuid.uuid5(uuid.NAMESPACE_URL, "clay-bench/dream-replay/catch-all"), "clay-consigliere", router, None)
        ]
        for i in range(SYSTEMS):
            served = centres[kind_system == i]
            vector = served.mean(axis=0) if len(served) else centres[i]
            rows.append((_system_id(i), f"skill-{i:02d}", {"skill": f"skill-{i:02d}", "requires_approval": []}, vector))
        conn.cursor().executemany(
            "INSERT INTO systems (id, tenant_id, name, type, constitution, capabilities_embedding, "
            "capabilities_embedding_model) VALUES (%s, %s, %s, 'component', %s, %s, %s)",
            [
                (sid, TENANT, name, Jsonb(constitution), vector, None if vector is None else MODEL)
                for sid, name, constitution, vector in rows
            ],
        )


def _requests(centres: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    kinds = rng.integers(len(centres), size=n)
    vectors = centres[kinds] + rng.normal(0.0, SPREAD, (n, DIM)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _executions(centres: np.ndarray, kind_system: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[Any, ...]]:
    now = datetime.now(UTC)
    kinds = rng.integers(len(centres), size=EXECUTIONS)
    wrong = rng.random(EXECUTIONS) < 0.10
    systems = np.where(wrong, (kind_system[kinds] + rng.integers(1, SYSTEMS, EXECUTIONS)) % SYSTEMS, kind_system[kinds])
    vectors = (centres[kinds] + rng.normal(0.0, SPREAD, (EXECUTIONS, DIM))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(EXECUTIONS):
        at = now - timedelta(days=float(rng.uniform(1, 90)))
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


def _route(db: Database, vectors: np.ndarray) -> tuple[list[tuple[str | None, str]], list[float]]:
    """route() per request, as production calls it (dry run, HNSW): its decisions and seconds each."""
    embedder = PrecomputedVectors()
    decisions, seconds = [], []
    for vector in vectors:
        started = time.perf_counter()
        decision = route(db, TENANT, "benchmark request", embedder, vector=vector)
        seconds.append(time.perf_counter() - started)
        decisions.append((decision.system_name, decision.path))
    return decisions, seconds


def _load(
    db: Database, vector: np.ndarray
) -> tuple[RuleIndex, tuple[list[tuple[uuid.UUID, str]], np.ndarray], RoutingContext]:
    """The tenant's rules with their prototypes, its active systems' capability vectors, and the
    routing context route() builds (thresholds, names, budgets), read once."""
    embedder = PrecomputedVectors()
    with db.tenant_transaction(TENANT) as conn:
        rules = conn.execute(
            "SELECT id, request_pattern, recommended_system_id, alternative_systems, confidence_score, "
            "member_similarity, request_embedding, created_by FROM routing_rules "
            "WHERE is_active AND request_embedding_model = %s ORDER BY id",
            (MODEL,),
        ).fetchall()
        prototypes = conn.execute(
            "SELECT rule_id, embedding FROM routing_rule_prototypes WHERE embedding_model = %s", (MODEL,)
        ).fetchall()
        systems = conn.execute(
            "SELECT id, name, capabilities_embedding FROM systems WHERE status = 'active' "
            "AND capabilities_embedding_model = %s ORDER BY id",
            (MODEL,),
        ).fetchall()
        context = routing_context(conn, load_systems(conn), vector, embedder)
    position = {row[0]: i for i, row in enumerate(rules)}
    candidates = [
        RuleCandidate(r[0], 0.0, r[1], r[2], list(r[3] or []), float(r[4]), None if r[5] is None else float(r[5]))
        for r in rules
    ]
    # Learned rules are scored by their prototypes; the others by their request_embedding.
    vectors = [as_array(v) for rule, v in prototypes if rule in position]
    owners = [position[rule] for rule, _ in prototypes if rule in position]
    for i, r in enumerate(rules):
        if r[7] != LEARNER:
            vectors.append(as_array(r[6]))
            owners.append(i)
    index = RuleIndex(rules=candidates, prototypes=np.array(vectors), prototype_rule=np.array(owners))
    capability = ([(s[0], s[1]) for s in systems], np.array([as_array(s[2]) for s in systems]))
    return index, capability, context


def _agreement(
    vectors: np.ndarray,
    decisions: list[tuple[str | None, str]],
    index: RuleIndex,
    capabilities: tuple[list[tuple[uuid.UUID, str]], np.ndarray],
    context: RoutingContext,
) -> float:
    requests = ReplayRequests(
        candidates=nearest_rule_candidates(vectors, index),
        capabilities=nearest_capability_lists(vectors, capabilities[1], capabilities[0]),
    )
    arm = replay(requests, context, [{}])[0]
    return float(np.mean([(arm.system[i], arm.path[i]) == decisions[i] for i in range(len(decisions))]))
