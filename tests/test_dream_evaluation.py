"""The in-memory world behind `clay eval dreams`: its truth, and a small run of the evaluation
(the targets are for the full 200-seed run, not for this one)."""

from __future__ import annotations

import json

import numpy as np

from clay_pipelines.evaluation import dreams
from clay_pipelines.tars.decision import DEFAULT_RULE, dream_cycle, half_a, replay_arms, satisfies
from clay_pipelines.tars.proposals import KINDS, propose


def _window(seed: int, planted: bool):
    world = dreams.build_world(seed, planted)
    window = dreams.generate(world, np.random.default_rng(seed), 7, "window")
    mutations = propose(dreams.ROUTER, f"test/{seed}", 12)
    arms = replay_arms(dreams.ROUTER, mutations, window.requests, dreams.base_context(), dreams.SYSTEMS)
    truths = [dreams.true_success(world, window.outcomes.cluster, arm.system) for arm in arms]
    return world, window, arms, truths


def test_in_the_aa_world_no_setting_changes_the_true_success() -> None:
    for seed in range(3):
        _, _, arms, truths = _window(seed, planted=False)
        assert any((arm.system != arms[0].system).any() for arm in arms[1:])  # decisions do change
        assert truths == [truths[0]] * len(truths)


def test_the_planted_world_rewards_today_threshold_one_step_lower() -> None:
    world, _, arms, truths = _window(0, planted=True)
    assert world.planted_kinds
    assert truths[1] - truths[0] > 0.02  # 0.05 in expectation over windows
    assert (arms[1].system != arms[0].system).mean() <= 0.25
    assert truths[2] < truths[0]  # one step higher loses part of it


def test_the_logged_requests_carry_the_routers_propensities() -> None:
    _, window, _, _ = _window(1, planted=False)
    outcomes = window.outcomes
    assert set(np.round(outcomes.propensity, 6)) <= {1.0, 0.95} | {round(0.05 / k, 6) for k in range(1, 8)}
    assert len(outcomes) >= 7 * dreams.MIN_PER_DAY
    assert outcomes.blocked.any() and not outcomes.success[outcomes.blocked].any()


def test_a_small_evaluation_run_reports_every_figure() -> None:
    figures = dreams.evaluate_dreams(seeds=4, bootstrap=50)
    assert set(figures) == {
        "seeds",
        "false_promotion_rate",
        "false_promotion_upper",
        "planted_promotion_rate",
        "planted_promotion_lower",
        "success_rate_mae",
        "interval_coverage",
        "details",
        "targets",
    }
    assert figures["seeds"] == 4
    assert 0 <= figures["false_promotion_rate"] <= figures["false_promotion_upper"] <= 1
    assert 0 <= figures["planted_promotion_lower"] <= figures["planted_promotion_rate"] <= 1
    assert 0 <= figures["success_rate_mae"] < 0.05
    assert 0 <= figures["interval_coverage"] <= 1
    details = figures["details"]
    assert details["records_failing_satisfies"] == 0
    assert 0.03 < details["planted_true_effect"]["mean"] < 0.07
    assert details["window_requests_mean"] >= 28 * dreams.MIN_PER_DAY
    assert sum(details["planted_first_proposal_fate"].values()) == 4
    assert len(figures["targets"]) == 6


def test_a_whole_cycle_proposes_replays_and_decides_in_one_call() -> None:
    world = dreams.build_world(2, planted=True)
    rng = np.random.default_rng(2)
    history = dreams.generate(world, rng, 7, "history")
    window = dreams.generate(world, rng, 7, "window")
    record = dream_cycle(
        constitution=dreams.ROUTER,
        cycle_id="2026-11-30",
        limit=6,
        requests=window.requests,
        base=dreams.base_context(),
        systems=dreams.SYSTEMS,
        window=window.outcomes,
        history=history.outcomes,
        request_ids=window.ids,
        clusters=len(world.micro_weight),
        rule={**DEFAULT_RULE, "bootstrap": 20},
    )
    assert [p["mutation"] for p in record["proposals"]] == propose(dreams.ROUTER, "2026-11-30", 6)
    # Six for two thresholds: the four one-step moves and a draw of two of the four far points.
    assert [p["proposed_as"] for p in record["proposals"]] == [KINDS["one_step"]] * 4 + [KINDS["across"]] * 2
    assert record["current_settings"] == {"routing_confidence_threshold": 0.7, "capability_match_threshold": 0.35}
    assert [s["mutation"] for s in record["skipped"]] == [
        {"parameters.min_rule_executions": 40},
        {"parameters.min_rule_executions": 60},
    ]
    assert record["window"]["half_a"] == int(half_a(window.ids, "2026-11-30").sum())
    assert json.loads(json.dumps(record)) == record
    assert satisfies(record)
