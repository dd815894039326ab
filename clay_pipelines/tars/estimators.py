"""What a router would have achieved on logged requests, estimated from logged outcomes.

Per arm (a router's settings, replayed on the window's requests) and per metric: success rate (the
primary; a governance refusal is a failure), satisfaction, cost per request, mean duration,
governance-blocked rate, and the fallback rate (read off the replay itself: no outcome needed).

The estimator is doubly robust. Its outcome model is a table per (learner micro-cluster, system),
fitted on the history BEFORE the window. Per request it takes the model's value for the arm's
choice, plus, where the arm's choice is what was logged, the logged-minus-model residual weighted by
1 / propensity (and, for a metric not always recorded, such as satisfaction, by 1 / the share of
that cell's window rows that record it: missing at random within a cell). What it assumes:
  - the propensities are those of the logging policy (rows without one: the share of the window's
    requests of that micro-cluster logged to that system stands in; the result says so);
  - where the arm chooses what was not logged for that request, the outcome depends on the request
    only through its micro-cluster: the model's cell value is the estimate.
Support is counted as the learner counts evidence (routing/evidence.py): completed executions that
governance did not block. Where the arm's choice has no support in the history (a system never
logged for that micro-cluster, no system at all), the model says nothing about the request. If the
request itself was logged with that choice, its own outcome was observed and values it (evidence, not
an imputation: no model and no weight is needed to know what happened to it). Otherwise it is
valued at a bound, never imputed: the estimate takes the metric's pessimistic bound (success 0,
governance-blocked 1, satisfaction the worst rating observed, cost and duration the worst observed),
the optimistic estimate the other one, and the share of such requests is reported. In a paired
difference the estimate is the worst case for the arm (its unsupported choices pessimistic, the
baseline's optimistic), and requests where both arms choose the same system differ by exactly zero.

Intervals: a bootstrap that resamples the window's requests and the history rows together, refitting
the model each time; paired differences are computed on the same resampled requests. The history is
resampled within each (micro-cluster, system) cell, so every replicate keeps the design the logging
produced (which cells have support, and how much): the replicates vary the outcomes the model is fitted
on, not which requests are valued at a bound. Resampling the history freely would drop a thinly logged
cell from about a third of the replicates and value its requests at the bound there, which makes the
pessimistic estimate's spread mostly an artefact of that switch. The bounds themselves are assumptions
read once off the observed history, held fixed across replicates. The price: a cell logged once has
no spread of its own in the replicates. An interval covers the true value wherever it lies between the
pessimistic and the optimistic estimate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

OUTCOME_METRICS = ("success_rate", "satisfaction", "cost_per_request", "mean_duration_ms", "governance_blocked_rate")
METRICS = (*OUTCOME_METRICS, "fallback_rate")
HIGHER_IS_BETTER = {
    "success_rate": True,
    "satisfaction": True,
    "cost_per_request": False,
    "mean_duration_ms": False,
    "governance_blocked_rate": False,
    "fallback_rate": False,
}
# Bounds known in advance; the others are the worst (best) value observed in the history.
_RATE_BOUNDS = {"success_rate": (0.0, 1.0), "governance_blocked_rate": (0.0, 1.0)}
DOUBLY_ROBUST = "doubly_robust"
DOUBLY_ROBUST_ESTIMATED = "doubly_robust_estimated_propensity"
DIRECT_METHOD = "direct_method"
ESTIMATORS = ("auto", DOUBLY_ROBUST, DOUBLY_ROBUST_ESTIMATED, DIRECT_METHOD)


class EstimationError(ValueError):
    """Input the estimators cannot use, naming the row and what is wrong."""


@dataclass(frozen=True, kw_only=True)
class Outcomes:
    """Logged executions whose outcome is known (completed, or blocked by governance), columnar.
    Systems are indexes into the caller's list of system names; clusters are the learner's
    micro-clusters (0..C-1)."""

    cluster: np.ndarray
    system: np.ndarray
    success: np.ndarray  # 1 for status success, else 0 (a governance refusal is a failure)
    blocked: np.ndarray  # governance_blocked: no evidence about the system
    satisfaction: np.ndarray  # 1..5, NaN when not rated
    cost: np.ndarray  # USD, NaN when not recorded
    duration_ms: np.ndarray  # NaN when not recorded
    propensity: np.ndarray  # of the logged choice; NaN when the log has none

    def __post_init__(self) -> None:
        n = len(self.cluster)
        for name in ("system", "success", "blocked", "satisfaction", "cost", "duration_ms", "propensity"):
            if len(getattr(self, name)) != n:
                raise EstimationError(f"{name} has {len(getattr(self, name))} rows, cluster has {n}")
        checks = (
            (self.cluster < 0, "cluster is negative"),
            (self.system < 0, "system is negative (an execution without a system is no logged outcome)"),
            (~np.isin(self.success, (0, 1)), "success is not 0 or 1"),
            (self.blocked.astype(bool) & (self.success == 1), "governance-blocked but successful"),
            (
                ~np.isnan(self.propensity) & ~((self.propensity > 0) & (self.propensity <= 1)),
                "propensity not in (0, 1]",
            ),
            (~np.isnan(self.satisfaction) & ~((self.satisfaction >= 1) & (self.satisfaction <= 5)), "rating not 1-5"),
        )
        for bad, what in checks:
            rows = np.flatnonzero(bad)
            if len(rows):
                raise EstimationError(f"row {int(rows[0])}: {what}")

    def __len__(self) -> int:
        return len(self.cluster)

    def take(self, rows: np.ndarray) -> Outcomes:
        return Outcomes(**{name: getattr(self, name)[rows] for name in _COLUMNS})

    def values(self) -> np.ndarray:
        """(n, outcome metrics): each metric's value per row, NaN where the row does not record it."""
        blocked = self.blocked.astype(bool)
        return np.column_stack(
            [
                self.success.astype(float),
                np.where(blocked, np.nan, self.satisfaction),
                self.cost.astype(float),
                self.duration_ms.astype(float),
                blocked.astype(float),
            ]
        )

    @property
    def evidence(self) -> np.ndarray:
        return ~self.blocked.astype(bool)


