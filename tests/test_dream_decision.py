"""Dream proposals, replay through the router's decide(), and the decision rule."""

from __future__ import annotations

import copy
import hashlib
import math
import uuid
from statistics import NormalDist

import numpy as np
import pytest
import rfc8785

from clay_pipelines.routing.router import RoutingContext, RuleCandidate, decide
from clay_pipelines.sample_world.catalog import SYSTEMS
from clay_pipelines.tars import constitution as c
from clay_pipelines.tars.decision import (
    DEFAULT_RULE,
    INCONCLUSIVE,
    NOT_SELECTED,
    PROMOTE,
    REJECT,
    decide_family,
    half_a,
    holm,
    required_size,
    rule_hash,
    satisfies,
    violations,
)
from clay_pipelines.tars.estimators import Arm, Outcomes
from clay_pipelines.tars.proposals import KINDS, mutation_hash, plan, propose
from clay_pipelines.tars.replay import (
    ReplayRequests,
    RuleIndex,
    nearest_capability_lists,
    nearest_rule_candidates,
    replay,
    settings_of,
)

ROUTER = next(s for s in SYSTEMS if s.name == "clay-consigliere").constitution()
THRESHOLD = "parameters.routing_confidence_threshold"
CAPABILITY = "parameters.capability_match_threshold"


# -- proposals ------------------------------------------------------------------------------------


ONE_STEP = [{THRESHOLD: 0.65}, {THRESHOLD: 0.75}, {CAPABILITY: 0.3}, {CAPABILITY: 0.4}]
TWO_STEPS = [{THRESHOLD: 0.6}, {THRESHOLD: 0.8}, {CAPABILITY: 0.25}, {CAPABILITY: 0.45}]


def _far_points(mutations: list[dict]) -> dict[str, list[float]]:
    """The single-parameter proposals beyond two steps, per parameter."""
    out: dict[str, list[float]] = {}
    for mutation in mutations:
        if len(mutation) == 1 and mutation not in ONE_STEP + TWO_STEPS:
            ((key, value),) = mutation.items()
            out.setdefault(key, []).append(value)
    return out


def _beyond_two_steps(constitution: dict) -> list[tuple[str, float]]:
    """Every grid point beyond two steps of today's value, parameter by parameter in grid order."""
    out = []
    for key, (low, high) in ((THRESHOLD, (0.05, 0.95)), (CAPABILITY, (0.1, 0.8))):
        today = constitution["parameters"][key.split(".")[1]]
        grid = [round(low + 0.05 * i, 2) for i in range(round((high - low) / 0.05) + 1)]
        out += [(key, v) for v in grid if abs(v - today) > 0.1 + 1e-9]
    return out


def _spread_evenly(mutations: list[dict], constitution: dict, count: int) -> bool:
    """Whether the far points are `count` of the points beyond two steps, one in each of `count`
    equal stretches of their list."""
    far = _beyond_two_steps(constitution)
    positions = sorted(far.index(next(iter(m.items()))) for m in mutations)
    spacing = len(far) / count
    return len(positions) == count and all(i * spacing - 1 < p < (i + 1) * spacing for i, p in enumerate(positions))


def test_proposals_are_the_neighbours_joint_moves_and_points_across_the_bounds_all_on_the_grid() -> None:
    mutations = propose(ROUTER, "2026-11-30", 14)
    assert mutations[:8] == ONE_STEP + TWO_STEPS
    assert [len(m) for m in mutations[8:10]] == [2, 2]  # joint: both parameters one step
    assert len(mutations) == 14 and len({mutation_hash(m) for m in mutations}) == len(mutations)
    assert _spread_evenly(mutations[10:], ROUTER, 4)  # two per parameter, beyond two steps, spread
    for mutation in mutations:
        assert c.check_automated(ROUTER, mutation) == mutation
        for key, value in mutation.items():
            assert value != ROUTER["parameters"][key.split(".")[1]]


def test_proposals_are_deterministic_for_a_cycle_and_limited() -> None:
    assert propose(ROUTER, "2026-11-30", 12) == propose(ROUTER, "2026-11-30", 12)
    others = {tuple(mutation_hash(m) for m in propose(ROUTER, f"2026-12-{day:02d}", 12)) for day in range(1, 8)}
    assert len(others) > 1  # the joint and spread draws follow the cycle id
    three = propose(ROUTER, "2026-11-30", 3)
    assert len(three) == 3 and three == [m for m in ONE_STEP if m in three]  # a draw of the one-step group
    assert propose(ROUTER, "2026-11-30", 0) == []


