"""After a promotion: the promoted keys are watched, and a guardrail breach rolls the amendment back.

A watch compares the tenant's live executions since the promotion with the same length of time
before it (its baseline). Once at least `min_executions` executions have run since, a guardrail of
the decision rule that got worse by more than its tolerance (or a success rate that fell by more
than the rule's minimum detectable effect) rolls the amendment back through the ordinary rollback
(approved_by names the watch, evidence holds both sets of figures) and raises one alert. A watch
whose time is up without a breach closes, and its keys may be dreamed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.tars import amendments as am
from clay_pipelines.tars import decision
from clay_pipelines.tars.cycle import guardrail_figures

WATCHER = "tars:amendment-watch"
MIN_EXECUTIONS = 50
_HIGHER_IS_WORSE = ("cost_per_request", "mean_duration_ms", "fallback_rate", "governance_blocked_rate")


@dataclass(kw_only=True)
class WatchReport:
    checked: int = 0
    closed: int = 0
    rolled_back: list[dict[str, Any]] = field(default_factory=list)  # one alert each


def breaches(rule: dict[str, Any], baseline: dict[str, Any], now: dict[str, Any]) -> dict[str, str]:
    """Guardrails (and the primary metric) worse than the rule tolerates: name -> what happened."""
    out: dict[str, str] = {}
    for name, spec in rule["guardrails"].items():
        before, after = baseline.get(name), now.get(name)
        if before is None or after is None or name not in _HIGHER_IS_WORSE:
            continue
        allowed = spec["tolerance"] * abs(before) if spec.get("relative") else spec["tolerance"]
        if after - before > allowed:
            out[name] = f"{name} {before:.4g} -> {after:.4g} (tolerance {allowed:.4g})"
    before, after = baseline.get("success_rate"), now.get("success_rate")
    if before is not None and after is not None and before - after > rule["mde"]:
        out["success_rate"] = f"success_rate {before:.4g} -> {after:.4g} (fell more than {rule['mde']})"
    return out


def check_watches(conn: psycopg.Connection, now: datetime, rule: dict[str, Any] | None = None) -> WatchReport:
    """Every open watch of the transaction's tenant, once."""
    rule = rule or decision.DEFAULT_RULE
    report = WatchReport()
    rows = conn.execute(
        "SELECT amendment_id, opened_at, closes_at, baseline FROM amendment_watches WHERE status = 'watching' "
        "ORDER BY opened_at FOR UPDATE"
    ).fetchall()
    for amendment_id, opened_at, closes_at, baseline in rows:
        report.checked += 1
        figures = guardrail_figures(conn, opened_at, min(now, closes_at))
        conn.execute(
            "UPDATE amendment_watches SET last_checked_at = %s, last_figures = %s WHERE amendment_id = %s",
            (now, Jsonb(figures), amendment_id),
        )
        broken = breaches(rule, baseline, figures) if (figures["executions"] or 0) >= MIN_EXECUTIONS else {}
        if broken:
            report.rolled_back.append(_roll_back(conn, amendment_id, baseline, figures, broken))
        elif now >= closes_at:
            conn.execute("UPDATE amendment_watches SET status = 'closed' WHERE amendment_id = %s", (amendment_id,))
            report.closed += 1
    return report


def _roll_back(
    conn: psycopg.Connection, amendment_id: UUID, baseline: dict, figures: dict, broken: dict[str, str]
) -> dict[str, Any]:
    reason = "guardrail breached after promotion: " + "; ".join(broken.values())
    try:
        undo = am.rollback(
            conn, amendment_id, WATCHER, reason, evidence={"baseline": baseline, "after": figures, "breaches": broken}
        )
        undo_id: UUID | None = undo.id
        outcome = "rolled back"
    except am.AmendmentError as error:  # a later amendment changed the same keys: a person decides
        undo_id, outcome = None, f"not rolled back: {error}"
    conn.execute(
        "UPDATE amendment_watches SET status = 'rolled_back', rollback_amendment_id = %s, alerted_at = now() "
        "WHERE amendment_id = %s",
        (undo_id, amendment_id),
    )
    conn.execute(
        "UPDATE dreams SET outcome = outcome || %s WHERE amendment_id = %s",
        (
            Jsonb({"watch": {"outcome": outcome, "breaches": broken, "baseline": baseline, "after": figures}}),
            amendment_id,
        ),
    )
    return {"amendment_id": str(amendment_id), "outcome": outcome, "breaches": broken}
