"""`clay executions show|erase`, `clay hold`, `clay archive restore`, run as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

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
