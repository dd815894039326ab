"""Deterministic generation of the sample world's rows (no database access here).

Same seed, scale and anchor give the same rows, ids included (uuid5), so loading is idempotent.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from clay_pipelines.sample_world import catalog

WORLD_NAMESPACE = uuid.UUID("6f1d1c1e-3f1b-4c7e-9a51-2c6f0b7c9d10")
EXECUTIONS_PER_SCALE = 20_000
TELEMETRY_PER_SCALE = 6_000
HISTORY_DAYS = 400


def stable_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(WORLD_NAMESPACE, "/".join(str(p) for p in parts))


def tenant_id(spec: catalog.TenantSpec) -> uuid.UUID:
    return stable_id("tenant", spec.domain)


def system_id(name: str) -> uuid.UUID:
    return stable_id("system", name)


@dataclass(frozen=True)
class WorldParameters:
    seed: int = 7
    scale: int = 1
    anchor: date | None = None  # the world ends at this day's midnight UTC; default: today

    def anchor_time(self) -> datetime:
        day = self.anchor or datetime.now(UTC).date()
        return datetime(day.year, day.month, day.day, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Requests


_KEYBOARD_NEIGHBOURS = {
    "a": "qs",
    "e": "wr",
    "i": "uo",
    "o": "ip",
    "u": "yi",
    "s": "ad",
    "r": "et",
    "t": "ry",
    "n": "bm",
    "l": "k",
    "c": "xv",
    "d": "sf",
    "p": "o",
    "m": "n",
    "y": "tu",
    "h": "gj",
}


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(0, 4))
    if kind == 0:  # swap neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double a letter
        return word[:i] + word[i] + word[i:]
    neighbours = _KEYBOARD_NEIGHBOURS.get(word[i].lower())
    if not neighbours:
        return word
    return word[:i] + neighbours[int(rng.integers(0, len(neighbours)))] + word[i + 1 :]


def phrase_request(intent: catalog.IntentSpec, rng: np.random.Generator) -> str:
    template = intent.templates[int(rng.integers(0, len(intent.templates)))]
    text = template
    for slot, values in catalog.SLOTS.items():
        token = "{" + slot + "}"
        while token in text:
            text = text.replace(token, values[int(rng.integers(0, len(values)))], 1)
    prefix = catalog.PREFIXES[int(rng.integers(0, len(catalog.PREFIXES)))]
    suffix = catalog.SUFFIXES[int(rng.integers(0, len(catalog.SUFFIXES)))]
    text = f"{prefix}{text}{suffix}"
    if rng.random() < 0.12:
        words = text.split(" ")
        k = int(rng.integers(0, len(words)))
        words[k] = _typo(words[k], rng)
        text = " ".join(words)
    style = rng.random()
    if style < 0.25:
        text = text.lower()
    elif style < 0.55:
        text = text[:1].upper() + text[1:]
    return text


# ---------------------------------------------------------------------------------------------
# Executions


_FAILURE_MESSAGES = {
    "failed": (
        "skill raised: could not parse the request",
        "upstream HTTP 500",
        "tool call rejected: missing required field",
        "no matching records found",
        "model refused: outside this skill's domain",
    ),
    "partial": (
        "completed 3 of 5 steps; the rest need a human",
        "some rows could not be processed",
        "answer produced without sources",
    ),
    "timeout": ("exceeded the 30000 ms time limit",),
    "governance_blocked": (
        "ARM mode: approval required and not granted",
        "gov.md 4.2: write to a system of record without approval",
    ),
}
_FEEDBACK = {
    5: ("perfect, thanks", "exactly what I needed", "fast and right"),
    4: ("good", "mostly right", "thanks"),
    3: ("ok but slow", "had to fix a couple of things"),
    2: ("wrong skill?", "missed half of it", "not what I asked"),
    1: ("useless", "it did nothing", "wrong answer entirely"),
}
_GOV_SECTIONS = ("4.2", "4.3", "7.1", "7.4", "9.2")
_CHANNELS = ("slack", "web", "email", "api")


def _approver(spec: catalog.TenantSpec) -> str:
    return "preston@oms.com" if spec.domain == "oms.com" else f"ops@{spec.domain}"


def _day_offsets(n: int, rng: np.random.Generator) -> np.ndarray:
    """Days before the anchor, traffic growing towards the present."""
    weights = 0.45 + np.linspace(0.0, 1.0, HISTORY_DAYS)  # index 0 = oldest day
    weights /= weights.sum()
    day_index = rng.choice(HISTORY_DAYS, size=n, p=weights)
    return HISTORY_DAYS - day_index  # 1..400 days before the anchor


def _seconds_in_day(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mostly business hours (UTC-5 office), some evening and night work."""
    hours = np.where(rng.random(n) < 0.82, rng.normal(15.5, 2.6, n), rng.uniform(0, 24, n))
    return np.clip(hours, 0, 23.99) * 3600


