"""The schema is the specification's: every column, type, nullability, default, CHECK, generated
column, foreign key and UNIQUE, introspected from pg_catalog and compared with a table of
expectations written from platform-schema.md. Additions are listed separately and explicitly."""

from __future__ import annotations

import re
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

NOW = "now()"
UUID4 = "uuid_generate_v4()"
TENANT_DEFAULT = "clay_current_tenant()"  # addition: rows default to the transaction's tenant
LIFECYCLE = ["HOT", "WARM", "COLD", "ARCHIVED", "PRUNED"]

# (column, type, NOT NULL, default as PostgreSQL prints it, generation expression or None)
EXPECTED_COLUMNS: dict[str, list[tuple[str, str, bool, str | None, str | None]]] = {
    "tenants": [
        ("id", "uuid", True, UUID4, None),
        ("name", "text", True, None, None),
        ("domain", "text", False, None, None),
        ("subscription_tier", "text", False, "'starter'::text", None),
        ("max_users", "integer", False, "10", None),
        ("max_monthly_budget", "numeric", False, "1000.00", None),
        ("created_at", "timestamp with time zone", False, NOW, None),
        ("is_active", "boolean", False, "true", None),
    ],
    "systems": [
        ("id", "uuid", True, UUID4, None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),
        ("name", "text", True, None, None),
        ("type", "text", True, None, None),
        ("description", "text", False, None, None),
        ("version", "text", False, "'1.0.0'::text", None),
        ("capabilities", "text[]", False, "'{}'::text[]", None),
        ("capabilities_embedding", "vector", False, None, None),
        ("capabilities_embedding_model", "text", False, None, None),  # addition
        ("constitution", "jsonb", True, None, None),
        ("total_executions", "integer", False, "0", None),
        ("successful_executions", "integer", False, "0", None),
        ("avg_cost_usd", "numeric", False, "0", None),
        ("avg_execution_time_ms", "integer", False, "0", None),
        ("avg_user_satisfaction", "numeric", False, None, None),
        ("deployment_type", "text", False, None, None),
        ("endpoint_url", "text", False, None, None),
        ("api_key_required", "boolean", False, "true", None),
        ("depends_on", "uuid[]", False, "'{}'::uuid[]", None),
        ("reverse_dependencies", "uuid[]", False, "'{}'::uuid[]", None),
        ("status", "text", False, "'active'::text", None),
        ("lifecycle_state", "text", False, "'HOT'::text", None),
        ("last_accessed_at", "timestamp with time zone", False, NOW, None),
        ("access_count", "integer", False, "0", None),
        ("created_at", "timestamp with time zone", False, NOW, None),
        ("updated_at", "timestamp with time zone", False, NOW, None),
        ("created_by", "text", False, None, None),
        ("documentation_url", "text", False, None, None),
        ("github_repo", "text", False, None, None),
    ],
    "executions": [
        ("id", "uuid", True, UUID4, None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),
        ("system_id", "uuid", False, None, None),
        ("system_name", "text", True, None, None),
        ("user_request", "text", True, None, None),
        ("request_embedding", "vector", False, None, None),
        ("request_embedding_model", "text", False, None, None),  # addition
        ("routing_path", "uuid[]", False, "'{}'::uuid[]", None),
        ("routing_confidence", "numeric", False, None, None),
        ("input_data", "jsonb", False, None, None),
        ("output_data", "jsonb", False, None, None),
        ("governance_check", "jsonb", True, None, None),
        ("status", "text", True, None, None),
        ("error_message", "text", False, None, None),
        ("started_at", "timestamp with time zone", False, NOW, None),
        ("completed_at", "timestamp with time zone", False, None, None),
        ("duration_ms", "integer", False, None, "(EXTRACT(epoch FROM (completed_at - started_at)) * (1000)::numeric)"),
        ("cost_usd", "numeric", False, None, None),
        ("user_satisfaction", "integer", False, None, None),
        ("user_feedback", "text", False, None, None),
        ("should_retry_with_different_path", "boolean", False, "false", None),
        ("suggested_improvements", "jsonb", False, None, None),
        ("receipt_signature", "text", False, None, None),
        ("lifecycle_state", "text", False, "'HOT'::text", None),
        ("last_accessed_at", "timestamp with time zone", False, NOW, None),
        ("access_count", "integer", False, "0", None),
        ("routing_propensity", "numeric", False, None, None),  # addition: the logging policy's probability
        ("request_embedding_compact", "halfvec", False, None, None),  # addition: lifecycle (WARM, COLD)
        ("archive_id", "uuid", False, None, None),  # addition: lifecycle (ARCHIVED, PRUNED)
        ("content_erased_at", "timestamp with time zone", False, None, None),  # addition: erasure on request
        # additions (019): the execution path
        ("routing_rule_id", "uuid", False, None, None),
        ("constitution_hash", "text", False, None, None),
        ("budget_reservation_id", "uuid", False, None, None),
        ("receipt_hash", "text", False, None, None),
        ("receipt_previous_hash", "text", False, None, None),
        ("receipt_key_id", "text", False, None, None),
        ("receipt_seq", "bigint", False, None, None),
        ("receipt_signed_at", "timestamp with time zone", False, None, None),
    ],
    "routing_rules": [
        ("id", "uuid", True, UUID4, None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),
        ("request_pattern", "text", True, None, None),
        ("request_embedding", "vector", False, None, None),
        ("request_embedding_model", "text", False, None, None),  # addition
        ("recommended_system_id", "uuid", False, None, None),
        ("alternative_systems", "uuid[]", False, "'{}'::uuid[]", None),
        ("based_on_executions", "integer", False, "0", None),
        ("success_rate", "numeric", False, None, None),
        ("avg_cost_usd", "numeric", False, None, None),
        ("avg_duration_ms", "integer", False, None, None),
        ("confidence_score", "numeric", True, None, None),
        ("last_validated", "timestamp with time zone", False, NOW, None),
        ("created_at", "timestamp with time zone", False, NOW, None),
        ("auto_generated", "boolean", False, "true", None),
        ("created_by", "text", False, None, None),
        ("is_active", "boolean", False, "true", None),
        ("member_similarity", "numeric", False, None, None),  # addition
        ("similarity_floor", "numeric", False, None, None),  # addition
        ("last_used_at", "timestamp with time zone", False, None, None),  # addition
        ("times_used", "integer", True, "0", None),  # addition
        ("updated_at", "timestamp with time zone", False, NOW, None),  # addition
        ("deactivated_at", "timestamp with time zone", False, None, None),  # addition
        ("deactivation_reason", "text", False, None, None),  # addition
    ],
    "dreams": [
        ("id", "uuid", True, UUID4, None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),
        ("system_id", "uuid", False, None, None),
        ("system_name", "text", True, None, None),
        ("cycle_id", "text", True, None, None),
        ("mutations", "jsonb", True, None, None),
        ("test_input", "jsonb", False, None, None),
        ("normal_output", "jsonb", False, None, None),
        ("dream_output", "jsonb", False, None, None),
        ("outcome", "jsonb", True, None, None),
        ("promoted_to_production", "boolean", False, "false", None),
        ("promoted_at", "timestamp with time zone", False, None, None),
        ("dreamed_at", "timestamp with time zone", False, NOW, None),
        ("dream_duration_ms", "integer", False, None, None),
        # additions: the natural key, the decision's state, its promotion and approval, the night
        ("mutation_hash", "text", False, None, None),
        ("status", "text", False, None, None),
        ("approved_by", "text", False, None, None),
        ("approved_at", "timestamp with time zone", False, None, None),
        ("amendment_id", "uuid", False, None, None),
        ("pending_amendment_id", "uuid", False, None, None),
        ("night", "date", False, None, None),
        ("evaluation_only", "boolean", True, "false", None),
    ],
    "constitutional_amendments": [
        ("id", "uuid", True, UUID4, None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),
        ("system_id", "uuid", False, None, None),
        ("system_name", "text", True, None, None),
        ("amendment_type", "text", True, None, None),
        ("old_constitution", "jsonb", True, None, None),
        ("new_constitution", "jsonb", True, None, None),
        ("diff", "jsonb", False, None, None),
        ("evidence", "jsonb", False, None, None),
        ("approved_by", "text", True, None, None),
        ("approved_at", "timestamp with time zone", False, NOW, None),
        ("can_rollback", "boolean", False, "true", None),
        ("rolled_back_at", "timestamp with time zone", False, None, None),
        # additions: order, identity of both sides, who proposed, what a rollback undid
        ("seq", "bigint", True, None, None),
        ("old_hash", "text", False, None, None),
        ("new_hash", "text", False, None, None),
        ("proposed_by", "text", False, None, None),
        ("rollback_of", "uuid", False, None, None),
    ],
    "resources": [
        ("id", "uuid", True, UUID4, None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),
        ("resource_type", "text", True, None, None),
        ("window_type", "text", True, None, None),
        ("window_start", "timestamp with time zone", True, None, None),
        ("window_end", "timestamp with time zone", True, None, None),
        ("total_budget", "numeric", True, None, None),
        ("used", "numeric", False, "0", None),
        ("reserved", "numeric", False, "0", None),
        ("available", "numeric", False, None, "((total_budget - used) - reserved)"),
        ("system_quotas", "jsonb", False, "'{}'::jsonb", None),
        ("alert_threshold", "numeric", False, "0.80", None),
        ("alert_sent", "boolean", False, "false", None),
        ("created_at", "timestamp with time zone", False, NOW, None),
        ("updated_at", "timestamp with time zone", False, NOW, None),
    ],
    "payroll_entries": [
        ("id", "uuid", True, "gen_random_uuid()", None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),  # addition
        ("employee_id", "text", True, None, None),
        ("employee_name", "text", False, None, None),
        ("date", "date", True, None, None),
        ("amount", "numeric", True, None, None),
        ("reference", "text", False, None, None),
        ("source_file", "text", True, None, None),
        ("created_at", "timestamp with time zone", False, NOW, None),
        ("updated_at", "timestamp with time zone", False, NOW, None),
        # additions: the file version and line an entry came from, and what was printed
        ("document_id", "uuid", False, None, None),
        ("line_no", "integer", False, None, None),
        ("currency", "text", False, None, None),
        ("page", "integer", False, None, None),
        ("printed_name", "text", False, None, None),
        ("printed_employee_id", "text", False, None, None),
        ("resolution", "jsonb", False, None, None),
    ],
    "mcp_telemetry_log": [
        ("id", "uuid", True, "gen_random_uuid()", None),
        ("tenant_id", "uuid", False, TENANT_DEFAULT, None),  # addition
        ("server_name", "text", True, None, None),
        ("tool_name", "text", True, None, None),
        ("input_data", "jsonb", False, None, None),
        ("execution_time_ms", "numeric", False, None, None),
        ("success", "boolean", False, None, None),
        ("error_message", "text", False, None, None),
        ("timestamp", "timestamp with time zone", False, NOW, None),
    ],
}

