"""The second line of defence around row-level security: tenant identity, references between tenant
rows, session state on pooled connections, and bounds on how long a transaction may wait or run."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from clay_pipelines.db import Database, MaintenanceJob, UnknownTenantError

SHARED_SYSTEM = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.fixture
def tenants(fresh_db) -> tuple[uuid.UUID, uuid.UUID]:
    """Alpha and Beta, a platform-wide skill, and Alpha's private skill, execution and payroll rows."""
    with fresh_db.admin() as conn:
        a = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Alpha', 'alpha.com') RETURNING id").fetchone()[0]
        b = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Beta', 'beta.com') RETURNING id").fetchone()[0]
        conn.execute(
            "INSERT INTO systems (id, tenant_id, name, type, constitution) VALUES (%s, NULL, 'shared', 'agent', '{}')",
            (SHARED_SYSTEM,),
        )
    return a, b


def _alpha_rows(db: Database, alpha: uuid.UUID) -> dict[str, uuid.UUID]:
    with db.tenant_transaction(alpha) as conn:
        system = conn.execute(
            "INSERT INTO systems (name, type, constitution) VALUES ('alpha-private', 'agent', '{}') RETURNING id"
        ).fetchone()[0]
        execution = conn.execute(
            "INSERT INTO executions (system_id, system_name, user_request, status, governance_check) "
            "VALUES (%s, 'shared', 'hello', 'success', '{}') RETURNING id",
            (SHARED_SYSTEM,),
        ).fetchone()[0]
        document = conn.execute(
            "INSERT INTO payroll_documents (source_file, content_hash, version, status) "
            "VALUES ('a.pdf', 'h', 1, 'extracted') RETURNING id"
        ).fetchone()[0]
        entry = conn.execute(
            "INSERT INTO payroll_entries (employee_id, date, amount, source_file, document_id) "
            "VALUES ('1', '2026-01-01', 10, 'a.pdf', %s) RETURNING id",
            (document,),
        ).fetchone()[0]
        rule = conn.execute(
            "INSERT INTO routing_rules (request_pattern, recommended_system_id, confidence_score) "
            "VALUES ('hello', %s, 0.9) RETURNING id",
            (SHARED_SYSTEM,),
        ).fetchone()[0]
    return {"system": system, "execution": execution, "document": document, "entry": entry, "rule": rule}


# -- identity ---------------------------------------------------------------------------------------


def test_a_tenant_cannot_change_its_identity_or_plan(database, tenants) -> None:
    alpha, _ = tenants
    for assignment in ("name = 'beta.com'", "domain = 'beta.com'", "subscription_tier = 'enterprise'",
                       "max_monthly_budget = 1e9", "max_users = 100000"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege), database.tenant_transaction(alpha) as conn:
            conn.execute(f"UPDATE tenants SET {assignment}")  # type: ignore[arg-type]
    with database.tenant_transaction(alpha) as conn:
        assert conn.execute("SELECT name, domain FROM tenants").fetchall() == [("Alpha", "alpha.com")]


@pytest.mark.parametrize(
    ("name", "domain"),
    [("beta.com", "gamma.com"), ("Gamma", "BETA"), ("BETA.COM", None), ("gamma", "Beta.Com")],
)
def test_no_tenant_may_take_another_tenants_name_or_domain(fresh_db, tenants, name, domain) -> None:
    with fresh_db.admin() as conn:
        conn.execute("UPDATE tenants SET name = 'Beta' WHERE domain = 'beta.com'")  # its own name: fine
        with pytest.raises(psycopg.errors.UniqueViolation, match="already used by another tenant"):
            conn.execute("INSERT INTO tenants (name, domain) VALUES (%s, %s)", (name, domain))
        with pytest.raises(psycopg.errors.UniqueViolation, match="already used by another tenant"):
            conn.execute("UPDATE tenants SET name = %s, domain = %s WHERE name = 'Alpha'", (name, domain))


