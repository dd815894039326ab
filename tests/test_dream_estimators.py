"""Dream estimators on tables small enough to compute by hand."""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pytest

from clay_pipelines.tars.estimators import (
    DIRECT_METHOD,
    DOUBLY_ROBUST,
    DOUBLY_ROBUST_ESTIMATED,
    METRICS,
    Arm,
    EstimationError,
    Outcomes,
    estimate,
    outcomes_from_rows,
)

SUCCESS, SATISFACTION, COST, DURATION, BLOCKED, FALLBACK = range(len(METRICS))
A, B, C = 0, 1, 2


def _outcomes(cluster, system, success, *, propensity=None, blocked=None, cost=None, rating=None) -> Outcomes:
    n = len(cluster)
    return Outcomes(
        cluster=np.array(cluster),
        system=np.array(system),
        success=np.array(success, dtype=float),
        blocked=np.array(blocked if blocked is not None else [False] * n),
        satisfaction=np.array(rating if rating is not None else [np.nan] * n, dtype=float),
        cost=np.array(cost if cost is not None else [1.0] * n, dtype=float),
        duration_ms=np.full(n, 100.0),
        propensity=np.array(propensity if propensity is not None else [np.nan] * n, dtype=float),
    )


# History: cluster 0: A succeeded 3 of 4, B 1 of 2; cluster 1: A 1 of 2, B 3 of 3.
HISTORY = _outcomes(
    [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [A, A, A, A, B, B, A, A, B, B, B], [1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1]
)
# Window: (cluster, logged system, propensity, success).
WINDOW = _outcomes([0, 0, 1, 1], [A, B, B, A], [1, 0, 1, 1], propensity=[0.8, 0.2, 0.9, 0.5])
CURRENT = Arm(name="current", system=np.array([A, A, B, B]), fallback=np.array([False, False, False, True]))
MUTATED = Arm(name="mutated", system=np.array([B, A, B, A]), fallback=np.array([False, True, False, True]))


def _constant_arm(name: str, system: int, n: int) -> Arm:
    """An arm that sends each of n requests to `system`, never through the fallback."""
    return Arm(name=name, system=np.full(n, system), fallback=np.zeros(n, dtype=bool))


def _estimate(window=WINDOW, history=HISTORY, arms=(CURRENT, MUTATED), **kwargs):
    kwargs.setdefault("bootstrap", 2)
    return estimate(window, history, list(arms), clusters=2, systems=3, rng=np.random.default_rng(0), **kwargs)


def test_doubly_robust_is_model_plus_propensity_weighted_residual_where_the_choice_was_logged() -> None:
    est = _estimate()
    # current: 0.75 + (1 - 0.75) / 0.8, then 0.75 (B was logged), 1 + (1 - 1) / 0.9, 1 (A was logged)
    assert est.estimator == DOUBLY_ROBUST
    assert est.point[0, SUCCESS] == pytest.approx((1.0625 + 0.75 + 1.0 + 1.0) / 4)
    # mutated: 0.5 (A was logged), 0.75, 1, 0.5 + (1 - 0.5) / 0.5
    assert est.point[1, SUCCESS] == pytest.approx((0.5 + 0.75 + 1.0 + 1.5) / 4)
    # Paired: the two requests where both arms choose the same system differ by exactly zero.
    assert est.diff_point[1, SUCCESS] == pytest.approx(((0.5 - 1.0625) + 0 + 0 + (1.5 - 1.0)) / 4)
    assert est.changed.tolist() == [0.0, 0.5]
    assert est.point[:, FALLBACK].tolist() == [0.25, 0.5]
    assert est.unsupported[:, SUCCESS].tolist() == [0.0, 0.0]


def test_direct_method_uses_the_model_alone() -> None:
    est = _estimate(estimator=DIRECT_METHOD)
    assert est.estimator == DIRECT_METHOD
    assert est.point[:, SUCCESS] == pytest.approx([(0.75 + 0.75 + 1 + 1) / 4, (0.5 + 0.75 + 1 + 0.5) / 4])


def test_without_logged_propensities_the_windows_choice_shares_per_cluster_stand_in_and_it_says_so() -> None:
    window = _outcomes([0, 0, 1, 1], [A, B, B, A], [1, 0, 1, 1])
    est = _estimate(window=window)
    assert (est.estimator, est.estimated_propensity_share) == (DOUBLY_ROBUST_ESTIMATED, 1.0)
    # Each logged choice is one of two in its cluster: propensity 0.5.
    assert est.point[0, SUCCESS] == pytest.approx((0.75 + 0.25 / 0.5 + 0.75 + 1.0 + 1.0) / 4)
    with pytest.raises(EstimationError, match="have no propensity"):
        _estimate(window=window, estimator=DOUBLY_ROBUST)


def test_unsupported_choices_are_valued_at_the_pessimistic_bound_and_reported() -> None:
    # C never served cluster 0; cluster 1's B rows are all governance-blocked, so B has no evidence there.
    history = _outcomes(
        [0, 0, 1, 1, 1],
        [A, A, A, B, B],
        [1, 0, 1, 0, 0],
        blocked=[False, False, False, True, True],
        cost=[1.0, 3.0, 2.0, 0.0, 0.0],
    )
    window = _outcomes([0, 1], [A, A], [1, 0], propensity=[1.0, 1.0], cost=[2.0, 2.0])
    current = Arm(name="current", system=np.array([A, A]), fallback=np.array([False, False]))
    mutated = Arm(name="mutated", system=np.array([C, B]), fallback=np.array([False, False]))
    est = estimate(window, history, [current, mutated], clusters=2, systems=3, bootstrap=2)
    assert est.unsupported[1, SUCCESS] == 1.0
    # Success 0, cost the worst observed (3.0), every request blocked.
    assert est.point[1, [SUCCESS, COST, BLOCKED]].tolist() == [0.0, 3.0, 1.0]
    assert est.optimistic_point[1, [SUCCESS, COST, BLOCKED]].tolist() == [1.0, 0.0, 0.0]
    # The current arm: model + residual with propensity 1 is the logged outcome itself.
    assert est.point[0, SUCCESS] == pytest.approx(0.5)
    # Its difference is the worst case for the mutation, and reported as resting on bounds.
    assert est.diff_point[1, SUCCESS] == pytest.approx(-0.5)
    assert est.optimistic_diff_point[1, SUCCESS] == pytest.approx(0.5)
    assert est.diff_unsupported[1, SUCCESS] == 1.0
    summary = est.summary(1, 0.9)
    assert summary["success_rate"]["unsupported_share"] == 1.0
    assert summary["success_rate"]["difference"]["bounded_share"] == 1.0


def test_where_the_model_has_no_support_a_request_logged_with_the_arms_choice_is_valued_by_its_own_outcome() -> None:
    # History: C never served either cluster. Window: request 0 was itself served by C (a success),
    # request 1 by A, request 2 by C but governance blocked it (no evidence about C).
    history = _outcomes([0, 0, 1], [A, A, A], [1, 0, 1], cost=[1.0, 3.0, 2.0])
    window = _outcomes(
        [0, 1, 1], [C, A, C], [1, 1, 0], propensity=[1.0, 1.0, 1.0], cost=[2.5, 2.0, 0.0], blocked=[False, False, True]
    )
    current = _constant_arm("current", A, 3)
    mutated = _constant_arm("mutated", C, 3)
    est = estimate(window, history, [current, mutated], clusters=2, systems=3, bootstrap=2)
    # Request 0: its own outcome (success 1, cost 2.5); requests 1 and 2: the bounds (success 0 and
    # 1, cost the worst and best the history shows, 3.0 and 1.0).
    assert est.unsupported[1, SUCCESS] == pytest.approx(2 / 3)
    assert est.point[1, [SUCCESS, COST]].tolist() == pytest.approx([1 / 3, (2.5 + 3.0 + 3.0) / 3])
    assert est.optimistic_point[1, [SUCCESS, COST]].tolist() == pytest.approx([1.0, (2.5 + 1.0 + 1.0) / 3])
    # The current arm chose A for request 0, which was never logged for it: the model's 0.5.
    assert est.point[0, SUCCESS] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert est.diff_point[1, SUCCESS] == pytest.approx(((1 - 0.5) + (0 - 1) + (0 - 1)) / 3)
    assert est.diff_unsupported[1, SUCCESS] == pytest.approx(2 / 3)
    # Without its own outcome (request 0 logged elsewhere) the same choice is at the bound.
    elsewhere = replace(window, system=np.array([A, A, C]))
    bounded = estimate(elsewhere, history, [current, mutated], clusters=2, systems=3, bootstrap=2)
    assert bounded.unsupported[1, SUCCESS] == 1.0 and bounded.point[1, SUCCESS] == 0.0


def test_a_choice_of_no_system_is_unsupported() -> None:
    nothing = Arm(name="none", system=np.array([-1, A, B, B]), fallback=np.array([True, False, False, True]))
    est = _estimate(arms=(CURRENT, nothing))
    assert est.unsupported[1, SUCCESS] == 0.25
    assert est.point[1, SUCCESS] == pytest.approx((0.0 + 0.75 + 1.0 + 1.0) / 4)


def test_ratings_missing_at_random_within_a_cell_are_weighted_by_the_share_rated() -> None:
    history = _outcomes([0, 0, 0], [A, A, A], [1, 1, 1], rating=[4, 2, np.nan])
    window = _outcomes([0, 0], [A, A], [1, 1], propensity=[1.0, 1.0], rating=[5, np.nan])
    arm = Arm(name="current", system=np.array([A, A]), fallback=np.array([False, False]))
    est = estimate(window, history, [arm], clusters=1, systems=1, bootstrap=2)
    # Model 3.0; the rated request adds (5 - 3) / (1 x 1/2), the unrated one nothing.
    assert est.point[0, SATISFACTION] == pytest.approx((3.0 + 4.0 + 3.0) / 2)


def test_the_bootstrap_refits_the_model_on_resampled_history_and_pairs_the_difference() -> None:
    # Direct method on a window of one cell: resampling the window alone could not move the
    # estimate, so its spread comes from refitting the model on resampled history.
    window = _outcomes([0] * 5, [A] * 5, [1] * 5, propensity=[1.0] * 5)
    arm = _constant_arm("current", A, 5)
    same = _constant_arm("same", A, 5)
    first = estimate(
        window,
        HISTORY,
        [arm, same],
        clusters=2,
        systems=3,
        bootstrap=200,
        estimator=DIRECT_METHOD,
        rng=np.random.default_rng(7),
    )
    again = estimate(
        window,
        HISTORY,
        [arm, same],
        clusters=2,
        systems=3,
        bootstrap=200,
        estimator=DIRECT_METHOD,
        rng=np.random.default_rng(7),
    )
    assert first.replicates.shape == (200, 2, len(METRICS))
    assert first.se()[0, SUCCESS] > 0.1
    assert np.array_equal(first.replicates, again.replicates, equal_nan=True)
    assert not first.diff_replicates[:, 1].any()  # an arm identical to the baseline differs by exactly 0
    lower, upper = first.interval(0.9)
    assert lower[0, SUCCESS] < first.point[0, SUCCESS] < upper[0, SUCCESS]


def test_the_bootstrap_keeps_every_history_cell_so_a_thinly_logged_choice_is_never_valued_at_the_bound() -> None:
    # Cluster 1 on C was logged once (a success). Resampling the history freely would drop that row
    # from about a third of the replicates and value the choice at the bound (success 0) there.
    history = _outcomes([0, 0, 1, 1, 1], [A, A, A, A, C], [1, 0, 1, 0, 1])
    window = _outcomes([1] * 4, [A] * 4, [1, 0, 1, 0], propensity=[1.0] * 4)
    arms = [
        _constant_arm("current", A, 4),
        _constant_arm("to C", C, 4),
    ]
    est = estimate(window, history, arms, clusters=2, systems=3, bootstrap=200, estimator=DIRECT_METHOD)
    assert est.unsupported[1, SUCCESS] == 0.0
    assert np.all(est.replicates[:, 1, SUCCESS] == 1.0)
    assert est.replicates[:, 0, SUCCESS].std() > 0  # the cell logged twice still varies


def test_the_bound_of_an_unsupported_choice_is_read_once_off_the_observed_history() -> None:
    # Cluster 1 was never logged on B: its duration is valued at the worst observed (900 ms), in the
    # point estimate and in every replicate, including those that did not draw the 900 ms row.
    history = _outcomes([0, 0, 0, 1], [A, A, A, A], [1, 1, 1, 1])
    history = replace(history, duration_ms=np.array([100.0, 900.0, 200.0, 300.0]))
    window = _outcomes([1, 1], [A, A], [1, 1], propensity=[1.0, 1.0])
    arms = [
        _constant_arm("current", A, 2),
        _constant_arm("to B", B, 2),
    ]
    est = estimate(window, history, arms, clusters=2, systems=3, bootstrap=100, estimator=DIRECT_METHOD)
    assert est.point[1, DURATION] == 900.0
    assert np.all(est.replicates[:, 1, DURATION] == 900.0)
    assert np.all(est.optimistic_replicates[:, 1, DURATION] == 100.0)


def test_outcomes_from_rows_keeps_known_outcomes_and_names_a_bad_row() -> None:
    rows = [
        {
            "cluster": 0,
            "system_name": "memvid",
            "status": "success",
            "completed": True,
            "cost_usd": 0.1,
            "duration_ms": 900,
            "user_satisfaction": 5,
            "routing_propensity": 0.95,
        },
        {
            "cluster": 1,
            "system_name": "memvid",
            "status": "governance_blocked",
            "completed": True,
            "cost_usd": 0,
            "duration_ms": 40,
            "user_satisfaction": None,
            "routing_propensity": None,
        },
        {
            "cluster": 1,
            "system_name": "memvid",
            "status": "partial",
            "completed": False,
            "cost_usd": None,
            "duration_ms": None,
            "user_satisfaction": None,
            "routing_propensity": 1.0,
        },
    ]
    outcomes, left_out = outcomes_from_rows(rows, ["clay-consigliere", "memvid"])
    assert left_out == 1
    assert outcomes.success.tolist() == [1.0, 0.0]
    assert outcomes.blocked.tolist() == [False, True]
    assert outcomes.system.tolist() == [1, 1]
    assert np.isnan(outcomes.propensity[1])
    with pytest.raises(EstimationError, match="row 0: system 'memvid' is not among the systems"):
        outcomes_from_rows(rows[:1], ["clay-consigliere"])


def test_invalid_outcomes_are_refused_naming_the_row() -> None:
    with pytest.raises(EstimationError, match=r"row 1: propensity not in \(0, 1\]"):
        _outcomes([0, 0], [A, A], [1, 0], propensity=[0.5, 0.0])
    with pytest.raises(EstimationError, match="row 0: governance-blocked but successful"):
        _outcomes([0], [A], [1], blocked=[True])
    with pytest.raises(EstimationError, match="arm mutated: 3 choices for 4 window requests"):
        _estimate(arms=(CURRENT, Arm(name="mutated", system=np.array([A, A, A]), fallback=np.zeros(3, bool))))


def test_intervals_cover_both_ends_where_choices_are_unsupported() -> None:
    nothing = Arm(name="none", system=np.array([-1, A, B, B]), fallback=np.array([True, False, False, True]))
    est = _estimate(arms=(CURRENT, nothing), bootstrap=200)
    lower, upper = est.interval(0.9)
    se = est.se()
    # Supported in the data: no gap, the two-sided normal value at both ends (each end with its own
    # bootstrap error: a resampled history can lose a cell's support).
    z = NormalDist().inv_cdf(0.95)
    assert est.optimistic_point[0, SUCCESS] == est.point[0, SUCCESS]
    assert lower[0, SUCCESS] == pytest.approx(est.point[0, SUCCESS] - z * se[0, SUCCESS])
    assert upper[0, SUCCESS] == pytest.approx(est.point[0, SUCCESS] + z * est.se(optimistic=True)[0, SUCCESS])
    # A request of no system: its success lies anywhere from 0 to 1, and so does a quarter of the mean.
    assert est.optimistic_point[1, SUCCESS] - est.point[1, SUCCESS] == pytest.approx(0.25)
    assert lower[1, SUCCESS] < est.point[1, SUCCESS] < est.optimistic_point[1, SUCCESS] < upper[1, SUCCESS]
    # The widening at each end is less than the two-sided value: the gap is an interval, not noise.
    se_optimistic = est.se(optimistic=True)[1, SUCCESS]
    assert upper[1, SUCCESS] - est.optimistic_point[1, SUCCESS] < z * se_optimistic


def test_choices_weighted_beyond_max_weight_are_valued_by_the_model_alone() -> None:
    # max_weight 1.5: only the propensity-0.8 row (weight 1.25) keeps its residual; the 0.5 one
    # (weight 2) is switched to the model.
    est = _estimate(max_weight=1.5)
    assert est.point[0, SUCCESS] == pytest.approx((1.0625 + 0.75 + 1.0 + 1.0) / 4)
    assert est.point[1, SUCCESS] == pytest.approx((0.5 + 0.75 + 1.0 + 0.5) / 4)
    with pytest.raises(EstimationError, match=r"max_weight=0\.5 must be at least 1"):
        _estimate(max_weight=0.5)


def test_a_system_that_requires_no_approval_has_a_blocked_bound_of_zero_where_unsupported() -> None:
    unseen = Arm(name="unseen", system=np.array([C, C, C, C]), fallback=np.zeros(4, dtype=bool))
    bounded = _estimate(arms=(CURRENT, unseen))
    assert bounded.unsupported[1, BLOCKED] == 1.0 and bounded.point[1, BLOCKED] == 1.0  # nothing known
    known = _estimate(arms=(CURRENT, unseen), unblockable=[False, False, True])
    assert known.point[1, BLOCKED] == 0.0  # the constitution says governance cannot block C
    assert known.point[1, SUCCESS] == 0.0  # success stays at its pessimistic bound
    with pytest.raises(EstimationError, match="unblockable names 2 systems, not 3"):
        _estimate(unblockable=[True, False])
