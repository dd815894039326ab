"""Budget reservations under real concurrency, expiry after a killed client, alerts once, the router
reserving as it routes, and tenant isolation of every new table and function."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from clay_pipelines.governance import budgets
from clay_pipelines.governance.completion import ExecutionError, complete_execution
from clay_pipelines.routing.embeddings import HashingEmbedder
from clay_pipelines.routing.router import route
from clay_pipelines.routing.rule_store import learn_rules_full
from tests import routing_world as world
from tests.governance_world import routed, two_tenants, window

CLIENTS = 25
REPEATS = 30


@pytest.fixture
def tenants(fresh_db):
    return two_tenants(fresh_db)


def _race(connections: list[psycopg.Connection], tenant, estimate: str = "1") -> int:
    """Every connection reserves at once (a barrier), each in its own transaction; how many won."""
    barrier = threading.Barrier(len(connections))
    granted: list[bool] = []

    def client(conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
            barrier.wait()
            held = budgets.reserve(conn, "writer", Decimal(estimate), timedelta(minutes=5))
        granted.append(held.granted)

    threads = [threading.Thread(target=client, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == len(connections)
    return sum(granted)


@pytest.fixture
def clients(fresh_db):
    connections = [psycopg.connect(fresh_db.app_url, autocommit=True) for _ in range(CLIENTS)]
    yield connections
    for conn in connections:
        conn.close()


def _close_windows(fresh_db, tenant) -> None:
    with fresh_db.admin() as conn:
        conn.execute("UPDATE resources SET window_end = now() - interval '1 second' WHERE tenant_id = %s", (tenant,))


def test_25_concurrent_reservations_of_1_against_10_grant_exactly_10_every_time(
    fresh_db, database, tenants, clients
) -> None:
    counts = []
    for _ in range(REPEATS):
        with database.tenant_transaction(tenants.alpha) as conn:
            window_id = window(conn, "10")
        counts.append(_race(clients, tenants.alpha))
        with database.tenant_transaction(tenants.alpha) as conn:
            figures = conn.execute("SELECT reserved, available FROM resources WHERE id = %s", (window_id,)).fetchone()
            held = conn.execute(
                "SELECT count(*) FROM budget_reservations WHERE %s = ANY(window_ids)", (window_id,)
            ).fetchone()[0]
        assert figures == (Decimal("10"), Decimal("0")) and held == 10
        _close_windows(fresh_db, tenants.alpha)
    print(f"granted per run over {REPEATS} runs of {CLIENTS} clients: {counts}")
    assert counts == [10] * REPEATS


def test_across_two_windows_the_smaller_one_binds_all_or_nothing(fresh_db, database, tenants, clients) -> None:
    counts = []
    for _ in range(REPEATS // 3):
        with database.tenant_transaction(tenants.alpha) as conn:
            monthly = window(conn, "10")
            daily = window(conn, "4", window_type="daily")
        counts.append(_race(clients, tenants.alpha))
        with database.tenant_transaction(tenants.alpha) as conn:
            reserved = dict(conn.execute("SELECT id, reserved FROM resources WHERE id IN (%s, %s)", (monthly, daily)))
        # The monthly window holds exactly what the daily one let through: nothing half-reserved.
        assert reserved == {monthly: Decimal("4"), daily: Decimal("4")}
        _close_windows(fresh_db, tenants.alpha)
    assert counts == [4] * (REPEATS // 3)


def test_the_systems_quota_binds_and_is_counted_in_its_own_table(database, tenants, clients) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        monthly = window(conn, "10", quotas={"writer": {"usd_budget": 3}, "other": {"usd_budget": 1}})
    assert _race(clients, tenants.alpha) == 3
    with database.tenant_transaction(tenants.alpha) as conn:
        assert conn.execute("SELECT reserved FROM resources WHERE id = %s", (monthly,)).fetchone() == (3,)
        assert conn.execute(
            "SELECT resource_id, system_name, used, reserved FROM resource_system_usage"
        ).fetchall() == [(monthly, "writer", 0, 3)]
        refused = budgets.reserve(conn, "writer", Decimal("1"), timedelta(minutes=1))
    assert (refused.granted, refused.refused_scope) == (False, "system")
    assert refused.refusal == "writer's monthly quota (3 USD) cannot hold 1 more"


def test_settling_twice_counts_once_and_release_gives_the_estimate_back(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        window_id = window(conn, "10", quotas={"writer": {"usd_budget": 5}})
        first = budgets.reserve(conn, "writer", Decimal("2"), timedelta(minutes=5))
        second = budgets.reserve(conn, "writer", Decimal("3"), timedelta(minutes=5))
        assert budgets.settle(conn, first.reservation_id, Decimal("1.25")) is True
        assert budgets.settle(conn, first.reservation_id, Decimal("9")) is False
        assert budgets.release(conn, second.reservation_id) is True
        assert budgets.release(conn, second.reservation_id) is False
        figures = conn.execute("SELECT used, reserved FROM resources WHERE id = %s", (window_id,)).fetchone()
        quota = conn.execute("SELECT used, reserved FROM resource_system_usage").fetchone()
        states = conn.execute("SELECT status, actual_usd FROM budget_reservations ORDER BY estimate_usd").fetchall()
    assert figures == (Decimal("1.25"), 0) and quota == (Decimal("1.25"), 0)
    assert states == [("settled", Decimal("1.25")), ("released", None)]


def test_a_reservation_cannot_move_backwards_even_by_direct_update(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        window(conn, "10")
        held = budgets.reserve(conn, "writer", Decimal("2"), timedelta(minutes=5))
        budgets.settle(conn, held.reservation_id, Decimal("1"))
    for change in ("status = 'held'", "estimate_usd = 0", "window_ids = '{}'"):
        with pytest.raises(psycopg.Error, match="cannot become"), database.tenant_transaction(tenants.alpha) as conn:
            conn.execute(f"UPDATE budget_reservations SET {change} WHERE id = %s", (held.reservation_id,))


KILLED_CLIENT = """
import os, signal, sys
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
with conn.transaction():
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (sys.argv[2],))
    row = conn.execute("SELECT * FROM clay_reserve_budget('writer', 2, interval '1 millisecond')").fetchone()
