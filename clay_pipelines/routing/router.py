"""The router: a request to a system, by learned rules first, then by capability, then catch-all.

  1. rule: the nearest active rule of the tenant by cosine (pgvector HNSW over learned rules'
     prototypes; the few rules the learner did not write are scored exactly by their
     request_embedding). A rule's
     score for a request is how well the request fits it (its similarity against the similarity
     the rule's own members have: 1 when it is as alike as a typical member) weighed by the rule's
     confidence. Accepted when the score reaches routing_confidence_threshold. The recommended system
     is taken unless it is inactive or over budget, then the rule's alternatives in order.
  2. capability: the active system whose capabilities_embedding is nearest, when similar enough.
  3. catch-all: the system whose constitution says catch_all (clay-consigliere).
Row-level security scopes every query to the tenant; HNSW index scans are iterative
(hnsw.iterative_scan) so that filtering by tenant still returns the k nearest rows of that tenant.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database
from clay_pipelines.routing.embeddings import Embedder, tag
from clay_pipelines.routing.rule_store import LEARNER, SystemCatalog, load_systems

DEFAULT_THRESHOLD = 0.7
DEFAULT_CAPABILITY_THRESHOLD = 0.35
CANDIDATE_PROTOTYPES = 40
CANDIDATE_RULES = 5


@dataclass
class RoutingDecision:
    system_id: UUID | None
    system_name: str | None
    confidence: float
    path: str  # rule | capability | catch_all
    rule_id: UUID | None = None
    rule_pattern: str | None = None
    similarity: float | None = None
    alternatives: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # why each earlier option was not taken
    requires_approval: bool = False
    approval_actions: list[str] = field(default_factory=list)
    execution_id: UUID | None = None
    embedder: str = ""
    elapsed_ms: float = 0.0
    rule_score: float | None = None  # the best rule's score, taken or not
    rule_system: str | None = None  # what that rule recommends

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("system_id", "rule_id", "execution_id"):
            out[key] = None if out[key] is None else str(out[key])
        return out


@dataclass(frozen=True)
class RuleCandidate:
    rule_id: UUID
    similarity: float
    pattern: str
    recommended: UUID | None
    alternatives: list[UUID]
    confidence: float
    member_similarity: float | None

    def score(self) -> float:
        typical = self.member_similarity if self.member_similarity and self.member_similarity > 0 else 1.0
        fit = float(np.clip(self.similarity / typical, 0.0, 1.0))
        return fit * (0.5 + 0.5 * self.confidence)


def _dimension_cast(embedder: Embedder) -> str:
    # The expression must match the partial HNSW indexes of migrations 004 and 010 exactly.
    return f"vector({int(embedder.dim)})"


def nearest_rules(
    conn: psycopg.Connection, vector: np.ndarray, embedder: Embedder, k: int = CANDIDATE_RULES, exact: bool = False
) -> list[RuleCandidate]:
    """The k nearest active rules, scored by their best prototype (or centroid if they have none)."""
    model, cast = tag(embedder), _dimension_cast(embedder)
    if exact:
        conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
    else:
        # enable_sort off leaves the planner one way to an ordered LIMIT: the HNSW index. Without it,
        # a table whose statistics predate the learner's last write (until autovacuum analyses it)
        # looks small, and the planner sorts every prototype of the tenant instead.
        conn.execute(
            "SELECT set_config('hnsw.iterative_scan', 'strict_order', true), set_config('hnsw.ef_search', '100', true), "
            "set_config('enable_sort', 'off', true)"
        )
    best: dict[UUID, float] = {}
    prototype_rows = conn.execute(
        f"""
        SELECT rule_id, 1 - (embedding::{cast} <=> %(q)s::{cast}) FROM routing_rule_prototypes
        WHERE embedding_model = %(model)s
        ORDER BY embedding::{cast} <=> %(q)s::{cast} LIMIT %(limit)s
        """,
        {"q": vector, "model": model, "limit": CANDIDATE_PROTOTYPES},
        # Never a prepared statement: a cached plan keeps the settings it was planned under (an
        # exact scan planned for exact=True would serve the HNSW path, and the other way round).
        prepare=False,
    ).fetchall()
    conn.execute("SELECT set_config('enable_sort', 'on', true)")
    # Rules the learner did not write have no prototypes; they are few, so all of them are scored
    # exactly (partial index of migration 011; ordering by the similarity, not by the distance
    # operator, keeps the planner off the HNSW index, which would wade through the learned rules).
    centroid_rows = conn.execute(
        f"""
        SELECT id, 1 - (request_embedding::{cast} <=> %(q)s::{cast}) AS similarity FROM routing_rules
        WHERE request_embedding_model = %(model)s AND is_active AND created_by IS DISTINCT FROM %(learner)s
        ORDER BY similarity DESC LIMIT %(limit)s
        """,
        {"q": vector, "model": model, "limit": k, "learner": LEARNER},
        prepare=False,
    ).fetchall()
    for rule_id, similarity in [*prototype_rows, *centroid_rows]:
        best[rule_id] = max(best.get(rule_id, -1.0), float(similarity))
    if exact:
        conn.execute("SELECT set_config('enable_indexscan', 'on', true)")
    if not best:
        return []
    rows = conn.execute(
        """
        SELECT id, request_pattern, recommended_system_id, alternative_systems, confidence_score, member_similarity
        FROM routing_rules WHERE id = ANY(%s) AND is_active
        """,
        (list(best),),
    ).fetchall()
    candidates = [
        RuleCandidate(r[0], best[r[0]], r[1], r[2], list(r[3] or []), float(r[4]), _float(r[5])) for r in rows
    ]
    candidates.sort(key=lambda c: (-c.similarity, str(c.rule_id)))
    return candidates[:k]


def _float(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def systems_over_budget(conn: psycopg.Connection, catalog: SystemCatalog) -> dict[UUID, str]:
    """Systems the tenant may not use now: the current monthly usd_budget window is spent, or the
    system's own usd quota in it is. Returns {system id: why}."""
    row = conn.execute(
        """
        SELECT total_budget, used, reserved, system_quotas FROM resources
        WHERE resource_type = 'usd_budget' AND window_type = 'monthly'
          AND window_start <= now() AND window_end > now()
        ORDER BY window_start DESC LIMIT 1
        """
    ).fetchone()
    if row is None:
        return {}
    total, used, reserved, quotas = row
    out: dict[UUID, str] = {}
    if total is not None and used is not None and used + (reserved or 0) >= total:
        return dict.fromkeys(catalog.ids, f"tenant's monthly budget is spent ({used} of {total} USD)")
    spent = dict(
        conn.execute(
            """
            SELECT system_name, coalesce(sum(cost_usd), 0) FROM executions
            WHERE started_at >= date_trunc('month', now()) GROUP BY system_name
            """
        ).fetchall()
    )
    for i, name in enumerate(catalog.names):
        quota = ((quotas or {}).get(name) or {}).get("usd_budget")
        if quota is not None and float(quota) > 0 and float(spent.get(name, 0)) >= float(quota):
            out[catalog.ids[i]] = (
                f"{name} has spent its monthly quota ({float(spent[name]):.2f} of {float(quota):.2f} USD)"
            )
    return out