# (table, column) -> allowed values, or (low, high) for BETWEEN checks
EXPECTED_CHECKS: dict[tuple[str, str], list[str] | tuple[int, int]] = {
    ("tenants", "subscription_tier"): ["starter", "pro", "enterprise"],
    ("systems", "type"): ["agent", "product", "component", "utility"],
    ("systems", "deployment_type"): ["n8n", "fastapi", "vercel", "lambda", "local"],
    ("systems", "status"): ["active", "deprecated", "maintenance", "archived"],
    ("systems", "lifecycle_state"): LIFECYCLE,
    ("executions", "status"): ["success", "failed", "partial", "timeout", "governance_blocked"],
    ("executions", "user_satisfaction"): (1, 5),
    ("executions", "lifecycle_state"): LIFECYCLE,
    ("routing_rules", "confidence_score"): (0, 1),
    ("constitutional_amendments", "amendment_type"): [
        "dream_promotion",
        "manual_update",
        "governance_tightening",
        "capability_expansion",
    ],
    ("resources", "resource_type"): ["llm_tokens", "compute_hours", "api_calls", "storage_gb", "usd_budget"],
    ("resources", "window_type"): ["hourly", "daily", "weekly", "monthly"],
    # additions
    ("executions", "routing_propensity"): "a probability or NULL",
    ("dreams", "status"): [
        "skipped",
        "rejected",
        "inconclusive",
        "not_selected",
        "promotable",
        "promoted",
        "pending_approval",
        "declined",
        "stale",
    ],
}

