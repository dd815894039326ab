"""The dream decision rule: declared before the data, applied to one tenant-night, re-checkable.

The rule is a dict held in TARS's constitution (`parameters.dream_decision_rule`; DEFAULT_RULE
otherwise) and identified by its hash. For one family (a tenant's night: every proposal of the cycle):
  1. the window's requests are split in two halves by a hash of the cycle id and each request id;
  2. selection, on half A: every proposal is estimated against the current settings; those with a
     positive gain on the primary metric, not making exactly the same decisions as an earlier
     proposal, are ranked by that gain and the top k (k <= 3) go on;
  3. confirmation, on half B: a one-sided test of "the gain is at most zero" for each of the k, at
     alpha with Holm's step-down over k (p-values and bounds: normal approximation with the
     bootstrap's standard error);
  4. per confirmed proposal: promote when Holm confirms it (its one-sided lower bound at its Holm
     threshold is above zero) and every guardrail's one-sided harm bound is within its tolerance;
     reject when the gain's one-sided upper bound is below zero or a guardrail is breached beyond
     its tolerance (its harm's one-sided lower bound above it); otherwise inconclusive. The size
     half B needs to detect the minimum detectable effect (MDE) with the declared power is reported
     with the decision; a rule with require_power makes a smaller half B at most inconclusive.
Requests whose choice has no support are valued at a bound (estimators.py): a promotion and a
guardrail's "within" rest on the end worst for the mutation, a rejection and a breach on the end best
for it, so neither is concluded from what was never observed. Guardrails are an intersection of
one-sided tests, each at alpha (requiring them all needs no correction). A proposal not selected is
"reject" when half A already shows it worse (its gain's upper bound below zero or a guardrail
breached, at alpha over the number of proposals, unsupported choices at the end best for it), and
"not_selected" otherwise. The record (JSON) holds the rule, its hash and every figure an outcome rests on;
satisfies() recomputes every outcome from those figures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from clay_pipelines.routing.router import RoutingContext
from clay_pipelines.tars import constitution as c
from clay_pipelines.tars.estimators import HIGHER_IS_BETTER, METRICS, Arm, Estimates, Outcomes, estimate
from clay_pipelines.tars.proposals import cycle_rng, mutation_hash, plan
from clay_pipelines.tars.replay import ROUTER_SETTINGS, ReplayRequests, replay, settings_of

RULE_KEY = "dream_decision_rule"
# The team's declared defaults; a tenant's TARS constitution may declare its own.
DEFAULT_RULE: dict[str, Any] = {
    "version": 1,
    "primary": "success_rate",
    "guardrails": {
        "cost_per_request": {"tolerance": 0.10, "relative": True},
        "mean_duration_ms": {"tolerance": 0.10, "relative": True},
        "fallback_rate": {"tolerance": 0.05, "relative": False},
        # Refusals already count as failures in the primary; this guards the approvals people
        # handle. A margin a tenant's month can demonstrate: at 40 requests a day, a 1-point margin
        # on a 2% event is not shown even when the true rise is a quarter of it.
        "governance_blocked_rate": {"tolerance": 0.02, "relative": False},
    },
    "family": "tenant_night",
    "alpha": 0.025,
    "confirm_top_k": 3,
    "mde": 0.05,
    "power": 0.90,
    "bootstrap": 200,
    "interval_level": 0.90,
    "min_support": 1,
    "estimator": "auto",
    "split_history": False,
    # Logged choices less likely than 1 in 5 (explorations, rare historical routes) are valued by the
    # outcome model alone: their 1/propensity-weighted residuals would dominate the variance.
    "max_importance_weight": 5,
    # A half B smaller than the MDE needs still controls false promotions at alpha; it only makes a
    # miss likely. True makes such a decision at most inconclusive (rules stored without it: False).
    "require_power": False,
}
_OPTIONAL: dict[str, Any] = {"require_power": False, "max_importance_weight": math.inf}
PROMOTE, REJECT, INCONCLUSIVE, NOT_SELECTED = "promote", "reject", "inconclusive", "not_selected"
_Z = NormalDist()


class DecisionRuleError(ValueError):
    """A decision rule that cannot be applied, naming the key."""


def rule_hash(rule: dict[str, Any]) -> str:
    return hashlib.sha256(c.canonical(rule)).hexdigest()


def rule_from_constitution(tars_constitution: dict[str, Any] | None) -> dict[str, Any]:
    """The rule TARS's constitution declares (parameters.dream_decision_rule), else the default;
    checked."""
    declared = ((tars_constitution or {}).get("parameters") or {}).get(RULE_KEY)
    return check_rule(declared if declared is not None else DEFAULT_RULE)


def check_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule if every key is usable, else DecisionRuleError naming the first that is not."""
    missing = sorted(set(DEFAULT_RULE) - set(rule) - set(_OPTIONAL))
    if missing:
        raise DecisionRuleError(f"decision rule lacks {', '.join(missing)}")
    if rule["primary"] not in METRICS:
        raise DecisionRuleError(f"primary {rule['primary']!r} is not one of {', '.join(METRICS)}")
    for name, spec in rule["guardrails"].items():
        if name not in METRICS or name == rule["primary"]:
            raise DecisionRuleError(f"guardrail {name!r} is not a metric other than the primary")
        if not isinstance(spec.get("tolerance"), int | float) or spec["tolerance"] < 0:
            raise DecisionRuleError(f"guardrail {name}: tolerance must be a number >= 0")
    bounds = {"alpha": (0, 0.5), "power": (0, 1), "interval_level": (0, 1), "mde": (0, math.inf)}
    for key, (low, high) in bounds.items():
        if not isinstance(rule[key], int | float) or not low < rule[key] < high:
            raise DecisionRuleError(f"{key}={rule[key]!r} must be in ({low}, {high})")
    if not isinstance(rule["confirm_top_k"], int) or not 1 <= rule["confirm_top_k"] <= 3:
        raise DecisionRuleError(f"confirm_top_k={rule['confirm_top_k']!r} must be 1, 2 or 3")
    weight = rule.get("max_importance_weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 1:
        raise DecisionRuleError(f"max_importance_weight={weight!r} must be a number >= 1")
    if not isinstance(rule.get("require_power", False), bool):
        raise DecisionRuleError(f"require_power={rule['require_power']!r} must be true or false")
    if not isinstance(rule["bootstrap"], int) or rule["bootstrap"] < 2:
        raise DecisionRuleError(f"bootstrap={rule['bootstrap']!r} must be an integer >= 2")
    return rule


# -- the split ----------------------------------------------------------------------------------


def half_a(ids: Sequence[str], cycle_id: str, purpose: str = "window") -> np.ndarray:
    """True for the rows in half A: a hash of the cycle id and each row's id, so a row's half does
    not depend on the order or on the other rows."""
    out = np.empty(len(ids), dtype=bool)
    for i, row_id in enumerate(ids):
        digest = hashlib.sha256(f"{cycle_id}\x1f{purpose}\x1f{row_id}".encode()).digest()
        out[i] = digest[0] & 1 == 0
    return out


# -- the figures the outcome rests on -------------------------------------------------------------


def p_value(effect: float, se: float) -> float:
    """One-sided p-value of "effect <= 0" (normal approximation with the bootstrap's standard error)."""
    if not math.isfinite(effect) or not math.isfinite(se):
        return 1.0
    if se <= 0:
        return 0.0 if effect > 0 else 1.0
    return 1.0 - _Z.cdf(effect / se)


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Holm's step-down over the given p-values: each one's threshold (alpha / (k - rank)) and
    whether it is confirmed (p below its threshold and every smaller p confirmed)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: (p_values[i], i))
    thresholds, confirmed = [0.0] * k, [False] * k
    going = True
    for rank, i in enumerate(order):
        thresholds[i] = alpha / (k - rank)
        going = going and p_values[i] < thresholds[i]
        confirmed[i] = going
    return thresholds, confirmed


