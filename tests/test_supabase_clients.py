"""The platform's other programs reach their tenant's rows through the Supabase API (PostgREST), and
nothing else. Every request here is run the way PostgREST runs one: a transaction that does
`SET LOCAL ROLE authenticated` (or anon), `set_config('request.jwt.claims', '<claims json>', true)`,
then the statement; the statements are the specification's integration points."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.payroll import approval, delivery
from clay_pipelines.routing.embeddings import HashingEmbedder
from clay_pipelines.routing.rule_store import learn_rules_full, learn_rules_incremental
from tests import routing_world as world

SHARED_SYSTEM = uuid.UUID("00000000-0000-4000-8000-000000000001")
MODEL = "hashing@1"


def claims(tenant: uuid.UUID | None, email: str = "router@alpha.com") -> dict:
    """A Supabase access token's payload; the tenant in app_metadata, where only the service key can put it."""
    payload: dict = {"sub": str(uuid.uuid5(uuid.NAMESPACE_URL, email)), "role": "authenticated", "email": email}
    payload["app_metadata"] = {"provider": "email"} | ({"tenant_id": str(tenant)} if tenant else {})
    return payload


@contextmanager
def api_request(url: str, token: dict | None, role: str = "authenticated") -> Iterator[psycopg.Connection]:
    """One PostgREST request: one transaction, the role and the verified claims set transaction-locally."""
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            if token is not None:
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(token),))
            yield conn


@pytest.fixture
def tenants(fresh_db) -> tuple[uuid.UUID, uuid.UUID]:
    with fresh_db.admin() as conn:
        a = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Alpha', 'alpha.com') RETURNING id").fetchone()[0]
        b = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Beta', 'beta.com') RETURNING id").fetchone()[0]
        conn.execute(
            "INSERT INTO systems (id, tenant_id, name, type, constitution) VALUES (%s, NULL, 'shared', 'agent', '{}')",
            (SHARED_SYSTEM,),
        )
    return a, b


def _seed(db: Database, tenant: uuid.UUID, label: str) -> dict[str, uuid.UUID]:
    """One row of the tenant in every table a client may read, written by this project's own role."""
    with db.tenant_transaction(tenant) as conn:
        system = conn.execute(
            "INSERT INTO systems (name, type, constitution) VALUES (%s, 'agent', '{}') RETURNING id", (f"{label}-own",)
        ).fetchone()[0]
        execution = conn.execute(
            "INSERT INTO executions (system_id, system_name, user_request, status, governance_check) "
            "VALUES (%s, 'shared', %s, 'success', '{}') RETURNING id",
            (SHARED_SYSTEM, label),
        ).fetchone()[0]
        conn.execute("INSERT INTO mcp_telemetry_log (server_name, tool_name) VALUES ('srv', %s)", (label,))
        conn.execute(
            "INSERT INTO routing_rules (request_pattern, recommended_system_id, confidence_score) VALUES (%s, %s, 0.9)",
            (label, SHARED_SYSTEM),
        )
        conn.execute(
            "INSERT INTO resources (resource_type, window_type, window_start, window_end, total_budget) "
            "VALUES ('usd_budget', 'monthly', '2026-01-01', '2026-02-01', 100)"
        )
        document = conn.execute(
            "INSERT INTO payroll_documents (source_file, content_hash, version, status) "
            "VALUES (%s, 'h', 1, 'extracted') RETURNING id",
            (f"{label}.pdf",),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO payroll_entries (employee_id, date, amount, source_file, document_id, line_no) "
            "VALUES ('1', '2026-01-01', 10, %s, %s, 1)",
            (f"{label}.pdf", document),
        )
    return {"system": system, "execution": execution}


READABLE = {
    "tenants": "name",
    "systems": "name",
    "executions": "user_request",
    "mcp_telemetry_log": "tool_name",
    "routing_rules": "request_pattern",
    "payroll_documents": "source_file",
    "payroll_entries": "source_file",
    "resources": "resource_type || ':' || tenant_id",
}


def _visible(conn: psycopg.Connection) -> dict[str, list]:
    return {
        table: sorted(r[0] for r in conn.execute(f"SELECT {column} FROM {table}"))  # type: ignore[arg-type]
        for table, column in READABLE.items()
    }


# -- isolation ------------------------------------------------------------------------------------


