"""Migrations: a fresh apply, a re-apply that does nothing, and a broken one that leaves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from clay_pipelines import settings
from clay_pipelines.db.migrations import MigrationError, apply_migrations, discover, migration_status


def _ledger(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def test_fresh_apply_then_reapply_is_a_no_op(empty_db) -> None:
    migrations = discover()
    applied = apply_migrations(empty_db.admin_url)
    assert [m.version for m in applied] == [m.version for m in migrations]
    assert _ledger(empty_db.admin_url) == [(m.version, m.name) for m in migrations]
    with empty_db.admin() as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(settings.PLATFORM_TABLES) <= tables

    assert apply_migrations(empty_db.admin_url) == []
    assert _ledger(empty_db.admin_url) == [(m.version, m.name) for m in migrations]
    assert all(s.applied_at is not None for s in migration_status(empty_db.admin_url))


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(settings.SQL_DIR, target)
    return target


def test_broken_migration_rolls_back_whole(empty_db, tmp_path: Path) -> None:
    sql_dir = _copy_migrations(tmp_path)
    last = discover(sql_dir)[-1].version
    broken = sql_dir / f"{last + 1:03d}_broken.sql"
    broken.write_text(
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "ALTER TABLE executions ADD COLUMN never_there int;\n"
        "SELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError, match=rf"{broken.name} failed and was rolled back.*no_such_table"):
        apply_migrations(empty_db.admin_url, sql_dir)

    # Everything before it applied; nothing of it did.
    assert [v for v, _ in _ledger(empty_db.admin_url)] == [m.version for m in discover(settings.SQL_DIR)]
    with empty_db.admin() as conn:
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone()[0] is None
        columns = {
            r[0]
            for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'executions'")
        }
    assert "never_there" not in columns

    # Once fixed, it applies.
    broken.write_text("CREATE TABLE half_done (id int);\n")
    assert [m.name for m in apply_migrations(empty_db.admin_url, sql_dir)] == ["broken"]


def test_edited_migration_is_refused(empty_db, tmp_path: Path) -> None:
    sql_dir = _copy_migrations(tmp_path)
    apply_migrations(empty_db.admin_url, sql_dir)
    first = sorted(sql_dir.glob("*.sql"))[2]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=rf"{first.name} was edited after it was applied"):
        apply_migrations(empty_db.admin_url, sql_dir)


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "7_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"7_oops\.sql: migration files are named NNN_lowercase_name\.sql"):
        discover(tmp_path)


@pytest.mark.parametrize(
    "statement",
    ["COMMIT;", "commit work;", "BEGIN;", "ROLLBACK;", "END;", "START TRANSACTION;", "SAVEPOINT s;", "ABORT;"],
)
def test_a_migration_that_controls_transactions_is_refused_before_anything_runs(
    empty_db, tmp_path: Path, statement: str
) -> None:
    sql_dir = _copy_migrations(tmp_path)
    last = discover(sql_dir)[-1].version
    sneaky = sql_dir / f"{last + 1:03d}_sneaky.sql"
    sneaky.write_text(f"CREATE TABLE half_done (id int);\n\n  {statement}\nSELECT * FROM no_such_table;\n")
    keyword = "START TRANSACTION" if statement.startswith("START") else statement.split()[0].rstrip(";").upper()
    with pytest.raises(
        MigrationError, match=rf"{sneaky.name}:3: {keyword} - a migration is applied as one transaction"
    ):
        apply_migrations(empty_db.admin_url, sql_dir)
    with empty_db.admin() as conn:  # nothing at all was applied, not even the earlier pending migrations
        assert conn.execute("SELECT to_regclass('public.half_done'), to_regclass('public.tenants')").fetchone() == (
            None,
            None,
        )


def test_transaction_words_inside_bodies_strings_and_comments_are_not_statements(empty_db, tmp_path: Path) -> None:
    sql_dir = _copy_migrations(tmp_path)
    last = discover(sql_dir)[-1].version
    fine = sql_dir / f"{last + 1:03d}_fine.sql"
    fine.write_text(
        "-- COMMIT; in a comment\n"
        "/* ROLLBACK; */\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n"
        "CREATE FUNCTION public.answer() RETURNS int LANGUAGE sql\n"
        "  BEGIN ATOMIC SELECT CASE WHEN true THEN 42 END; END;\n"
        "CREATE TABLE \"commit\" (note text DEFAULT 'COMMIT; END;');\n"
    )
    assert [m.name for m in apply_migrations(empty_db.admin_url, sql_dir)][-1] == "fine"
    with empty_db.admin() as conn:
        assert conn.execute("SELECT public.answer()").fetchone() == (42,)


def test_the_isolation_helper_puts_a_new_table_under_the_standard_policy(fresh_db) -> None:
    with fresh_db.admin() as conn:
        alpha = conn.execute("INSERT INTO tenants (name) VALUES ('Alpha') RETURNING id").fetchone()[0]
        conn.execute("SET ROLE clay_owner")
        conn.execute("CREATE TABLE public.notes (tenant_id uuid DEFAULT public.clay_current_tenant(), body text)")
        conn.execute("SELECT public.clay_enable_tenant_isolation('public.notes', ARRAY['SELECT', 'INSERT'])")
        with pytest.raises(psycopg.errors.RaiseException, match="TRUNCATE is not SELECT"):
            conn.execute("SELECT public.clay_enable_tenant_isolation('public.notes', ARRAY['TRUNCATE'])")
        conn.execute("RESET ROLE")
        rls = conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'notes'")
        assert rls.fetchone() == (True, True)
    with fresh_db.database() as db:
        with db.tenant_transaction(alpha) as conn:
            conn.execute("INSERT INTO notes (body) VALUES ('mine')")
            assert conn.execute("SELECT body FROM notes").fetchall() == [("mine",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant_transaction(alpha) as conn:
            conn.execute("DELETE FROM notes")  # append-only for the application role
        with db.unscoped_transaction() as conn:
            assert conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
