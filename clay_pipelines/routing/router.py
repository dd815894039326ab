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

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import psycopg

from clay_pipelines import settings
from clay_pipelines.db import Database
from clay_pipelines.governance import budgets
from clay_pipelines.platform.ledger import ExecutionRecord, log_execution
from clay_pipelines.routing.embeddings import Embedder, tag
from clay_pipelines.routing.rule_store import LEARNER, SystemCatalog, load_systems
from clay_pipelines.tars.constitution import constitution_hash

DEFAULT_THRESHOLD = 0.7
DEFAULT_CAPABILITY_THRESHOLD = 0.35
# How far under the threshold a best rule may score and still have its system explored (when
# exploration is on): the range a lower threshold would route by rule, one or two steps down.
DEFAULT_EXPLORATION_MARGIN = 0.1
CANDIDATE_PROTOTYPES = 40
CANDIDATE_RULES = 5


@dataclass(kw_only=True)
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
    propensity: float = 1.0  # the probability that the router's policy made this choice
    explored: bool = False  # chosen by exploration rather than by the rule
    reservation_id: UUID | None = None  # the budget held for the run (not for a dry run)
    estimated_cost_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("system_id", "rule_id", "execution_id", "reservation_id"):
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


@dataclass(frozen=True, kw_only=True)
class RoutingContext:
    """What a decision depends on besides the request's nearest rules: the tenant's systems, which
    of them are usable now, the thresholds, and (asked only when the rule path fails) the systems
    nearest by capability."""

    names: dict[UUID, str]
    active: frozenset[UUID]
    blocked: dict[UUID, str]  # system -> why it may not be used now (budget)
    threshold: float
    capability_threshold: float
    catch_all: tuple[UUID, str] | None
    nearest_capabilities: Callable[[], list[tuple[UUID, str, float]]]
    embedder_tag: str
    exploration_share: float = 0.0  # of rule decisions that try another choice (recorded with its probability)
    exploration_margin: float = DEFAULT_EXPLORATION_MARGIN  # fallbacks whose best rule scored this close try it

    @property
    def name_ids(self) -> dict[str, UUID]:
        return {name: system_id for system_id, name in self.names.items()}


def routing_context(
    conn: psycopg.Connection, catalog: SystemCatalog, vector: np.ndarray, embedder: Embedder
) -> RoutingContext:
    parameters = catalog.router_parameters()
    catch_all = catalog.catch_all()
    return RoutingContext(
        names=dict(zip(catalog.ids, catalog.names, strict=True)),
        active=frozenset(s for s, on in zip(catalog.ids, catalog.active, strict=True) if on),
        blocked=systems_over_budget(conn, catalog),
        threshold=float(parameters.get("routing_confidence_threshold", DEFAULT_THRESHOLD)),
        capability_threshold=float(parameters.get("capability_match_threshold", DEFAULT_CAPABILITY_THRESHOLD)),
        catch_all=None if catch_all is None else (catalog.ids[catch_all], catalog.names[catch_all]),
        nearest_capabilities=lambda: nearest_capabilities(conn, vector, embedder),
        embedder_tag=tag(embedder),
        exploration_share=float(parameters.get("exploration_share", 0.0)),
        exploration_margin=float(parameters.get("exploration_margin", DEFAULT_EXPLORATION_MARGIN)),
    )


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
        context = routing_context(conn, catalog, vector, embedder)
        candidates = nearest_rules(conn, vector, embedder, exact=exact)
        decision = decide(context, candidates)
        if context.exploration_share > 0 and not dry_run:
            decision = explore(context, decision, random.random)
        if not dry_run:
            # In the transaction that logs the execution: both commit, or neither.
            decision = reserve_for(conn, context, candidates, decision)
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


def reserve_for(
    conn: psycopg.Connection, context: RoutingContext, candidates: list[RuleCandidate], decision: RoutingDecision
) -> RoutingDecision:
    """Hold the estimated cost of the chosen skill's run; when its budget refuses, the skill is
    treated as over budget and the decision is made again (the rule's alternatives, then the other
    paths), until a reservation holds or nothing is left: then a clear refusal."""
    default = Decimal(settings.default_estimated_cost_usd())
    ttl = timedelta(seconds=settings.reservation_ttl_seconds())
    refusals: list[str] = []
    tried: set[UUID] = set()
    while decision.system_id is not None and decision.system_id not in tried:
        tried.add(decision.system_id)
        estimate = budgets.estimate_cost(conn, decision.rule_id, decision.system_id, default)
        held = budgets.reserve(conn, decision.system_name or "", estimate, ttl)
        if held.granted:
            return replace(decision, reservation_id=held.reservation_id, estimated_cost_usd=float(estimate))
        refusals.append(f"{decision.system_name}: {held.refusal}")
        blocked = {**context.blocked, decision.system_id: f"over budget: {held.refusal}"}
        context = replace(context, blocked=blocked)
        decision = decide(context, candidates)
    if refusals:
        raise budgets.BudgetRefusedError("no budget for this request: " + "; ".join(refusals))
    return decision