def test_the_claims_of_a_tenant_see_that_tenant_only(fresh_db, database, tenants) -> None:
    alpha, beta = tenants
    _seed(database, alpha, "alpha")
    _seed(database, beta, "beta")
    with api_request(fresh_db.admin_url, claims(alpha)) as conn:
        assert conn.execute("SELECT current_user, public.clay_current_tenant()").fetchone() == ("authenticated", alpha)
        assert _visible(conn) == {
            "tenants": ["Alpha"],
            "systems": ["alpha-own", "shared"],
            "executions": ["alpha"],
            "mcp_telemetry_log": ["alpha"],
            "routing_rules": ["alpha"],
            "payroll_documents": ["alpha.pdf"],
            "payroll_entries": ["alpha.pdf"],
            "resources": [f"usd_budget:{alpha}"],
        }


@pytest.mark.parametrize("token", ["no claims at all", "claims without a tenant", "a tenant that is not a uuid"])
def test_a_request_without_a_tenant_claim_sees_nothing_and_writes_nothing(fresh_db, database, tenants, token) -> None:
    alpha, _ = tenants
    _seed(database, alpha, "alpha")
    payload = {"no claims at all": None, "claims without a tenant": claims(None)}.get(token, claims(alpha))
    if token == "a tenant that is not a uuid":
        payload["app_metadata"]["tenant_id"] = "alpha.com"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation), api_request(fresh_db.admin_url, payload) as conn:
            conn.execute("SELECT count(*) FROM executions")
        return
    with api_request(fresh_db.admin_url, payload) as conn:
        assert _visible(conn) == {table: [] for table in READABLE}
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        api_request(fresh_db.admin_url, payload) as conn,
    ):
        conn.execute("INSERT INTO mcp_telemetry_log (server_name, tool_name) VALUES ('srv', 'nobody')")


def test_anon_gets_nothing(fresh_db, database, tenants) -> None:
    alpha, _ = tenants
    _seed(database, alpha, "alpha")
    with fresh_db.admin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
                "AND relowner = 'clay_owner'::regrole ORDER BY relname"
            )
        ]
        granted = conn.execute(
            "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'anon'"
        ).fetchone()[0]
        granted += conn.execute(
            "SELECT count(*) FROM information_schema.role_column_grants WHERE grantee = 'anon'"
        ).fetchone()[0]
    assert len(tables) > 20 and granted == 0
    # Even anon holding a tenant's claims (it never does: PostgREST uses anon when there is no valid JWT).
    for table in tables:
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
            api_request(fresh_db.admin_url, claims(alpha), role="anon") as conn,
        ):
            conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"),
        api_request(fresh_db.admin_url, claims(alpha), role="anon") as conn,
    ):
        conn.execute("SELECT public.clay_current_tenant()")


def test_the_stand_in_roles_cannot_log_in_bypass_or_create_temporary_tables(fresh_db) -> None:
    with fresh_db.admin() as conn:
        assert conn.execute(
            "SELECT rolname, rolcanlogin, rolbypassrls, rolsuper, "
            "has_database_privilege(rolname, current_database(), 'TEMP') "
            "FROM pg_roles WHERE rolname IN ('anon', 'authenticated') ORDER BY rolname"
        ).fetchall() == [("anon", False, False, False, False), ("authenticated", False, False, False, False)]


def test_authenticated_holds_exactly_the_integration_points_grants(fresh_db) -> None:
    """Never DELETE or TRUNCATE, no UPDATE at all, INSERT only of the columns a client may state."""
    with fresh_db.admin() as conn:
        tables = dict(
            conn.execute(
                "SELECT table_name, array_agg(privilege_type::text ORDER BY privilege_type) "
                "FROM information_schema.role_table_grants WHERE grantee = 'authenticated' GROUP BY table_name"
            ).fetchall()
        )
        inserts = dict(
            conn.execute(
                "SELECT table_name, array_agg(column_name::text ORDER BY column_name) "
                "FROM information_schema.role_column_grants WHERE grantee = 'authenticated' "
                "AND privilege_type = 'INSERT' GROUP BY table_name"
            ).fetchall()
        )
        updates = conn.execute(
            "SELECT count(*) FROM information_schema.role_column_grants "
            "WHERE grantee = 'authenticated' AND privilege_type <> 'INSERT' "
            "AND privilege_type <> 'SELECT'"
        ).fetchone()[0]
    assert tables == {
        t: ["SELECT"]
        for t in (
            "budget_reservations", "executions", "mcp_telemetry_log", "payroll_documents", "payroll_entries",
            "resources", "routing_rules", "systems", "tenants",
        )
    }  # fmt: skip
    assert updates == 0
    assert set(inserts) == {"executions", "mcp_telemetry_log", "payroll_entries", "routing_rules"}
    assert "completed_at" not in inserts["executions"] and "receipt_signature" not in inserts["executions"]
    assert "cost_usd" not in inserts["executions"] and "request_embedding" not in inserts["executions"]
    assert inserts["payroll_entries"] == [
        "amount", "currency", "date", "employee_id", "employee_name", "reference", "source_file", "tenant_id",
    ]  # fmt: skip