def test_a_limit_under_every_proposal_still_keeps_points_across_the_bounds_spread_over_them() -> None:
    """Ten proposals for two router thresholds: the four one-step neighbours, four points across the
    bounds (one in each quarter of the 24 grid points beyond two steps, so the threshold's stretch
    0.05-0.3 is tried every night) and two joint proposals, whatever the cycle; at twelve, two of the
    four two-step neighbours as well."""
    far_values: set[tuple[str, float]] = set()
    for day in range(1, 29):
        mutations = propose(ROUTER, f"dream-2026-12-{day:02d}-03:00", 10)
        assert mutations[:4] == ONE_STEP and [len(m) for m in mutations[4:6]] == [2, 2]
        assert len(mutations) == 10 and _spread_evenly(mutations[6:], ROUTER, 4)
        assert any(m.get(THRESHOLD, 1) <= 0.3 for m in mutations[6:])
        far_values.update(next(iter(m.items())) for m in mutations[6:])
        twelve = propose(ROUTER, f"dream-2026-12-{day:02d}-03:00", 12)
        assert len([m for m in twelve if m in TWO_STEPS]) == 2 and twelve[:4] == ONE_STEP
    assert len(far_values) >= 16  # the start is drawn by the cycle: over 28 nights most points are tried


def test_a_limit_that_leaves_room_for_fewer_points_across_the_bounds_still_spreads_them() -> None:
    for day in range(1, 8):
        mutations = propose(ROUTER, f"dream-2026-12-{day:02d}-03:00", 6)
        assert mutations[:4] == ONE_STEP and _spread_evenly(mutations[4:], ROUTER, 2)


def test_parameters_a_replay_cannot_show_are_skipped_with_the_reason() -> None:
    skipped = plan(ROUTER, "2026-11-30", 12).skipped
    assert [m for m, _ in skipped] == [{"parameters.min_rule_executions": 40}, {"parameters.min_rule_executions": 60}]
    assert all("changes which rules the learner writes" in reason for _, reason in skipped)
    writer = {
        "parameters": {"temperature": 0.6, "timeout_ms": 30000},
        "tunables": {"timeout_ms": {"type": "integer", "min": 1000, "max": 60000, "step": 1000}},
    }
    proposals = plan(writer, "2026-11-30", 12)
    assert proposals.mutations == []
    assert proposals.skipped == [
        (
            {"parameters.timeout_ms": 29000},
            "the router's decision does not read it, so replaying logged requests cannot show its effect",
        ),
        (
            {"parameters.timeout_ms": 31000},
            "the router's decision does not read it, so replaying logged requests cannot show its effect",
        ),
    ]


def test_a_value_set_off_the_grid_has_the_grid_points_either_side_as_neighbours() -> None:
    off = c.with_changes(ROUTER, {THRESHOLD: 0.72})
    assert propose(off, "2026-11-30", 12)[:2] == [{THRESHOLD: 0.7}, {THRESHOLD: 0.75}]


def test_at_a_bound_the_points_across_the_bounds_come_from_the_one_side_left() -> None:
    at_top = c.with_changes(ROUTER, {THRESHOLD: 0.95})
    planned = plan(at_top, "2026-11-30", 14)
    across = [m for m, kind in zip(planned.mutations, planned.kinds, strict=True) if kind == KINDS["across"]]
    assert _spread_evenly(across, at_top, 4)
    assert all(0.05 <= m[THRESHOLD] <= 0.8 for m in across if THRESHOLD in m)  # beyond its two steps, below
    assert {THRESHOLD: 0.9} in planned.mutations and not any(m.get(THRESHOLD, 0) > 0.95 for m in planned.mutations)


def test_mutation_hash_is_the_sha256_of_rfc8785_json() -> None:
    expected = hashlib.sha256(rfc8785.dumps({THRESHOLD: 0.65})).hexdigest()
    assert mutation_hash({THRESHOLD: 0.65}) == expected


# -- replay ---------------------------------------------------------------------------------------

