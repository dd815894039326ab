"""Are dream cycles honest? An in-memory world whose truth is known, run through production's code.

The world (one tenant per seed): kinds of request of unequal size, each split into the learner's
micro-clusters; per micro-cluster and system a TRUE probability of success (a refusal by governance
counts as a failure), a cost and a duration; per request its nearest rules (RuleCandidate, so the
router's decide() decides it) and its nearest systems by capability. Every request's true success
probability is known under any routing policy, so a policy's true value on a window is its expected
success over that window's requests.

Per seed: 28 days of history before the window and the 28-day window, at least 40 completed
executions a day, logged under the current settings by the router's own decide() and explore()
(a small share of rule decisions tries an alternative or the fallback, recording the propensity).
Then the same proposals, replay, estimators and decision rule as production.

Two worlds:
  - A/A: for every micro-cluster, the systems any threshold setting can reach (the rule's system,
    the nearest system by capability, the catch-all) have the same true success, so every mutation's
    true effect on success is zero: any promotion is false;
  - planted: as A/A, but for a few kinds whose requests sit around today's threshold, the rule's
    system is better than the fallback, by as much as makes lowering the threshold one step worth
    5 points of success (in expectation over the window's requests), changing the chosen system for
    at most 20% of requests, with cost and duration no worse.
Reported: false promotions per tenant-night (A/A) with the Wilson 95% upper bound, planted
promotions with the Wilson lower bound, and, for the mutated router fixed in advance (today's
threshold one step lower, the first proposal), the error of its estimated success on the whole window
against its true value and how often the 90% interval covers it (both worlds).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from statistics import NormalDist
from typing import Any
from uuid import UUID, uuid5

import numpy as np

from clay_pipelines.routing.embeddings import get_embedder
from clay_pipelines.routing.learning import wilson_lower_bound, wilson_upper_bound
from clay_pipelines.routing.router import RoutingContext, RuleCandidate, decide, explore
from clay_pipelines.sample_world.catalog import CATCH_ALL_SYSTEM, INTENTS
from clay_pipelines.sample_world.catalog import SYSTEMS as CATALOG
from clay_pipelines.sample_world.generator import phrase_request
from clay_pipelines.tars.decision import DEFAULT_RULE, decide_family, replay_arms, violations
from clay_pipelines.tars.estimators import Arm, Outcomes, estimate
from clay_pipelines.tars.proposals import cycle_rng, plan
from clay_pipelines.tars.replay import ReplayRequests

SYSTEMS = tuple(spec.name for spec in CATALOG)
CATCH_ALL = SYSTEMS.index(CATCH_ALL_SYSTEM)
ROUTER = next(spec for spec in CATALOG if spec.name == CATCH_ALL_SYSTEM).constitution()
REQUIRES_APPROVAL = {spec.name: set(spec.requires_approval) for spec in CATALOG}
UNBLOCKABLE = [not spec.requires_approval for spec in CATALOG]  # governance can never block these
APPROVED = 0.93  # share of gated requests a person approves (as the sample world's generator has it)
EXPLORATION_SHARE = 0.05
HISTORY_DAYS = 28
WINDOW_DAYS = 28
MIN_PER_DAY = 42  # completed executions a day, at least (a few are refused by governance)
MICRO_CLUSTERS = 48  # about this many in all, spread over kinds by size
PLANTED_EFFECT = 0.05
MAX_CHANGED = 0.18  # in expectation, so that the realised share stays under 20%
PROPOSALS = 12
_NAMESPACE = UUID("6f1d2c36-7a53-4b59-9a0e-1f3f0b4c2d10")


@dataclass(frozen=True, kw_only=True)
class World:
    """One tenant's truth: kinds of request (the sample world's), their micro-clusters, and per
    (micro-cluster, system) what happens."""

    kind_weight: np.ndarray  # (K,) the tenant's request mix
    rule_system: np.ndarray  # (K,)
    alternatives: list[list[int]]
    capability: np.ndarray  # (K, 3) nearest systems by capability, by mean similarity
    capability_mean: np.ndarray  # (K, 3)
    capability_spread: np.ndarray  # (K,)
    confidence: np.ndarray  # (K,) the rule's confidence_score
    member_similarity: np.ndarray  # (K,)
    gated: np.ndarray  # (K, S) the kind's requests need a person's approval on that system
    micro_kind: np.ndarray  # (J,)
    micro_weight: np.ndarray  # (J,) share of all requests
    micro_score: np.ndarray  # (J,) centre of its requests' rule scores
    score_spread: np.ndarray  # (K,)
    success: np.ndarray  # (J, S) true success probability, refusals counted as failures
    satisfaction: np.ndarray  # (K, S) mean stars of a success
    cost: np.ndarray  # (K, S) mean USD
    duration: np.ndarray  # (K, S) median ms
    planted_kinds: tuple[int, ...] = ()


@cache
def _rule_id(kind: int) -> UUID:
    return uuid5(_NAMESPACE, f"rule/{kind}")


@cache
def _system_id(system: int) -> UUID:
    return uuid5(_NAMESPACE, f"system/{SYSTEMS[system]}")


@cache
def capability_profile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per kind of request, its three nearest systems by capability, their mean similarity and the
    spread of the nearest one's, as the hashing embedder gives 200 of the kind's phrasings against
    the catalog's descriptions and capabilities (what routing/system_capability_embeddings embeds)."""
    embedder = get_embedder("hashing")
    capabilities = embedder.encode([f"{s.description} {' '.join(s.capabilities)}" for s in CATALOG])
    rng = np.random.default_rng(0)
    systems, means, spreads = [], [], []
    for intent in INTENTS:
        sims = embedder.encode([phrase_request(intent, rng) for _ in range(200)]) @ capabilities.T
        order = np.argsort(-sims.mean(axis=0), kind="stable")[:3]
        systems.append(order)
        means.append(sims.mean(axis=0)[order])
        spreads.append(sims.max(axis=1).std())
    return np.array(systems), np.array(means), np.array(spreads)