def route(
    db: Database,
    tenant_id: UUID,
    request: str,
    embedder: Embedder,
    *,
    dry_run: bool = True,
    exact: bool = False,
    vector: np.ndarray | None = None,
) -> RoutingDecision:
    """Decide which system handles `request`; unless dry_run, log it as an execution."""
    if not request or not request.strip():
        raise ValueError("the request is empty")
    started = time.perf_counter()
    if vector is None:
        vector = embedder.encode([request])[0]
    with db.tenant_transaction(tenant_id) as conn:
        catalog = load_systems(conn)
        parameters = catalog.router_parameters()
        threshold = float(parameters.get("routing_confidence_threshold", DEFAULT_THRESHOLD))
        capability_threshold = float(parameters.get("capability_match_threshold", DEFAULT_CAPABILITY_THRESHOLD))
        names = dict(zip(catalog.ids, catalog.names, strict=True))
        active = {system_id for system_id, on in zip(catalog.ids, catalog.active, strict=True) if on}
        blocked = systems_over_budget(conn, catalog)
        candidates = nearest_rules(conn, vector, embedder, exact=exact)
        # The nearest rule by cosine is the one the router considers; its score decides.
        best = max(candidates, key=lambda c: (c.similarity, c.score())) if candidates else None
        decision = _decide(
            conn, vector, embedder, catalog, best, candidates, names, active, blocked, threshold, capability_threshold
        )
        if best is not None:
            decision.rule_score = round(best.score(), 4)
            decision.rule_system = names.get(best.recommended) if best.recommended else None
        decision.embedder = tag(embedder)
        if decision.system_id is not None:
            constitution = catalog.constitutions[catalog.ids.index(decision.system_id)]
            decision.approval_actions = list(constitution.get("requires_approval") or [])
            decision.requires_approval = bool(decision.approval_actions)
        decision.elapsed_ms = (time.perf_counter() - started) * 1000
        if not dry_run:
            decision.execution_id = _log_execution(conn, request, vector, decision, catalog)
            if decision.rule_id is not None:
                conn.execute(
                    "UPDATE routing_rules SET last_used_at = now(), times_used = times_used + 1 WHERE id = %s",
                    (decision.rule_id,),
                )
    return decision