_COLUMNS = ("cluster", "system", "success", "blocked", "satisfaction", "cost", "duration_ms", "propensity")


def outcomes_from_rows(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> tuple[Outcomes, int]:
    """Outcomes from execution rows ({cluster, system_name, status, completed, cost_usd,
    duration_ms, user_satisfaction, routing_propensity}); rows whose outcome is not known yet
    (neither completed nor governance-blocked) are left out and counted."""
    index = {name: i for i, name in enumerate(systems)}
    kept = [r for r in rows if r["status"] == "governance_blocked" or r.get("completed")]
    for position, row in enumerate(kept):
        if row["system_name"] not in index:
            raise EstimationError(f"row {position}: system {row['system_name']!r} is not among the systems")

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in kept], dtype=float)

    outcomes = Outcomes(
        cluster=np.array([int(r["cluster"]) for r in kept], dtype=np.int64),
        system=np.array([index[r["system_name"]] for r in kept], dtype=np.int64),
        success=np.array([r["status"] == "success" for r in kept], dtype=float),
        blocked=np.array([r["status"] == "governance_blocked" for r in kept], dtype=bool),
        satisfaction=column("user_satisfaction"),
        cost=column("cost_usd"),
        duration_ms=column("duration_ms"),
        propensity=column("routing_propensity"),
    )
    return outcomes, len(rows) - len(kept)


@dataclass(frozen=True, kw_only=True)
class Arm:
    """An arm's choice for every window request: a system index (-1: none) and whether the rule
    path was not taken."""

    name: str
    system: np.ndarray
    fallback: np.ndarray

    def take(self, rows: np.ndarray) -> Arm:
        return Arm(name=self.name, system=self.system[rows], fallback=self.fallback[rows])


