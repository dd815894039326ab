"""The `clay` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clay_pipelines.cli import build_parser
from clay_pipelines.db.migrations import discover

MIGRATIONS = len(discover())


def clay(*args: str, database: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    if database:
        environment["CLAY_DATABASE_NAME"] = database
    return subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_help_on_every_command() -> None:
    result = clay("--help")
    assert result.returncode == 0
    for command in ("db", "seed", "run", "dev", "env"):
        assert command in result.stdout
    parser = build_parser()
    subcommands = [
        ["db"],
        ["db", "start"],
        ["db", "stop"],
        ["db", "status"],
        ["db", "url"],
        ["db", "migrate"],
        ["seed"],
        ["run"],
        ["dev"],
        ["env"],
    ]
    for words in subcommands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*words, "--help"])
        assert exit_info.value.code == 0


def test_seed_twice_gives_identical_row_counts(fresh_db) -> None:
    first = clay("seed", "--anchor", "2026-01-15", database=fresh_db.name)
    assert first.returncode == 0, first.stderr
    assert "sample world loaded" in first.stdout
    second = clay("seed", database=fresh_db.name)
    assert second.returncode == 0, second.stderr
    assert "already loaded" in second.stdout
    counts = lambda out: [line for line in out.splitlines() if line.startswith("  ")][-6:]  # noqa: E731
    assert counts(first.stdout) == counts(second.stdout)
    assert "  executions            20,000" in second.stdout


def test_run_materializes_everything_and_prints_a_summary(fresh_db) -> None:
    assert clay("seed", "--anchor", "2026-01-15", database=fresh_db.name).returncode == 0
    result = clay("run", database=fresh_db.name)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "asset" in result.stdout and "rows written" in result.stdout
    assert "monitoring/tool_health" in result.stdout
    assert "monitoring/budget_usage" in result.stdout


def test_db_url_and_status(fresh_db) -> None:
    url = clay("db", "url", database=fresh_db.name)
    assert url.returncode == 0
    assert url.stdout.strip().startswith("postgresql://clay_app@/")
    assert f"/{fresh_db.name}?host=" in url.stdout
    dagster_url = clay("db", "url", "--role", "dagster", database=fresh_db.name)
    assert dagster_url.stdout.startswith("postgresql+psycopg2://")
    status = clay("db", "status", database=fresh_db.name)
    assert status.returncode == 0
    assert f"migrations: {MIGRATIONS} of {MIGRATIONS} applied" in status.stdout


def test_errors_are_one_line_and_non_zero(empty_db) -> None:
    bad_scale = clay("seed", "--scale", "0", database=empty_db.name)
    assert bad_scale.returncode == 2
    assert bad_scale.stderr.strip() == "clay: error: --scale must be 1 or more, got 0"

    unmigrated = clay("seed", database=empty_db.name)
    assert unmigrated.returncode == 1
    assert len(unmigrated.stderr.strip().splitlines()) == 1
    assert "run `clay db migrate`" in unmigrated.stderr

    wrong_url = clay("db", "url", DATABASE_URL="mysql://user@host/db")
    assert wrong_url.returncode == 1
    assert wrong_url.stderr.strip() == (
        "clay: error: ConfigurationError: DATABASE_URL must be a postgresql:// URL, got one starting with 'mysql'"
    )
    bad_date = clay("seed", "--anchor", "yesterday")
    assert bad_date.returncode == 2
    assert "not an ISO date" in bad_date.stderr


def test_external_database_url_is_used_as_is(fresh_db) -> None:
    result = clay("db", "url", "--role", "admin", DATABASE_URL=fresh_db.admin_url)
    assert result.stdout.strip() == fresh_db.admin_url
    status = clay("db", "status", DATABASE_URL=fresh_db.admin_url)
    assert "external PostgreSQL" in status.stdout
    assert f"migrations: {MIGRATIONS} of {MIGRATIONS} applied" in status.stdout