def _decide(
    conn: psycopg.Connection,
    vector: np.ndarray,
    embedder: Embedder,
    catalog: SystemCatalog,
    rule: RuleCandidate | None,
    candidates: list[RuleCandidate],
    names: dict[UUID, str],
    active: set[UUID],
    blocked: dict[UUID, str],
    threshold: float,
    capability_threshold: float,
) -> RoutingDecision:
    fallbacks: list[str] = []
    if rule is None:
        fallbacks.append(f"no active routing rule for embedder {tag(embedder)}")
    else:
        score = rule.score()
        runner_ups = [c.recommended for c in candidates if c.rule_id != rule.rule_id and c.recommended]
        if score >= threshold:
            for system_id in [rule.recommended, *rule.alternatives]:
                if system_id is None or system_id not in names:
                    fallbacks.append(f"rule's system {system_id} is not in the registry")
                elif system_id not in active:
                    fallbacks.append(f"{names[system_id]} is not active")
                elif system_id in blocked:
                    fallbacks.append(blocked[system_id])
                else:
                    alternatives = [
                        names[s]
                        for s in dict.fromkeys([*rule.alternatives, *runner_ups])
                        if s in names and s != system_id
                    ]
                    return RoutingDecision(
                        system_id,
                        names[system_id],
                        round(score, 4),
                        "rule",
                        rule.rule_id,
                        rule.pattern,
                        round(rule.similarity, 4),
                        alternatives,
                        fallbacks,
                    )
            fallbacks.append(f"no usable system in rule {rule.rule_id}")
        else:
            fallbacks.append(
                f"best rule {rule.rule_id} ({rule.pattern!r}) scored {score:.3f} < routing_confidence_threshold {threshold}"
            )
    model, cast = tag(embedder), _dimension_cast(embedder)
    capability = conn.execute(
        f"""
        SELECT id, name, 1 - (capabilities_embedding::{cast} <=> %(q)s::{cast}) FROM systems
        WHERE capabilities_embedding_model = %(model)s AND status = 'active'
        ORDER BY capabilities_embedding::{cast} <=> %(q)s::{cast} LIMIT 3
        """,
        {"q": vector, "model": model},
        prepare=False,
    ).fetchall()
    for system_id, name, similarity in capability:
        if float(similarity) < capability_threshold:
            fallbacks.append(f"nearest capability {name} at {float(similarity):.3f} < {capability_threshold}")
            break
        if system_id in blocked:
            fallbacks.append(blocked[system_id])
            continue
        return RoutingDecision(
            system_id,
            name,
            round(float(similarity), 4),
            "capability",
            similarity=round(float(similarity), 4),
            fallbacks=fallbacks,
        )
    if not capability:
        fallbacks.append(f"no capability embeddings for {model}")
    catch_all = catalog.catch_all()
    if catch_all is None:
        return RoutingDecision(None, None, 0.0, "none", fallbacks=[*fallbacks, "no catch-all system"])
    return RoutingDecision(catalog.ids[catch_all], catalog.names[catch_all], 0.0, "catch_all", fallbacks=fallbacks)


def _log_execution(
    conn: psycopg.Connection, request: str, vector: np.ndarray, decision: RoutingDecision, catalog: SystemCatalog
) -> UUID:
    """The decision as the platform logs one: routed, not yet completed (so it is no evidence yet)."""
    router_index = catalog.catch_all()
    path = [catalog.ids[router_index]] if router_index is not None else []
    if decision.system_id is not None and decision.system_id not in path:
        path.append(decision.system_id)
    governance: dict[str, Any] = {"requires_approval": decision.requires_approval}
    if decision.approval_actions:
        governance["actions_requiring_approval"] = decision.approval_actions
    return conn.execute(
        """
        INSERT INTO executions (system_id, system_name, user_request, request_embedding, request_embedding_model,
          routing_path, routing_confidence, input_data, governance_check, status)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'partial') RETURNING id
        """,
        (
            decision.system_id,
            decision.system_name or "unrouted",
            request,
            vector,
            decision.embedder,
            path,
            Decimal(str(decision.confidence)),
            Jsonb(
                {
                    "routing": {
                        "path": decision.path,
                        "rule_id": None if decision.rule_id is None else str(decision.rule_id),
                        "fallbacks": decision.fallbacks,
                    }
                }
            ),
            Jsonb(governance),
        ),
    ).fetchone()[0]