def test_tenant_references_resolve_to_exactly_one_tenant(fresh_db, database, tenants) -> None:
    alpha, beta = tenants
    assert database.resolve_tenant("ALPHA.com") == alpha
    assert database.resolve_tenant("beta") == beta
    # Rows written before the identity rule existed may still clash: the lookup refuses to guess.
    with fresh_db.admin() as conn:
        conn.execute("ALTER TABLE tenants DISABLE TRIGGER tenant_identity_is_unique")
        conn.execute("INSERT INTO tenants (name, domain) VALUES ('alpha.com', 'other.com')")
    with pytest.raises(UnknownTenantError, match=r"'alpha\.com' is ambiguous"):
        database.resolve_tenant("alpha.com")
    with pytest.raises(UnknownTenantError, match=r"unknown tenant 'nobody\.com'"):
        database.resolve_tenant("nobody.com")


# -- references between tenant rows ---------------------------------------------------------------

CROSS_TENANT_WRITES = {
    "review queue -> entry": (
        "INSERT INTO payroll_review_queue (entry_id, printed_name, reason) VALUES (%s, 'x', 'y')",
        "entry",
    ),
    "outbox -> entry": (
        "INSERT INTO bamboohr_outbox (entry_id, document_id, payload) "
        "SELECT %s, (SELECT id FROM payroll_documents LIMIT 1), '{}'",
        "entry",
    ),
    "document -> execution": (
        "INSERT INTO payroll_documents (source_file, content_hash, version, status, execution_id) "
        "VALUES ('b.pdf', 'h', 1, 'extracted', %s)",
        "execution",
    ),
    "entry -> document": (
        "INSERT INTO payroll_entries (employee_id, date, amount, source_file, document_id) "
        "VALUES ('1', '2026-01-01', 1, 'b.pdf', %s)",
        "document",
    ),
    "membership -> execution": (
        "INSERT INTO routing_memberships (execution_id, rule_id, similarity, embedding_model) "
        "SELECT %s, (SELECT id FROM routing_rules LIMIT 1), 0.9, 'hashing@1'",
        "execution",
    ),
    "prototype -> rule": (
        "INSERT INTO routing_rule_prototypes (rule_id, ordinal, embedding, embedding_model, members) "
        "VALUES (%s, 0, '[1,0]', 'hashing@1', 1)",
        "rule",
    ),
    "execution -> private system": (
        "INSERT INTO executions (system_id, system_name, user_request, status, governance_check) "
        "VALUES (%s, 'x', 'y', 'success', '{}')",
        "system",
    ),
    "execution path -> private system": (
        "INSERT INTO executions (system_name, user_request, status, governance_check, routing_path) "
        "VALUES ('x', 'y', 'success', '{}', ARRAY[%s]::uuid[])",
        "system",
    ),
    "rule alternatives -> private system": (
        "INSERT INTO routing_rules (request_pattern, confidence_score, alternative_systems) "
        "VALUES ('x', 0.5, ARRAY[%s]::uuid[])",
        "system",
    ),
}


def _beta_fixtures(db: Database, beta: uuid.UUID) -> None:
    """Beta's own rows that the writes above need beside the foreign id."""
    with db.tenant_transaction(beta) as conn:
        document = conn.execute(
            "INSERT INTO payroll_documents (source_file, content_hash, version, status) "
            "VALUES ('own.pdf', 'h', 1, 'extracted') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO payroll_entries (employee_id, date, amount, source_file, document_id) "
            "VALUES ('2', '2026-01-01', 1, 'own.pdf', %s)",
            (document,),
        )
        conn.execute("INSERT INTO routing_rules (request_pattern, confidence_score) VALUES ('own', 0.5)")


