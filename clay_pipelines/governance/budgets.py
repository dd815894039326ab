"""Budget reservations over the tenant's usd_budget windows, as wrappers of the SQL functions
(clay_reserve_budget, clay_settle_reservation, clay_release_reservation, clay_expire_reservations),
and the windows' upkeep: opening the next ones from each tenant's plan, alerts, invariants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import psycopg

from clay_pipelines.governance.completion import user_error

WINDOW_TYPES = ("hourly", "daily", "weekly", "monthly")


class BudgetRefusedError(ValueError):
    """No budget for the request: every usable skill's reservation was refused."""


@dataclass(frozen=True, kw_only=True)
class Reservation:
    reservation_id: UUID | None
    granted: bool
    refused_scope: str | None = None  # tenant | system
    refusal: str | None = None


def reserve(conn: psycopg.Connection, system_name: str, estimate_usd: Decimal, ttl: timedelta) -> Reservation:
    """Hold the estimate against every open window (all or nothing); a refusal is an answer."""
    try:
        row = conn.execute(
            "SELECT * FROM public.clay_reserve_budget(%s, %s, %s)", (system_name, estimate_usd, ttl)
        ).fetchone()
    except psycopg.Error as error:
        raise (user_error(error) or error) from error
    assert row is not None
    return Reservation(reservation_id=row[0], granted=row[1], refused_scope=row[2], refusal=row[3])


def settle(conn: psycopg.Connection, reservation_id: UUID, actual_usd: Decimal) -> bool:
    """Charge the actual cost and give back the estimate; True only for the call that counted."""
    return _call(conn, "SELECT public.clay_settle_reservation(%s, %s)", (reservation_id, actual_usd))


def release(conn: psycopg.Connection, reservation_id: UUID, reason: str = "cancelled") -> bool:
    """Give back the estimate of a run that will not happen; True only for the call that counted."""
    return _call(conn, "SELECT public.clay_release_reservation(%s, %s)", (reservation_id, reason))


def expire_reservations(conn: psycopg.Connection, limit: int = 1000) -> int:
    """Release held reservations past their expiry (the caller's tenant, or all for maintenance)."""
    row = conn.execute("SELECT public.clay_expire_reservations(%s)", (limit,)).fetchone()
    return int(row[0]) if row else 0


