"""The pipelines' and the router's connections through a real PgBouncer in transaction-pooling mode.

A server connection is lent for one transaction at a time, so everything that scopes a transaction
(role, tenant, limits, search_path) must be transaction-local and no server-side prepared statement
may be made. Pools of one server connection make two clients share it, transaction after
transaction: the case that breaks anything session-level. Dagster's storage and the migrations stay
on the direct connection.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import psycopg
import pytest

from clay_pipelines import settings
from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db.targets import ConfigurationError, resolve_target
from clay_pipelines.payroll import store
from clay_pipelines.payroll.defs import PayrollSettings, payroll_entries, payroll_files
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.embeddings import HashingEmbedder
from clay_pipelines.routing.router import route
from clay_pipelines.routing.rule_store import learn_rules_full
from clay_pipelines.sample_world.payroll_docs import generate_directory, generate_payroll_world
from tests import pgbouncer_server
from tests import routing_world as world

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

APP, MAINTENANCE = settings.APP_ROLE, settings.MAINTENANCE_ROLE
OWNER = "postgres"  # the embedded server's superuser: what a single pooled URL logs in as, switching role
ALIAS = "clay"

Bouncer = Callable[..., pgbouncer_server.PgBouncer]


@pytest.fixture
def bouncer(pg_server) -> Iterator[Bouncer]:
    """bouncer(db, pool_size=1): a PgBouncer whose database `clay` is `db`, at most pool_size server
    connections per role."""
    if pgbouncer_server.binary() is None:
        pytest.skip(pgbouncer_server.MISSING)
    with ExitStack() as stack:

        def start(db: TestDatabase, pool_size: int = 1) -> pgbouncer_server.PgBouncer:
            pools = [pgbouncer_server.Pool(ALIAS, db.name, pool_size)]
            return stack.enter_context(
                pgbouncer_server.running(pg_server.socket_dir, pg_server.pgdata, pools, [APP, MAINTENANCE, OWNER])
            )

        yield start


def _pooled(pgb: pgbouncer_server.PgBouncer, **kwargs: object) -> Database:
    """A client of the pooler, each role logging in as itself (as the embedded mode does directly)."""
    return Database(pgb.url(APP, ALIAS), pgb.url(MAINTENANCE, ALIAS), pooled=True, **kwargs)  # type: ignore[arg-type]


def _server_connections(pgb: pgbouncer_server.PgBouncer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in pgb.show("SERVERS"):
        if row["database"] == ALIAS:
            counts[str(row["user"])] = counts.get(str(row["user"]), 0) + 1
    return counts


# -- the router -----------------------------------------------------------------------------------


def test_the_router_learns_routes_and_logs_through_pgbouncer(fresh_db, bouncer) -> None:
    pgb = bouncer(fresh_db, pool_size=1)
    with _pooled(pgb) as db:
        world.build(db)
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows())
        report = learn_rules_full(db, world.ACME, "hashing@1", "hashing")
        decision = route(db, world.ACME, "run payroll for May", HashingEmbedder(), dry_run=False)
        other = route(db, world.OTHER, "run payroll for May", HashingEmbedder())
    assert (report.created, report.updated, report.deactivated) == (2, 0, 0)
    assert (decision.system_name, decision.path, decision.requires_approval) == ("payroll-bot", "rule", True)
    assert (other.path, other.rule_id) == ("catch_all", None)  # Acme's rules are not Other's
    with fresh_db.admin() as conn:
        logged = conn.execute(
            "SELECT tenant_id, system_name, status, routing_path, routing_propensity, user_request FROM executions "
            "WHERE id = %s",
            (decision.execution_id,),
        ).fetchone()
        used = conn.execute("SELECT times_used FROM routing_rules WHERE id = %s", (decision.rule_id,)).fetchone()
    path = [world.SYSTEMS["clay-consigliere"], world.SYSTEMS["payroll-bot"]]
    assert logged == (world.ACME, "payroll-bot", "partial", path, 1, "run payroll for May")
    assert used == (1,)
    # It all went through the pooler, one server connection per role.
    assert pgb.transactions(ALIAS) > 10
    assert _server_connections(pgb) == {APP: 1, MAINTENANCE: 1}


def test_the_router_decides_the_same_through_pgbouncer_as_directly(fresh_db, bouncer) -> None:
    with fresh_db.database() as direct:
        world.build(direct)
        world.add_executions(direct, world.ACME, world.payroll_rows() + world.email_rows())
        learn_rules_full(direct, world.ACME, "hashing@1", "hashing")
        requests = ["process the payroll for March", "draft an email to the team about the office move", "zebra"]
        expected = [route(direct, world.ACME, r, HashingEmbedder()).as_dict() for r in requests]
    with _pooled(bouncer(fresh_db)) as pooled:
        through = [route(pooled, world.ACME, r, HashingEmbedder()).as_dict() for r in requests]
    for decision in (*expected, *through):
        decision.pop("elapsed_ms")
    assert through == expected


# -- a payroll file, through the pipeline's resource --------------------------------------------------


def test_a_payroll_file_goes_through_the_pipeline_over_pgbouncer(fresh_db, bouncer, tmp_path, monkeypatch) -> None:
    pgb = bouncer(fresh_db)
    # The production set-up: one pooled URL for both roles, recognised by the pools as the pooler's.
    pooled_url = pgb.url(OWNER, ALIAS)
    monkeypatch.setenv("CLAY_POOLED_DATABASE_URL", pooled_url)
    generate_payroll_world(tmp_path / "world", 7, date(2026, 1, 15))
    inbox = tmp_path / "world" / "inbox"
    with fresh_db.admin() as conn:
        oms = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
    directory = generate_directory(7)
    with Database(pooled_url, pooled_url) as db, db.tenant_transaction(oms) as conn:
        store.sync_directory(conn, [asdict(e) for e in directory], {e.llc: e.id for e in directory if e.llc})
    key = next(f"oms.com/{p.name}" for p in sorted((inbox / "oms.com").glob("payroll-register-*.pdf")))
    truth = json.loads((inbox.parent / "truth" / (Path(key).stem + ".json")).read_text())
    resources = {
        "postgres": PostgresResource(app_dsn=pooled_url, maintenance_dsn=pooled_url),
        "payroll": PayrollSettings(inbox_dir=str(inbox), quarantine_dir=str(inbox.parent / "quarantine")),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(payroll_files.name, [key])
        before = pgb.transactions(ALIAS)
        result = dg.materialize([payroll_entries], partition_key=key, instance=instance, resources=resources)
        assert result.success
        again = dg.materialize([payroll_entries], partition_key=key, instance=instance, resources=resources)
    assert again.asset_materializations_for_node("payroll__payroll_entries")[0].metadata["rows_written"].value == 0
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "total_reconciles": True,
        "no_duplicate_entries": True,
        "no_zero_amounts": True,
        "dates_plausible": True,
    }
    with fresh_db.admin() as conn:
        stored = conn.execute(
            "SELECT tenant_id, employee_id, date, amount FROM payroll_entries ORDER BY employee_id, amount"
        ).fetchall()
        executions = conn.execute("SELECT tenant_id, status, governance_check->>'requires_approval' FROM executions")
        assert executions.fetchall() == [(oms, "success", "true")]
    expected = sorted(
        (oms, e["expected_employee_id"], date.fromisoformat(e["date"]), Decimal(e["amount"])) for e in truth["entries"]
    )
    assert stored == expected
    assert pgb.transactions(ALIAS) - before > 5
    assert _server_connections(pgb) == {OWNER: 1}


# -- tenants sharing one server connection ----------------------------------------------------------


def _two_tenants(fresh_db: TestDatabase) -> tuple[uuid.UUID, uuid.UUID]:
    alpha, beta = uuid.uuid4(), uuid.uuid4()
    with fresh_db.database() as db, db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        for tenant, name in ((alpha, "Alpha"), (beta, "Beta")):
            conn.execute("INSERT INTO tenants (id, name, domain) VALUES (%s, %s, %s)", (tenant, name, f"{name}.test"))
            for n in range(3):
                conn.execute(
                    "INSERT INTO executions (tenant_id, system_name, user_request, governance_check, status, "
                    "started_at) VALUES (%s, 'writer', %s, '{}', 'success', now())",
                    (tenant, f"{name} request {n}"),
                )
    return alpha, beta


def _own_rows(db: Database, tenant: uuid.UUID) -> tuple[list[str], int]:
    with db.tenant_transaction(tenant) as conn:
        rows = [r[0] for r in conn.execute("SELECT user_request FROM executions ORDER BY user_request")]
        return rows, conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_two_tenants_interleaved_on_one_server_connection_see_only_their_own_rows(fresh_db, bouncer) -> None:
    alpha, beta = _two_tenants(fresh_db)
    pgb = bouncer(fresh_db, pool_size=1)
    backends = set()
    with _pooled(pgb, max_pool_size=1) as first, _pooled(pgb, max_pool_size=1) as second:
        for round_ in range(4):
            for db, tenant, name in ((first, alpha, "Alpha"), (second, beta, "Beta")):
                with db.tenant_transaction(tenant) as conn:
                    conn.execute(
                        "INSERT INTO executions (system_name, user_request, governance_check, status, started_at) "
                        "VALUES ('writer', %s, '{}', 'success', now())",
                        (f"{name} round {round_}",),
                    )
                rows, backend = _own_rows(db, tenant)
                backends.add(backend)
                assert rows == sorted(
                    [f"{name} request {n}" for n in range(3)] + [f"{name} round {r}" for r in range(round_ + 1)]
                )
    assert len(backends) == 1  # both clients, every transaction: the same server connection
    with fresh_db.admin() as conn:
        owners = conn.execute("SELECT tenant_id, count(*) FROM executions GROUP BY tenant_id ORDER BY 2, 1").fetchall()
    assert sorted(owners) == sorted([(alpha, 7), (beta, 7)])


def test_session_level_scoping_would_leak_across_clients_of_the_pooler(fresh_db, bouncer) -> None:
    """The control for the test above: the same pooler hands one client's session setting to another."""
    alpha, _ = _two_tenants(fresh_db)
    pgb = bouncer(fresh_db, pool_size=1)
    with (
        psycopg.connect(pgb.url(APP, ALIAS), autocommit=True, prepare_threshold=None) as careless,
        psycopg.connect(pgb.url(APP, ALIAS), autocommit=True, prepare_threshold=None) as other,
    ):
        careless.execute("SELECT set_config('app.tenant_id', %s, false)", (str(alpha),))
        seen = other.execute("SELECT count(*) FROM executions").fetchone()
    assert seen == (3,)  # another client, no tenant of its own, reads Alpha's rows


