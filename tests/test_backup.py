"""`clay db backup|restore`: round trips on the real embedded server, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from clay_pipelines import settings
from clay_pipelines.db import embedded
from clay_pipelines.db.backup import (
    PLATFORM_EXTENSIONS,
    PLATFORM_SCHEMAS,
    Part,
    Site,
    backup,
    embedded_bin_dir,
    restore,
)
from tests.conftest import TestDatabase as Databases
from tests.conftest import _counter


@dg.asset(description="A small asset whose runs fill Dagster's tables for the backup tests.")
def backup_probe() -> int:
    return 1


@pytest.fixture
def dagster_db(pg_server: embedded.EmbeddedServer) -> Iterator[str]:
    """A Dagster instance's database of this test's own, holding one run; yields its libpq URL."""
    name = f"dagster_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    materialize_once(pg_server.url(name))
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def materialize_once(dagster_url: str) -> None:
    """One run of backup_probe recorded by dagster-postgres in that database."""
    home = settings.state_dir() / f"backup-home-{os.getpid()}-{next(_counter)}"
    home.mkdir(parents=True)
    url = dagster_url.replace("postgresql://", "postgresql+psycopg2://")
    (home / "dagster.yaml").write_text(
        json.dumps({"storage": {"postgres": {"postgres_url": url}}, "telemetry": {"enabled": False}})
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert dg.materialize([backup_probe], instance=instance).success
    finally:
        shutil.rmtree(home, ignore_errors=True)


def site(server: embedded.EmbeddedServer, platform_url: str, dagster_url: str, *, swap: bool = True) -> Site:
    parts = (
        Part("platform", platform_url, PLATFORM_SCHEMAS, PLATFORM_EXTENSIONS),
        Part("dagster", dagster_url),
    )
    return Site(parts, embedded_bin_dir(platform_url), server.url("postgres") if swap else None)


def table_digests(url: str, schemas: tuple[str, ...] | None) -> dict[str, tuple[int, str]]:
    """(row count, md5 of every row's text in order) of every table in the schemas (None: every schema)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "AND (%(schemas)s::text[] IS NULL OR schemaname = ANY(%(schemas)s)) ORDER BY 1, 2",
            {"schemas": list(schemas) if schemas else None},
        ).fetchall()
        digests = {}
        for schema, table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {}.{} t"
            ).format(sql.Identifier(schema), sql.Identifier(table))
            count, digest = conn.execute(query).fetchone()  # type: ignore[misc]
            digests[f"{schema}.{table}"] = (count, digest)
    return digests


def security(url: str) -> dict[str, object]:
    """Owners, privileges, row-level security and policies of the platform's tables, and the extensions."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            "tables": conn.execute(
                "SELECT c.relname, c.relowner::regrole::text, coalesce(c.relacl, acldefault('r', c.relowner))::text, c.relrowsecurity, c.relforcerowsecurity "
                "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1"
            ).fetchall(),
            "policies": conn.execute(
                "SELECT tablename, policyname, roles::text, cmd, qual FROM pg_policies ORDER BY 1, 2"
            ).fetchall(),
            "extensions": conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall(),
            "app_temp": conn.execute(
                "SELECT has_database_privilege('clay_app', current_database(), 'TEMP')"
            ).fetchone(),
        }


def snapshot(platform_url: str, dagster_url: str) -> dict[str, object]:
    return {
        "platform": table_digests(platform_url, ("public", "clay_admin")),
        "dagster": table_digests(dagster_url, None),
        "security": security(platform_url),
    }


def admin_execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type] - fixed test statements


# ---------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_restores_every_table_and_the_security_of_both_databases(
    world_db: Databases, dagster_db: str, pg_server: embedded.EmbeddedServer, tmp_path: Path
) -> None:
    reader = f"clay_backup_reader_{os.getpid()}"
    admin_execute(world_db.admin_url, f"CREATE ROLE {reader} NOLOGIN; GRANT SELECT ON public.tenants TO {reader}")
    try:
        before = snapshot(world_db.admin_url, dagster_db)
        assert before["platform"]["public.executions"][0] > 100
        assert before["dagster"]["public.runs"][0] == 1
        assert ("vector",) in before["security"]["extensions"]
        assert before["security"]["app_temp"] == (False,)
        backup(site(pg_server, world_db.admin_url, dagster_db), tmp_path / "backup")

        # What an operator restores from: rows deleted and changed, a table dropped, a role gone, a new run.
        admin_execute(world_db.admin_url, "DELETE FROM executions WHERE random() < 0.5")
        admin_execute(world_db.admin_url, "UPDATE tenants SET name = name || ' (renamed)'")
        admin_execute(world_db.admin_url, "DROP TABLE public.routing_memberships")
        admin_execute(world_db.admin_url, f"REVOKE ALL ON public.tenants FROM {reader}; DROP ROLE {reader}")
        materialize_once(dagster_db)
        assert snapshot(world_db.admin_url, dagster_db) != before

        summary = restore(site(pg_server, world_db.admin_url, dagster_db), tmp_path / "backup", force=True)

        after = snapshot(world_db.admin_url, dagster_db)
        assert after["platform"] == before["platform"]
        assert after["dagster"] == before["dagster"]
        for key in before["security"]:
            assert after["security"][key] == before["security"][key], key
        assert summary.created_roles == [reader]
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            leftovers = conn.execute("SELECT datname FROM pg_database WHERE datname ~ '__(restore|replaced)_'")
            assert leftovers.fetchall() == []
        # Row-level security works on the restored data: the application role sees one tenant's rows only.
        with world_db.database() as db, db.tenant_transaction(db.tenant_ids()[0]) as conn:
            seen = conn.execute("SELECT count(DISTINCT tenant_id), count(*) FROM executions").fetchone()
        assert seen is not None and seen[0] == 1 and 0 < seen[1] < before["platform"]["public.executions"][0]
    finally:
        if _role(world_db.admin_url, reader):
            admin_execute(world_db.admin_url, f"DROP OWNED BY {reader} CASCADE; DROP ROLE {reader}")


def _role(url: str, name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None