PAYROLL, LEDGER, WRITER, CLAY = (uuid.UUID(int=i) for i in range(1, 5))
NAMES = {PAYROLL: "payroll", LEDGER: "ledger", WRITER: "writer", CLAY: "clay"}


def _context(capabilities: list | None = None) -> RoutingContext:
    return RoutingContext(
        names=NAMES,
        active=frozenset(NAMES),
        blocked={},
        threshold=0.7,
        capability_threshold=0.35,
        catch_all=(CLAY, "clay"),
        nearest_capabilities=lambda: capabilities or [],
        embedder_tag="hashing@1",
    )


def _rule(score: float, recommended: uuid.UUID = PAYROLL) -> RuleCandidate:
    # confidence 1 and typical member similarity 1: the score is the similarity
    return RuleCandidate(uuid.uuid4(), score, "pattern", recommended, [LEDGER], 1.0, 1.0)


def test_replay_is_decide_for_every_request_and_setting() -> None:
    requests = ReplayRequests(
        candidates=[[_rule(0.9)], [_rule(0.66)], [_rule(0.5)], []],
        capabilities=[[(WRITER, "writer", 0.5)], [(WRITER, "writer", 0.3)], [(LEDGER, "ledger", 0.4)], []],
    )
    settings = [{}, {"routing_confidence_threshold": 0.65}, {"capability_match_threshold": 0.45}]
    arms = replay(requests, _context(), settings)
    assert arms[0].system.tolist() == ["payroll", "clay", "ledger", "clay"]
    assert arms[0].path.tolist() == ["rule", "catch_all", "capability", "catch_all"]
    assert arms[1].system.tolist() == ["payroll", "payroll", "ledger", "clay"]
    assert arms[2].system.tolist() == ["payroll", "clay", "clay", "clay"]
    assert arms[2].fallback.tolist() == [False, True, True, True]
    assert arms[1].settings == {"routing_confidence_threshold": 0.65, "capability_match_threshold": 0.35}
    for i in range(len(requests)):
        direct = decide(_context(requests.capabilities[i]), requests.candidates[i])
        assert (direct.system_name, direct.path) == (arms[0].system[i], arms[0].path[i])
    assert arms[1].codes(["clay", "payroll", "ledger"]).tolist() == [1, 1, 2, 0]


def test_replay_applies_router_settings_only() -> None:
    assert settings_of({THRESHOLD: 0.65, CAPABILITY: 0.3}) == {
        "routing_confidence_threshold": 0.65,
        "capability_match_threshold": 0.3,
    }
    with pytest.raises(ValueError, match=r"parameters\.timeout_ms is not a router setting"):
        settings_of({"parameters.timeout_ms": 1000})
    with pytest.raises(ValueError, match="timeout_ms: not a router setting"):
        replay(ReplayRequests(candidates=[], capabilities=[]), _context(), [{"timeout_ms": 1.0}])


def test_nearest_rules_in_bulk_score_each_rule_by_its_best_prototype() -> None:
    rules = [RuleCandidate(uuid.UUID(int=10 + i), 0.0, f"rule {i}", PAYROLL, [], 0.8, 0.9) for i in range(3)]
    prototypes = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    index = RuleIndex(rules=rules, prototypes=prototypes, prototype_rule=np.array([0, 1, 1, 2]))
    queries = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    found = nearest_rule_candidates(queries, index, k=2)
    assert [[r.pattern for r in row] for row in found] == [
        ["rule 0", "rule 1"],
        ["rule 2", "rule 0"],
        ["rule 1", "rule 0"],
    ]
    assert found[0][1].similarity == pytest.approx(0.6)  # rule 1's best prototype, not its first
    assert found[2][0].similarity == pytest.approx(1.4 / math.sqrt(2))
    # Equal similarity: the smaller rule id first, as nearest_rules() orders them.
    assert [r.rule_id.int for r in found[1]][1:] == [10]
    capabilities = nearest_capability_lists(
        queries, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [(LEDGER, "ledger"), (WRITER, "writer")], k=2
    )
    assert [name for _, name, _ in capabilities[2]] == ["ledger", "writer"]
    assert capabilities[0][0][2] == pytest.approx(1.0)


# -- the decision rule ------------------------------------------------------------------------------