def test_what_a_transaction_leaves_on_the_session_does_not_reach_the_next_client(fresh_db, bouncer) -> None:
    """No DISCARD ALL runs between clients of the pooler: every transaction sets its own scope."""
    alpha, _ = _two_tenants(fresh_db)
    pgb = bouncer(fresh_db, pool_size=1)
    with _pooled(pgb, max_pool_size=1) as careless, _pooled(pgb, max_pool_size=1) as other:
        with careless.tenant_transaction(alpha) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(alpha),))  # session level
            conn.execute("SELECT set_config('statement_timeout', '1ms', false)")
            leaving_on = conn.execute("SELECT pg_backend_pid()").fetchone()
        with other.unscoped_transaction() as conn:
            assert conn.execute("SELECT pg_backend_pid()").fetchone() == leaving_on
            assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)
            assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone() == ("",)
            conn.execute("SELECT pg_sleep(0.01)")  # the transaction's own statement_timeout, not 1 ms


# -- prepared statements ------------------------------------------------------------------------------

SAME_QUERY = "SELECT count(*) FROM executions WHERE status = %s"


def test_pooled_clients_make_no_prepared_statements(fresh_db, bouncer) -> None:
    alpha, beta = _two_tenants(fresh_db)
    pgb = bouncer(fresh_db, pool_size=1)
    with _pooled(pgb, max_pool_size=1) as first, _pooled(pgb, max_pool_size=1) as second:
        for _ in range(3 * 5):  # three times psycopg's default prepare_threshold, per client
            for db, tenant in ((first, alpha), (second, beta)):
                with db.tenant_transaction(tenant) as conn:
                    assert conn.execute(SAME_QUERY, ("success",)).fetchone() == (3,)
                    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_automatic_prepared_statements_break_through_this_pooler(fresh_db, bouncer) -> None:
    """The control for the test above: psycopg's default (prepare after 5 runs) on the same pooler."""
    pgb = bouncer(fresh_db, pool_size=1)
    with (
        psycopg.connect(pgb.url(MAINTENANCE, ALIAS), autocommit=True) as first,
        psycopg.connect(pgb.url(MAINTENANCE, ALIAS), autocommit=True) as second,
    ):
        for _ in range(8):
            first.execute(SAME_QUERY, ("success",))
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            for _ in range(8):
                second.execute(SAME_QUERY, ("success",))