@dataclass(frozen=True, kw_only=True)
class Estimates:
    """Per arm (row 0 is the baseline) and metric: point estimates and bootstrap replicates of the
    value and of the paired difference, each twice: with unsupported choices at the pessimistic
    bound (the estimate) and at the optimistic one (the other end of what the data allow)."""

    arms: list[str]
    point: np.ndarray  # (arms, metrics), pessimistic
    replicates: np.ndarray  # (B, arms, metrics)
    diff_point: np.ndarray  # (arms, metrics): arm minus baseline, paired, pessimistic for the arm
    diff_replicates: np.ndarray  # (B, arms, metrics)
    optimistic_point: np.ndarray
    optimistic_replicates: np.ndarray
    optimistic_diff_point: np.ndarray
    optimistic_diff_replicates: np.ndarray
    unsupported: np.ndarray  # (arms, metrics): share of requests valued at a bound
    diff_unsupported: np.ndarray  # (arms, metrics): share of requests whose difference used a bound
    diff_sd: np.ndarray  # (arms, metrics): spread of the per-request paired differences (model fixed)
    changed: np.ndarray  # (arms,): share of requests where the arm chooses another system than the baseline
    estimator: str
    estimated_propensity_share: float
    requests: int
    history_rows: int
    metrics: tuple[str, ...] = field(default=METRICS)

    def values(self, diff: bool = False, optimistic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(point, replicates) of the value or the difference, pessimistic or optimistic."""
        if optimistic:
            return (
                (self.optimistic_diff_point, self.optimistic_diff_replicates)
                if diff
                else (self.optimistic_point, self.optimistic_replicates)
            )
        return (self.diff_point, self.diff_replicates) if diff else (self.point, self.replicates)

    def se(self, diff: bool = False, optimistic: bool = False) -> np.ndarray:
        point, replicates = self.values(diff, optimistic)
        if len(replicates) < 2:
            return np.full(point.shape, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric nothing recorded: NaN, said as None
            return np.nanstd(replicates, axis=0, ddof=1)

    def interval(self, level: float, diff: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Interval at `level` for the true value, which the data place between the pessimistic and
        the optimistic estimate (Imbens and Manski, 2004: each end widened by a critical value
        between the one-sided and the two-sided normal one, by how wide the gap is against the
        bootstrap standard errors)."""
        pessimistic, optimistic = self.values(diff)[0], self.values(diff, optimistic=True)[0]
        se_p, se_o = self.se(diff), self.se(diff, optimistic=True)
        first_low = pessimistic <= optimistic
        low, high = np.where(first_low, pessimistic, optimistic), np.where(first_low, optimistic, pessimistic)
        se_low, se_high = np.where(first_low, se_p, se_o), np.where(first_low, se_o, se_p)
        critical = np.vectorize(lambda gap, se: _critical(level, gap, se))(high - low, np.maximum(se_low, se_high))
        return low - critical * se_low, high + critical * se_high

    def summary(self, arm: int, level: float) -> dict[str, Any]:
        """JSON-ready figures of one arm: per metric its (pessimistic) estimate, the optimistic one,
        the interval, standard error and unsupported share, and for a non-baseline arm the same for
        the paired difference."""
        lower, upper = self.interval(level)
        dlower, dupper = self.interval(level, diff=True)
        se, dse = self.se(), self.se(diff=True)
        out: dict[str, Any] = {"estimator": self.estimator, "requests": self.requests, "level": level}
        if arm:
            out["changed_share"] = _num(self.changed[arm])
        for m, metric in enumerate(self.metrics):
            entry = {
                "estimate": _num(self.point[arm, m]),
                "optimistic": _num(self.optimistic_point[arm, m]),
                "lower": _num(lower[arm, m]),
                "upper": _num(upper[arm, m]),
                "se": _num(se[arm, m]),
                "unsupported_share": _num(self.unsupported[arm, m]),
            }
            if arm:
                entry["difference"] = {
                    "estimate": _num(self.diff_point[arm, m]),
                    "optimistic": _num(self.optimistic_diff_point[arm, m]),
                    "lower": _num(dlower[arm, m]),
                    "upper": _num(dupper[arm, m]),
                    "se": _num(dse[arm, m]),
                    "bounded_share": _num(self.diff_unsupported[arm, m]),
                }
            out[metric] = entry
        return out


def _critical(level: float, gap: float, se: float) -> float:
    """c with Phi(c + gap / se) - Phi(-c) = level: the two-sided normal value when the gap is
    nothing, tending to the one-sided one as the gap grows (bisection)."""
    z = NormalDist()
    low, high = z.inv_cdf(level), z.inv_cdf(0.5 + level / 2)
    if not (math.isfinite(gap) and math.isfinite(se)) or se <= 0:
        return high
    ratio = gap / se
    for _ in range(60):
        middle = (low + high) / 2
        if z.cdf(middle + ratio) - z.cdf(-middle) < level:
            low = middle
        else:
            high = middle
    return high


def _num(value: float) -> float | None:
    """A float for JSON; None for NaN (no evidence)."""
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


# -- the outcome model -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    mean: np.ndarray  # (outcome metrics, C, S + 1); the last column is "no system": never supported
    supported: np.ndarray  # (outcome metrics, C, S + 1) bool
    pessimistic: np.ndarray  # (outcome metrics,)
    optimistic: np.ndarray


def _fit(
    history: Outcomes,
    weights: np.ndarray,
    shape: tuple[int, int],
    values: np.ndarray,
    min_support: float,
    bounds: tuple[np.ndarray, np.ndarray],
) -> _Model:
    clusters, systems = shape
    cells = clusters * (systems + 1)
    cell = history.cluster * (systems + 1) + history.system
    support = np.bincount(cell, weights=weights * history.evidence, minlength=cells)
    observed = ~np.isnan(values)
    sums = np.stack(
        [
            np.bincount(cell, weights=weights * np.where(observed[:, m], values[:, m], 0.0), minlength=cells)
            for m in range(values.shape[1])
        ]
    )
    counts = np.stack(
        [np.bincount(cell, weights=weights * observed[:, m], minlength=cells) for m in range(values.shape[1])]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    supported = (support >= min_support)[None, :] & (counts > 0)
    pessimistic, optimistic = bounds
    reshape = (values.shape[1], clusters, systems + 1)
    return _Model(
        mean=mean.reshape(reshape),
        supported=supported.reshape(reshape),
        pessimistic=pessimistic,
        optimistic=optimistic,
    )


def _bounds(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per outcome metric, the pessimistic and the optimistic value: a rate's 0 or 1, otherwise the
    worst and best observed in the history."""
    pessimistic, optimistic = [], []
    present = weights > 0
    for m, metric in enumerate(OUTCOME_METRICS):
        if metric in _RATE_BOUNDS:
            low, high = _RATE_BOUNDS[metric]
        else:
            seen = values[present & ~np.isnan(values[:, m]), m]
            low, high = (float(seen.min()), float(seen.max())) if len(seen) else (np.nan, np.nan)
        better_high = HIGHER_IS_BETTER[metric]
        pessimistic.append(low if better_high else high)
        optimistic.append(high if better_high else low)
    return np.array(pessimistic), np.array(optimistic)


# -- estimation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """The window's fixed inputs, in the form the pseudo-outcomes need."""

    cluster: np.ndarray
    logged: np.ndarray
    values: np.ndarray  # (n, outcome metrics)
    observed: np.ndarray
    propensity: np.ndarray  # NaN where missing
    choices: np.ndarray  # (n, arms) system index, S for none
    fallback: np.ndarray  # (n, arms) float
    match: np.ndarray  # (n, arms): the arm chose what was logged
    same: np.ndarray  # (n, arms): the arm chose what the baseline chose
    max_weight: float  # logged choices weighted beyond it get no residual correction
    unblockable: np.ndarray  # (systems + 1,) governance cannot block the choice (no approvals required)
    own: np.ndarray  # (outcome metrics, n): the request's own outcome is evidence (recorded, not blocked)


def estimate(
    window: Outcomes,
    history: Outcomes,
    arms: Sequence[Arm],
    *,
    clusters: int,
    systems: int,
    bootstrap: int = 200,
    rng: np.random.Generator | None = None,
    estimator: str = "auto",
    min_support: float = 1.0,
    max_weight: float = math.inf,
    unblockable: Sequence[bool] | None = None,
) -> Estimates:
    """Every arm's estimates on the window (arms[0] is the baseline of the paired differences).
    Logged choices whose importance weight (1 / propensity) exceeds max_weight get no residual
    correction: the model's value stands for them (the switch estimator of Wang, Agarwal and Dudik,
    2017), trading the variance of rare, heavily weighted choices for the model's assumption.
    unblockable: per system, whether its constitution requires no approval at all, so governance
    cannot block it: its governance-blocked bound is 0, known from the constitution, not the data."""
    if not max_weight >= 1:
        raise EstimationError(f"max_weight={max_weight!r} must be at least 1")
    fixed = _prepare(window, history, arms, clusters, systems, max_weight, unblockable)
    estimator, estimated_share = _choose_estimator(estimator, window)
    if rng is None:
        rng = np.random.default_rng(0)
    n, h = len(window), len(history)
    hist_values = history.values()
    shape = (clusters, systems)
    bounds = _bounds(hist_values, np.ones(h))
    point = _evaluate(fixed, history, hist_values, np.ones(n), np.ones(h), shape, estimator, min_support, bounds)
    cells = history.cluster * (systems + 1) + history.system
    replicates = [
        _evaluate(fixed, history, hist_values, *_resample(rng, n, cells), shape, estimator, min_support, bounds)
        for _ in range(bootstrap)
    ]

    def stacked(name: str) -> np.ndarray:
        if not replicates:
            return np.empty((0, *point.value.shape))
        return np.stack([getattr(r, name) for r in replicates])

    return Estimates(
        arms=[a.name for a in arms],
        point=point.value,
        replicates=stacked("value"),
        diff_point=point.diff,
        diff_replicates=stacked("diff"),
        optimistic_point=point.optimistic_value,
        optimistic_replicates=stacked("optimistic_value"),
        optimistic_diff_point=point.optimistic_diff,
        optimistic_diff_replicates=stacked("optimistic_diff"),
        unsupported=point.unsupported,
        diff_unsupported=point.diff_unsupported,
        diff_sd=point.diff_sd,
        changed=(~fixed.same).mean(axis=0) if n else np.zeros(len(arms)),
        estimator=estimator,
        estimated_propensity_share=estimated_share,
        requests=n,
        history_rows=h,
    )


def _resample(rng: np.random.Generator, n: int, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap weights: how many times each window request is drawn (from all of them) and each
    history row is drawn (from the rows of its own cell, as many draws as the cell has rows)."""
    w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float) if n else np.zeros(0)
    h = len(cells)
    if not h:
        return w, np.zeros(0)
    order = np.argsort(cells, kind="stable")
    by_cell = cells[order]
    first = np.searchsorted(by_cell, by_cell, side="left")
    size = np.searchsorted(by_cell, by_cell, side="right") - first
    drawn = order[first + np.minimum((rng.random(h) * size).astype(np.int64), size - 1)]
    return w, np.bincount(drawn, minlength=h).astype(float)


def _choose_estimator(requested: str, window: Outcomes) -> tuple[str, float]:
    if requested not in ESTIMATORS:
        raise EstimationError(f"estimator must be one of {', '.join(ESTIMATORS)}, not {requested!r}")
    missing = float(np.isnan(window.propensity).mean()) if len(window) else 0.0
    if requested == DIRECT_METHOD:
        return DIRECT_METHOD, 0.0
    if requested == DOUBLY_ROBUST and missing > 0:
        raise EstimationError(
            f"{missing:.0%} of the window's rows have no propensity; use {DOUBLY_ROBUST_ESTIMATED} or {DIRECT_METHOD}"
        )
    if requested == DOUBLY_ROBUST_ESTIMATED:
        return DOUBLY_ROBUST_ESTIMATED, 1.0
    return (DOUBLY_ROBUST, 0.0) if missing == 0 else (DOUBLY_ROBUST_ESTIMATED, missing)


def _prepare(
    window: Outcomes,
    history: Outcomes,
    arms: Sequence[Arm],
    clusters: int,
    systems: int,
    max_weight: float,
    unblockable: Sequence[bool] | None,
) -> _Window:
    if unblockable is not None and len(unblockable) != systems:
        raise EstimationError(f"unblockable names {len(unblockable)} systems, not {systems}")
    if not arms:
        raise EstimationError("no arms to estimate")
    for label, rows in (("window", window), ("history", history)):
        if len(rows) and (rows.cluster.max() >= clusters or rows.system.max() >= systems):
            bad = int(np.flatnonzero((rows.cluster >= clusters) | (rows.system >= systems))[0])
            raise EstimationError(
                f"{label} row {bad}: cluster or system index beyond {clusters} clusters, {systems} systems"
            )
    for arm in arms:
        if len(arm.system) != len(window) or len(arm.fallback) != len(window):
            raise EstimationError(f"arm {arm.name}: {len(arm.system)} choices for {len(window)} window requests")
    choices = np.column_stack([np.where(a.system < 0, systems, a.system) for a in arms]).astype(np.int64)
    if choices.max(initial=0) > systems:
        raise EstimationError(f"an arm chooses a system index beyond {systems} systems")
    values = window.values()
    return _Window(
        cluster=window.cluster,
        logged=window.system,
        values=values,
        observed=~np.isnan(values),
        propensity=window.propensity.astype(float),
        max_weight=max_weight,
        # The "no system" column last: nothing to block.
        unblockable=np.append(np.zeros(systems, bool) if unblockable is None else np.asarray(unblockable, bool), True),
        choices=choices,
        fallback=np.column_stack([a.fallback.astype(float) for a in arms]),
        match=choices == window.system[:, None],
        same=choices == choices[:, :1],
        own=(~np.isnan(values) & window.evidence[:, None]).T,
    )


@dataclass(frozen=True)
class _Figures:
    """One fit's figures per (arm, metric)."""

    value: np.ndarray
    diff: np.ndarray
    optimistic_value: np.ndarray
    optimistic_diff: np.ndarray
    unsupported: np.ndarray
    diff_unsupported: np.ndarray
    diff_sd: np.ndarray


def _evaluate(
    fixed: _Window,
    history: Outcomes,
    hist_values: np.ndarray,
    w: np.ndarray,
    v: np.ndarray,
    shape: tuple[int, int],
    estimator: str,
    min_support: float,
    bounds: tuple[np.ndarray, np.ndarray],
) -> _Figures:
    """One fit and evaluation under request weights w and history weights v; `bounds` are the
    (pessimistic, optimistic) values of an unsupported choice."""
    model = _fit(history, v, shape, hist_values, min_support, bounds)
    psi, unsupported = _pseudo_outcomes(fixed, model, w, shape, estimator)
    pessimistic = np.where(unsupported, _pessimistic_bounds(model, fixed)[:, fixed.choices], psi)
    optimistic = np.where(unsupported, model.optimistic[:, None, None], psi)
    # Worst case for the arm: its unsupported choices pessimistic, the baseline's optimistic.
    diff = np.where(fixed.same[None], 0.0, pessimistic - optimistic[:, :, :1])
    optimistic_diff = np.where(fixed.same[None], 0.0, optimistic - pessimistic[:, :, :1])
    bounded = ~fixed.same[None] & (unsupported | unsupported[:, :, :1])
    total = w.sum()

    def mean(per_request: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("n,mna->am", w, per_request) / total

    fallback = fixed.fallback[None]
    fallback_diff = fallback - fallback[:, :, :1]
    diffs = mean(diff)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt(mean((diff - diffs.T[:, None, :]) ** 2))
        fallback_spread = np.sqrt(mean((fallback_diff - mean(fallback_diff).T[:, None, :]) ** 2))
    zeros = np.zeros((psi.shape[2], 1))
    return _Figures(
        value=np.column_stack([mean(pessimistic), mean(fallback)]),
        diff=np.column_stack([diffs, mean(fallback_diff)]),
        optimistic_value=np.column_stack([mean(optimistic), mean(fallback)]),
        optimistic_diff=np.column_stack([mean(optimistic_diff), mean(fallback_diff)]),
        unsupported=np.column_stack([mean(unsupported.astype(float)), zeros]),
        diff_unsupported=np.column_stack([mean(bounded.astype(float)), zeros]),
        diff_sd=np.column_stack([spread, fallback_spread]),
    )


def _pessimistic_bounds(model: _Model, fixed: _Window) -> np.ndarray:
    """(metrics, systems + 1): each metric's pessimistic bound per choice; a choice governance
    cannot block has a blocked-rate bound of 0."""
    bounds = np.repeat(model.pessimistic[:, None], len(fixed.unblockable), axis=1)
    blocked = OUTCOME_METRICS.index("governance_blocked_rate")
    bounds[blocked, fixed.unblockable] = 0.0
    return bounds


def _pseudo_outcomes(
    fixed: _Window, model: _Model, w: np.ndarray, shape: tuple[int, int], estimator: str
) -> tuple[np.ndarray, np.ndarray]:
    """(metrics, n, arms) doubly robust pseudo-outcomes (NaN-free only where supported) and the
    unsupported mask: where the arm's choice has no evidence, the caller puts a bound."""
    c = fixed.cluster
    predicted = model.mean[:, c[:, None], fixed.choices]  # (M, n, arms)
    unsupported = ~model.supported[:, c[:, None], fixed.choices]
    if estimator != DIRECT_METHOD:
        residual = _residuals(fixed, model, w, shape, estimator)  # (M, n)
        predicted = predicted + fixed.match[None] * residual[:, :, None]
    # Where the model has no support but the request itself was logged with the arm's choice, its
    # own outcome was observed: that is evidence about this request, not an imputation.
    own = unsupported & fixed.own[:, :, None] & fixed.match[None]
    return np.where(own, fixed.values.T[:, :, None], predicted), unsupported & ~own


def _residuals(fixed: _Window, model: _Model, w: np.ndarray, shape: tuple[int, int], estimator: str) -> np.ndarray:
    """Per metric and request, (logged - model) / (propensity x share of its cell recording the
    metric); zero where the logged cell is unsupported (the bound replaces the estimate there)."""
    clusters, systems = shape
    cells = clusters * (systems + 1)
    cell = fixed.cluster * (systems + 1) + fixed.logged
    rows = np.bincount(cell, weights=w, minlength=cells)
    propensity = fixed.propensity
    if estimator == DOUBLY_ROBUST_ESTIMATED:
        per_cluster = np.bincount(fixed.cluster, weights=w, minlength=clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimated = rows[cell] / per_cluster[fixed.cluster]
        propensity = np.where(np.isnan(propensity), estimated, propensity)
    out = np.zeros((fixed.values.shape[1], len(cell)))
    with np.errstate(invalid="ignore", divide="ignore"):
        within = propensity * fixed.max_weight >= 1  # beyond: the switch to the model's value
    logged_mean = model.mean[:, fixed.cluster, fixed.logged]
    logged_supported = model.supported[:, fixed.cluster, fixed.logged]
    for m in range(fixed.values.shape[1]):
        observed = fixed.observed[:, m]
        recorded = np.bincount(cell, weights=w * observed, minlength=cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = recorded[cell] / rows[cell]
            value = (fixed.values[:, m] - logged_mean[m]) / (propensity * share)
        usable = observed & logged_supported[m] & np.isfinite(value) & within
        out[m] = np.where(usable, value, 0.0)
    return out