@pytest.mark.parametrize("scope", ["transaction", "session"])
def test_app_tenant_id_cannot_move_a_request_out_of_its_claim(fresh_db, database, tenants, scope) -> None:
    """The claim wins: app.tenant_id is a custom setting anyone running SQL can set, the claims are what
    PostgREST wrote from the verified token."""
    alpha, beta = tenants
    _seed(database, alpha, "alpha")
    _seed(database, beta, "beta")
    local = scope == "transaction"
    with api_request(fresh_db.admin_url, claims(alpha)) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, %s)", (str(beta), local))
        assert conn.execute("SELECT public.clay_current_tenant()").fetchone() == (alpha,)
        assert _visible(conn)["executions"] == ["alpha"]
        conn.execute("INSERT INTO mcp_telemetry_log (server_name, tool_name) VALUES ('srv', 'landed')")
        assert conn.execute("SELECT tenant_id FROM mcp_telemetry_log WHERE tool_name = 'landed'").fetchone() == (alpha,)
    with api_request(fresh_db.admin_url, claims(alpha)) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, %s)", (str(beta), local))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO mcp_telemetry_log (tenant_id, server_name, tool_name) VALUES (%s, 'srv', 'x')", (beta,)
            )
    # Without claims, app.tenant_id still opens nothing to the API's roles.
    with api_request(fresh_db.admin_url, None) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(beta),))
        assert _visible(conn) == {table: [] for table in READABLE}


def test_this_projects_transactions_ignore_claims(fresh_db, database, tenants) -> None:
    """Claims left on a pooled connection cannot redirect the project's own tenant transactions."""
    alpha, beta = tenants
    _seed(database, alpha, "alpha")
    _seed(database, beta, "beta")
    with fresh_db.database(max_pool_size=1) as db:
        with db.tenant_transaction(alpha) as conn:
            conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps(claims(beta)),))
        with db.tenant_transaction(alpha) as conn:
            assert [r[0] for r in conn.execute("SELECT user_request FROM executions")] == ["alpha"]


CROSS_TENANT_WRITES = {
    "execution -> private system": (
        "INSERT INTO executions (system_id, system_name, user_request, status, governance_check) "
        "VALUES (%s, 'x', 'y', 'partial', '{}')"
    ),
    "execution path -> private system": (
        "INSERT INTO executions (system_name, user_request, status, governance_check, routing_path) "
        "VALUES ('x', 'y', 'partial', '{}', ARRAY[%s]::uuid[])"
    ),
    "rule -> private system": (
        "INSERT INTO routing_rules (request_pattern, confidence_score, recommended_system_id) VALUES ('x', 0.5, %s)"
    ),
    "rule alternatives -> private system": (
        "INSERT INTO routing_rules (request_pattern, confidence_score, alternative_systems) "
        "VALUES ('x', 0.5, ARRAY[%s]::uuid[])"
    ),
}


@pytest.mark.parametrize("case", sorted(CROSS_TENANT_WRITES))
def test_another_tenants_ids_are_refused_like_ids_that_do_not_exist(fresh_db, database, tenants, case) -> None:
    alpha, beta = tenants
    foreign = _seed(database, alpha, "alpha")["system"]
    statement = CROSS_TENANT_WRITES[case]
    with (
        pytest.raises(psycopg.errors.ForeignKeyViolation) as foreign_error,
        api_request(fresh_db.admin_url, claims(beta, "router@beta.com")) as conn,
    ):
        conn.execute(statement, (foreign,))  # type: ignore[arg-type]
    missing = uuid.uuid4()
    with (
        pytest.raises(psycopg.errors.ForeignKeyViolation) as missing_error,
        api_request(fresh_db.admin_url, claims(beta, "router@beta.com")) as conn,
    ):
        conn.execute(statement, (missing,))  # type: ignore[arg-type]
    assert str(foreign_error.value).replace(str(foreign), "ID") == str(missing_error.value).replace(str(missing), "ID")
    # The platform's skills may be referenced by every tenant.
    with api_request(fresh_db.admin_url, claims(beta, "router@beta.com")) as conn:
        conn.execute(statement, (SHARED_SYSTEM,))  # type: ignore[arg-type]