@pytest.mark.parametrize("case", sorted(CROSS_TENANT_WRITES))
def test_references_between_tenant_rows_stay_inside_the_tenant(database, tenants, case) -> None:
    alpha, beta = tenants
    foreign = _alpha_rows(database, alpha)
    _beta_fixtures(database, beta)
    statement, target = CROSS_TENANT_WRITES[case]
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as foreign_error, database.tenant_transaction(beta) as conn:
        conn.execute(statement, (foreign[target],))  # type: ignore[arg-type]
    # An id that exists nowhere fails the same way: the error does not tell Beta that Alpha has it.
    missing = uuid.uuid4()
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as missing_error, database.tenant_transaction(beta) as conn:
        conn.execute(statement, (missing,))  # type: ignore[arg-type]
    assert str(foreign_error.value).replace(str(foreign[target]), "ID") == str(missing_error.value).replace(
        str(missing), "ID"
    )


def test_a_tenants_rows_may_reference_its_own_and_shared_rows(database, tenants) -> None:
    alpha, _ = tenants
    own = _alpha_rows(database, alpha)
    with database.tenant_transaction(alpha) as conn:
        conn.execute(
            "INSERT INTO payroll_review_queue (entry_id, printed_name, reason) VALUES (%s, 'x', 'y')", (own["entry"],)
        )
        conn.execute(
            "INSERT INTO executions (system_id, system_name, user_request, status, governance_check, routing_path) "
            "VALUES (%s, 'alpha-private', 'y', 'success', '{}', ARRAY[%s, %s]::uuid[])",
            (own["system"], SHARED_SYSTEM, own["system"]),
        )
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (2,)


def test_the_maintenance_role_cannot_cross_tenants_either(database, tenants) -> None:
    alpha, beta = tenants
    foreign = _alpha_rows(database, alpha)
    with (
        pytest.raises(psycopg.errors.ForeignKeyViolation, match="is not a payroll_entries row of this tenant"),
        database.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn,
    ):
        conn.execute(
            "INSERT INTO payroll_review_queue (tenant_id, entry_id, printed_name, reason) VALUES (%s, %s, 'x', 'y')",
            (beta, foreign["entry"]),
        )


def test_moving_a_row_to_another_tenant_is_checked_too(fresh_db, database, tenants) -> None:
    alpha, beta = tenants
    foreign = _alpha_rows(database, alpha)
    with (
        pytest.raises(psycopg.errors.ForeignKeyViolation),
        database.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn,
    ):
        conn.execute("UPDATE payroll_entries SET tenant_id = %s WHERE id = %s", (beta, foreign["entry"]))


# -- pooled connections ---------------------------------------------------------------------------


def test_session_settings_do_not_survive_into_the_next_user_of_a_connection(fresh_db, tenants) -> None:
    alpha, _ = tenants
    with fresh_db.database(max_pool_size=1) as db:
        _alpha_rows(db, alpha)
        with db.tenant_transaction(alpha) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(alpha),))  # session level
            conn.execute("SELECT set_config('statement_timeout', '1ms', false)")
            conn.execute("PREPARE leftover AS SELECT 1")
        with db.unscoped_transaction() as conn:
            assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)
            assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in ("", None)
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'leftover'").fetchone() == (
                0,
            )
            conn.execute("SELECT pg_sleep(0.01)")  # no 1 ms statement_timeout left behind


@pytest.mark.parametrize("via", ["app login", "role switch over the owner's connection"])
def test_the_application_role_cannot_create_temporary_tables(fresh_db, tenants, via) -> None:
    alpha, _ = tenants
    app_url = fresh_db.app_url if via == "app login" else fresh_db.admin_url
    with Database(app_url, fresh_db.maintenance_url) as db:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant_transaction(alpha) as conn:
            conn.execute("CREATE TEMP TABLE executions (LIKE public.executions)")
        with db.tenant_transaction(alpha) as conn:
            assert conn.execute("SELECT current_setting('search_path')").fetchone()[0].endswith("pg_temp")


