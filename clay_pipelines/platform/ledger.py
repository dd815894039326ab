"""The one writer of executions and mcp_telemetry_log rows.

Every domain that does work on a tenant's behalf records it here, in the caller's transaction (so
the record commits or rolls back with the work): the router logs a routed request, the payroll
pipeline logs a processed file and its tool calls. One place means one shape for the rows the
monitoring queries, the rollups, the learner and (later) the receipts read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True, kw_only=True)
class ExecutionRecord:
    """An executions row as the platform writes one. status 'partial' without completed_at is a
    request routed and not yet reported back (no evidence for the learner until it completes)."""

    system_id: UUID | None
    system_name: str
    user_request: str
    status: str
    governance_check: dict[str, Any]
    routing_path: list[UUID] = field(default_factory=list)
    routing_confidence: Decimal | None = None
    request_embedding: np.ndarray | None = None
    request_embedding_model: str | None = None
    input_data: dict[str, Any] | None = None
    output_data: dict[str, Any] | None = None
    error_message: str | None = None
    started_at: datetime | None = None  # default: now()
    completed_at: datetime | None = None
    cost_usd: Decimal | None = None
    routing_propensity: Decimal | None = None  # the probability the router's policy made this choice
    routing_rule_id: UUID | None = None  # the rule that chose the system, when one did
    constitution_hash: str | None = None  # the effective constitution the system runs under
    budget_reservation_id: UUID | None = None  # the budget held for the run; completion settles it


def log_execution(conn: psycopg.Connection, record: ExecutionRecord) -> UUID:
    """Insert the execution in the caller's transaction (and tenant); returns its id."""
    row = conn.execute(
        """
        INSERT INTO executions (system_id, system_name, user_request, request_embedding, request_embedding_model,
          routing_path, routing_confidence, input_data, output_data, governance_check, status, error_message,
          started_at, completed_at, cost_usd, routing_propensity, routing_rule_id, constitution_hash,
          budget_reservation_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), %s, %s, %s, %s, %s, %s)
        RETURNING id
        """,
        (
            record.system_id,
            record.system_name,
            record.user_request,
            record.request_embedding,
            record.request_embedding_model,
            record.routing_path,
            record.routing_confidence,
            _json(record.input_data),
            _json(record.output_data),
            Jsonb(record.governance_check),
            record.status,
            record.error_message,
            record.started_at,
            record.completed_at,
            record.cost_usd,
            record.routing_propensity,
            record.routing_rule_id,
            record.constitution_hash,
            record.budget_reservation_id,
        ),
    ).fetchone()
    assert row is not None
    return row[0]


def record_governance_decision(
    conn: psycopg.Connection, execution_id: UUID, decision: dict[str, Any], *, blocked: bool
) -> None:
    """A person's decision on a logged execution that required approval, merged into its
    governance_check; a blocked execution (rejected) takes the status governance_blocked."""
    conn.execute(
        "UPDATE executions SET governance_check = governance_check || %s, "
        "status = CASE WHEN %s THEN 'governance_blocked' ELSE status END WHERE id = %s",
        (Jsonb(decision), blocked, execution_id),
    )


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """An mcp_telemetry_log row: one call of an MCP server's tool."""

    server_name: str
    tool_name: str
    input_data: dict[str, Any]
    execution_time_ms: float
    success: bool
    error_message: str | None = None


def log_tool_call(conn: psycopg.Connection, call: ToolCall) -> None:
    """Insert the tool call in the caller's transaction (and tenant)."""
    conn.execute(
        "INSERT INTO mcp_telemetry_log (server_name, tool_name, input_data, execution_time_ms, success, error_message) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            call.server_name,
            call.tool_name,
            Jsonb(call.input_data),
            round(call.execution_time_ms, 1),
            call.success,
            call.error_message,
        ),
    )


def _json(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value)