# -- building a world -----------------------------------------------------------------------------


def build_world(seed: int, planted: bool) -> World:
    """A tenant of the sample world's catalog; what the catalog does not say (the tenant's mix, the
    rules' scores, the micro-clusters, systems on kinds they were never built for) drawn per seed. A
    planted world whose requests around the threshold leave no room for the planted improvement
    within MAX_CHANGED is drawn again (from the seed, so still deterministic)."""
    for attempt in range(100):
        rng = np.random.default_rng([seed, 1 if planted else 0, attempt])
        world = _draw_world(rng)
        if not planted:
            return world
        with_improvement = _plant(rng, world)
        if with_improvement is not None:
            return with_improvement
    raise RuntimeError(f"seed {seed}: no world with room for the planted improvement")  # pragma: no cover


def _draw_world(rng: np.random.Generator) -> World:
    kinds = len(INTENTS)
    catalog_weight = np.array([intent.weight for intent in INTENTS], dtype=float)
    weights = rng.dirichlet(20 * catalog_weight / catalog_weight.sum())
    rule_system, alternatives = _rules()
    capability, capability_mean, capability_spread = capability_profile()
    micro_kind, micro_weight, micro_score = _micro_clusters(rng, weights)
    success, satisfaction, cost, duration, gated = _performance(rng, micro_kind)
    world = World(
        kind_weight=weights,
        rule_system=rule_system,
        alternatives=alternatives,
        capability=capability,
        capability_mean=capability_mean,
        capability_spread=capability_spread,
        confidence=rng.uniform(0.80, 0.98, kinds),
        member_similarity=rng.uniform(0.55, 0.8, kinds),
        gated=gated,
        micro_kind=micro_kind,
        micro_weight=micro_weight,
        micro_score=micro_score,
        score_spread=rng.uniform(0.03, 0.06, kinds),
        success=success,
        satisfaction=satisfaction,
        cost=cost,
        duration=duration,
    )
    _tie_reachable(world)
    return world


def _rules() -> tuple[np.ndarray, list[list[int]]]:
    """Each kind's rule as the learner would write it: the system that succeeds best recommended,
    the others that served the kind as alternatives, best first."""
    index = {name: i for i, name in enumerate(SYSTEMS)}
    recommended, alternatives = [], []
    for intent in INTENTS:
        ranked = sorted(intent.performance, key=lambda name: -intent.performance[name].success)
        recommended.append(index[ranked[0]])
        alternatives.append([index[name] for name in ranked[1:]])
    return np.array(recommended), alternatives