# -- Clay Router -> executions --------------------------------------------------------------------


def test_the_router_logs_an_execution_through_the_api(fresh_db, database, tenants) -> None:
    alpha, beta = tenants
    # The specification's insert, with the two NOT NULL columns it leaves out (status, system_name).
    with api_request(fresh_db.admin_url, claims(alpha)) as conn:
        row = conn.execute(
            "INSERT INTO executions (user_request, routing_path, routing_confidence, governance_check, status, "
            "system_name) VALUES (%s, %s, %s, %s, 'partial', 'shared') "
            "RETURNING tenant_id, routing_path, routing_confidence, governance_check, status, completed_at",
            ("Process payroll PDFs", [SHARED_SYSTEM], Decimal("0.91"), Jsonb({"requires_approval": True})),
        ).fetchone()
    assert row == (alpha, [SHARED_SYSTEM], Decimal("0.91"), {"requires_approval": True}, "partial", None)
    with api_request(fresh_db.admin_url, claims(beta, "router@beta.com")) as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)
    # Completion (status, cost, receipt) is not the client's to write.
    for statement, error in (
        (
            "INSERT INTO executions (system_name, user_request, status, governance_check) "
            "VALUES ('shared', 'x', 'success', '{}')",
            "row-level security",
        ),
        (
            "INSERT INTO executions (system_name, user_request, status, governance_check, completed_at, cost_usd) "
            "VALUES ('shared', 'x', 'partial', '{}', now(), 0.1)",
            "permission denied",
        ),
        ("UPDATE executions SET status = 'success', completed_at = now()", "permission denied"),
        ("DELETE FROM executions", "permission denied"),
    ):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match=error),
            api_request(fresh_db.admin_url, claims(alpha)) as conn,
        ):
            conn.execute(statement)  # type: ignore[arg-type]


def test_mcp_servers_log_tool_calls_through_the_api(fresh_db, tenants) -> None:
    alpha, _ = tenants
    with api_request(fresh_db.admin_url, claims(alpha, "payroll-mcp@alpha.com")) as conn:
        conn.execute(
            "INSERT INTO mcp_telemetry_log (server_name, tool_name, input_data, execution_time_ms, success) "
            "VALUES ('payroll', 'process_payroll_pdf', '{}', 812, true)"
        )
        assert conn.execute("SELECT tenant_id, tool_name FROM mcp_telemetry_log").fetchall() == [
            (alpha, "process_payroll_pdf")
        ]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("UPDATE mcp_telemetry_log SET success = false")


# -- Clay Router -> routing_rules ------------------------------------------------------------------


@pytest.fixture
def acme(fresh_db):
    with fresh_db.database() as db:
        world.build(db)
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows())
        world.add_executions(db, world.OTHER, world.email_rows(60))
        yield db


SPEC_VECTOR_QUERY = """
SELECT
  request_pattern,
  recommended_system_id,
  confidence_score,
  1 - (request_embedding <=> %(embedding)s::vector) as similarity
FROM routing_rules
WHERE is_active = true
ORDER BY request_embedding <=> %(embedding)s::vector
LIMIT 5
"""