def _call(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> bool:
    try:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    except psycopg.Error as error:
        raise (user_error(error) or error) from error
    return bool(row and row[0])


def estimate_cost(conn: psycopg.Connection, rule_id: UUID | None, system_id: UUID | None, default: Decimal) -> Decimal:
    """What a run is expected to cost: the matched rule's average for its skill, else the skill's
    average, else the configured default (an average of 0 is no measurement: the column's default)."""
    row = conn.execute(
        """
        SELECT (SELECT NULLIF(avg_cost_usd, 0) FROM routing_rules WHERE id = %s AND recommended_system_id = %s),
               (SELECT NULLIF(avg_cost_usd, 0) FROM systems WHERE id = %s)
        """,
        (rule_id, system_id, system_id),
    ).fetchone()
    for value in row or ():
        if value is not None:
            return Decimal(value)
    return default


# ---------------------------------------------------------------------------------------------
# Windows


def window_bounds(window_type: str, at: datetime) -> tuple[datetime, datetime]:
    """The UTC window of that type holding `at` (weeks start on Monday)."""
    at = at.astimezone(UTC)
    if window_type == "hourly":
        start = at.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window_type == "daily":
        return day, day + timedelta(days=1)
    if window_type == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if window_type == "monthly":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return start, end
    raise ValueError(f"unknown window type {window_type!r}")


@dataclass(frozen=True, kw_only=True)
class OpenedWindow:
    window_type: str
    window_start: datetime
    total_budget: Decimal


def open_windows(conn: psycopg.Connection, tenant_id: UUID, now: datetime) -> list[OpenedWindow]:
    """Open the tenant's current and next usd_budget windows that do not exist yet: monthly from the
    plan (tenants.max_monthly_budget), every other type the tenant already uses continued from its
    latest window (budget, threshold, quotas). Idempotent (a per-tenant lock and NOT EXISTS)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('clay.budget_windows'), hashtext(%s))", (str(tenant_id),))
    plan = conn.execute("SELECT max_monthly_budget FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    templates = {
        window_type: (total, threshold, quotas)
        for window_type, total, threshold, quotas in conn.execute(
            """
            SELECT DISTINCT ON (window_type) window_type, total_budget, alert_threshold, system_quotas
            FROM resources WHERE tenant_id = %s AND resource_type = 'usd_budget'
            ORDER BY window_type, window_start DESC
            """,
            (tenant_id,),
        )
    }
    if plan is not None and plan[0] is not None:
        _, threshold, quotas = templates.get("monthly", (None, Decimal("0.80"), {}))
        templates["monthly"] = (Decimal(plan[0]), threshold, quotas)
    opened: list[OpenedWindow] = []
    for window_type, (total, threshold, quotas) in sorted(templates.items()):
        start, end = window_bounds(window_type, now)
        for window_start, window_end in ((start, end), window_bounds(window_type, end)):
            inserted = conn.execute(
                """
                INSERT INTO resources (tenant_id, resource_type, window_type, window_start, window_end, total_budget,
                                       alert_threshold, system_quotas)
                SELECT %s, 'usd_budget', %s, %s, %s, %s, %s, %s
                WHERE NOT EXISTS (SELECT 1 FROM resources WHERE tenant_id = %s AND resource_type = 'usd_budget'
                                  AND window_type = %s AND window_start < %s AND window_end > %s)
                """,
                (
                    tenant_id,
                    window_type,
                    window_start,
                    window_end,
                    total,
                    threshold,
                    psycopg.types.json.Jsonb(quotas or {}),
                    tenant_id,
                    window_type,
                    window_end,
                    window_start,
                ),
            ).rowcount
            if inserted:
                opened.append(OpenedWindow(window_type=window_type, window_start=window_start, total_budget=total))
    return opened


@dataclass(frozen=True, kw_only=True)
class WindowState:
    resource_id: UUID
    tenant_id: UUID
    window_type: str
    window_start: datetime
    total_budget: Decimal
    used: Decimal
    reserved: Decimal
    held: Decimal  # sum of the held reservations' estimates on this window
    alert_sent: bool


def window_states(conn: psycopg.Connection, at: datetime) -> list[WindowState]:
    """Every usd_budget window open at `at` that the transaction sees, with what its reservations hold."""
    return [
        WindowState(
            resource_id=r[0],
            tenant_id=r[1],
            window_type=r[2],
            window_start=r[3],
            total_budget=r[4],
            used=r[5] or Decimal(0),
            reserved=r[6] or Decimal(0),
            held=r[7],
            alert_sent=bool(r[8]),
        )
        for r in conn.execute(
            """
            SELECT r.id, r.tenant_id, r.window_type, r.window_start, r.total_budget, r.used, r.reserved,
                   coalesce((SELECT sum(b.estimate_usd) FROM budget_reservations b
                             WHERE b.status = 'held' AND r.id = ANY(b.window_ids)), 0),
                   r.alert_sent
            FROM resources r
            WHERE r.resource_type = 'usd_budget' AND r.window_start <= %s AND r.window_end > %s
            ORDER BY r.tenant_id, r.window_type
            """,
            (at, at),
        )
    ]


def over_budget(states: list[WindowState]) -> list[WindowState]:
    """Windows whose used + reserved is above the total: a reservation can never cause it, a
    settlement above its estimate (or usage written outside reservations) can."""
    return [s for s in states if s.used + s.reserved > s.total_budget]


@dataclass(frozen=True, kw_only=True)
class Alert:
    alert_id: int
    tenant_id: UUID
    resource_id: UUID
    window_type: str
    window_start: datetime
    total_budget: Decimal
    used: Decimal
    reserved: Decimal
    alert_threshold: Decimal
    raised_at: datetime
    notified_at: datetime | None

    @property
    def usage_percent(self) -> Decimal:
        return round(100 * (self.used + self.reserved) / self.total_budget, 2) if self.total_budget else Decimal(0)


_ALERT_COLUMNS = (
    "id, tenant_id, resource_id, window_type, window_start, total_budget, used, reserved, alert_threshold, "
    "raised_at, notified_at"
)


def alerts_after(conn: psycopg.Connection, after_id: int, limit: int = 100) -> list[Alert]:
    """Alerts raised after the cursor, oldest first (the sensor's events)."""
    return [
        Alert(**dict(zip(Alert.__dataclass_fields__, row, strict=True)))
        for row in conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM budget_alerts WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit)
        )
    ]


def unnotified_alerts(conn: psycopg.Connection) -> list[Alert]:
    return [
        Alert(**dict(zip(Alert.__dataclass_fields__, row, strict=True)))
        for row in conn.execute(f"SELECT {_ALERT_COLUMNS} FROM budget_alerts WHERE notified_at IS NULL ORDER BY id")
    ]


def mark_notified(conn: psycopg.Connection, alert_id: int, by: str) -> bool:
    """Record the notification; only the first call for an alert changes it (sent once)."""
    return bool(
        conn.execute(
            "UPDATE budget_alerts SET notified_at = now(), notified_by = %s WHERE id = %s AND notified_at IS NULL",
            (by, alert_id),
        ).rowcount
    )


def alert_inconsistencies(conn: psycopg.Connection) -> list[str]:
    """An alert whose window does not say alert_sent, or a window over its threshold with no alert
    after the alert path existed (alerts sent before it are the sample world's history)."""
    rows = conn.execute(
        """
        SELECT 'window ' || r.id || ' has an alert but alert_sent is false'
        FROM budget_alerts a JOIN resources r ON r.id = a.resource_id WHERE NOT r.alert_sent
        """
    ).fetchall()
    return [r[0] for r in rows]