def required_size(sigma: float, mde: float, alpha: float, power: float) -> int | None:
    """Requests half B needs for a one-sided test at alpha to detect `mde` with `power`, given the
    per-request standard deviation of the paired difference (None when it is unknown)."""
    if not math.isfinite(sigma):
        return None
    return math.ceil(((_Z.inv_cdf(1 - alpha) + _Z.inv_cdf(power)) * sigma / mde) ** 2)


def _bound(value: float, se: float, level: float, side: int) -> float:
    if not (math.isfinite(value) and math.isfinite(se)):
        return -side * math.inf
    return value + side * _Z.inv_cdf(level) * se


def _gain(metric: str, difference: float) -> float:
    """How much better the mutation is on a metric (negative: worse)."""
    return difference if HIGHER_IS_BETTER[metric] else -difference


def _tolerance(spec: dict[str, Any], current: float) -> float:
    return float(spec["tolerance"]) * abs(current) if spec.get("relative") else float(spec["tolerance"])


def _side(est: Estimates, arm: int, metric: str, optimistic: bool) -> tuple[float, float]:
    """The mutation's gain on a metric and its standard error, with unsupported choices at the end
    that is worst (pessimistic) or best (optimistic) for the mutation."""
    m = est.metrics.index(metric)
    point, _ = est.values(diff=True, optimistic=optimistic)
    return _gain(metric, float(point[arm, m])), float(est.se(diff=True, optimistic=optimistic)[arm, m])