def test_rules_the_router_writes_are_peoples_rules_the_learner_never_touches(fresh_db, acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    learn_rules_full(acme, world.OTHER, MODEL, "hashing")
    acme_token = claims(world.ACME, "ops@acme.test")
    embedding = HashingEmbedder().encode(["run payroll for March"])[0]
    # The specification's insert: it says auto_generated true; the database makes it a person's rule.
    with api_request(fresh_db.admin_url, acme_token) as conn:
        outside = conn.execute(
            "INSERT INTO routing_rules (request_pattern, request_embedding, recommended_system_id, confidence_score, "
            "auto_generated, created_by) VALUES ('run payroll for March', %s, %s, 0.97, true, 'routing-learner') "
            "RETURNING *",
            (embedding, world.SYSTEMS["generalist"]),
        ).fetchone()
        flags = conn.execute(
            "SELECT auto_generated, created_by, tenant_id FROM routing_rules WHERE request_pattern = %s",
            ("run payroll for March",),
        ).fetchone()
    assert flags == (False, "ops@acme.test", world.ACME)
    # The specification's vector query, as the router runs it: the tenant's own rules, nearest first.
    with api_request(fresh_db.admin_url, acme_token) as conn:
        nearest = conn.execute(SPEC_VECTOR_QUERY, {"embedding": embedding}).fetchall()
    assert nearest[0][:3] == ("run payroll for March", world.SYSTEMS["generalist"], Decimal("0.97"))
    assert round(nearest[0][3], 6) == 1.0
    assert {r[1] for r in nearest[1:]} == {world.SYSTEMS["payroll-bot"], world.SYSTEMS["writer"]}
    with api_request(fresh_db.admin_url, claims(world.OTHER, "ops@other.test")) as conn:
        other = conn.execute(SPEC_VECTOR_QUERY, {"embedding": embedding}).fetchall()
    assert [r[1] for r in other] == [world.SYSTEMS["writer"]]
    # The learner, full and incremental, leaves it exactly as written (it would retire a learned rule
    # with no embedder tag, or take it over as the payroll kind's rule).
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    world.add_executions(acme, world.ACME, world.payroll_rows(20, 0), days_ago=1)
    learn_rules_incremental(acme, world.ACME, MODEL, "hashing")
    with acme.tenant_transaction(world.ACME) as conn:
        register_vector(conn)
        assert conn.execute("SELECT * FROM routing_rules WHERE id = %s", (outside[0],)).fetchone() == outside


def test_a_client_cannot_change_or_delete_rules(fresh_db, acme) -> None:
    learn_rules_full(acme, world.ACME, MODEL, "hashing")
    for statement in ("UPDATE routing_rules SET is_active = false", "DELETE FROM routing_rules"):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
            api_request(fresh_db.admin_url, claims(world.ACME, "ops@acme.test")) as conn,
        ):
            conn.execute(statement)  # type: ignore[arg-type]


# -- domicile-governance MCP -> payroll_entries -----------------------------------------------------


def _spec_payroll_insert(conn: psycopg.Connection, employee_id: str, name: str, amount: str, pdf: str) -> uuid.UUID:
    """The specification's insert of the payroll MCP server."""
    return conn.execute(
        "INSERT INTO payroll_entries (employee_id, employee_name, date, amount, reference, source_file) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (employee_id, name, date(2026, 1, 15), amount, f"INV-{employee_id}", pdf),
    ).fetchone()[0]


@pytest.fixture
def directory(database, tenants) -> None:
    alpha, _ = tenants
    with database.tenant_transaction(alpha) as conn:
        conn.execute(
            "INSERT INTO employee_directory (employee_id, first_name, last_name) VALUES ('10001', 'Ana', 'Ruiz')"
        )


def test_payroll_entries_written_directly_wait_for_approval_and_the_outbox(
    fresh_db, database, tenants, directory
) -> None:
    alpha, _ = tenants
    token = claims(alpha, "payroll-mcp@alpha.com")
    with api_request(fresh_db.admin_url, token) as conn:
        known = _spec_payroll_insert(conn, "10001", "Ana Ruiz", "1250.00", "mcp-2026-01-15.pdf")
    with api_request(fresh_db.admin_url, token) as conn:  # a second request adds to the same file version
        unknown = _spec_payroll_insert(conn, "99999", "Zed Unknown", "80.50", "mcp-2026-01-15.pdf")
    with database.tenant_transaction(alpha) as conn:
        assert conn.execute(
            "SELECT version, status, template, approval_status, entry_count, total_amount FROM payroll_documents "
            "WHERE source_file = 'mcp-2026-01-15.pdf'"
        ).fetchall() == [(1, "extracted", "api", "awaiting", 2, Decimal("1330.50"))]
        assert conn.execute(
            "SELECT e.id, e.line_no, e.resolution, o.status, o.payload FROM payroll_entries e "
            "JOIN bamboohr_outbox o ON o.entry_id = e.id ORDER BY e.line_no"
        ).fetchall() == [
            (known, 1, {"method": "api", "by": "payroll-mcp@alpha.com", "resolved": True}, "awaiting_approval",
             {"employee_id": "10001", "date": "2026-01-15", "amount": "1250.00", "currency": None,
              "reference": "INV-10001"}),
            (unknown, 2, {"method": "api", "by": "payroll-mcp@alpha.com", "resolved": False}, "awaiting_review",
             {"employee_id": "99999", "date": "2026-01-15", "amount": "80.50", "currency": None,
              "reference": "INV-99999"}),
        ]  # fmt: skip
        assert conn.execute("SELECT entry_id, status, reason FROM payroll_review_queue").fetchall() == [
            (unknown, "open", "employee id 99999 is not in the tenant's directory")
        ]
        assert delivery.due_deliveries(conn)[0] == 0  # nothing reaches BambooHR before approval
        assert [(s.source_file, s.needs()) for s in approval.pending(conn)] == [
            ("mcp-2026-01-15.pdf", "approve or reject; resolve 1 name(s)")
        ]
        # The person's approval, as for a PDF: the resolved entry is released, the other waits for review.
        outcome = approval.decide_document(conn, "mcp-2026-01-15.pdf", "hr@alpha.com", approve=True)
        assert (outcome.deliveries_released, outcome.deliveries_waiting_for_review) == (1, 1)
        assert delivery.due_deliveries(conn)[0] == 1
    # An approved file takes no more entries: they would skip the approval.
    with (
        pytest.raises(
            psycopg.errors.UniqueViolation,
            match=r"already has version 1 \(written through the API, approval approved\)",
        ),
        api_request(fresh_db.admin_url, token) as conn,
    ):
        _spec_payroll_insert(conn, "10001", "Ana Ruiz", "1.00", "mcp-2026-01-15.pdf")


