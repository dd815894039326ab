"""Tenant isolation is enforced by PostgreSQL itself: row-level security, roles, transaction-local tenant."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from clay_pipelines import settings
from clay_pipelines.db import Database, MaintenanceJob, TenantRequiredError, UnknownTenantError

TENANT_TABLES = list(settings.TENANT_TABLES)


@pytest.fixture
def two_tenants(fresh_db) -> tuple[uuid.UUID, uuid.UUID]:
    with fresh_db.admin() as conn:
        a = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Alpha', 'alpha.com') RETURNING id").fetchone()[0]
        b = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Beta', 'beta.com') RETURNING id").fetchone()[0]
    return a, b


def _telemetry(conn: psycopg.Connection, tool: str) -> None:
    conn.execute("INSERT INTO mcp_telemetry_log (server_name, tool_name) VALUES ('srv', %s)", (tool,))


def test_every_table_with_tenant_data_has_forced_row_level_security(fresh_db) -> None:
    with fresh_db.admin() as conn:
        tables_with_tenant = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND column_name = 'tenant_id'"
            )
        }
        flags = dict(
            (name, (rls, forced))
            for name, rls, forced in conn.execute(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            )
        )
    assert set(TENANT_TABLES) <= tables_with_tenant  # the nine, and every table added since
    for table in [*tables_with_tenant, "tenants"]:
        assert flags[table] == (True, True), table


def test_application_role_is_unprivileged_and_owns_nothing(fresh_db) -> None:
    with fresh_db.admin() as conn:
        superuser, bypass = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'clay_app'"
        ).fetchone()
        owned = conn.execute(
            """
            SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
                 + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
                 + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
                 + (SELECT count(*) FROM pg_type WHERE typowner = r.oid)
            FROM pg_roles r WHERE r.rolname = 'clay_app'
            """
        ).fetchone()[0]
        table_owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'executions'").fetchone()[0]
        maintenance_bypass = conn.execute(
            "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'clay_maintenance'"
        ).fetchone()[0]
    assert (superuser, bypass, owned) == (False, False, 0)
    assert table_owner == "clay_owner"
    assert maintenance_bypass is True


def test_no_tenant_set_sees_nothing_and_cannot_insert(fresh_db, two_tenants) -> None:
    a, _ = two_tenants
    with fresh_db.database() as db:
        with db.tenant_transaction(a) as conn:
            _telemetry(conn, "mine")
        with db.unscoped_transaction() as conn:
            for table in [*TENANT_TABLES, "tenants"]:
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            db.unscoped_transaction() as conn,
        ):
            _telemetry(conn, "nobody")
    # Even a raw connection as the application role, with no tenant setting at all.
    with psycopg.connect(fresh_db.app_url) as raw:
        assert raw.execute("SELECT count(*) FROM mcp_telemetry_log").fetchone()[0] == 0


def test_tenant_cannot_read_update_delete_or_insert_for_another(fresh_db, two_tenants) -> None:
    a, b = two_tenants
    with fresh_db.database() as db:
        with db.tenant_transaction(b) as conn:
            _telemetry(conn, "b-tool")
        with db.tenant_transaction(a) as conn:
            _telemetry(conn, "a-tool")
            assert conn.execute("SELECT tool_name FROM mcp_telemetry_log").fetchall() == [("a-tool",)]
            assert (
                conn.execute(
                    "UPDATE mcp_telemetry_log SET success = false WHERE tool_name = 'b-tool' RETURNING id"
                ).fetchall()
                == []
            )
            assert (
                conn.execute("DELETE FROM mcp_telemetry_log WHERE tool_name = 'b-tool' RETURNING id").fetchall() == []
            )
            assert conn.execute("SELECT id FROM tenants").fetchall() == [(a,)]
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            db.tenant_transaction(a) as conn,
        ):
            conn.execute(
                "INSERT INTO mcp_telemetry_log (tenant_id, server_name, tool_name) VALUES (%s, 's', 't')", (b,)
            )
        # Moving one's own row to another tenant is refused too.
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            db.tenant_transaction(a) as conn,
        ):
            conn.execute("UPDATE mcp_telemetry_log SET tenant_id = %s", (b,))
        with db.tenant_transaction(b) as conn:
            assert conn.execute("SELECT tool_name, success FROM mcp_telemetry_log").fetchall() == [("b-tool", None)]


def test_rows_default_to_the_transactions_tenant(fresh_db, two_tenants) -> None:
    a, _ = two_tenants
    with fresh_db.database() as db, db.tenant_transaction(a) as conn:
        _telemetry(conn, "defaulted")
        assert conn.execute("SELECT tenant_id FROM mcp_telemetry_log").fetchone()[0] == a


def test_tenant_setting_does_not_survive_into_the_next_transaction(fresh_db, two_tenants) -> None:
    a, _ = two_tenants
    with Database(fresh_db.app_url, fresh_db.maintenance_url, max_pool_size=1) as db:
        with db.tenant_transaction(a) as conn:
            first_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            _telemetry(conn, "x")
        with db.unscoped_transaction() as conn:
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first_pid  # same pooled connection
            assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in ("", None)
            assert conn.execute("SELECT count(*) FROM mcp_telemetry_log").fetchone()[0] == 0


def test_role_switch_over_an_owner_connection_is_transaction_local(fresh_db, two_tenants) -> None:
    """With only DATABASE_URL (external mode) the app role is switched to inside each transaction."""
    a, _ = two_tenants
    with Database(fresh_db.admin_url, fresh_db.admin_url, max_pool_size=1) as db:
        with db.tenant_transaction(a) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "clay_app"
            _telemetry(conn, "x")
        with db.unscoped_transaction() as conn:
            assert conn.execute("SELECT count(*) FROM mcp_telemetry_log").fetchone()[0] == 0
        pool = db._pool("app")
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"


def test_shared_skills_are_readable_by_tenants_but_not_writable(fresh_db, two_tenants) -> None:
    a, _ = two_tenants
    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO systems (name, type, constitution) VALUES ('shared-skill', 'agent', '{}')")
    with fresh_db.database() as db:
        with db.tenant_transaction(a) as conn:
            assert conn.execute("SELECT name FROM systems").fetchall() == [("shared-skill",)]
            assert conn.execute("UPDATE systems SET description = 'x' RETURNING id").fetchall() == []
        with db.unscoped_transaction() as conn:
            assert conn.execute("SELECT count(*) FROM systems").fetchone()[0] == 0


def test_resolve_tenant_by_name_domain_and_id(fresh_db, two_tenants) -> None:
    a, b = two_tenants
    with fresh_db.database() as db:
        assert db.resolve_tenant("Alpha") == a
        assert db.resolve_tenant("beta.com") == b
        assert db.resolve_tenant(str(a)) == a
        with pytest.raises(UnknownTenantError, match="unknown tenant 'Gamma'"):
            db.resolve_tenant("Gamma")
        with pytest.raises(UnknownTenantError, match="unknown tenant"):
            db.resolve_tenant(str(uuid.uuid4()))
        with pytest.raises(TenantRequiredError), db.tenant_transaction(None):  # type: ignore[arg-type]
            pass
        with pytest.raises(TenantRequiredError), db.tenant_transaction("Alpha"):  # type: ignore[arg-type]
            pass


def test_maintenance_role_is_for_named_jobs_and_sees_all_tenants(fresh_db, two_tenants) -> None:
    a, b = two_tenants
    with fresh_db.database() as db:
        for tenant in (a, b):
            with db.tenant_transaction(tenant) as conn:
                _telemetry(conn, str(tenant))
        with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
            assert conn.execute("SELECT count(*) FROM mcp_telemetry_log").fetchone()[0] == 2
            assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "clay:platform_analytics"
        with (
            pytest.raises(ValueError, match="not a maintenance job"),
            db.maintenance_transaction("prune_everything"),  # type: ignore[arg-type]
        ):
            pass
        assert db.tenant_ids() == [a, b]