def decide(context: RoutingContext, candidates: list[RuleCandidate]) -> RoutingDecision:
    """The decision for one request from its nearest rules: the rule path, then capability, then the
    catch-all. Reads nothing but the context, so a replay can call it for any settings."""
    # The nearest rule by cosine is the one the router considers; its score decides.
    rule = max(candidates, key=lambda c: (c.similarity, c.score())) if candidates else None
    fallbacks: list[str] = []
    decision = (
        _by_rule(context, rule, candidates, fallbacks)
        or _by_capability(context, fallbacks)
        or _by_catch_all(context, fallbacks)
    )
    if rule is not None:
        decision.rule_score = round(rule.score(), 4)
        decision.rule_system = context.names.get(rule.recommended) if rule.recommended else None
    decision.embedder = context.embedder_tag
    return decision


def explore(context: RoutingContext, decision: RoutingDecision, draw: Callable[[], float]) -> RoutingDecision:
    """With probability exploration_share, another choice than the policy's, and the probability of
    what was chosen recorded, so that later estimates can weigh logged outcomes:
      - on the rule path, one of the other choices it had (the rule's usable alternatives and the
        fallback the router takes without the rule), drawn uniformly;
      - on a fallback whose best rule scored under the threshold by at most exploration_margin, that
        rule's system: what a lower threshold would choose, which no other decision ever logs.
    Other fallbacks are not explored: no setting within reach would choose differently."""
    if context.exploration_share <= 0:
        return decision
    if decision.path == "rule":
        return _explore_rule_decision(context, decision, draw)
    return _explore_near_threshold(context, decision, draw)


def _usable(context: RoutingContext, system_id: UUID | None) -> bool:
    return system_id is not None and system_id in context.active and system_id not in context.blocked


def _explore_rule_decision(
    context: RoutingContext, decision: RoutingDecision, draw: Callable[[], float]
) -> RoutingDecision:
    share = context.exploration_share
    fallback = _by_capability(context, []) or _by_catch_all(context, [])
    others = [
        s
        for s in dict.fromkeys([context.name_ids.get(n) for n in decision.alternatives] + [fallback.system_id])
        if s != decision.system_id and _usable(context, s)
    ]
    if not others:
        return decision
    if draw() >= share:
        return replace(decision, propensity=round(1.0 - share, 6))
    chosen = others[min(int(draw() * len(others)), len(others) - 1)]
    note = f"explored ({share:.0%} of rule decisions try another choice)"
    return _explored(context, decision, chosen, share / len(others), note)


def _explore_near_threshold(
    context: RoutingContext, decision: RoutingDecision, draw: Callable[[], float]
) -> RoutingDecision:
    share = context.exploration_share
    rule_system = context.name_ids.get(decision.rule_system) if decision.rule_system else None
    score = decision.rule_score
    # A fallback's best rule scored under the threshold (or its systems were unusable: then so is this).
    near = score is not None and score >= context.threshold - context.exploration_margin
    if not near or rule_system == decision.system_id or not _usable(context, rule_system):
        return decision
    if draw() >= share:
        return replace(decision, propensity=round(1.0 - share, 6))
    note = (
        f"explored ({share:.0%} of fallbacks whose best rule scored within "
        f"{context.exploration_margin} under the threshold try its system)"
    )
    return _explored(context, decision, rule_system, share, note)


def _explored(
    context: RoutingContext, decision: RoutingDecision, chosen: UUID, propensity: float, note: str
) -> RoutingDecision:
    return replace(
        decision,
        system_id=chosen,
        system_name=context.names[chosen],
        propensity=round(propensity, 6),
        explored=True,
        fallbacks=[*decision.fallbacks, note],
    )