# -- the configuration ---------------------------------------------------------------------------------


def test_the_pooled_url_carries_the_application_connections_and_nothing_else(fresh_db, monkeypatch) -> None:
    pooled = "postgresql://postgres.project:secret@pooler.example.com:6543/postgres"
    monkeypatch.setenv("CLAY_DATABASE_NAME", fresh_db.name)
    monkeypatch.setenv("CLAY_POOLED_DATABASE_URL", pooled)
    embedded = resolve_target()
    assert (embedded.app_url, embedded.maintenance_url, embedded.pooled_url) == (pooled, pooled, pooled)
    assert embedded.admin_url == fresh_db.admin_url
    assert embedded.dagster_url == fresh_db.server.url(settings.DAGSTER_DATABASE, driver="psycopg2")
    assert embedded.as_environment()["CLAY_POOLED_DATABASE_URL"] == pooled
    assert embedded.description.endswith("; application connections through the pooler at pooler.example.com:6543")

    direct = "postgresql://postgres:secret@db.project.supabase.co:5432/postgres"
    monkeypatch.setenv("DATABASE_URL", direct)
    monkeypatch.setenv("CLAY_MAINTENANCE_DATABASE_URL", "postgresql://clay_maintenance@db.project.supabase.co/postgres")
    external = resolve_target()
    assert (external.admin_url, external.app_url) == (direct, pooled)
    assert external.maintenance_url == "postgresql://clay_maintenance@db.project.supabase.co/postgres"
    assert external.dagster_url == (
        "postgresql+psycopg2://postgres:secret@db.project.supabase.co:5432/postgres?options=-csearch_path%3Ddagster"
    )
    pools = Database(external.app_url, external.maintenance_url)
    assert (pools.is_pooled(external.app_url), pools.is_pooled(external.maintenance_url)) == (True, False)