def test_holm_steps_down_and_stops_at_the_first_p_value_over_its_threshold() -> None:
    thresholds, confirmed = holm([0.014, 0.001, 0.016], 0.025)
    assert thresholds == pytest.approx([0.0125, 0.025 / 3, 0.025])
    assert confirmed == [False, True, False]  # 0.016 < 0.025 alone, but the step before it failed
    assert holm([0.01, 0.004, 0.02], 0.025)[1] == [True, True, True]
    assert holm([], 0.025) == ([], [])


def test_the_minimum_replay_size_follows_from_the_mde_and_the_power() -> None:
    z = NormalDist().inv_cdf
    assert required_size(0.25, 0.05, 0.025, 0.90) == math.ceil(((z(0.975) + z(0.90)) * 0.25 / 0.05) ** 2) == 263
    assert required_size(0.25, 0.025, 0.025, 0.90) == 1051  # half the effect, four times the requests
    assert required_size(math.nan, 0.05, 0.025, 0.90) is None


def test_the_split_is_by_cycle_and_request_not_by_order() -> None:
    ids = [f"execution-{i}" for i in range(1000)]
    first = half_a(ids, "2026-11-30")
    assert first.tolist() == half_a(ids, "2026-11-30").tolist()
    assert half_a(ids[::-1], "2026-11-30").tolist() == first[::-1].tolist()
    assert 450 < first.sum() < 550
    assert first.tolist() != half_a(ids, "2026-12-01").tolist()


def _family(seed: int = 3, n: int = 2000):
    """Five systems: 0 today (success 0.5), 1 better at the same cost, 2 better but five times the
    cost, 3 better at 10% more cost (exactly the tolerance). Every system logged uniformly, so every
    choice is supported and its propensity is 1/4."""
    rng = np.random.default_rng(seed)
    success = np.array([0.5, 0.9, 0.95, 0.9])
    cost = np.array([1.0, 1.0, 5.0, 1.1])

    def logged(rows: int, propensity: float) -> Outcomes:
        system = rng.integers(0, 4, rows)
        return Outcomes(
            cluster=rng.integers(0, 10, rows),
            system=system,
            success=(rng.random(rows) < success[system]).astype(float),
            blocked=np.zeros(rows, dtype=bool),
            satisfaction=np.full(rows, np.nan),
            cost=cost[system] * rng.lognormal(0, 0.2, rows),
            duration_ms=np.full(rows, 1000.0),
            propensity=np.full(rows, propensity),
        )

    history, window = logged(2 * n, np.nan), logged(n, 0.25)

    def arm(name: str, system: int) -> Arm:
        return Arm(name=name, system=np.full(n, system), fallback=np.zeros(n, dtype=bool))

    proposals = [({THRESHOLD: 0.65}, arm("1", 1)), ({THRESHOLD: 0.6}, arm("2", 2)), ({THRESHOLD: 0.55}, arm("3", 3))]
    return window, history, arm("current", 0), proposals


def _decide(rule: dict | None = None) -> dict:
    """The family above under the default rule, with a minimum detectable effect of 0.2: uniform
    logging over four systems makes the per-request spread of the paired difference about 1.1."""
    window, history, current, proposals = _family()
    return decide_family(
        rule={**DEFAULT_RULE, "bootstrap": 100, "mde": 0.2, **(rule or {})},
        cycle_id="2026-11-30",
        family={"tenant": "t"},
        window=window,
        history=history,
        request_ids=[f"r{i}" for i in range(len(window))],
        current=current,
        proposals=proposals,
        clusters=10,
        systems=4,
    )


def test_promote_reject_and_inconclusive_follow_from_the_confirmed_figures() -> None:
    record = _decide()
    outcomes = {p["mutation"][THRESHOLD]: p["outcome"] for p in record["proposals"]}
    assert outcomes == {0.65: PROMOTE, 0.6: REJECT, 0.55: INCONCLUSIVE}
    better, costly, borderline = (p["confirmation"] for p in record["proposals"])
    assert better["primary"]["holm_confirmed"] and better["primary"]["lower_at_holm"] > 0
    assert all(g["within"] for g in better["guardrails"].values())
    assert costly["primary"]["holm_confirmed"] and costly["guardrails"]["cost_per_request"]["breached"]
    assert borderline["primary"]["holm_confirmed"]
    cost = borderline["guardrails"]["cost_per_request"]
    assert not cost["within"] and not cost["breached"]  # its bounds straddle the tolerance
    assert record["promote"] == record["proposals"][0]["hash"]
    assert record["rule_hash"] == rule_hash(record["rule"])
    assert sorted(p["confirmation"]["primary"]["holm_threshold"] for p in record["proposals"]) == pytest.approx(
        [0.025 / 3, 0.0125, 0.025]
    )
    assert satisfies(record)