def generate_executions(params: WorldParameters) -> list[dict[str, Any]]:
    rng = np.random.default_rng(params.seed)
    n = EXECUTIONS_PER_SCALE * params.scale
    anchor = params.anchor_time()
    systems = {s.name: s for s in catalog.SYSTEMS}
    clay_id = system_id(catalog.CATCH_ALL_SYSTEM)

    tenant_p = np.array([t.traffic_share for t in catalog.TENANTS])
    intent_p = np.array([i.weight for i in catalog.INTENTS], dtype=float)
    tenant_idx = rng.choice(len(catalog.TENANTS), size=n, p=tenant_p / tenant_p.sum())
    intent_idx = rng.choice(len(catalog.INTENTS), size=n, p=intent_p / intent_p.sum())
    start_offsets = _day_offsets(n, rng) * 86400.0 - _seconds_in_day(n, rng)
    order = np.argsort(-start_offsets)  # ids numbered in time order

    rows: list[dict[str, Any]] = []
    for rank, i in enumerate(order):
        tenant = catalog.TENANTS[int(tenant_idx[i])]
        intent = catalog.INTENTS[int(intent_idx[i])]
        names = list(intent.routed_to)
        shares = np.array([intent.routed_to[s] for s in names])
        chosen = int(rng.choice(len(names), p=shares / shares.sum()))
        system_name = names[chosen]
        # The historical routing was this random draw: its probability is what dreams weigh by.
        propensity = float(shares[chosen] / shares.sum())
        perf = intent.performance[system_name]
        system = systems[system_name]
        best = max(intent.performance, key=lambda s: intent.performance[s].success)

        started_at = anchor - timedelta(seconds=float(start_offsets[i]))
        requires_approval = intent.approval_action is not None and intent.approval_action in system.requires_approval
        approved = requires_approval and rng.random() < 0.93
        if requires_approval and not approved:
            status = "governance_blocked"
        elif rng.random() < perf.success:
            status = "success"
        else:
            status = str(rng.choice(["failed", "partial", "timeout"], p=[0.55, 0.27, 0.18]))

        timeout_ms = catalog.SKILL_PARAMETERS["timeout_ms"]
        if status == "timeout":
            duration_ms = timeout_ms + float(rng.uniform(5, 900))
        elif status == "governance_blocked":
            duration_ms = float(rng.uniform(40, 250))
        else:
            duration_ms = min(perf.duration_ms * math.exp(rng.normal(0, 0.5)), timeout_ms - 1)
            if status == "failed":
                duration_ms *= 0.6
        completed_at = started_at + timedelta(milliseconds=round(duration_ms))

        cost = 0.0 if status == "governance_blocked" else perf.cost_usd * tenant.cost_multiplier
        cost *= math.exp(rng.normal(0, 0.4))
        tokens = int(cost / 0.000004) if cost else 0

        satisfaction: int | None = None
        feedback: str | None = None
        if status != "governance_blocked" and rng.random() < 0.45:
            mean = {"success": perf.satisfaction, "partial": perf.satisfaction - 1.2}.get(status, 1.4)
            satisfaction = int(np.clip(round(rng.normal(mean, 0.7)), 1, 5))
            if rng.random() < 0.3:
                options = _FEEDBACK[satisfaction]
                feedback = options[int(rng.integers(0, len(options)))]

        governance: dict[str, Any] = {"requires_approval": requires_approval}
        if requires_approval:
            governance["action"] = intent.approval_action
            governance["gov_md_sections_checked"] = sorted(
                {_GOV_SECTIONS[int(k)] for k in rng.integers(0, len(_GOV_SECTIONS), size=2)}
            )
            if approved:
                governance["approved_by"] = _approver(tenant)
                governance["approved_at"] = (started_at - timedelta(minutes=int(rng.integers(1, 240)))).isoformat()
                governance["reason"] = "Compliance audit approved by Operator"
                governance["compliance_validated"] = True
            else:
                governance["approved_by"] = None
                governance["reason"] = "awaiting operator approval"
                governance["compliance_validated"] = False

        error_message = None
        if status != "success":
            messages = _FAILURE_MESSAGES[status]
            error_message = messages[int(rng.integers(0, len(messages)))]

        routing_path = [clay_id] if system_name == catalog.CATCH_ALL_SYSTEM else [clay_id, system_id(system_name)]
        confidence = rng.beta(8, 3) if system_name == best else rng.beta(5, 4)
        retry_elsewhere = status in ("failed", "timeout") and system_name != best
        rows.append(
            {
                "id": stable_id("execution", params.seed, rank),
                "tenant_id": tenant_id(tenant),
                "system_id": system_id(system_name),
                "system_name": system_name,
                "user_request": phrase_request(intent, rng),
                "routing_path": routing_path,
                "routing_confidence": Decimal(f"{confidence:.3f}"),
                "routing_propensity": Decimal(f"{propensity:.6f}"),
                "input_data": {
                    "channel": _CHANNELS[int(rng.integers(0, len(_CHANNELS)))],
                    "user": f"user{int(rng.integers(1, tenant.max_users + 1))}@{tenant.domain}",
                    "intent": intent.name,
                },
                "output_data": None if status in ("governance_blocked", "timeout") else {"tokens": tokens},
                "governance_check": governance,
                "status": status,
                "error_message": error_message,
                "started_at": started_at,
                "completed_at": completed_at,
                "cost_usd": Decimal(f"{cost:.4f}"),
                "user_satisfaction": satisfaction,
                "user_feedback": feedback,
                "should_retry_with_different_path": retry_elsewhere,
                "suggested_improvements": {"try_system": best} if retry_elsewhere else None,
                "last_accessed_at": completed_at + timedelta(hours=float(rng.exponential(30))),
                "access_count": int(rng.poisson(1.5)),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# MCP telemetry


def _tool_input(tool: catalog.ToolSpec, when: datetime, rng: np.random.Generator) -> dict[str, Any]:
    if tool.tool in ("upload_payroll_entries", "process_payroll_pdf"):
        entries = int(rng.integers(8, 180))
        return {
            "entries": entries,
            "total_amount": round(entries * float(rng.uniform(900, 5200)), 2),
            "source_file": f"payroll-{when.date().isoformat()}.pdf",
        }
    if tool.tool in ("search_memory", "search_pages"):
        return {"query_terms": int(rng.integers(1, 9)), "top_k": 5}
    if tool.tool == "generate":
        return {"prompt_tokens": int(rng.integers(80, 4000))}
    return {"items": int(rng.integers(1, 25))}


def generate_telemetry(params: WorldParameters) -> list[dict[str, Any]]:
    rng = np.random.default_rng(params.seed + 1)
    n = TELEMETRY_PER_SCALE * params.scale
    anchor = params.anchor_time()
    tenant_p = np.array([t.traffic_share for t in catalog.TENANTS])
    tool_p = np.array([t.weight for t in catalog.TOOLS])
    tenant_idx = rng.choice(len(catalog.TENANTS), size=n, p=tenant_p / tenant_p.sum())
    tool_idx = rng.choice(len(catalog.TOOLS), size=n, p=tool_p / tool_p.sum())
    offsets = _day_offsets(n, rng) * 86400.0 - _seconds_in_day(n, rng)

    # Error bursts also bring extra traffic (retries): add calls inside each burst window.
    burst_calls: list[tuple[int, int, float]] = []
    for burst_no, (server, tool_name, days_ago, hours, _) in enumerate(catalog.ERROR_BURSTS):
        k = next(j for j, t in enumerate(catalog.TOOLS) if t.server == server and t.tool == tool_name)
        for _ in range(25 * params.scale):
            t0 = days_ago * 86400.0 - 10 * 3600.0  # bursts start at 14:00 UTC
            burst_calls.append((burst_no, k, t0 - float(rng.uniform(0, hours * 3600.0))))

    events = [(int(tenant_idx[i]), int(tool_idx[i]), float(offsets[i])) for i in range(n)]
    events += [(0, k, off) for _, k, off in burst_calls]  # bursts hit the largest tenant
    events.sort(key=lambda e: -e[2])

    rows: list[dict[str, Any]] = []
    for rank, (t_idx, k, offset) in enumerate(events):
        tool = catalog.TOOLS[k]
        tenant = catalog.TENANTS[t_idx]
        when = anchor - timedelta(seconds=offset)
        error_rate = tool.error_rate
        for server, tool_name, days_ago, hours, burst_rate in catalog.ERROR_BURSTS:
            start = anchor - timedelta(days=days_ago) + timedelta(hours=14)
            if server == tool.server and tool_name == tool.tool and start - timedelta(hours=hours) <= when <= start:
                error_rate = burst_rate
        success = bool(rng.random() >= error_rate)
        latency = tool.median_ms * math.exp(rng.normal(0, tool.sigma))
        messages = catalog.TOOL_ERRORS.get(tool.server, catalog.TOOL_ERRORS["default"])
        rows.append(
            {
                "id": stable_id("telemetry", params.seed, rank),
                "tenant_id": tenant_id(tenant),
                "server_name": tool.server,
                "tool_name": tool.tool,
                "input_data": _tool_input(tool, when, rng),
                "execution_time_ms": Decimal(f"{latency:.1f}"),
                "success": success,
                "error_message": None if success else messages[int(rng.integers(0, len(messages)))],
                "timestamp": when,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Budgets


def _month_start(day: datetime) -> datetime:
    return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    return moment.replace(year=moment.year + month // 12, month=month % 12 + 1)


def _windows(anchor: datetime) -> list[tuple[str, datetime, datetime]]:
    windows: list[tuple[str, datetime, datetime]] = []
    current_month = _month_start(anchor)
    for k in range(12, -1, -1):
        start = _add_months(current_month, -k)
        windows.append(("monthly", start, _add_months(start, 1)))
    week_start = (anchor - timedelta(days=anchor.weekday())).replace(hour=0)
    for k in range(7, -1, -1):
        start = week_start - timedelta(weeks=k)
        windows.append(("weekly", start, start + timedelta(weeks=1)))
    for k in range(29, -1, -1):
        start = anchor - timedelta(days=k)
        windows.append(("daily", start, start + timedelta(days=1)))
    for k in range(47, -1, -1):
        start = anchor - timedelta(hours=k + 1)
        windows.append(("hourly", start, start + timedelta(hours=1)))
    return windows


_TIER_QUOTA = {"enterprise": 1.0, "pro": 0.5, "starter": 0.2}


def _system_quotas(spec: catalog.TenantSpec) -> dict[str, dict[str, float]]:
    factor = _TIER_QUOTA[spec.subscription_tier]
    return {
        "domicile-governance": {"llm_tokens": 100_000 * factor, "usd_budget": 50 * factor},
        "clay-consigliere": {"llm_tokens": 500_000 * factor, "usd_budget": 200 * factor},
        "personaplex-7b": {"compute_hours": 10 * factor, "usd_budget": 0},
        "ledger-lens": {"llm_tokens": 150_000 * factor, "usd_budget": 60 * factor},
    }


def generate_resources(
    params: WorldParameters, executions: list[dict[str, Any]], telemetry: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Budget windows whose `used` is what the world's executions and tool calls really consumed."""
    anchor = params.anchor_time()
    windows = _windows(anchor)
    # Usage per tenant per hour, then summed per window.
    hourly: dict[tuple[uuid.UUID, str], dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    for row in executions:
        hour = row["started_at"].replace(minute=0, second=0, microsecond=0)
        cost = float(row["cost_usd"])
        hourly[(row["tenant_id"], "usd_budget")][hour] += cost
        hourly[(row["tenant_id"], "llm_tokens")][hour] += (row["output_data"] or {}).get("tokens", 0)
        duration_h = (row["completed_at"] - row["started_at"]).total_seconds() / 3600
        hourly[(row["tenant_id"], "compute_hours")][hour] += duration_h
    for row in telemetry:
        hour = row["timestamp"].replace(minute=0, second=0, microsecond=0)
        hourly[(row["tenant_id"], "api_calls")][hour] += 1

    plans = {  # resource type -> (window types, monthly budget as a function of the tenant)
        "usd_budget": (("monthly", "weekly", "daily"), lambda t: float(t.max_monthly_budget)),
        "llm_tokens": (("monthly", "daily"), lambda t: float(t.max_monthly_budget) * 20_000),
        "compute_hours": (("monthly",), lambda t: 40.0 * _TIER_QUOTA[t.subscription_tier] + 5),
        "api_calls": (("daily", "hourly"), lambda t: 30_000.0 * _TIER_QUOTA[t.subscription_tier]),
        "storage_gb": (("monthly",), lambda t: 100.0 * _TIER_QUOTA[t.subscription_tier]),
    }
    window_share = {"monthly": 1.0, "weekly": 7 / 30, "daily": 1 / 30, "hourly": 1 / 720}
    rows: list[dict[str, Any]] = []
    for spec in catalog.TENANTS:
        tid = tenant_id(spec)
        quotas = _system_quotas(spec)
        for resource_type, (window_types, monthly_budget) in plans.items():
            usage = hourly.get((tid, resource_type), {})
            for window_type, start, end in windows:
                if window_type not in window_types:
                    continue
                if resource_type == "storage_gb":
                    age_months = (anchor - start).days / 30
                    used = round(8.0 * _TIER_QUOTA[spec.subscription_tier] * 10 * (1 - age_months / 20), 2)
                else:
                    used = sum(v for h, v in usage.items() if start <= h < end)
                budget = monthly_budget(spec) * window_share[window_type]
                current = start <= anchor < end or (window_type == "monthly" and start <= anchor < end)
                # Open windows carry reservations for work in flight; Blue Harbor's month has a
                # large batch reserved, which takes it past its alert threshold.
                reserved = 0.0
                if current and resource_type == "usd_budget" and window_type == "monthly":
                    reserved = budget * (0.85 if spec.domain == "blueharbor.health" else 0.1)
                total = Decimal(f"{budget:.2f}")
                used_d = Decimal(f"{used:.4f}")
                reserved_d = Decimal(f"{reserved:.2f}")
                rows.append(
                    {
                        "id": stable_id("resource", spec.domain, resource_type, window_type, start.isoformat()),
                        "tenant_id": tid,
                        "resource_type": resource_type,
                        "window_type": window_type,
                        "window_start": start,
                        "window_end": end,
                        "total_budget": total,
                        "used": used_d,
                        "reserved": reserved_d,
                        "system_quotas": quotas,
                        "alert_threshold": Decimal("0.80"),
                        "alert_sent": bool(total and (used_d + reserved_d) / total >= Decimal("0.80") and not current),
                        "created_at": start,
                        "updated_at": min(end, anchor),
                    }
                )
    return rows