def test_a_pooled_url_that_is_not_postgresql_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CLAY_POOLED_DATABASE_URL", "mysql://pooler:6543/clay")
    with pytest.raises(ConfigurationError) as refused:
        resolve_target(start_embedded=False)
    assert str(refused.value) == "CLAY_POOLED_DATABASE_URL must be a postgresql:// URL, got one starting with 'mysql'"


def test_clay_route_goes_through_the_pooler_named_by_the_environment(fresh_db, bouncer, monkeypatch, capsys) -> None:
    from clay_pipelines.cli import main

    with fresh_db.database() as direct:
        world.build(direct)
        world.add_executions(direct, world.ACME, world.payroll_rows() + world.email_rows())
        learn_rules_full(direct, world.ACME, "hashing@1", "hashing")
    pgb = bouncer(fresh_db)
    monkeypatch.setenv("CLAY_DATABASE_NAME", fresh_db.name)
    monkeypatch.setenv("CLAY_POOLED_DATABASE_URL", pgb.url(OWNER, ALIAS))
    assert main(["route", "run payroll for May", "--tenant", "Acme"]) == 0
    assert capsys.readouterr().out.startswith("payroll-bot  (path rule, confidence ")
    with fresh_db.admin() as conn:
        newest = conn.execute("SELECT tenant_id, system_name, user_request FROM executions ORDER BY started_at DESC")
        assert newest.fetchone() == (world.ACME, "payroll-bot", "run payroll for May")
    assert pgb.transactions(ALIAS) >= 2  # the tenant's lookup and the routing transaction
    assert _server_connections(pgb) == {OWNER: 1}


def test_a_pooled_client_costs_the_server_one_transaction_per_transaction(fresh_db, bouncer) -> None:
    """No reset statement after each transaction: through the pooler it would run on whichever server
    connection is free, clean nothing in particular, and double the server's transactions."""
    alpha, _ = _two_tenants(fresh_db)
    pgb = bouncer(fresh_db)
    with _pooled(pgb, max_pool_size=1) as db:
        _own_rows(db, alpha)  # the pool's connection is open and configured
        before = pgb.transactions(ALIAS)
        for _ in range(5):
            _own_rows(db, alpha)
        db.close()  # the pool has nothing left to do in the background
        assert pgb.transactions(ALIAS) - before == 5


# What a transaction pooler cannot carry from one transaction to the next, as it would be written.
_SESSION_STATE = {
    "a session-level advisory lock": r"pg_(try_)?advisory_lock(_shared)?\s*\(",
    "a session-level setting": r"set_config\([^()]*,\s*false\s*\)|[\"']\s*SET\s+(?!LOCAL\b)|[\"']\s*RESET\s",
    "LISTEN": r"[\"']\s*LISTEN\s|\bLISTEN\s+[a-z_]+\s*;",
    "a temporary table": r"CREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\s+TABLE",
    "a prepared statement": r"[\"']\s*PREPARE\s|prepare\s*=\s*True",
}


def test_nothing_the_pooled_connections_run_relies_on_the_session() -> None:
    """The migrations alone (over DATABASE_URL, directly) hold a session-level lock and reset the role."""
    sources = [*settings.PACKAGE_DIR.rglob("*.py"), *settings.SQL_DIR.glob("*.sql")]
    direct_only = {settings.PACKAGE_DIR / "db" / "migrations.py"}
    found = [
        f"{path.relative_to(settings.PROJECT_ROOT)}: {what}"
        for path in sources
        if path not in direct_only
        for what, pattern in _SESSION_STATE.items()
        if re.search(pattern, path.read_text(), re.IGNORECASE if path.suffix == ".sql" else 0)
    ]
    assert found == []