def test_a_rule_requiring_power_makes_a_window_smaller_than_the_mde_needs_at_most_inconclusive() -> None:
    record = _decide({"mde": 0.05, "require_power": True})
    better = record["proposals"][0]
    assert better["confirmation"]["power"]["adequate"] is False
    assert better["confirmation"]["power"]["required_requests"] > better["confirmation"]["power"]["half_b_requests"]
    assert better["outcome"] == INCONCLUSIVE
    assert record["proposals"][1]["outcome"] == REJECT  # a rejection needs no power
    assert record["promote"] is None
    assert satisfies(record)


def test_by_default_a_confirmed_gain_promotes_in_a_window_smaller_than_the_mde_needs() -> None:
    record = _decide({"mde": 0.05})
    better = record["proposals"][0]
    assert better["confirmation"]["power"]["adequate"] is False  # reported
    assert better["outcome"] == PROMOTE  # the test still held alpha
    assert record["promote"] == better["hash"]
    assert satisfies(record)
    strict = {**record["rule"], "require_power": True}
    assert not satisfies({**record, "rule": strict, "rule_hash": rule_hash(strict)})  # outcome follows the rule


def test_only_the_top_k_positive_and_distinct_proposals_are_confirmed() -> None:
    window, history, current, proposals = _family()
    worse = Arm(name="worse", system=np.zeros(len(window), dtype=int), fallback=np.ones(len(window), dtype=bool))
    twin = proposals[0][1]
    record = decide_family(
        rule={**DEFAULT_RULE, "bootstrap": 50, "confirm_top_k": 2},
        cycle_id="2026-11-30",
        family={},
        window=window,
        history=history,
        request_ids=[f"r{i}" for i in range(len(window))],
        current=current,
        proposals=[*proposals, ({CAPABILITY: 0.3}, twin), ({CAPABILITY: 0.4}, worse)],
        clusters=10,
        systems=4,
    )
    entries = record["proposals"]
    gains = [e["selection"]["gain"] for e in entries[:3]]
    top_two = sorted(range(3), key=lambda i: -gains[i])[:2]
    assert [e["selected"] for e in entries] == [i in top_two for i in range(3)] + [False, False]
    assert entries[3]["selection"]["duplicate_of"] == entries[0]["hash"]
    assert not entries[4]["selection"]["eligible"]  # no gain: same systems, more fallbacks
    unselected = [e for e in entries if not e["selected"]]
    assert [e["outcome"] for e in unselected[:-1]] == [NOT_SELECTED] * 2
    # More fallbacks and nothing gained: half A already shows the fallback-rate guardrail breached.
    assert entries[4]["outcome"] == REJECT
    assert entries[4]["selection"]["rejection"]["breached"] == ["fallback_rate"]
    assert entries[4]["selection"]["rejection"]["level"] == pytest.approx(1 - 0.025 / 5)
    assert satisfies(record)
    tampered = copy.deepcopy(record)
    tampered["proposals"][4]["outcome"] = NOT_SELECTED
    assert any("outcome not_selected but its figures give reject" in v for v in violations(tampered))


def test_satisfies_recomputes_every_outcome_from_the_record() -> None:
    record = _decide()
    tampered = copy.deepcopy(record)
    tampered["proposals"][2]["outcome"] = PROMOTE
    tampered["proposals"][2]["confirmation"]["outcome"] = PROMOTE
    assert not satisfies(tampered)
    assert any("outcome promote but its figures give inconclusive" in v for v in violations(tampered))
    loosened = copy.deepcopy(record)
    loosened["rule"]["alpha"] = 0.2
    assert "rule_hash is not the hash of the recorded rule" in violations(loosened)
    shifted = copy.deepcopy(record)
    shifted["proposals"][0]["confirmation"]["primary"]["p_value"] = 0.5
    assert any("p-value or Holm threshold" in v for v in violations(shifted))
    assert violations({"rule": {}}) == ["the record is malformed: KeyError: 'rule_hash'"]