def test_a_temporary_table_left_on_a_connection_cannot_capture_writes(fresh_db, tenants) -> None:
    """Where TEMP cannot be revoked (a managed server), pg_temp last on the search_path and the reset on
    return still keep a temporary table from standing in for a real one."""
    alpha, beta = tenants
    with fresh_db.admin() as conn:
        # A server where the migration could not take TEMP away.
        conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO clay_app").format(sql.Identifier(fresh_db.name)))
    with fresh_db.database(max_pool_size=1) as db:
        with db.tenant_transaction(alpha) as conn:
            conn.execute("CREATE TEMP TABLE mcp_telemetry_log (LIKE public.mcp_telemetry_log)")
            conn.execute("INSERT INTO mcp_telemetry_log (server_name, tool_name) VALUES ('s', 'in-transaction')")
            assert conn.execute("SELECT count(*) FROM public.mcp_telemetry_log").fetchone() == (1,)
        with db.tenant_transaction(beta) as conn:
            conn.execute("INSERT INTO mcp_telemetry_log (server_name, tool_name) VALUES ('s', 'beta')")
        with db.tenant_transaction(beta) as conn:
            assert conn.execute("SELECT tool_name FROM public.mcp_telemetry_log").fetchall() == [("beta",)]


# -- time limits ----------------------------------------------------------------------------------


def test_every_transaction_sets_its_time_limits(database, tenants, monkeypatch) -> None:
    alpha, _ = tenants
    monkeypatch.setenv("CLAY_TENANT_LOCK_TIMEOUT", "3s")
    monkeypatch.setenv("CLAY_MAINTENANCE_STATEMENT_TIMEOUT", "2h")
    query = (
        "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
        "current_setting('idle_in_transaction_session_timeout'), current_setting('transaction_timeout')"
    )
    with database.tenant_transaction(alpha) as conn:
        assert conn.execute(query).fetchone() == ("3s", "15min", "5min", "1h")
    with database.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        assert conn.execute(query).fetchone() == ("1min", "2h", "10min", "4h")
    with database.unscoped_transaction() as conn:
        assert conn.execute(query).fetchone()[0] == "3s"


def test_a_tenant_holding_a_table_lock_does_not_block_others_for_ever(fresh_db, tenants, monkeypatch) -> None:
    alpha, beta = tenants
    monkeypatch.setenv("CLAY_TENANT_LOCK_TIMEOUT", "200ms")
    monkeypatch.setenv("CLAY_TENANT_TRANSACTION_TIMEOUT", "2s")
    locked = threading.Event()
    outcome: list[BaseException] = []

    def hold_the_lock() -> None:
        try:
            with fresh_db.database() as db, db.tenant_transaction(alpha) as conn:
                conn.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
                locked.set()
                conn.execute("SELECT pg_sleep(5)")
        except psycopg.Error as error:
            outcome.append(error)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert locked.wait(10)
    with fresh_db.database() as db:
        with pytest.raises(psycopg.errors.LockNotAvailable), db.tenant_transaction(beta) as conn:
            conn.execute("SELECT count(*) FROM executions")
        holder.join(10)
        assert len(outcome) == 1  # the server ended the lock holder's transaction at its timeout
        with db.tenant_transaction(beta) as conn:
            assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)


def test_platform_skills_do_not_list_a_tenants_systems_as_dependents(database, tenants) -> None:
    from clay_pipelines.routing.registry import rollup_shared_systems, rollup_tenant_systems

    alpha, beta = tenants
    with database.tenant_transaction(alpha) as conn:
        private = conn.execute(
            "INSERT INTO systems (name, type, constitution, depends_on) "
            "VALUES ('alpha-private', 'agent', '{}', ARRAY[%s]::uuid[]) RETURNING id",
            (SHARED_SYSTEM,),
        ).fetchone()[0]
    rollup_shared_systems(database)
    rollup_tenant_systems(database, alpha)
    with database.tenant_transaction(beta) as conn:
        assert conn.execute("SELECT reverse_dependencies FROM systems WHERE id = %s", (SHARED_SYSTEM,)).fetchone() == (
            [],
        )
    with database.tenant_transaction(alpha) as conn:
        assert conn.execute("SELECT depends_on FROM systems WHERE id = %s", (private,)).fetchone() == ([SHARED_SYSTEM],)
