"""The router's exploration: another choice for a small share of rule decisions, always with the
probability of what was chosen, so that dreams can weigh logged outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from clay_pipelines.routing.router import RoutingContext, RuleCandidate, decide, explore

PAYROLL, LEDGER, WRITER, CLAY = (uuid.UUID(int=i) for i in range(1, 5))
NAMES = {PAYROLL: "payroll", LEDGER: "ledger", WRITER: "writer", CLAY: "clay"}


def _context(share: float, capabilities: list | None = None, blocked: dict | None = None) -> RoutingContext:
    return RoutingContext(
        names=NAMES,
        active=frozenset(NAMES),
        blocked=blocked or {},
        threshold=0.5,
        capability_threshold=0.35,
        catch_all=(CLAY, "clay"),
        nearest_capabilities=lambda: capabilities or [],
        embedder_tag="hashing@1",
        exploration_share=share,
    )


RULE = RuleCandidate(
    rule_id=uuid.UUID(int=99),
    similarity=0.9,
    pattern="pay the team",
    recommended=PAYROLL,
    alternatives=[LEDGER],
    confidence=0.9,
    member_similarity=0.9,
)


def _draws(*values: float) -> Iterator[float]:
    return iter(values).__next__


def test_most_rule_decisions_keep_the_rule_and_record_their_probability() -> None:
    context = _context(0.1)
    kept = explore(context, decide(context, [RULE]), _draws(0.5))
    assert (kept.system_name, kept.propensity, kept.explored) == ("payroll", 0.9, False)


def test_an_explored_decision_takes_an_alternative_or_the_fallback_uniformly() -> None:
    context = _context(0.1, capabilities=[(WRITER, "writer", 0.6)])
    base = decide(context, [RULE])
    to_alternative = explore(context, base, _draws(0.05, 0.2))
    to_fallback = explore(context, base, _draws(0.05, 0.7))
    assert (to_alternative.system_name, to_alternative.propensity, to_alternative.explored) == ("ledger", 0.05, True)
    assert (to_fallback.system_name, to_fallback.propensity) == ("writer", 0.05)
    assert to_fallback.fallbacks[-1].startswith("explored (10% of rule decisions")


def test_no_exploration_off_the_rule_path_or_without_another_usable_choice() -> None:
    context = _context(0.5)
    weak = RuleCandidate(**{**RULE.__dict__, "confidence": 0.0, "similarity": 0.2})
    off_rule = explore(context, decide(context, [weak]), _draws(0.0, 0.0))
    assert (off_rule.path, off_rule.propensity, off_rule.explored) == ("catch_all", 1.0, False)
    lonely = RuleCandidate(**{**RULE.__dict__, "alternatives": []})
    blocked = _context(0.5, blocked={CLAY: "spent"})
    alone = explore(blocked, decide(blocked, [lonely]), _draws(0.0, 0.0))
    assert (alone.system_name, alone.propensity) == ("payroll", 1.0)


NEAR = RuleCandidate(**{**RULE.__dict__, "confidence": 0.8, "similarity": 0.45, "member_similarity": 0.9})  # 0.45


def test_a_fallback_whose_best_rule_scored_just_under_the_threshold_tries_that_rules_system() -> None:
    context = _context(0.1)  # threshold 0.5, margin 0.1
    base = decide(context, [NEAR])
    assert (base.path, base.system_name, base.rule_system) == ("catch_all", "clay", "payroll")
    kept = explore(context, base, _draws(0.5))
    tried = explore(context, base, _draws(0.05))
    assert (kept.system_name, kept.propensity, kept.explored) == ("clay", 0.9, False)
    assert (tried.system_name, tried.propensity, tried.explored, tried.path) == ("payroll", 0.1, True, "catch_all")
    assert tried.fallbacks[-1].startswith("explored (10% of fallbacks whose best rule scored within 0.1")


def test_fallbacks_far_under_the_threshold_or_with_an_unusable_rule_system_are_not_explored() -> None:
    context = _context(0.1)
    far = RuleCandidate(**{**NEAR.__dict__, "similarity": 0.3})  # scores 0.3 < 0.5 - 0.1
    assert explore(context, decide(context, [far]), _draws(0.0)).propensity == 1.0
    blocked = _context(0.1, blocked={PAYROLL: "payroll is over budget"})
    unusable = explore(blocked, decide(blocked, [NEAR]), _draws(0.0))
    assert (unusable.system_name, unusable.propensity, unusable.explored) == ("clay", 1.0, False)
    off = _context(0.0)
    assert explore(off, decide(off, [NEAR]), _draws(0.0)).system_name == "clay"
