"""Completion and rating: once, through the SQL functions every client calls, enforced by triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from clay_pipelines.governance import budgets
from clay_pipelines.governance.completion import ExecutionError, complete_execution, rate_execution
from tests.governance_world import routed, two_tenants, window


@pytest.fixture
def tenants(fresh_db):
    return two_tenants(fresh_db)


def test_completing_records_the_outcome_and_twice_with_the_same_values_is_a_no_op(database, tenants) -> None:
    done_at = datetime.now(UTC)
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
        first = complete_execution(
            conn, execution, "success", output={"text": "memo"}, cost_usd=Decimal("0.25"), completed_at=done_at
        )
        again = complete_execution(
            conn, execution, "success", output={"text": "memo"}, cost_usd=Decimal("0.250"), completed_at=done_at
        )
        omitted_time = complete_execution(conn, execution, "success", output={"text": "memo"}, cost_usd=Decimal("0.25"))
        row = conn.execute(
            "SELECT status, output_data, cost_usd, completed_at FROM executions WHERE id = %s", (execution,)
        ).fetchone()
    assert (first.changed, again.changed, omitted_time.changed) == (True, False, False)
    assert row == ("success", {"text": "memo"}, Decimal("0.25"), done_at)


def test_completing_again_with_other_values_is_refused_and_changes_nothing(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
        complete_execution(conn, execution, "success", cost_usd=Decimal("0.25"))
    with pytest.raises(ExecutionError, match="already completed"), database.tenant_transaction(tenants.alpha) as conn:
        complete_execution(conn, execution, "failed", cost_usd=Decimal("0.25"))
    with database.tenant_transaction(tenants.alpha) as conn:
        assert conn.execute("SELECT status FROM executions WHERE id = %s", (execution,)).fetchone() == ("success",)


def test_the_trigger_refuses_a_direct_update_of_a_completed_outcome(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
        complete_execution(conn, execution, "success", output={"text": "memo"}, cost_usd=Decimal("0.25"))
    for change in ("cost_usd = 0", "status = 'failed'", "completed_at = NULL", "output_data = '{\"x\": 1}'"):
        with pytest.raises(psycopg.Error, match="is final"), database.tenant_transaction(tenants.alpha) as conn:
            conn.execute(f"UPDATE executions SET {change} WHERE id = %s", (execution,))
    # A lifecycle tombstone clears content columns: allowed.
    with database.tenant_transaction(tenants.alpha) as conn:
        conn.execute("UPDATE executions SET output_data = NULL, user_request = '' WHERE id = %s", (execution,))


def test_bad_completions_are_refused_with_a_clear_error(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn, started=datetime.now(UTC))
    cases = [
        ({"status": "done"}, "is not one of"),
        ({"status": "success", "cost_usd": Decimal("-1")}, "negative"),
        ({"status": "success", "completed_at": datetime.now(UTC) - timedelta(days=1)}, "before the execution started"),
    ]
    for outcome, message in cases:
        status = outcome.pop("status")
        with pytest.raises(ExecutionError, match=message), database.tenant_transaction(tenants.alpha) as conn:
            complete_execution(conn, execution, status, **outcome)


def test_another_tenants_execution_is_not_found(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
    with pytest.raises(ExecutionError, match="no execution"), database.tenant_transaction(tenants.beta) as conn:
        complete_execution(conn, execution, "success")
    with pytest.raises(ExecutionError, match="no execution"), database.tenant_transaction(tenants.beta) as conn:
        rate_execution(conn, execution, 5)


def test_completion_settles_the_reservation_once(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        window_id = window(conn, "10")
        held = budgets.reserve(conn, "writer", Decimal("2"), timedelta(minutes=5))
        execution = routed(conn)
        conn.execute("UPDATE executions SET budget_reservation_id = %s WHERE id = %s", (held.reservation_id, execution))
        assert conn.execute("SELECT used, reserved FROM resources WHERE id = %s", (window_id,)).fetchone() == (0, 2)
        done = complete_execution(conn, execution, "success", cost_usd=Decimal("1.5"))
        again = complete_execution(conn, execution, "success", cost_usd=Decimal("1.5"))
        assert budgets.settle(conn, held.reservation_id, Decimal("1.5")) is False
        figures = conn.execute("SELECT used, reserved FROM resources WHERE id = %s", (window_id,)).fetchone()
    assert (done.reservation_settled, again.reservation_settled) == (True, False)
    assert figures == (Decimal("1.5"), Decimal("0"))


def test_the_sql_function_is_what_any_client_calls(fresh_db, tenants) -> None:
    """A client in another language: plain SQL as clay_app, the tenant set for the transaction."""
    with psycopg.connect(fresh_db.app_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenants.alpha),))
        execution = routed(conn)
        row = conn.execute(
            "SELECT * FROM clay_complete_execution(%s, 'success', %s, 0.1)", (execution, Jsonb({"ok": True}))
        ).fetchone()
        assert row == (execution, True, False)
        assert conn.execute("SELECT clay_rate_execution(%s, 4, 'good')", (execution,)).fetchone() == (True,)


def test_a_rating_is_given_once_and_only_on_a_completed_execution(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
    with pytest.raises(ExecutionError, match="not completed"), database.tenant_transaction(tenants.alpha) as conn:
        rate_execution(conn, execution, 5)
    with database.tenant_transaction(tenants.alpha) as conn:
        complete_execution(conn, execution, "success")
        assert rate_execution(conn, execution, 4, "clear") is True
        assert rate_execution(conn, execution, 4, "clear") is False
    with pytest.raises(ExecutionError, match="rated 4 stars"), database.tenant_transaction(tenants.alpha) as conn:
        rate_execution(conn, execution, 2, "changed my mind")
    with pytest.raises(psycopg.Error, match="rating is given once"), database.tenant_transaction(tenants.alpha) as conn:
        conn.execute("UPDATE executions SET user_satisfaction = 1 WHERE id = %s", (execution,))
    with pytest.raises(ExecutionError, match="1 to 5"), database.tenant_transaction(tenants.alpha) as conn:
        rate_execution(conn, execution, 6)


def test_an_arm_decision_may_still_block_a_completed_execution_awaiting_it(database, tenants) -> None:
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = routed(conn)
        conn.execute(
            "UPDATE executions SET governance_check = %s WHERE id = %s",
            (Jsonb({"requires_approval": True, "approved_by": None}), execution),
        )
        complete_execution(conn, execution, "success")
        conn.execute(
            "UPDATE executions SET status = 'governance_blocked', governance_check = governance_check || %s "
            "WHERE id = %s",
            (Jsonb({"decision": "rejected", "rejected_by": "boss@alpha.test"}), execution),
        )
        assert conn.execute("SELECT status FROM executions WHERE id = %s", (execution,)).fetchone() == (
            "governance_blocked",
        )
