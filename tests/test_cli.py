"""The `clay` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

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


def test_approve_and_resolve_payroll_from_the_command_line(fresh_db) -> None:
    from decimal import Decimal

    from clay_pipelines.payroll import store
    from clay_pipelines.payroll.model import Entry, Extraction

    with fresh_db.admin() as conn:
        tenant = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
    with fresh_db.database() as db, db.tenant_transaction(tenant) as conn:
        store.sync_directory(conn, [{"id": "7", "first_name": "Ann", "last_name": "Li"}], {})
        entries = [
            Entry(employee_name="Ann Li", amount=Decimal("10.00"), page=1, date=date(2026, 1, 30)),
            Entry(employee_name="Li", amount=Decimal("5.00"), page=1, date=date(2026, 1, 30)),
        ]
        extraction = Extraction(source_file="jan.pdf", pages=1, template=None, entries=entries)
        store.store_extraction(conn, "jan.pdf", "h", extraction, store.load_resolver(conn))
        unresolved = conn.execute("SELECT entry_id FROM payroll_review_queue").fetchone()[0]

    bad = clay("approve", "payroll", "jan.pdf", "--by", "preston@oms.com", database=fresh_db.name)
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "clay: error: name the tenant: --tenant NAME, or FILE as TENANT/FILE",
    )
    approved = clay(
        "approve", "payroll", "oms.com/jan.pdf", "--by", "preston@oms.com", "--reason", "ok", database=fresh_db.name
    )
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == (
        "jan.pdf version 1: approved by preston@oms.com; 1 BambooHR deliveries released, "
        "1 still waiting for name review"
    )
    resolved = clay(
        "payroll",
        "resolve",
        str(unresolved),
        "--employee",
        "7",
        "--by",
        "hr@oms.com",
        "--tenant",
        "oms.com",
        database=fresh_db.name,
    )
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == f"entry {unresolved} is employee 7 (resolved by hr@oms.com); delivery pending"
    again = clay(
        "payroll",
        "resolve",
        str(unresolved),
        "--employee",
        "7",
        "--by",
        "hr@oms.com",
        "--tenant",
        "oms.com",
        database=fresh_db.name,
    )
    assert (again.returncode, again.stderr.strip()) == (2, f"clay: error: entry {unresolved} was already resolved")


def test_run_select_names_an_unknown_or_external_asset() -> None:
    unknown = clay("run", "--select", "nosuch/asset")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith(
        "clay: error: --select: unknown asset nosuch/asset (assets: governance/budget_alerts,"
    )
    typo = clay("run", "--select", "monitoring/tool_healht")
    assert (typo.returncode, typo.stderr.strip()) == (
        2,
        "clay: error: --select: unknown asset monitoring/tool_healht (did you mean monitoring/tool_health?)",
    )
    external = clay("run", "--select", "platform/executions")
    assert (external.returncode, external.stderr.strip()) == (
        2,
        "clay: error: --select: platform/executions: written by other programs (external), nothing to materialize here",
    )


def test_arguments_that_are_not_utf8_are_refused_by_name() -> None:
    """Bytes that are not UTF-8 reach Python's argv as surrogate escapes; nothing downstream can store them."""

    def clay_bytes(*args: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "clay_pipelines.cli", *args], capture_output=True, timeout=600)

    request = clay_bytes(b"route", b"caf\xe9 expenses", b"--tenant", b"oms.com")
    assert (request.returncode, request.stderr.decode().strip()) == (
        2,
        "clay: error: REQUEST is not UTF-8 text (byte 0xe9 at character 4)",
    )
    tenant = clay_bytes(b"route", b"my expenses", b"--tenant", b"\xffoms")
    assert (tenant.returncode, tenant.stderr.decode().strip()) == (
        2,
        "clay: error: --tenant is not UTF-8 text (byte 0xff at character 1)",
    )


def test_eval_routing_says_a_csv_is_binary(tmp_path) -> None:
    test = tmp_path / "test.csv"
    test.write_text("text,label\nhello,greet\n")
    png = tmp_path / "train.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = clay("eval", "routing", "--train", str(png), "--test", str(test))
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"clay: error: {png}: not UTF-8 text (byte 0x89 at offset 0); expected a text,label CSV",
    )
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"text,label\nhel\x00lo,greet\n")
    result = clay("eval", "routing", "--train", str(nul), "--test", str(test))
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"clay: error: {nul}, row 2: a NUL byte; expected a text,label CSV",
    )
    bom = tmp_path / "bom.csv"  # a spreadsheet's UTF-8 export: the byte-order mark is not a column name
    bom.write_bytes("\ufefftext,label\nhello,greet\n".encode())
    result = clay("eval", "routing", "--train", str(bom), "--test", str(tmp_path / "missing.csv"))
    assert (result.returncode, result.stderr.strip()) == (2, f"clay: error: {tmp_path / 'missing.csv'}: no such file")
