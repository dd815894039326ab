"""`clay executions show|erase`, `clay hold`, `clay archive restore`, run as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle.aging import age_tenant
from tests import lifecycle_world as lw


def clay(*args: str, database: str, archive: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CLAY_DATABASE_NAME": database, "CLAY_ARCHIVE_URL": archive}
    return subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_show_hold_erase_and_restore_from_the_command_line(fresh_db, tmp_path) -> None:
    now = datetime.now(UTC)
    month = date(now.year - 2, now.month, 1)
    store = str(tmp_path / "archive")
    with fresh_db.database() as db:
        lw.build(db)
        old = lw.add(
            db,
            lw.ACME,
            accessed=now - timedelta(days=400),
            started=datetime(month.year, month.month, 3, tzinfo=UTC),
            n=2,
        )
        cold = lw.add(db, lw.ACME, accessed=now - timedelta(days=100))[0]
        age_tenant(db, lw.ACME)
        ar.archive_month(db, lw.ACME, month, ar.ArchiveStore(store), enabled=True)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return clay(*args, database=fresh_db.name, archive=store)

    shown = run("executions", "show", str(cold), "--json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert (body["tenant"], body["lifecycle_state"], body["input_data"]["attachments"]) == (
        "Acme",
        "COLD",
        ["a.pdf"] * 3,
    )
    with fresh_db.database() as db, db.tenant_transaction(lw.ACME) as conn:
        assert conn.execute("SELECT execution_id, kind FROM execution_access_buffer").fetchall() == [(cold, "show")]

    archived = run("executions", "show", str(old[0]), "--tenant", "Acme")
    assert "archived: bring it back with `clay archive restore" in archived.stdout

    missing = run("executions", "show", str(uuid.uuid4()))
    assert (missing.returncode, missing.stderr.count("\n")) == (2, 1) and "no execution" in missing.stderr
    other_tenant = run("executions", "show", str(cold), "--tenant", "Other")
    assert other_tenant.returncode == 2 and "no execution" in other_tenant.stderr

    placed = run(
        "hold",
        "place",
        "--tenant",
        "Acme",
        "--executions",
        str(old[1]),
        "--by",
        "counsel@acme.test",
        "--reason",
        "case 17",
    )
    assert placed.returncode == 0, placed.stderr
    hold_id = placed.stdout.split()[2]
    listed = json.loads(run("hold", "list", "--tenant", "Acme", "--json").stdout)
    assert [(h["scope"], h["execution_ids"]) for h in listed] == [("executions", [str(old[1])])]
    refused = run(
        "executions", "erase", str(old[1]), "--tenant", "Acme", "--by", "dpo@acme.test", "--reason", "art. 17"
    )
    assert refused.returncode == 2 and "legal hold" in refused.stderr
    bad_range = run("hold", "place", "--tenant", "Acme", "--from", "2025-01-01", "--by", "x", "--reason", "y")
    assert bad_range.returncode == 2 and "--from needs --to" in bad_range.stderr

    erased = run("executions", "erase", str(old[0]), "--tenant", "Acme", "--by", "dpo@acme.test", "--reason", "art. 17")
    assert erased.returncode == 0, erased.stderr
    assert "1 ARCHIVED" in erased.stdout
    restored = run("archive", "restore", str(old[1]), "--tenant", "Acme")
    assert (restored.returncode, restored.stdout.strip()) == (0, "1 execution(s) restored")
    again = run("archive", "restore", str(old[1]), "--tenant", "Acme")
    assert again.returncode == 2 and "only ARCHIVED executions can be restored" in again.stderr
    released = run("hold", "release", hold_id, "--tenant", "Acme", "--by", "counsel@acme.test")
    assert released.returncode == 0, released.stderr
    assert run("hold", "list", "--tenant", "Acme").stdout.strip() == "no legal holds in force"
    with fresh_db.database() as db, db.tenant_transaction(lw.ACME) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM lifecycle_audit WHERE action <> 'aging' ORDER BY id")]
    assert actions == ["archive", "hold_place", "erase", "restore", "hold_release"]


def test_policy_show_and_set_keep_data_longer_never_shorter(fresh_db, tmp_path) -> None:
    with fresh_db.database() as db:
        lw.build(db)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return clay(*args, database=fresh_db.name, archive=str(tmp_path / "archive"))

    defaults = run("lifecycle", "policy", "show", "--tenant", "Acme")
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.strip() == (
        "Acme: WARM after 30 days, COLD after 90 days, ARCHIVED after 365 days, "
        "PRUNED 7 years after archiving (platform defaults)"
    )

    changed = run("lifecycle", "policy", "set", "--tenant", "Acme", "--cold-days", "120", "--prune-years", "10",
                  "--by", "dpo@acme.test")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == (
        "Acme: WARM after 30 days, COLD after 120 days, ARCHIVED after 365 days, "
        "PRUNED 10 years after archiving (set by dpo@acme.test)"
    )
    # A second change keeps the first one's values; the other tenant keeps the platform's.
    assert run("lifecycle", "policy", "set", "--tenant", "Acme", "--warm-days", "45").returncode == 0
    shown = json.loads(run("lifecycle", "policy", "show", "--json").stdout)
    assert [(p["tenant"], p["warm_after_days"], p["cold_after_days"], p["archive_after_days"], p["retention_years"],
             p["set_by"]) for p in shown] == [
        ("Acme", 45, 120, 365, 10, "clay-cli"),
        ("Other", 30, 90, 365, 7, None),
    ]  # fmt: skip

    # Shorter than the legal minimum, out of order, or nothing given: one line, nothing written.
    for args, message in (
        (("--warm-days", "29"), "tenant Acme: warm_after_days = 29 is shorter than the platform's legal minimum of 30"),
        (("--prune-years", "6"), "tenant Acme: retention_years = 6 is shorter than the platform's legal minimum of 7"),
        (("--archive-days", "100"), "tenant Acme: archive_after_days = 100 is shorter than the platform's legal minimum of 365"),
        (("--warm-days", "130"), "tenant Acme: thresholds out of order: warm_after_days 130 < cold_after_days 120 < archive_after_days 365 must hold"),
        ((), "nothing to set: give --warm-days, --cold-days, --archive-days or --retention-years"),
    ):  # fmt: skip
        refused = run("lifecycle", "policy", "set", "--tenant", "Acme", *args)
        assert (refused.returncode, refused.stderr.strip().splitlines()) == (2, [f"clay: error: {message}"]), (
            refused.stderr
        )
    assert (
        json.loads(run("lifecycle", "policy", "show", "--tenant", "Acme", "--json").stdout)[0]["warm_after_days"] == 45
    )
    unknown = run("lifecycle", "policy", "show", "--tenant", "Nobody")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1


def test_the_database_refuses_a_policy_under_the_minimum_whoever_writes_it(fresh_db) -> None:
    with fresh_db.database() as db:
        lw.build(db)
        with pytest.raises(psycopg.errors.CheckViolation), db.tenant_transaction(lw.ACME) as conn:
            conn.execute("INSERT INTO lifecycle_policies (cold_after_days, updated_by) VALUES (89, 'x')")


def test_clay_run_prints_the_executions_per_lifecycle_state_after_aging(fresh_db, tmp_path) -> None:
    now = datetime.now(UTC)
    with fresh_db.database() as db:
        lw.build(db)
        for days, n in ((10, 3), (40, 2), (100, 1)):
            lw.add(db, lw.ACME, accessed=now - timedelta(days=days), n=n)
    result = clay("run", "--select", "lifecycle/execution_aging", database=fresh_db.name, archive=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    start = lines.index("executions by lifecycle state (as of now, by last access):")
    assert lines[start + 1 : start + 2] == ["  Acme: HOT 3  WARM 2  COLD 1"]
