"""The ledger writes executions and tool calls in the caller's transaction and tenant."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from clay_pipelines.platform.ledger import ExecutionRecord, ToolCall, log_execution, log_tool_call


@pytest.fixture
def alpha(fresh_db):
    with fresh_db.admin() as conn:
        return conn.execute("INSERT INTO tenants (name) VALUES ('Alpha') RETURNING id").fetchone()[0]


def test_an_execution_is_written_as_given_in_the_callers_tenant(database, alpha) -> None:
    started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with database.tenant_transaction(alpha) as conn:
        execution_id = log_execution(
            conn,
            ExecutionRecord(
                system_id=None,
                system_name="memvid",
                user_request="remember this",
                status="success",
                governance_check={"requires_approval": False},
                input_data={"a": 1},
                started_at=started,
                completed_at=datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC),
                cost_usd=Decimal("0.0125"),
            ),
        )
        row = conn.execute(
            "SELECT tenant_id, system_name, status, input_data, output_data, duration_ms, cost_usd, routing_path "
            "FROM executions WHERE id = %s",
            (execution_id,),
        ).fetchone()
    assert row == (alpha, "memvid", "success", {"a": 1}, None, 2000, Decimal("0.0125"), [])


def test_a_failed_transaction_leaves_no_execution_and_no_tool_call(database, alpha) -> None:
    with pytest.raises(RuntimeError), database.tenant_transaction(alpha) as conn:
        log_execution(
            conn,
            ExecutionRecord(system_id=None, system_name="x", user_request="y", status="partial", governance_check={}),
        )
        log_tool_call(
            conn, ToolCall(server_name="s", tool_name="t", input_data={}, execution_time_ms=1.0, success=True)
        )
        raise RuntimeError("the work failed")
    with database.tenant_transaction(alpha) as conn:
        assert conn.execute(
            "SELECT (SELECT count(*) FROM executions), (SELECT count(*) FROM mcp_telemetry_log)"
        ).fetchone() == (0, 0)


def test_a_tool_call_is_written_with_its_latency_rounded(database, alpha) -> None:
    with database.tenant_transaction(alpha) as conn:
        log_tool_call(
            conn,
            ToolCall(
                server_name="domicile-governance",
                tool_name="process_payroll_pdf",
                input_data={"file": "a.pdf"},
                execution_time_ms=12.345,
                success=False,
                error_message="encrypted",
            ),
        )
        row = conn.execute(
            "SELECT tenant_id, server_name, tool_name, input_data, execution_time_ms, success, error_message "
            "FROM mcp_telemetry_log"
        ).fetchone()
    assert row == (
        alpha,
        "domicile-governance",
        "process_payroll_pdf",
        {"file": "a.pdf"},
        Decimal("12.3"),
        False,
        "encrypted",
    )
