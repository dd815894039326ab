"""The telemetry rollup with retention enabled: raw calls older than the configured age rolled up per
UTC day and tool (figures computed by hand below), deleted, re-run idempotently, per tenant; and the
monitoring figures over a window the same before and after (the daily histograms stand in for the
deleted rows)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.lifecycle.defs import telemetry_rollup
from clay_pipelines.lifecycle.telemetry import rollup_telemetry
from clay_pipelines.platform import monitoring
from clay_pipelines.platform.defs import tool_health
from clay_pipelines.resources import PostgresResource

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# 90 days before the start of AS_OF's UTC day: calls before 2025-12-01 00:00 UTC are rolled up.
CUTOFF = datetime(2025, 12, 1, tzinfo=UTC)
WINDOW = (datetime(2025, 11, 20, tzinfo=UTC), datetime(2025, 12, 5, tzinfo=UTC))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (tenant, timestamp, server, tool, milliseconds, success)
CALLS = [
    # 2025-11-29 UTC, crm/lookup: 10, 20, 30, 40 ok; 100 failed; 50 of unknown outcome (success NULL).
    ("A", "2025-11-29T00:00:00+00:00", "crm", "lookup", 10, True),
    ("A", "2025-11-29T08:00:00+00:00", "crm", "lookup", 20, True),
    ("A", "2025-11-30T01:30:00+02:00", "crm", "lookup", 30, True),  # 23:30 UTC on the 29th
    ("A", "2025-11-29T23:59:59.999999+00:00", "crm", "lookup", 40, True),
    ("A", "2025-11-29T12:00:00+00:00", "crm", "lookup", 100, False),
    ("A", "2025-11-29T13:00:00+00:00", "crm", "lookup", 50, None),
    # 2025-11-30 UTC: two more of crm/lookup, and mail/send.
    ("A", "2025-11-30T00:00:00+00:00", "crm", "lookup", 5, True),
    ("A", "2025-11-30T23:59:59+00:00", "crm", "lookup", 15, True),
    ("A", "2025-11-30T10:00:00+00:00", "mail", "send", 7, False),
    # 2025-12-01 00:00 UTC and later: inside the raw period, kept.
    ("A", "2025-12-01T00:00:00+00:00", "crm", "lookup", 1000, True),
    ("A", "2025-12-02T09:00:00+00:00", "mail", "send", 9, True),
    # Another tenant's calls of the same days.
    ("B", "2025-11-29T10:00:00+00:00", "crm", "lookup", 70, True),
    ("B", "2025-11-30T10:00:00+00:00", "crm", "lookup", 80, False),
]


def _insert(conn, tenants: dict[str, object], calls: list[tuple]) -> None:
    for tenant, at, server, tool, ms, ok in calls:
        conn.execute(
            "INSERT INTO mcp_telemetry_log (tenant_id, server_name, tool_name, execution_time_ms, success, timestamp)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (tenants[tenant], server, tool, ms, ok, _utc(at)),
        )


def _setup(fresh_db) -> dict[str, object]:
    with fresh_db.admin() as conn:
        tenants = {
            name: conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
            for name in ("A", "B")
        }
        _insert(conn, tenants, CALLS)
    return tenants


def _daily(fresh_db) -> list[tuple]:
    with fresh_db.admin() as conn:
        return conn.execute(
            "SELECT t.name, d.day, d.server_name, d.tool_name, d.calls, d.errors, d.p50_ms, d.p95_ms, d.max_ms, "
            "d.latency_success, d.latency_ms, d.latency_calls FROM mcp_telemetry_daily d "
            "JOIN tenants t ON t.id = d.tenant_id ORDER BY 1, 2, 3, 4"
        ).fetchall()


def _raw(fresh_db) -> list[tuple]:
    with fresh_db.admin() as conn:
        return conn.execute(
            "SELECT t.name, l.timestamp, l.execution_time_ms FROM mcp_telemetry_log l "
            "JOIN tenants t ON t.id = l.tenant_id ORDER BY 1, 2"
        ).fetchall()


def _health(fresh_db, since: datetime = WINDOW[0], until: datetime = WINDOW[1]) -> list[monitoring.ToolHealth]:
    with fresh_db.database() as db, db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        return monitoring.tool_health(conn, since, until)


D = Decimal

# By hand. crm/lookup on the 29th, all six latencies sorted: 10 20 30 40 50 100. p50 = (30 + 40) / 2;
# p95 at rank 0.95 x 5 = 4.75: 50 + 0.75 x (100 - 50) = 87.5. Errors: success = false only (100 ms).
# The 30th: 5, 15: p50 10, p95 5 + 0.95 x 10 = 14.5. mail/send: one failed call of 7 ms.
A_DAILY = [
    ("A", date(2025, 11, 29), "crm", "lookup", 6, 1, D("35.0"), D("87.5"), D(100),
     [False, True, True, True, True, None], [D(100), D(10), D(20), D(30), D(40), D(50)], [1, 1, 1, 1, 1, 1]),
    ("A", date(2025, 11, 30), "crm", "lookup", 2, 0, D("10.0"), D("14.5"), D(15),
     [True, True], [D(5), D(15)], [1, 1]),
    ("A", date(2025, 11, 30), "mail", "send", 1, 1, D("7.0"), D("7.0"), D(7), [False], [D(7)], [1]),
]  # fmt: skip


def test_the_rollup_with_retention_enabled_gives_exact_daily_figures_once(fresh_db) -> None:
    tenants = _setup(fresh_db)
    with fresh_db.database() as db:
        # A dry run counts and changes nothing.
        assert rollup_telemetry(db, tenants["A"], 90, enabled=False, as_of=AS_OF) == 9
        assert _daily(fresh_db) == [] and len(_raw(fresh_db)) == len(CALLS)

        assert rollup_telemetry(db, tenants["A"], 90, enabled=True, as_of=AS_OF) == 9
        assert _daily(fresh_db) == A_DAILY
        # A's calls from CUTOFF on stay raw; B's are untouched by A's rollup.
        assert _raw(fresh_db) == [
            ("A", CUTOFF, D(1000)),
            ("A", _utc("2025-12-02T09:00:00+00:00"), D(9)),
            ("B", _utc("2025-11-29T10:00:00+00:00"), D(70)),
            ("B", _utc("2025-11-30T10:00:00+00:00"), D(80)),
        ]
        # Run again: nothing left to roll up, nothing changes.
        assert rollup_telemetry(db, tenants["A"], 90, enabled=True, as_of=AS_OF) == 0
        assert _daily(fresh_db) == A_DAILY

        # A call of the 29th arriving late (60 ms, ok): the day is recomputed exactly from its histogram
        # and the new row, not averaged. Sorted: 10 20 30 40 50 60 100: p50 40; p95 at 5.7: 60 + 0.7 x 40.
        with fresh_db.admin() as conn:
            _insert(conn, tenants, [("A", "2025-11-29T15:00:00+00:00", "crm", "lookup", 60, True)])
        assert rollup_telemetry(db, tenants["A"], 90, enabled=True, as_of=AS_OF) == 1
        assert _daily(fresh_db)[0] == (
            "A", date(2025, 11, 29), "crm", "lookup", 7, 1, D("40.0"), D("88.0"), D(100),
            [False, True, True, True, True, True, None], [D(100), D(10), D(20), D(30), D(40), D(60), D(50)],
            [1, 1, 1, 1, 1, 1, 1],
        )  # fmt: skip
        assert _daily(fresh_db)[1:] == A_DAILY[1:]

        # B's own rollup: its rows only, under its tenant.
        assert rollup_telemetry(db, tenants["B"], 90, enabled=True, as_of=AS_OF) == 2
        assert [row[:9] for row in _daily(fresh_db) if row[0] == "B"] == [
            ("B", date(2025, 11, 29), "crm", "lookup", 1, 0, D("70.0"), D("70.0"), D(70)),
            ("B", date(2025, 11, 30), "crm", "lookup", 1, 1, D("80.0"), D("80.0"), D(80)),
        ]
    with fresh_db.admin() as conn:
        audit = conn.execute(
            "SELECT t.name, a.rows, a.dry_run, a.detail->>'daily_rows_written' FROM lifecycle_audit a "
            "JOIN tenants t ON t.id = a.tenant_id WHERE a.action = 'telemetry_rollup' ORDER BY a.id"
        ).fetchall()
    assert audit == [("A", 9, True, "0"), ("A", 9, False, "3"), ("A", 0, False, "0"), ("A", 1, False, "1"),
                     ("B", 2, False, "2")]  # fmt: skip


def test_monitoring_figures_are_the_same_before_and_after_the_rollup(fresh_db) -> None:
    tenants = _setup(fresh_db)
    days_only = (datetime(2025, 11, 29, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))
    before, before_days = _health(fresh_db), _health(fresh_db, *days_only)
    # Computed over the raw rows, by hand: crm/lookup 11 calls (A 9, B 2), 2 failed; the 8 ok latencies
    # 5 10 15 20 30 40 70 1000 average 148.75 and have p95 at rank 6.65: 70 + 0.65 x 930 = 674.5.
    assert [(h.server_name, h.tool_name, h.total_calls, h.errors, h.error_rate, h.avg_ms, h.p95_ms) for h in before] == [
        ("mail", "send", 2, 1, D("50.00"), D("9.0"), D("9.0")),
        ("crm", "lookup", 11, 2, D("18.18"), D("148.8"), D("674.5")),
    ]  # fmt: skip
    with fresh_db.database() as db:
        for tenant in ("A", "B"):
            rollup_telemetry(db, tenants[tenant], 90, enabled=True, as_of=AS_OF)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM mcp_telemetry_log WHERE timestamp < %s", (CUTOFF,)).fetchone() == (0,)
    assert _health(fresh_db) == before
    assert _health(fresh_db, *days_only) == before_days and before_days
    # A rolled-up day cut by the window's edge is left out: its calls' times are gone.
    assert [h.total_calls for h in _health(fresh_db, _utc("2025-11-29T12:00:00+00:00"), WINDOW[1])] == [2, 4]


def test_the_tool_health_asset_reports_the_same_table_after_the_rollup_asset(dagster_env, monkeypatch) -> None:
    """With raw calls kept 2 days, the asset's 7-day window spans rolled-up and raw days."""
    now = datetime.now(UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    with dagster_env.admin() as conn:
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('T') RETURNING id").fetchone()[0]
        for back in range(1, 7):  # whole UTC days inside the window; today's calls a minute ago
            for ms, ok in ((100 * back, True), (50, back % 2 == 0), (5000 + back, True)):
                _insert(
                    conn, {"T": tenant}, [("T", (noon - timedelta(days=back)).isoformat(), "crm", "lookup", ms, ok)]
                )
        _insert(conn, {"T": tenant}, [("T", (now - timedelta(minutes=1)).isoformat(), "mail", "send", 12, False)])
    monkeypatch.setenv("CLAY_TELEMETRY_RAW_DAYS", "2")
    monkeypatch.setenv("CLAY_LIFECYCLE_RETENTION_ENABLED", "1")
    resources = {"postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url)}

    def health_table() -> tuple[str, int]:
        with dg.instance_for_test() as instance:
            result = dg.materialize([tool_health], instance=instance, resources=resources)
        metadata = result.asset_materializations_for_node("monitoring__tool_health")[0].metadata
        return metadata["tool_health"].value, metadata["calls"].value

    before = health_table()
    assert before[1] == 19
    with dg.instance_for_test() as instance:
        rolled = dg.materialize(
            [telemetry_rollup],
            instance=instance,
            resources=resources,
            partition_key=f"{now - timedelta(days=1):%Y-%m-%d}",
        )
    assert rolled.asset_materializations_for_node("lifecycle__telemetry_rollup")[0].metadata["calls"].value == {"T": 12}
    with dagster_env.admin() as conn:
        assert conn.execute("SELECT count(*), sum(calls) FROM mcp_telemetry_daily").fetchone() == (4, 12)
    assert health_table() == before