def _by_rule(
    context: RoutingContext, rule: RuleCandidate | None, candidates: list[RuleCandidate], fallbacks: list[str]
) -> RoutingDecision | None:
    if rule is None:
        fallbacks.append(f"no active routing rule for embedder {context.embedder_tag}")
        return None
    score = rule.score()
    if score < context.threshold:
        fallbacks.append(
            f"best rule {rule.rule_id} ({rule.pattern!r}) scored {score:.3f} "
            f"< routing_confidence_threshold {context.threshold}"
        )
        return None
    names = context.names
    for system_id in [rule.recommended, *rule.alternatives]:
        if system_id is None or system_id not in names:
            fallbacks.append(f"rule's system {system_id} is not in the registry")
        elif system_id not in context.active:
            fallbacks.append(f"{names[system_id]} is not active")
        elif system_id in context.blocked:
            fallbacks.append(context.blocked[system_id])
        else:
            runner_ups = [c.recommended for c in candidates if c.rule_id != rule.rule_id and c.recommended]
            alternatives = [
                names[s] for s in dict.fromkeys([*rule.alternatives, *runner_ups]) if s in names and s != system_id
            ]
            return RoutingDecision(
                system_id=system_id,
                system_name=names[system_id],
                confidence=round(score, 4),
                path="rule",
                rule_id=rule.rule_id,
                rule_pattern=rule.pattern,
                similarity=round(rule.similarity, 4),
                alternatives=alternatives,
                fallbacks=fallbacks,
            )
    fallbacks.append(f"no usable system in rule {rule.rule_id}")
    return None


def _by_capability(context: RoutingContext, fallbacks: list[str]) -> RoutingDecision | None:
    capability = context.nearest_capabilities()
    if not capability:
        fallbacks.append(f"no capability embeddings for {context.embedder_tag}")
    for system_id, name, similarity in capability:
        if similarity < context.capability_threshold:
            fallbacks.append(f"nearest capability {name} at {similarity:.3f} < {context.capability_threshold}")
            return None
        if system_id in context.blocked:
            fallbacks.append(context.blocked[system_id])
            continue
        return RoutingDecision(
            system_id=system_id,
            system_name=name,
            confidence=round(similarity, 4),
            path="capability",
            similarity=round(similarity, 4),
            fallbacks=fallbacks,
        )
    return None


def _by_catch_all(context: RoutingContext, fallbacks: list[str]) -> RoutingDecision:
    if context.catch_all is None:
        return RoutingDecision(
            system_id=None, system_name=None, confidence=0.0, path="none", fallbacks=[*fallbacks, "no catch-all system"]
        )
    system_id, name = context.catch_all
    return RoutingDecision(system_id=system_id, system_name=name, confidence=0.0, path="catch_all", fallbacks=fallbacks)


def nearest_capabilities(
    conn: psycopg.Connection, vector: np.ndarray, embedder: Embedder, k: int = 3
) -> list[tuple[UUID, str, float]]:
    """The k active systems whose capabilities are nearest to the request: (id, name, similarity)."""
    cast = _dimension_cast(embedder)
    rows = conn.execute(
        f"""
        SELECT id, name, 1 - (capabilities_embedding::{cast} <=> %(q)s::{cast}) FROM systems
        WHERE capabilities_embedding_model = %(model)s AND status = 'active'
        ORDER BY capabilities_embedding::{cast} <=> %(q)s::{cast} LIMIT %(k)s
        """,
        {"q": vector, "model": tag(embedder), "k": k},
        prepare=False,
    ).fetchall()
    return [(system_id, name, float(similarity)) for system_id, name, similarity in rows]


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
    routing = {
        "explored": decision.explored,
        "path": decision.path,
        "rule_id": None if decision.rule_id is None else str(decision.rule_id),
        "fallbacks": decision.fallbacks,
    }
    return log_execution(
        conn,
        ExecutionRecord(
            system_id=decision.system_id,
            system_name=decision.system_name or "unrouted",
            user_request=request,
            request_embedding=vector,
            request_embedding_model=decision.embedder,
            routing_path=path,
            routing_confidence=Decimal(str(decision.confidence)),
            input_data={"routing": routing},
            governance_check=governance,
            status="partial",
            routing_propensity=Decimal(str(decision.propensity)),
            routing_rule_id=decision.rule_id,
            constitution_hash=None
            if decision.system_id is None
            else constitution_hash(catalog.constitutions[catalog.ids.index(decision.system_id)]),
            budget_reservation_id=decision.reservation_id,
        ),
    )