def _guardrail(
    rule: dict[str, Any], name: str, worst: tuple[float, float], best: tuple[float, float], current: float
) -> dict[str, Any]:
    """Within tolerance: the pessimistic harm's one-sided upper bound at most the tolerance.
    Breached: even the optimistic harm's one-sided lower bound is above it."""
    level = 1 - rule["alpha"]
    tolerance = _tolerance(rule["guardrails"][name], current)
    harm, se = -worst[0], worst[1]
    harm_optimistic, se_optimistic = -best[0], best[1]
    upper = _bound(harm, se, level, +1)
    lower = _bound(harm_optimistic, se_optimistic, level, -1)
    return {
        "current": current,
        "harm": harm,
        "se": se,
        "harm_upper": upper,
        "harm_optimistic": harm_optimistic,
        "se_optimistic": se_optimistic,
        "harm_lower": lower,
        "tolerance": tolerance,
        "within": bool(upper <= tolerance),
        "breached": bool(lower > tolerance),
    }


def _outcome(confirmed: bool, primary_upper: float, guardrails: dict[str, dict[str, Any]], adequate: bool) -> str:
    if confirmed and adequate and all(g["within"] for g in guardrails.values()):
        return PROMOTE
    if primary_upper < 0 or any(g["breached"] for g in guardrails.values()):
        return REJECT
    return INCONCLUSIVE


# -- the family's decision --------------------------------------------------------------------------


def _current(est: Estimates, metric: str) -> float:
    return float(est.point[0, est.metrics.index(metric)])


def _selection(rule: dict[str, Any], est: Estimates, duplicate_of: list[str | None]) -> list[dict[str, Any]]:
    """Per proposal (arms 1..), the half-A figures selection rests on (pessimistic for the
    mutation) and whether it is eligible."""
    primary = rule["primary"]
    out = []
    for arm in range(1, len(est.arms)):
        gain, se = _side(est, arm, primary, optimistic=False)
        sd = float(est.diff_sd[arm, est.metrics.index(primary)])
        harms = {
            name: {
                "harm": -_side(est, arm, name, optimistic=False)[0],
                "tolerance": _tolerance(spec, _current(est, name)),
            }
            for name, spec in rule["guardrails"].items()
        }
        out.append(
            {
                "gain": gain,
                "gain_se": se,
                "sd_per_request": sd,
                # What the outcome model (fitted on the history) adds to the variance: no window
                # size removes it.
                "model_variance": max(0.0, se * se - sd * sd / max(est.requests, 1)),
                "harms": harms,
                "duplicate_of": duplicate_of[arm - 1],
                "eligible": _eligible(gain, duplicate_of[arm - 1]),
                "rejection": _rejection(rule, est, arm, len(est.arms) - 1),
            }
        )
    return out