def _micro_clusters(rng: np.random.Generator, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro-clusters per kind (bigger kinds have more), each with its share of requests and the
    centre of its requests' rule scores around the kind's level."""
    level = rng.uniform(0.45, 0.95, len(weights))
    kinds, shares, centres = [], [], []
    for k, weight in enumerate(weights):
        count = max(2, round(MICRO_CLUSTERS * weight))
        kinds += [k] * count
        shares += list(weight * rng.dirichlet(np.full(count, 3.0)))
        centres += list(level[k] + rng.normal(0, 0.07, count))
    return np.array(kinds), np.array(shares), np.array(centres)


def _performance(
    rng: np.random.Generator, micro_kind: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (kind, system) the catalog's success (times the approval rate where the kind's action
    needs approval on that system), stars, cost and duration; systems the catalog does not list
    for a kind mostly fail it, at their usual cost. Success varies per micro-cluster."""
    kinds, systems = len(INTENTS), len(SYSTEMS)
    base = rng.uniform(0.05, 0.30, (kinds, systems))
    satisfaction = np.full((kinds, systems), 2.5)
    cost = np.full((kinds, systems), np.nan)
    duration = np.full((kinds, systems), np.nan)
    gated = np.zeros((kinds, systems), dtype=bool)
    for k, intent in enumerate(INTENTS):
        for s, name in enumerate(SYSTEMS):
            gated[k, s] = intent.approval_action is not None and intent.approval_action in REQUIRES_APPROVAL[name]
            performance = intent.performance.get(name)
            if performance is not None:
                base[k, s] = performance.success
                satisfaction[k, s] = performance.satisfaction
                cost[k, s] = performance.cost_usd
                duration[k, s] = performance.duration_ms
    base = np.where(gated, base * APPROVED, base)
    cost = np.where(np.isnan(cost), np.nanmean(cost, axis=0), cost)
    duration = np.where(np.isnan(duration), np.nanmean(duration, axis=0), duration)
    logit = np.log(base / (1 - base))[micro_kind] + rng.normal(0, 0.25, (len(micro_kind), systems))
    success = np.clip(1 / (1 + np.exp(-logit)), 0.02, 0.97 * np.where(gated[micro_kind], APPROVED, 1.0))
    return success, satisfaction, cost, duration, gated


def _tie_reachable(world: World) -> None:
    """A/A: what any threshold can choose for a micro-cluster (its rule's system, its nearest systems
    by capability, the catch-all) succeeds equally there (approval refusals included)."""
    for j, k in enumerate(world.micro_kind):
        reachable = {int(world.rule_system[k]), CATCH_ALL, *(int(s) for s in world.capability[k])}
        ceiling = APPROVED * 0.97 if any(world.gated[k, s] for s in reachable) else 1.0
        tie = min(float(world.success[j, world.rule_system[k]]), ceiling)
        for system in reachable:
            world.success[j, system] = tie


def _plant(rng: np.random.Generator, world: World) -> World | None:
    """Kinds whose requests sit around today's threshold, their rule's system better than everything
    else a threshold can reach by what makes the threshold one step lower worth PLANTED_EFFECT in
    expectation, changing the system for at most MAX_CHANGED of the requests."""
    threshold = float(ROUTER["parameters"]["routing_confidence_threshold"])
    lower = threshold - float(ROUTER["tunables"]["routing_confidence_threshold"]["step"])
    movable = world.rule_system[world.micro_kind] != CATCH_ALL  # lowering the threshold changes their system
    for _ in range(200):
        kinds = _pick_kinds(rng, world.kind_weight, np.flatnonzero(world.rule_system != CATCH_ALL))
        micro = np.isin(world.micro_kind, kinds)
        centres = world.micro_score.copy()
        centres[micro] = threshold - 0.01 + rng.normal(0, 0.03, micro.sum())
        spread = world.score_spread.copy()
        spread[list(kinds)] = 0.03
        band = _band_share(centres, spread[world.micro_kind], lower, threshold) * world.micro_weight
        gap = PLANTED_EFFECT / band[micro].sum()
        if band[movable].sum() <= MAX_CHANGED and gap <= world.success[micro][:, CATCH_ALL].min() - 0.05:
            break
    else:
        return None
    success = world.success.copy()
    for k in kinds:
        rows = world.micro_kind == k
        for system in {CATCH_ALL, *(int(s) for s in world.capability[k])} - {int(world.rule_system[k])}:
            success[rows, system] = success[rows, world.rule_system[k]] - gap
    return replace(world, micro_score=centres, score_spread=spread, success=success, planted_kinds=tuple(kinds))


def _pick_kinds(rng: np.random.Generator, weights: np.ndarray, candidates: np.ndarray) -> tuple[int, ...]:
    """A few of the candidate kinds, together between a quarter and 45% of the requests."""
    for _ in range(10_000):
        chosen: list[int] = []
        for k in rng.permutation(candidates):
            chosen.append(int(k))
            if weights[chosen].sum() >= 0.25:
                break
        if 0.25 <= weights[chosen].sum() <= 0.45:
            return tuple(chosen)
    raise RuntimeError("no kinds make between a quarter and 45% of the requests")  # pragma: no cover


def _band_share(centres: np.ndarray, spread: np.ndarray, low: float, high: float) -> np.ndarray:
    """Share of each micro-cluster's requests whose score falls in [low, high): scores are the
    centre plus normal noise of the kind's spread."""
    z = NormalDist()
    return np.array([z.cdf((high - c) / s) - z.cdf((low - c) / s) for c, s in zip(centres, spread, strict=True)])


# -- logging requests under the current settings ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Log:
    """Logged requests: what the replay needs, what the estimators need, and the truth."""

    ids: list[str]
    requests: ReplayRequests
    outcomes: Outcomes


def base_context() -> RoutingContext:
    names = {_system_id(s): SYSTEMS[s] for s in range(len(SYSTEMS))}
    parameters = ROUTER["parameters"]
    return RoutingContext(
        names=names,
        active=frozenset(names),
        blocked={},
        threshold=float(parameters["routing_confidence_threshold"]),
        capability_threshold=float(parameters["capability_match_threshold"]),
        catch_all=(_system_id(CATCH_ALL), SYSTEMS[CATCH_ALL]),
        nearest_capabilities=list,
        embedder_tag="world@1",
        exploration_share=EXPLORATION_SHARE,
    )


def generate(world: World, rng: np.random.Generator, days: int, label: str) -> Log:
    """`days` of requests logged under today's settings, with exploration and propensities."""
    per_day = MIN_PER_DAY + rng.poisson(rng.uniform(5, 35), days)
    n = int(per_day.sum())
    micro = rng.choice(len(world.micro_weight), n, p=world.micro_weight / world.micro_weight.sum())
    kind = world.micro_kind[micro]
    requests = ReplayRequests(
        candidates=[
            _candidates(world, int(k), float(s), rng) for k, s in zip(kind, _scores(world, micro, rng), strict=True)
        ],
        capabilities=[_capabilities(world, int(k), rng) for k in kind],
    )
    logged, propensity = _log_choices(requests, rng)
    outcomes = _outcomes(world, micro, kind, logged, propensity, rng)
    return Log(ids=[f"{label}/{i}" for i in range(n)], requests=requests, outcomes=outcomes)


def _scores(world: World, micro: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind = world.micro_kind[micro]
    scores = world.micro_score[micro] + rng.normal(0, 1, len(micro)) * world.score_spread[kind]
    ceiling = 0.5 + 0.5 * world.confidence[kind] - 1e-3  # a rule's score cannot exceed it
    return np.clip(scores, 0.02, ceiling)


def _candidates(world: World, kind: int, score: float, rng: np.random.Generator) -> list[RuleCandidate]:
    """The request's own kind's rule at a similarity giving `score`, and a runner-up rule."""
    own = RuleCandidate(
        rule_id=_rule_id(kind),
        similarity=score * world.member_similarity[kind] / (0.5 + 0.5 * world.confidence[kind]),
        pattern=f"kind {kind}",
        recommended=_system_id(int(world.rule_system[kind])),
        alternatives=[_system_id(s) for s in world.alternatives[kind]],
        confidence=float(world.confidence[kind]),
        member_similarity=float(world.member_similarity[kind]),
    )
    other = (kind + 1 + int(rng.integers(len(INTENTS) - 1))) % len(INTENTS)
    runner_up = RuleCandidate(
        rule_id=_rule_id(other),
        similarity=own.similarity * float(rng.uniform(0.6, 0.9)),
        pattern=f"kind {other}",
        recommended=_system_id(int(world.rule_system[other])),
        alternatives=[_system_id(s) for s in world.alternatives[other]],
        confidence=float(world.confidence[other]),
        member_similarity=float(world.member_similarity[other]),
    )
    return [own, runner_up]


def _capabilities(world: World, kind: int, rng: np.random.Generator) -> list[tuple[UUID, str, float]]:
    """The kind's three nearest systems by capability at this phrasing's similarities, nearest first."""
    sims = world.capability_mean[kind] + rng.normal(0, world.capability_spread[kind], 3)
    order = np.argsort(-sims, kind="stable")
    return [
        (_system_id(int(world.capability[kind, i])), SYSTEMS[int(world.capability[kind, i])], float(sims[i]))
        for i in order
    ]


def _log_choices(requests: ReplayRequests, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What the router chose and with what probability: decide(), then explore()."""
    index = {name: i for i, name in enumerate(SYSTEMS)}
    current: list[list[tuple[UUID, str, float]]] = [[]]
    context = replace(base_context(), nearest_capabilities=lambda: current[0])
    logged = np.empty(len(requests), dtype=np.int64)
    propensity = np.empty(len(requests))
    for i, (candidates, capabilities) in enumerate(zip(requests.candidates, requests.capabilities, strict=True)):
        current[0] = capabilities
        decision = explore(context, decide(context, candidates), rng.random)
        logged[i], propensity[i] = index[decision.system_name], decision.propensity
    return logged, propensity


def _outcomes(
    world: World,
    micro: np.ndarray,
    kind: np.ndarray,
    logged: np.ndarray,
    propensity: np.ndarray,
    rng: np.random.Generator,
) -> Outcomes:
    n = len(micro)
    gated = world.gated[kind, logged]
    blocked = gated & (rng.random(n) >= APPROVED)
    # Success given approval, so that success counting refusals as failures is the true rate.
    p = world.success[micro, logged] / np.where(gated, APPROVED, 1.0)
    success = ~blocked & (rng.random(n) < p)
    rated = ~blocked & (rng.random(n) < 0.45)
    stars = np.clip(np.round(np.where(success, world.satisfaction[kind, logged], 1.4) + rng.normal(0, 0.7, n)), 1, 5)
    cost = world.cost[kind, logged] * rng.lognormal(0, 0.4, n)
    duration = world.duration[kind, logged] * rng.lognormal(0, 0.5, n) * np.where(success, 1.0, 0.6)
    return Outcomes(
        cluster=micro.astype(np.int64),
        system=logged,
        success=success.astype(float),
        blocked=blocked,
        satisfaction=np.where(rated, stars, np.nan),
        cost=np.where(blocked, 0.0, cost),
        duration_ms=np.where(blocked, rng.uniform(40, 250, n), duration),
        propensity=propensity,
    )


# -- one seed ----------------------------------------------------------------------------------------


def true_success(world: World, clusters: np.ndarray, systems: np.ndarray) -> float:
    """The expected success of these choices on these requests (no system: a failure)."""
    values = np.where(systems >= 0, world.success[clusters, np.maximum(systems, 0)], 0.0)
    return float(values.mean())


def run_seed(seed: int, planted: bool, bootstrap: int, rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """One tenant-night of one world: the decision, and every figure the evaluation needs."""
    world = build_world(seed, planted)
    rng = np.random.default_rng([seed, 2 if planted else 3])
    history = generate(world, rng, HISTORY_DAYS, "history")
    window = generate(world, rng, WINDOW_DAYS, "window")
    cycle_id = f"dream-eval/{'planted' if planted else 'aa'}/{seed}"
    rule = {**DEFAULT_RULE, "bootstrap": bootstrap, **(rule or {})}
    planned = plan(ROUTER, cycle_id, PROPOSALS)
    arms = replay_arms(ROUTER, planned.mutations, window.requests, base_context(), SYSTEMS)
    record = decide_family(
        rule=rule,
        cycle_id=cycle_id,
        family={"tenant": f"seed-{seed}", "world": "planted" if planted else "aa"},
        window=window.outcomes,
        history=history.outcomes,
        request_ids=window.ids,
        current=arms[0],
        proposals=list(zip(planned.mutations, arms[1:], strict=True)),
        clusters=len(world.micro_weight),
        systems=len(SYSTEMS),
        history_ids=history.ids,
        unblockable=UNBLOCKABLE,
    )
    truths = [true_success(world, window.outcomes.cluster, arm.system) for arm in arms]
    effects = {arm.name: truths[i] - truths[0] for i, arm in enumerate(arms)}
    promoted = record["promote"]
    outcomes = [p["outcome"] for p in record["proposals"]]
    return {
        "seed": seed,
        "planted": planted,
        "requests": len(window.ids),
        "history_rows": len(history.ids),
        "promoted": promoted,
        "promoted_true_effect": effects[promoted] if promoted else None,
        "outcomes": {o: outcomes.count(o) for o in set(outcomes)},
        "first_proposal_fate": _fate(record["proposals"][0]),
        "first_proposal_true_effect": effects[arms[1].name],
        "first_proposal_changed_share": float((arms[1].system != arms[0].system).mean()),
        "rule_violations": len(violations(record)),
        "estimates": _full_window(world, window, history, arms, truths, rule, cycle_id),
    }


def _full_window(
    world: World, window: Log, history: Log, arms: list[Arm], truths: list[float], rule: dict[str, Any], cycle_id: str
) -> list[dict[str, float]]:
    """Every proposal's estimated success on the whole window, its 90% interval and its truth."""
    full = estimate(
        window.outcomes,
        history.outcomes,
        arms,
        clusters=len(world.micro_weight),
        systems=len(SYSTEMS),
        bootstrap=rule["bootstrap"],
        rng=cycle_rng(cycle_id, "evaluation/full-window"),
        max_weight=float(rule.get("max_importance_weight", math.inf)),
        unblockable=UNBLOCKABLE,
    )
    lower, upper = full.interval(0.90)
    m = full.metrics.index("success_rate")
    return [
        {
            "estimate": float(full.point[i, m]),
            "optimistic": float(full.optimistic_point[i, m]),
            "truth": truths[i],
            "lower": float(lower[i, m]),
            "upper": float(upper[i, m]),
            "unsupported": float(full.unsupported[i, m]),
        }
        for i in range(1, len(arms))
    ]


def _fate(entry: dict[str, Any]) -> str:
    """Why a proposal ended as it did, in a few words."""
    selection = entry["selection"]
    if not entry["selected"]:
        if selection["duplicate_of"]:
            return "A: same decisions as an earlier proposal"
        if selection["gain"] is None or selection["gain"] <= 0:
            return "A: gain not positive"
        return "A: not in the top k"
    confirmation = entry["confirmation"]
    if entry["outcome"] != "inconclusive":
        return f"B: {entry['outcome']}"
    if not confirmation["primary"]["holm_confirmed"]:
        return "B: inconclusive, gain not confirmed (Holm)"
    over = [name for name, g in confirmation["guardrails"].items() if not g["within"]]
    if over:
        return f"B: inconclusive, {over[0]} bound over tolerance"
    return "B: inconclusive, half B smaller than the MDE needs (the rule requires power)"


# -- many seeds ------------------------------------------------------------------------------------


def _run(args: tuple[int, bool, int, dict[str, Any] | None]) -> dict[str, Any]:
    return run_seed(*args)


def evaluate_dreams(
    seeds: int = 200,
    bootstrap: int = 200,
    workers: int = 1,
    rule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `seeds` A/A worlds and `seeds` planted worlds through the decision rule (DEFAULT_RULE with
    `rule`'s keys over it); the figures and whether each meets its target."""
    if seeds < 1 or bootstrap < 2 or workers < 1:
        raise ValueError("seeds and workers must be at least 1, bootstrap at least 2")
    started = time.perf_counter()
    jobs = [(seed, planted, bootstrap, rule) for seed in range(seeds) for planted in (False, True)]
    if workers == 1:
        results = [_run(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_run, jobs, chunksize=4))
    figures = summarise(results, seeds, time.perf_counter() - started)
    figures["details"]["bootstrap"] = bootstrap
    figures["details"]["rule_overrides"] = rule or {}
    return figures


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    s, t = np.array([successes]), np.array([trials])
    return float(wilson_lower_bound(s, t)[0]), float(wilson_upper_bound(s, t)[0])


def summarise(results: list[dict[str, Any]], seeds: int, seconds: float) -> dict[str, Any]:
    aa = [r for r in results if not r["planted"]]
    planted = [r for r in results if r["planted"]]
    aa_false = sum(1 for r in aa if r["promoted"] is not None)
    hits = sum(1 for r in planted if r["promoted"] and r["promoted_true_effect"] > 0)
    fixed = [r["estimates"][0] for r in results]  # the first proposal: today's threshold one step lower
    pooled = [e for r in results for e in r["estimates"]]
    figures: dict[str, Any] = {
        "seeds": seeds,
        "false_promotion_rate": aa_false / len(aa),
        "false_promotion_upper": _wilson(aa_false, len(aa))[1],
        "planted_promotion_rate": hits / len(planted),
        "planted_promotion_lower": _wilson(hits, len(planted))[0],
        "success_rate_mae": _mae(fixed),
        "interval_coverage": _coverage(fixed),
    }
    effects = np.array([r["first_proposal_true_effect"] for r in planted])
    figures["details"] = {
        "seconds": round(seconds, 1),
        "window_requests_mean": float(np.mean([r["requests"] for r in results])),
        "history_rows_mean": float(np.mean([r["history_rows"] for r in results])),
        "planted_true_effect": {
            "mean": float(effects.mean()),
            "min": float(effects.min()),
            "max": float(effects.max()),
        },
        "planted_changed_share_max": max(r["first_proposal_changed_share"] for r in planted),
        "planted_false_promotions": sum(1 for r in planted if r["promoted"] and r["promoted_true_effect"] <= 0),
        "planted_promoted_true_effect_mean": _mean([r["promoted_true_effect"] for r in planted if r["promoted"]]),
        "outcomes": {
            world: _count([r["outcomes"] for r in rows]) for world, rows in (("aa", aa), ("planted", planted))
        },
        "planted_first_proposal_fate": _count([{r["first_proposal_fate"]: 1} for r in planted]),
        "records_failing_satisfies": sum(1 for r in results if r["rule_violations"]),
        "success_rate_bias_first_proposal": float(np.mean([e["estimate"] - e["truth"] for e in fixed])),
        "unsupported_share_first_proposal": float(np.mean([e["unsupported"] for e in fixed])),
        "success_rate_mae_all_proposals": _mae(pooled),
        "interval_coverage_all_proposals": _coverage(pooled),
        "unsupported_share_all_proposals": float(np.mean([e["unsupported"] for e in pooled])),
    }
    figures["targets"] = {
        "false_promotion_rate <= 0.05": figures["false_promotion_rate"] <= 0.05,
        "false_promotion_upper <= 0.08": figures["false_promotion_upper"] <= 0.08,
        "planted_promotion_rate >= 0.80": figures["planted_promotion_rate"] >= 0.80,
        "planted_promotion_lower >= 0.75": figures["planted_promotion_lower"] >= 0.75,
        "success_rate_mae <= 0.02": figures["success_rate_mae"] <= 0.02,
        "interval_coverage in [0.85, 0.95]": 0.85 <= figures["interval_coverage"] <= 0.95,
    }
    return figures


def _mae(estimates: list[dict[str, float]]) -> float:
    return float(np.mean([abs(e["estimate"] - e["truth"]) for e in estimates]))


def _coverage(estimates: list[dict[str, float]]) -> float:
    return float(np.mean([e["lower"] <= e["truth"] <= e["upper"] for e in estimates]))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _count(tallies: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for tally in tallies:
        for key, count in tally.items():
            out[key] = out.get(key, 0) + count
    return dict(sorted(out.items()))