print(row[0], flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # between reserve and settle
"""


def test_a_client_killed_between_reserve_and_settle_is_released_by_expiry_and_charged_once(
    fresh_db, database, tenants
) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        window_id = window(conn, "10")
    done = subprocess.run(
        [sys.executable, "-c", KILLED_CLIENT, fresh_db.app_url, str(tenants.alpha)], capture_output=True, text=True
    )
    assert done.returncode == -9
    reservation = done.stdout.strip()
    with database.tenant_transaction(tenants.alpha) as conn:
        assert conn.execute("SELECT reserved FROM resources WHERE id = %s", (window_id,)).fetchone() == (2,)
    with database.tenant_transaction(tenants.alpha) as conn:
        assert budgets.expire_reservations(conn) == 1
        assert budgets.expire_reservations(conn) == 0
        assert conn.execute("SELECT used, reserved FROM resources WHERE id = %s", (window_id,)).fetchone() == (0, 0)
        # The work did happen after all: its late settlement charges it, once.
        assert budgets.settle(conn, reservation, Decimal("1.5")) is True
        assert budgets.settle(conn, reservation, Decimal("1.5")) is False
        figures = conn.execute("SELECT used, reserved FROM resources WHERE id = %s", (window_id,)).fetchone()
        state = conn.execute("SELECT status, close_reason FROM budget_reservations").fetchone()
    assert figures == (Decimal("1.5"), 0)
    assert state == ("settled", "settled after expired")


def test_an_alert_is_raised_once_per_window_and_never_by_a_refused_reservation(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        monthly = window(conn, "10")
        assert budgets.reserve(conn, "writer", Decimal("5"), timedelta(minutes=5)).granted
        assert conn.execute("SELECT count(*) FROM budget_alerts").fetchone() == (0,)
        assert budgets.reserve(conn, "writer", Decimal("3"), timedelta(minutes=5)).granted
        assert budgets.reserve(conn, "writer", Decimal("1"), timedelta(minutes=5)).granted
        alerts = conn.execute("SELECT resource_id, used, reserved FROM budget_alerts").fetchall()
        assert alerts == [(monthly, 0, 8)]
        assert conn.execute("SELECT alert_sent FROM resources WHERE id = %s", (monthly,)).fetchone() == (True,)
    with database.tenant_transaction(tenants.beta) as conn:
        big = window(conn, "100")
        window(conn, "1", window_type="daily")
        refused = budgets.reserve(conn, "writer", Decimal("85"), timedelta(minutes=5))
        assert (refused.granted, refused.refused_scope) == (False, "tenant")
        # The monthly window went past 80% inside the refused attempt: rolled back with it.
        assert conn.execute("SELECT reserved, alert_sent FROM resources WHERE id = %s", (big,)).fetchone() == (0, False)
        assert conn.execute("SELECT count(*) FROM budget_alerts").fetchone() == (0,)


def test_a_tenant_cannot_reserve_against_settle_or_read_another_tenants_budget(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        alpha_window = window(conn, "10", quotas={"writer": {"usd_budget": 5}})
        held = budgets.reserve(conn, "writer", Decimal("4"), timedelta(minutes=5))
        assert held.granted
        execution = routed(conn)
        complete_execution(conn, execution, "success", cost_usd=Decimal("1"))
    with database.tenant_transaction(tenants.beta) as conn:
        # Beta's reservation never touches Alpha's windows (Beta has none open).
        mine = budgets.reserve(conn, "writer", Decimal("5"), timedelta(minutes=5))
        assert mine.granted and mine.refused_scope is None
        for table in ("budget_reservations WHERE id <> %s", "resource_system_usage", "budget_alerts"):
            params = (mine.reservation_id,) if "%s" in table else ()
            assert conn.execute(f"SELECT count(*) FROM {table}", params).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM resources").fetchone() == (0,)
    for call in (budgets.settle, budgets.release):
        args = (Decimal("0"),) if call is budgets.settle else ()
        with (
            pytest.raises(ExecutionError, match="no budget reservation"),
            database.tenant_transaction(tenants.beta) as c,
        ):
            call(c, held.reservation_id, *args)
    with database.tenant_transaction(tenants.beta) as conn:
        assert budgets.expire_reservations(conn) == 0
        # Pointing an execution at Alpha's reservation fails like an id that does not exist.
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="is not a budget_reservations row of this tenant"):
            conn.execute(
                "INSERT INTO executions (system_name, user_request, governance_check, status, budget_reservation_id) "
                "VALUES ('writer', 'x', '{}', 'partial', %s)",
                (held.reservation_id,),
            )
    with database.tenant_transaction(tenants.alpha) as conn:
        assert conn.execute("SELECT reserved FROM resources WHERE id = %s", (alpha_window,)).fetchone() == (4,)


def test_the_windows_asset_logic_opens_current_and_next_windows_once(database, tenants) -> None:
    now = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    with database.tenant_transaction(tenants.alpha) as conn:
        conn.execute(
            "INSERT INTO resources (resource_type, window_type, window_start, window_end, total_budget) "
            "VALUES ('usd_budget', 'daily', '2026-03-30', '2026-03-31', 40)"
        )
        opened = budgets.open_windows(conn, tenants.alpha, now)
        again = budgets.open_windows(conn, tenants.alpha, now)
    assert [(w.window_type, w.window_start.date().isoformat(), w.total_budget) for w in opened] == [
        ("daily", "2026-03-31", 40),
        ("daily", "2026-04-01", 40),
        ("monthly", "2026-03-01", Decimal("1000.00")),
        ("monthly", "2026-04-01", Decimal("1000.00")),
    ]
    assert again == []


@pytest.fixture
def acme(fresh_db):
    with fresh_db.database() as db:
        world.build(db)
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows())
        learn_rules_full(db, world.ACME, "hashing@1", "hashing")
        world.rewrite_completed_costs(fresh_db, 0)  # the history's spend is not this test's
        yield db


def test_the_router_reserves_falls_back_when_refused_and_refuses_clearly(acme) -> None:
    with acme.tenant_transaction(world.ACME) as conn:
        monthly = conn.execute(
            "INSERT INTO resources (resource_type, window_type, window_start, window_end, total_budget, system_quotas) "
            "VALUES ('usd_budget', 'monthly', now() - interval '1 day', now() + interval '1 day', 100, %s) RETURNING id",
            (world.Jsonb({"payroll-bot": {"usd_budget": 0.015}}),),
        ).fetchone()[0]
    first = route(acme, world.ACME, "run payroll for March", HashingEmbedder(), dry_run=False)
    second = route(acme, world.ACME, "run payroll for March", HashingEmbedder(), dry_run=False)
    assert (first.system_name, second.system_name) == ("payroll-bot", "generalist")
    assert second.fallbacks[-1].startswith("over budget: payroll-bot's monthly quota")
    with acme.tenant_transaction(world.ACME) as conn:
        linked = conn.execute(
            "SELECT e.system_name, b.system_name, b.estimate_usd, e.routing_rule_id IS NOT NULL, "
            "e.constitution_hash IS NOT NULL FROM executions e JOIN budget_reservations b "
            "ON b.id = e.budget_reservation_id ORDER BY e.started_at"
        ).fetchall()
        assert linked == [
            # the rule's average cost for its own skill; the skill's own average for the alternative
            ("payroll-bot", "payroll-bot", Decimal("0.0100"), True, True),
            ("generalist", "generalist", Decimal("0.05"), True, True),
        ]
        conn.execute("UPDATE resources SET total_budget = 0.02 WHERE id = %s", (monthly,))
    with pytest.raises(
        budgets.BudgetRefusedError,
        match="no budget for this request: clay-consigliere: the tenant's monthly USD budget",
    ):
        route(acme, world.ACME, "run payroll for March", HashingEmbedder(), dry_run=False)
    with acme.tenant_transaction(world.ACME) as conn:
        assert conn.execute("SELECT count(*) FROM budget_reservations").fetchone() == (2,)