def _rejection(rule: dict[str, Any], est: Estimates, arm: int, proposals: int) -> dict[str, Any]:
    """Whether half A already shows the proposal worse: its gain's upper bound below zero, or a
    guardrail's harm lower bound above its tolerance, each with unsupported choices at the end best
    for the mutation and at alpha / proposals (Bonferroni over the family: a rejection changes
    nothing, but it should not be said of a neutral proposal by chance)."""
    level = 1 - rule["alpha"] / max(proposals, 1)
    gain, se = _side(est, arm, rule["primary"], optimistic=True)
    harms = {}
    for name, spec in rule["guardrails"].items():
        best_gain, best_se = _side(est, arm, name, optimistic=True)
        harms[name] = {
            "harm_optimistic": -best_gain,
            "se_optimistic": best_se,
            "tolerance": _tolerance(spec, _current(est, name)),
        }
    return {"level": level, "gain_optimistic": gain, "se_optimistic": se, "harms": harms} | _rejected(
        level, gain, se, harms
    )


def _rejected(level: float, gain: float, se: float, harms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    upper = _bound(gain, se, level, +1)
    breached = sorted(
        name
        for name, h in harms.items()
        if _bound(_finite(h["harm_optimistic"]), _finite(h["se_optimistic"]), level, -1) > _finite(h["tolerance"])
    )
    return {"gain_upper": upper, "breached": breached, "rejected": bool(upper < 0 or breached)}


def _eligible(gain: float | None, duplicate_of: str | None) -> bool:
    """A positive gain on half A, and not the same decisions as an earlier proposal (testing the
    same policy twice would spend alpha on it twice)."""
    return duplicate_of is None and gain is not None and math.isfinite(gain) and gain > 0


def _duplicates(hashes: list[str], arms: Sequence[Arm]) -> list[str | None]:
    """Per proposal, the earlier proposal that makes exactly the same decisions on the window."""
    first: dict[bytes, str] = {}
    out: list[str | None] = []
    for name, arm in zip(hashes, arms, strict=True):
        key = arm.system.astype(np.int64).tobytes() + arm.fallback.astype(bool).tobytes()
        out.append(first.get(key))
        first.setdefault(key, name)
    return out


def _finite(value: float | None) -> float:
    """A recorded figure as a float; None (recorded for NaN or infinity) as NaN."""
    return math.nan if value is None else float(value)


def _ranked(hashes: list[str], selection: list[dict[str, Any]], k: int) -> list[int]:
    eligible = [i for i, s in enumerate(selection) if s["eligible"]]
    return sorted(eligible, key=lambda i: (-selection[i]["gain"], hashes[i]))[:k]


def _confirm(rule: dict[str, Any], est_b: Estimates, selected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    alpha, k, primary = rule["alpha"], len(selected), rule["primary"]
    worst = [_side(est_b, j + 1, primary, optimistic=False) for j in range(k)]
    best = [_side(est_b, j + 1, primary, optimistic=True) for j in range(k)]
    p_values = [p_value(gain, se) for gain, se in worst]
    thresholds, confirmed = holm(p_values, alpha)
    out = []
    for j in range(k):
        guardrails = {
            name: _guardrail(
                rule,
                name,
                _side(est_b, j + 1, name, optimistic=False),
                _side(est_b, j + 1, name, optimistic=True),
                _current(est_b, name),
            )
            for name in rule["guardrails"]
        }
        power = _power(rule, selected[j], est_b.requests, alpha / k)
        upper = _bound(best[j][0], best[j][1], 1 - alpha, +1)
        out.append(
            {
                "primary": {
                    "gain": worst[j][0],
                    "se": worst[j][1],
                    "p_value": p_values[j],
                    "holm_threshold": thresholds[j],
                    "holm_confirmed": confirmed[j],
                    "lower_at_holm": _bound(worst[j][0], worst[j][1], 1 - thresholds[j], -1),
                    "gain_optimistic": best[j][0],
                    "se_optimistic": best[j][1],
                    "upper": upper,
                },
                "guardrails": guardrails,
                "power": power,
                "outcome": _outcome(confirmed[j], upper, guardrails, _powered(rule, power)),
            }
        )
    return out


def _power(rule: dict[str, Any], selection: dict[str, Any], half_b: int, alpha: float) -> dict[str, Any]:
    """The replay size the MDE needs (per-request spread of the paired difference on half A, one-sided
    at the first Holm threshold), whether half B has it, and the power half B has once the outcome
    model's own variance (which no window size removes) is counted."""
    sigma = _finite(selection["sd_per_request"])
    model_variance = _finite(selection["model_variance"])
    needed = required_size(sigma, rule["mde"], alpha, rule["power"])
    return {
        "mde": rule["mde"],
        "power": rule["power"],
        "alpha": alpha,
        "sigma_per_request": sigma,
        "required_requests": needed,
        "half_b_requests": half_b,
        "adequate": needed is not None and half_b >= needed,
        "mde_at_half_b": _detectable(sigma, half_b, alpha, rule["power"]),
        "model_variance": model_variance,
        "power_at_half_b_with_model_variance": _achieved(sigma, model_variance, half_b, alpha, rule["mde"]),
    }


def _powered(rule: dict[str, Any], power: dict[str, Any]) -> bool:
    """Whether the power figures allow a promotion under this rule."""
    return bool(power["adequate"]) or not rule.get("require_power", _OPTIONAL["require_power"])


def _achieved(sigma: float, model_variance: float, n: int, alpha: float, effect: float) -> float | None:
    if not (math.isfinite(sigma) and math.isfinite(model_variance)) or n <= 0:
        return None
    se = math.sqrt(sigma * sigma / n + model_variance)
    return 1.0 if se == 0 else _Z.cdf(effect / se - _Z.inv_cdf(1 - alpha))


def _detectable(sigma: float, n: int, alpha: float, power: float) -> float | None:
    if not math.isfinite(sigma) or n <= 0:
        return None
    return (_Z.inv_cdf(1 - alpha) + _Z.inv_cdf(power)) * sigma / math.sqrt(n)


def decide_family(
    *,
    rule: dict[str, Any],
    cycle_id: str,
    family: dict[str, Any],
    window: Outcomes,
    history: Outcomes,
    request_ids: Sequence[str],
    current: Arm,
    proposals: Sequence[tuple[dict[str, Any], Arm]],
    clusters: int,
    systems: int,
    history_ids: Sequence[str] | None = None,
    unblockable: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The decision record of one family: selection on half A, confirmation on half B.
    unblockable: per system, whether its constitution requires no approval (estimators.estimate)."""
    check_rule(rule)
    if len(request_ids) != len(window):
        raise ValueError(f"{len(request_ids)} request ids for {len(window)} window rows")
    in_a = half_a(request_ids, cycle_id)
    hist_a, hist_b = _history_halves(rule, cycle_id, history, history_ids)
    arms = [current, *(arm for _, arm in proposals)]
    hashes = [mutation_hash(m) for m, _ in proposals]
    settings = {
        "clusters": clusters,
        "systems": systems,
        "min_support": rule["min_support"],
        "max_weight": float(rule.get("max_importance_weight", _OPTIONAL["max_importance_weight"])),
        "estimator": rule["estimator"],
        "unblockable": unblockable,
    }
    rows_a, rows_b = np.flatnonzero(in_a), np.flatnonzero(~in_a)
    est_a = estimate(
        window.take(rows_a),
        hist_a,
        [a.take(rows_a) for a in arms],
        bootstrap=rule["bootstrap"],
        rng=cycle_rng(cycle_id, "bootstrap/A"),
        **settings,
    )
    selection = _selection(rule, est_a, _duplicates(hashes, [arm for _, arm in proposals]))
    k = rule["confirm_top_k"]
    chosen = _ranked(hashes, selection, k)
    confirmed: list[dict[str, Any]] = []
    est_b = None
    if chosen:
        est_b = estimate(
            window.take(rows_b),
            hist_b,
            [arms[0].take(rows_b), *(arms[i + 1].take(rows_b) for i in chosen)],
            bootstrap=rule["bootstrap"],
            rng=cycle_rng(cycle_id, "bootstrap/B"),
            **settings,
        )
        confirmed = _confirm(rule, est_b, [selection[i] for i in chosen])
    return _record(
        rule, cycle_id, family, est_a, est_b, proposals, hashes, selection, chosen, confirmed, len(history), len(hist_b)
    )


def _history_halves(
    rule: dict[str, Any], cycle_id: str, history: Outcomes, history_ids: Sequence[str] | None
) -> tuple[Outcomes, Outcomes]:
    """The history each half's model is fitted on: all of it, or (split_history) halves of it, so
    that confirmation shares no model noise with selection."""
    if not rule["split_history"]:
        return history, history
    ids = history_ids if history_ids is not None else [str(i) for i in range(len(history))]
    if len(ids) != len(history):
        raise ValueError(f"{len(ids)} history ids for {len(history)} history rows")
    in_a = half_a(ids, cycle_id, "history")
    return history.take(np.flatnonzero(in_a)), history.take(np.flatnonzero(~in_a))


def _record(
    rule: dict[str, Any],
    cycle_id: str,
    family: dict[str, Any],
    est_a: Estimates,
    est_b: Estimates | None,
    proposals: Sequence[tuple[dict[str, Any], Arm]],
    hashes: list[str],
    selection: list[dict[str, Any]],
    chosen: list[int],
    confirmed: list[dict[str, Any]],
    history_rows: int,
    history_b_rows: int,
) -> dict[str, Any]:
    level = rule["interval_level"]
    entries = []
    for i, (mutation, _) in enumerate(proposals):
        entry = {
            "hash": hashes[i],
            "mutation": mutation,
            "half_a": est_a.summary(i + 1, level),
            "selection": selection[i],
            "selected": i in chosen,
            "outcome": REJECT if selection[i]["rejection"]["rejected"] else NOT_SELECTED,
        }
        if i in chosen:
            j = chosen.index(i)
            assert est_b is not None
            entry["half_b"] = est_b.summary(j + 1, level)
            entry["confirmation"] = confirmed[j]
            entry["outcome"] = confirmed[j]["outcome"]
        entries.append(entry)
    return _clean(
        {
            "cycle_id": cycle_id,
            "family": family,
            "rule": rule,
            "rule_hash": rule_hash(rule),
            "estimator": est_a.estimator,
            "estimated_propensity_share": est_a.estimated_propensity_share,
            "window": {"half_a": est_a.requests, "half_b": est_b.requests if est_b else None},
            "history_rows": history_rows,
            "history_rows_half_b": history_b_rows,
            "current": est_a.summary(0, level),
            "selected": [hashes[i] for i in chosen],
            "proposals": entries,
            "promote": _to_promote(entries),
        }
    )


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _to_promote(entries: list[dict[str, Any]]) -> str | None:
    """The one mutation to apply: the promoted one with the largest confirmed effect (two
    promoted mutations were never tested together)."""
    promoted = [e for e in entries if e["outcome"] == PROMOTE]
    if not promoted:
        return None
    return max(promoted, key=lambda e: (e["confirmation"]["primary"]["gain"], e["hash"]))["hash"]


# -- re-checking a record ------------------------------------------------------------------------


def satisfies(record: dict[str, Any]) -> bool:
    """True when every outcome in the record follows from its own figures under its own rule."""
    return not violations(record)


def violations(record: dict[str, Any]) -> list[str]:
    """What in the record does not follow from its figures and rule (empty when it all does)."""
    try:
        return _violations(record)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return [f"the record is malformed: {type(exc).__name__}: {exc}"]


def _violations(record: dict[str, Any]) -> list[str]:
    rule = record["rule"]
    problems: list[str] = []
    if record["rule_hash"] != rule_hash(rule):
        problems.append("rule_hash is not the hash of the recorded rule")
    check_rule(rule)
    entries = record["proposals"]
    hashes = [e["hash"] for e in entries]
    for e in entries:
        if e["hash"] != mutation_hash(e["mutation"]):
            problems.append(f"{e['hash'][:12]}: hash is not the mutation's")
        selection = e["selection"]
        if selection["eligible"] != _eligible(selection["gain"], selection["duplicate_of"]):
            problems.append(f"{e['hash'][:12]}: eligibility does not follow from its half-A figures")
        r = selection["rejection"]
        redone = _rejected(_finite(r["level"]), _finite(r["gain_optimistic"]), _finite(r["se_optimistic"]), r["harms"])
        if (redone["rejected"], redone["breached"]) != (r["rejected"], r["breached"]):
            problems.append(f"{e['hash'][:12]}: the half-A rejection does not follow from its figures")
        if not _close(r["level"], 1 - rule["alpha"] / len(entries)):
            problems.append(f"{e['hash'][:12]}: the half-A rejection level is not alpha over the family")
    chosen = _ranked(hashes, [e["selection"] for e in entries], rule["confirm_top_k"])
    if [hashes[i] for i in chosen] != record["selected"] or [e["selected"] for e in entries] != [
        i in chosen for i in range(len(entries))
    ]:
        problems.append("the selected proposals are not the top eligible ones on half A")
    confirmed = [entries[i]["confirmation"] for i in chosen if "confirmation" in entries[i]]
    if len(confirmed) != len(chosen):
        return [*problems, "a selected proposal has no confirmation"]
    problems += _confirmation_violations(
        rule, [hashes[i] for i in chosen], confirmed, [entries[i]["selection"] for i in chosen]
    )
    for i, e in enumerate(entries):
        unselected = REJECT if e["selection"]["rejection"]["rejected"] else NOT_SELECTED
        expected = confirmed[chosen.index(i)]["outcome"] if i in chosen else unselected
        if e["outcome"] != expected:
            problems.append(f"{e['hash'][:12]}: outcome {e['outcome']} but its figures give {expected}")
    if record["promote"] != _to_promote(entries):
        problems.append("promote is not the promoted mutation with the largest confirmed effect")
    return problems


def _confirmation_violations(
    rule: dict[str, Any], hashes: list[str], confirmed: list[dict[str, Any]], selections: list[dict[str, Any]]
) -> list[str]:
    problems = []
    alpha, k = rule["alpha"], len(confirmed)
    p_values = [p_value(_finite(x["primary"]["gain"]), _finite(x["primary"]["se"])) for x in confirmed]
    thresholds, holm_confirmed = holm(p_values, alpha)
    for j, x in enumerate(confirmed):
        label = hashes[j][:12]
        primary = x["primary"]
        if not _close(primary["p_value"], p_values[j]) or not _close(primary["holm_threshold"], thresholds[j]):
            problems.append(f"{label}: p-value or Holm threshold does not follow from the gain and its error")
        if primary["holm_confirmed"] != holm_confirmed[j]:
            problems.append(f"{label}: Holm confirmation does not follow from the p-values")
        upper = _bound(_finite(primary["gain_optimistic"]), _finite(primary["se_optimistic"]), 1 - alpha, +1)
        guardrails = {}
        for name, g in x["guardrails"].items():
            worst = (-_finite(g["harm"]), _finite(g["se"]))
            best = (-_finite(g["harm_optimistic"]), _finite(g["se_optimistic"]))
            redone = _guardrail(rule, name, worst, best, _finite(g["current"]))
            if (redone["within"], redone["breached"]) != (g["within"], g["breached"]):
                problems.append(f"{label}: guardrail {name} within/breached does not follow from its bounds")
            guardrails[name] = redone
        if set(guardrails) != set(rule["guardrails"]):
            problems.append(f"{label}: guardrails recorded are not the rule's")
        power = _power(rule, selections[j], x["power"]["half_b_requests"], alpha / k)
        if (x["power"]["required_requests"], x["power"]["adequate"]) != (power["required_requests"], power["adequate"]):
            problems.append(f"{label}: the required size does not follow from the MDE and the variance")
        expected = _outcome(holm_confirmed[j], upper, guardrails, _powered(rule, power))
        if x["outcome"] != expected:
            problems.append(f"{label}: confirmation outcome {x['outcome']} but its figures give {expected}")
    return problems


def _close(recorded: float | None, value: float) -> bool:
    if recorded is None:
        return not math.isfinite(value)
    return math.isclose(recorded, value, rel_tol=1e-9, abs_tol=1e-12)


# -- one cycle, end to end -----------------------------------------------------------------------


def current_settings(constitution: dict[str, Any]) -> dict[str, float]:
    """The router settings the constitution sets today."""
    parameters = constitution.get("parameters") or {}
    return {name: float(parameters[name]) for name in ROUTER_SETTINGS if name in parameters}


def replay_arms(
    constitution: dict[str, Any],
    mutations: Sequence[dict[str, Any]],
    requests: ReplayRequests,
    base: RoutingContext,
    systems: Sequence[str],
) -> list[Arm]:
    """The current settings' arm, then one per mutation, replayed on the same requests."""
    today = current_settings(constitution)
    settings = [today, *({**today, **settings_of(m)} for m in mutations)]
    names = ["current", *(mutation_hash(m) for m in mutations)]
    choices = replay(requests, base, settings)
    return [
        Arm(name=name, system=arm.codes(systems), fallback=arm.fallback)
        for name, arm in zip(names, choices, strict=True)
    ]


def dream_cycle(
    *,
    constitution: dict[str, Any],
    cycle_id: str,
    limit: int,
    requests: ReplayRequests,
    base: RoutingContext,
    systems: Sequence[str],
    window: Outcomes,
    history: Outcomes,
    request_ids: Sequence[str],
    clusters: int,
    rule: dict[str, Any] | None = None,
    family: dict[str, Any] | None = None,
    history_ids: Sequence[str] | None = None,
    unblockable: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Propose, replay and decide one cycle of the router's constitution. `requests`, `window` and
    `request_ids` describe the same window requests in the same order; `systems` names the
    system indexes of the outcomes."""
    if not len(requests) == len(window) == len(request_ids):
        raise ValueError(
            f"the window has {len(window)} outcome rows, {len(requests)} replay requests and {len(request_ids)} ids"
        )
    rule = check_rule(rule if rule is not None else DEFAULT_RULE)
    planned = plan(constitution, cycle_id, limit)
    arms = replay_arms(constitution, planned.mutations, requests, base, systems)
    record = decide_family(
        rule=rule,
        cycle_id=cycle_id,
        family=family or {},
        window=window,
        history=history,
        request_ids=request_ids,
        current=arms[0],
        proposals=list(zip(planned.mutations, arms[1:], strict=True)),
        clusters=clusters,
        systems=len(systems),
        history_ids=history_ids,
        unblockable=unblockable,
    )
    for entry, kind in zip(record["proposals"], planned.kinds, strict=True):
        entry["proposed_as"] = kind
    record["current_settings"] = current_settings(constitution)
    record["skipped"] = [{"hash": mutation_hash(m), "mutation": m, "reason": r} for m, r in planned.skipped]
    return record