EXPECTED_FOREIGN_KEYS = {(table, "tenant_id", "tenants") for table in EXPECTED_COLUMNS if table != "tenants"} | {
    ("executions", "system_id", "systems"),
    ("routing_rules", "recommended_system_id", "systems"),
    ("dreams", "system_id", "systems"),
    ("constitutional_amendments", "system_id", "systems"),
    ("payroll_entries", "document_id", "payroll_documents"),  # addition
    ("constitutional_amendments", "rollback_of", "constitutional_amendments"),  # addition
    ("dreams", "amendment_id", "constitutional_amendments"),  # addition
    ("dreams", "pending_amendment_id", "pending_amendments"),  # addition
    ("executions", "archive_id", "lifecycle_archives"),  # addition: lifecycle
    ("executions", "routing_rule_id", "routing_rules"),  # addition
    ("executions", "budget_reservation_id", "budget_reservations"),  # addition
    ("executions", "receipt_key_id", "receipt_keys"),  # addition
}
EXPECTED_UNIQUE = {("tenants", "domain"), ("systems", "name")}


@pytest.fixture
def admin(fresh_db) -> psycopg.Connection:
    with fresh_db.admin() as conn:
        yield conn


def test_every_table_has_exactly_the_specified_columns(admin: psycopg.Connection) -> None:
    rows = admin.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
               CASE WHEN a.attgenerated = 's' THEN pg_get_expr(d.adbin, d.adrelid) END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
        """,
        (list(EXPECTED_COLUMNS),),
    ).fetchall()
    actual: dict[str, list[tuple]] = {}
    for table, *column in rows:
        actual.setdefault(table, []).append(tuple(column))
    for table, expected in EXPECTED_COLUMNS.items():
        assert actual.get(table) == expected, f"columns of {table} differ from the specification"


def test_primary_keys_are_id(admin: psycopg.Connection) -> None:
    rows = admin.execute(
        """
        SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE contype = 'p' AND connamespace = 'public'::regnamespace AND conrelid::regclass::text = ANY(%s)
        """,
        (list(EXPECTED_COLUMNS),),
    ).fetchall()
    assert dict(rows) == {table: "PRIMARY KEY (id)" for table in EXPECTED_COLUMNS}


def _check_constraints(admin: psycopg.Connection) -> dict[tuple[str, str], list[str] | tuple[int, int]]:
    found: dict[tuple[str, str], list[str] | tuple[int, int]] = {}
    for table, definition in admin.execute(
        """
        SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE contype = 'c' AND connamespace = 'public'::regnamespace AND conrelid::regclass::text = ANY(%s)
        """,
        (list(EXPECTED_COLUMNS),),
    ):
        if match := re.match(r"CHECK \(\((\w+) = ANY \(ARRAY\[(.*)\]\)\)\)", definition):
            found[(table, match[1])] = re.findall(r"'([^']*)'::text", match[2])
        elif match := re.match(
            r"CHECK \(\(\((\w+) >= \(?(\d+)\)?(?:::numeric)?\) AND \(\1 <= \(?(\d+)\)?(?:::numeric)?\)\)\)", definition
        ):
            found[(table, match[1])] = (int(match[2]), int(match[3]))
        elif match := re.match(
            r"CHECK \(\(\((\w+) IS NULL\) OR \(\(\1 > \(0\)::numeric\) AND \(\1 <= \(1\)::numeric\)\)\)\)", definition
        ):
            found[(table, match[1])] = "a probability or NULL"
        else:
            raise AssertionError(f"unexpected CHECK on {table}: {definition}")
    return found


def test_check_constraints_allow_exactly_the_specified_values(admin: psycopg.Connection) -> None:
    assert _check_constraints(admin) == EXPECTED_CHECKS


def test_foreign_keys_and_unique_constraints(admin: psycopg.Connection) -> None:
    foreign = {
        (table, column, referenced)
        for table, column, referenced in admin.execute(
            """
            SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text
            FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
              AND c.conrelid::regclass::text = ANY(%s)
            """,
            (list(EXPECTED_COLUMNS),),
        )
    }
    assert foreign == EXPECTED_FOREIGN_KEYS
    unique = {
        (table, column)
        for table, column in admin.execute(
            """
            SELECT c.conrelid::regclass::text, a.attname
            FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'u' AND c.connamespace = 'public'::regnamespace
              AND c.conrelid::regclass::text = ANY(%s)
            """,
            (list(EXPECTED_COLUMNS),),
        )
    }
    assert unique == EXPECTED_UNIQUE


def test_extensions_and_uuid_function(admin: psycopg.Connection) -> None:
    extensions = {name for (name,) in admin.execute("SELECT extname FROM pg_extension")}
    assert "vector" in extensions
    version = admin.execute("SELECT uuid_generate_v4()::text").fetchone()[0]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", version)


def test_indexes_needed_by_tenancy_and_monitoring(admin: psycopg.Connection) -> None:
    indexes = dict(admin.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall())
    # A btree index leading with tenant_id on every tenant table.
    for table in EXPECTED_COLUMNS:
        if table == "tenants":
            continue
        assert any(f" ON public.{table} USING btree (tenant_id" in definition for definition in indexes.values()), (
            f"{table} has no index leading with tenant_id"
        )
    expected_definitions = [
        "ON public.executions USING btree (started_at, status)",
        'ON public.mcp_telemetry_log USING btree (server_name, tool_name, "timestamp")',
        "ON public.payroll_entries USING btree (tenant_id, source_file)",
        "ON public.payroll_entries USING btree (tenant_id, date)",
        "ON public.dreams USING btree (dreamed_at)",
        "ON public.resources USING btree (tenant_id, resource_type, window_type, window_start, window_end)",
    ]
    for fragment in expected_definitions:
        assert any(fragment in d for d in indexes.values()), fragment
    # HNSW cosine indexes on the embedding columns that are searched, one per embedder, over a
    # dimension cast; executions are never searched by vector, so they carry none (migration 015).
    for table, column in (
        ("routing_rules", "request_embedding"),
        ("systems", "capabilities_embedding"),
    ):
        hnsw = [d for d in indexes.values() if f"ON public.{table} USING hnsw" in d]
        assert any(f"(({column})::vector(1536)) vector_cosine_ops" in d and "'hashing@1'" in d for d in hnsw)
        assert any(f"(({column})::vector(384)) vector_cosine_ops" in d and "'minilm@1'" in d for d in hnsw)
    assert not [d for d in indexes.values() if "ON public.executions USING hnsw" in d]


@pytest.mark.parametrize(
    ("table", "column", "bad_value"),
    [
        ("executions", "status", "done"),
        ("executions", "user_satisfaction", 6),
        ("executions", "user_satisfaction", 0),
        ("executions", "lifecycle_state", "FROZEN"),
        ("routing_rules", "confidence_score", Decimal("1.5")),
        ("routing_rules", "confidence_score", Decimal("-0.1")),
        ("constitutional_amendments", "amendment_type", "whim"),
        ("systems", "type", "robot"),
        ("systems", "deployment_type", "heroku"),
        ("resources", "resource_type", "gpu_hours"),
        ("resources", "window_type", "yearly"),
        ("tenants", "subscription_tier", "platinum"),
    ],
)
def test_check_constraints_reject_bad_values(admin: psycopg.Connection, table, column, bad_value) -> None:
    tenant = admin.execute("INSERT INTO tenants (name) VALUES ('T') RETURNING id").fetchone()[0]
    system = admin.execute(
        "INSERT INTO systems (tenant_id, name, type, constitution) VALUES (%s, 's', 'agent', '{}') RETURNING id",
        (tenant,),
    ).fetchone()[0]
    valid_rows = {
        "executions": {
            "tenant_id": tenant,
            "system_name": "s",
            "user_request": "r",
            "governance_check": "{}",
            "status": "success",
        },
        "routing_rules": {"tenant_id": tenant, "request_pattern": "p", "confidence_score": Decimal("0.5")},
        "constitutional_amendments": {
            "tenant_id": tenant,
            "system_id": system,
            "system_name": "s",
            "amendment_type": "manual_update",
            "old_constitution": "{}",
            "new_constitution": "{}",
            "approved_by": "x",
        },
        "systems": {"tenant_id": tenant, "name": "s2", "type": "agent", "constitution": "{}"},
        "resources": {
            "tenant_id": tenant,
            "resource_type": "usd_budget",
            "window_type": "daily",
            "window_start": "2026-01-01",
            "window_end": "2026-01-02",
            "total_budget": 10,
        },
        "tenants": {"name": "U"},
    }
    row = dict(valid_rows[table])

    def insert(values: dict) -> None:
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        )
        admin.execute(statement, list(values.values()))

    # The valid row is accepted...
    with admin.transaction(force_rollback=True):
        insert(row)
    # ...and the same row with the bad value is refused by a CHECK constraint.
    with pytest.raises(psycopg.errors.CheckViolation):
        insert({**row, column: bad_value})


def test_generated_columns_compute(admin: psycopg.Connection) -> None:
    tenant = admin.execute("INSERT INTO tenants (name) VALUES ('T') RETURNING id").fetchone()[0]
    duration = admin.execute(
        """
        INSERT INTO executions (tenant_id, system_name, user_request, governance_check, status, started_at, completed_at)
        VALUES (%s, 's', 'r', '{}', 'success', '2026-01-28 15:30:00+00', '2026-01-28 15:30:02.345+00')
        RETURNING duration_ms
        """,
        (tenant,),
    ).fetchone()[0]
    assert duration == 2345
    available = admin.execute(
        """
        INSERT INTO resources (tenant_id, resource_type, window_type, window_start, window_end, total_budget, used, reserved)
        VALUES (%s, 'usd_budget', 'monthly', '2026-01-01', '2026-02-01', 1000.0, 340.5, 120.0)
        RETURNING available
        """,
        (tenant,),
    ).fetchone()[0]
    assert available == Decimal("539.5")
    # Generated columns cannot be written directly.
    with pytest.raises(psycopg.errors.GeneratedAlways):
        admin.execute("UPDATE resources SET available = 1 WHERE tenant_id = %s", (tenant,))
