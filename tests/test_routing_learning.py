"""The rule learner and the evaluation's threshold calibration, on vectors built by hand (no database)."""

from __future__ import annotations

import numpy as np

from clay_pipelines.routing.evaluation import RoutedSet, calibrate_threshold
from clay_pipelines.routing.learning import ExecutionBatch, LearnerSettings, RuleLearner, normalise_rows
from clay_pipelines.routing.router import RoutingDecision

DIM = 64


def _around(centre: np.ndarray, n: int, rng: np.random.Generator, spread: float = 0.02) -> np.ndarray:
    return normalise_rows(centre[None, :] + rng.normal(0.0, spread, (n, DIM)))


def _batch(
    vectors: np.ndarray, systems: list[int], success: list[bool] | None = None, counted: list[bool] | None = None
) -> ExecutionBatch:
    n = len(vectors)
    return ExecutionBatch(
        ids=list(range(n)),
        vectors=vectors.astype(np.float32),
        system=np.array(systems, dtype=np.int64),
        success=np.array(success if success is not None else [True] * n),
        satisfaction=np.full(n, np.nan),
        cost=np.full(n, 0.01),
        duration=np.full(n, 500.0),
        counted=np.array(counted if counted is not None else [True] * n, dtype=bool),
        texts=[f"request {i}" for i in range(n)],
    )


def _learn(batch: ExecutionBatch, n_systems: int, settings: LearnerSettings, embedder: str = "hashing") -> RuleLearner:
    learner = RuleLearner(n_systems, embedder, settings)
    learner.fit(batch.vectors, len(batch))
    learner.accumulate(batch)
    learner.build(np.ones(n_systems, dtype=bool))
    for _ in range(settings.refine_passes):
        learner.refine(batch)
        learner.apply_refinement()
    return learner


def _two_phrasings_world(each: int = 30) -> tuple[ExecutionBatch, float]:
    """System 0 serves two phrasings of one need, `each` requests each (30: each below
    min_rule_executions, together above it), whose centres are 0.2 alike (below the strict merge
    similarity, above the rescue one); system 1 serves 60 requests of another kind."""
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(DIM, 3)))[0].T  # three orthonormal directions
    first, other = basis[0], basis[2]
    second = 0.2 * first + np.sqrt(1 - 0.2**2) * basis[1]
    vectors = np.vstack([_around(first, each, rng), _around(second, each, rng), _around(other, 60, rng)])
    return _batch(vectors, [0] * (2 * each) + [1] * 60), float(first @ second)


def test_phrasings_of_one_system_below_the_minimum_join_into_one_rule_with_a_prototype_each() -> None:
    batch, alike = _two_phrasings_world()
    assert round(alike, 6) == 0.2
    learner = _learn(batch, 2, LearnerSettings(micro_cluster_size=10))
    rules = sorted(learner.rules, key=lambda r: r.recommended)
    assert [(r.recommended, r.executions) for r in rules] == [(0, 60), (1, 60)]
    # The rule keeps a prototype near each phrasing, so both still route to it.
    prototypes = rules[0].prototypes
    assert len(prototypes) >= 2
    first, second = batch.vectors[:30].mean(axis=0), batch.vectors[30:60].mean(axis=0)
    assert (prototypes @ normalise_rows(first[None])[0]).max() > 0.95
    assert (prototypes @ normalise_rows(second[None])[0]).max() > 0.95


def test_without_the_rescue_the_phrasings_below_the_minimum_lose_their_rule() -> None:
    batch, _ = _two_phrasings_world()
    learner = _learn(batch, 2, LearnerSettings(micro_cluster_size=10, rescue_similarity=0.5))
    assert [(r.recommended, r.executions) for r in learner.rules] == [(1, 60)]


def test_kinds_of_one_system_each_above_the_minimum_stay_apart() -> None:
    batch, _ = _two_phrasings_world(each=60)
    learner = _learn(batch, 2, LearnerSettings(micro_cluster_size=10))
    assert sorted((r.recommended, r.executions) for r in learner.rules) == [(0, 60), (0, 60), (1, 60)]


def test_measure_scores_each_execution_against_its_own_rules_best_prototype() -> None:
    rng = np.random.default_rng(3)
    centres = normalise_rows(rng.normal(size=(6, DIM)))
    vectors = np.vstack([_around(c, 80, rng, spread=0.08) for c in centres])
    systems = [i // 2 for i in range(6) for _ in range(80)]  # three systems, two kinds each
    batch = _batch(vectors, systems)
    learner = _learn(batch, 3, LearnerSettings(micro_cluster_size=10, merge_similarity=0.5))
    rule, sims = learner.measure(batch)
    assert (rule >= 0).all()
    for i in range(len(batch)):
        own = learner.rules[rule[i]].prototypes
        assert np.isclose(sims[i], float((own @ batch.vectors[i]).max()), atol=1e-5)
    # Every execution belongs to a rule recommending the system that served it.
    assert [learner.rules[r].recommended for r in rule] == systems


def test_executions_not_counted_are_support_but_no_evidence() -> None:
    """60 requests of one kind that system 0 served, and 60 more of the same kind that failed but
    are no evidence (governance blocked, not completed): the rule has the support of all 120 and the
    success lower bound of the 60 that count; counted as failures they would halve it."""
    rng = np.random.default_rng(5)
    vectors = _around(normalise_rows(rng.normal(size=(1, DIM)))[0], 120, rng)
    outcomes = [True] * 60 + [False] * 60
    not_counted = _learn(_batch(vectors, [0] * 120, outcomes, counted=outcomes), 1, LearnerSettings())
    counted = _learn(_batch(vectors, [0] * 120, outcomes), 1, LearnerSettings())
    assert [(r.executions, round(r.wilson, 3)) for r in not_counted.rules] == [(120, 0.940)]
    assert [(r.executions, round(r.wilson, 3)) for r in counted.rules] == [(120, 0.412)]


def _routed(scores: list[float], correct: list[bool]) -> RoutedSet:
    decisions = [
        RoutingDecision(
            system_id=None, system_name=None, confidence=0.0, path="rule", rule_system="intent-a" if ok else "intent-b"
        )
        for ok in correct
    ]
    return RoutedSet(labels=["a"] * len(scores), decisions=decisions, scores=np.array(scores))


def test_calibration_asks_the_oos_recall_lower_bound_to_reach_the_target() -> None:
    in_scope = _routed([0.9] * 50 + [0.6] * 50, [True] * 100)
    # 100 OOS requests: at 0.6 80 of them are left to the fallback, at 0.7 all of them are.
    oos = _routed([0.65] * 20 + [0.1] * 80, [False] * 100)
    # The observed recall at 0.6 (0.80) reaches the target, its 95% lower bound (0.71) does not.
    assert calibrate_threshold(in_scope, oos, 0.80) == 0.9
    assert calibrate_threshold(in_scope, oos, 0.70) == 0.6
    assert calibrate_threshold(in_scope, None, 0.80) == 0.6