def test_direct_payroll_entries_cannot_join_a_pipeline_file_or_another_tenant(fresh_db, database, tenants) -> None:
    alpha, beta = tenants
    _seed(database, alpha, "alpha")  # alpha.pdf: a version from the inbox pipeline, awaiting approval
    with (
        pytest.raises(
            psycopg.errors.UniqueViolation,
            match=r"alpha\.pdf already has version 1 \(from the inbox, approval awaiting\)",
        ),
        api_request(fresh_db.admin_url, claims(alpha)) as conn,
    ):
        _spec_payroll_insert(conn, "1", "A", "5", "alpha.pdf")
    # Another tenant's file of the same name is invisible: Beta's entry starts Beta's own version.
    with api_request(fresh_db.admin_url, claims(beta, "mcp@beta.com")) as conn:
        _spec_payroll_insert(conn, "1", "A", "5", "alpha.pdf")
        assert conn.execute("SELECT tenant_id, version FROM payroll_documents").fetchall() == [(beta, 1)]
    refused = {
        "another tenant's id": (claims(alpha), "tenant_id", str(beta), psycopg.errors.InsufficientPrivilege),
        "its own document": (claims(alpha), "document_id", str(uuid.uuid4()), psycopg.errors.InsufficientPrivilege),
        "its own resolution": (claims(alpha), "resolution", '{"method": "exact"}', psycopg.errors.InsufficientPrivilege),
    }  # fmt: skip
    for case, (token, column, value, error) in refused.items():
        with pytest.raises(error), api_request(fresh_db.admin_url, token) as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO payroll_entries (employee_id, date, amount, source_file, {}) "
                    "VALUES ('1', '2026-01-01', 1, 'x.pdf', %s)"
                ).format(sql.Identifier(column)),
                (value,),
            )
            pytest.fail(case)
    # Guarded state is not the client's to write.
    for statement in (
        "UPDATE payroll_documents SET approval_status = 'approved'",
        "UPDATE payroll_entries SET amount = 1",
        "INSERT INTO bamboohr_outbox (entry_id, document_id, payload, status) "
        "SELECT e.id, e.document_id, '{}', 'pending' FROM payroll_entries e",
        "DELETE FROM payroll_entries",
    ):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
            api_request(fresh_db.admin_url, claims(alpha)) as conn,
        ):
            conn.execute(statement)  # type: ignore[arg-type]


def test_roles_that_bypass_row_level_security_cannot_skip_the_hold_either(fresh_db, database, tenants) -> None:
    alpha, _ = tenants
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="held for approval in the tenant of the request"),
        database.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn,
    ):
        conn.execute(
            "INSERT INTO payroll_entries (tenant_id, employee_id, date, amount, source_file) "
            "VALUES (%s, '1', '2026-01-01', 1, 'x.pdf')",
            (alpha,),
        )
    # This project's own tenant transaction writing an entry without a version: held the same way.
    with database.tenant_transaction(alpha) as conn:
        conn.execute(
            "INSERT INTO payroll_entries (employee_id, date, amount, source_file) VALUES ('1', '2026-01-01', 1, 'y.pdf')"
        )
        assert conn.execute("SELECT status FROM bamboohr_outbox").fetchall() == [("awaiting_review",)]


def test_supabases_default_grants_reach_neither_the_tables_nor_the_migration_ledger(empty_db) -> None:
    """On Supabase, what the migrating user (postgres) creates in public is granted to the API's roles by
    default. The tables belong to clay_owner, so those defaults do not reach them; the ledger, which the
    migrating user owns, is revoked."""
    with empty_db.admin() as conn:
        conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated")
    apply_migrations(empty_db.admin_url)
    with empty_db.admin() as conn:
        anon = conn.execute(
            "SELECT table_name FROM information_schema.role_table_grants WHERE grantee = 'anon'"
        ).fetchall()
        ledger = conn.execute(
            "SELECT has_table_privilege('authenticated', 'public.schema_migrations', 'SELECT, INSERT, UPDATE, DELETE')"
        ).fetchone()[0]
        deletable = conn.execute(
            "SELECT table_name FROM information_schema.role_table_grants "
            "WHERE grantee = 'authenticated' AND privilege_type IN ('DELETE', 'TRUNCATE', 'UPDATE')"
        ).fetchall()
    assert (anon, ledger, deletable) == ([], False, [])


def test_clients_reserve_complete_and_rate_through_the_functions_and_only_for_their_tenant(
    fresh_db, database, tenants
) -> None:
    alpha, beta = tenants
    with database.tenant_transaction(alpha) as conn:
        conn.execute(
            "INSERT INTO resources (resource_type, window_type, window_start, window_end, total_budget) "
            "VALUES ('usd_budget', 'monthly', date_trunc('month', now()), date_trunc('month', now()) + "
            "interval '1 month', 2)"
        )
    with api_request(fresh_db.admin_url, claims(alpha)) as conn:
        held, granted = conn.execute(
            "SELECT reservation_id, granted FROM clay_reserve_budget('shared', 1.5)"
        ).fetchone()
        refused = conn.execute("SELECT granted, refusal IS NOT NULL FROM clay_reserve_budget('shared', 1.0)").fetchone()
        execution = conn.execute(
            "INSERT INTO executions (user_request, status, system_name, governance_check, budget_reservation_id) "
            "VALUES ('summarise the board pack', 'partial', 'shared', '{}', %s) RETURNING id",
            (held,),
        ).fetchone()[0]
    assert granted is True and refused == (False, True)  # 1.5 + 1.0 would pass the $2 window
    for statement, args in (
        ("SELECT changed FROM clay_complete_execution(%s, 'success', NULL, NULL)", (execution,)),
        ("SELECT clay_settle_reservation(%s, 0.4)", (held,)),
        ("SELECT clay_rate_execution(%s, 5, NULL)", (execution,)),
    ):
        with (
            pytest.raises(psycopg.errors.NoDataFound),
            api_request(fresh_db.admin_url, claims(beta, "router@beta.com")) as conn,
        ):
            conn.execute(statement, args)  # another tenant's ids are not found
    with api_request(fresh_db.admin_url, claims(alpha)) as conn:
        completed = conn.execute(
            "SELECT changed, reservation_settled FROM clay_complete_execution(%s, 'success', '{}'::jsonb, 0.4)",
            (execution,),
        ).fetchone()
        again = conn.execute("SELECT clay_settle_reservation(%s, 0.4)", (held,)).fetchone()
        rated = conn.execute("SELECT clay_rate_execution(%s, 5, 'spot on')", (execution,)).fetchone()
    assert (completed, rated) == ((True, True), (True,))
    assert again == (False,)  # settled once, by the completion
    with database.tenant_transaction(alpha) as conn:
        assert conn.execute(
            "SELECT status, cost_usd, user_satisfaction, user_feedback FROM executions WHERE id = %s", (execution,)
        ).fetchone() == ("success", Decimal("0.4000"), 5, "spot on")
        assert conn.execute("SELECT used, reserved FROM resources").fetchone() == (Decimal("0.40"), Decimal("0.00"))
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        api_request(fresh_db.admin_url, claims(alpha)) as conn,
    ):
        conn.execute("SELECT clay_expire_reservations(10)")  # the sweeper is this project's, not a client's
