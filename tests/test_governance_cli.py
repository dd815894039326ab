"""`clay executions complete|rate`, `clay receipts verify`, run as a person runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from tests.governance_world import routed, two_tenants


def clay(*args: str, database: str, state: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CLAY_DATABASE_NAME": database, "CLAY_RECEIPT_KEY_DIR": state + "/keys",
                   "CLAY_RECEIPT_CHECKPOINT_DIR": state + "/checkpoints"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_complete_rate_and_verify_and_their_refusals(fresh_db, database, tmp_path) -> None:
    tenants = two_tenants(fresh_db)
    with database.tenant_transaction(tenants.alpha) as conn:
        execution = str(routed(conn))
    run = {"database": fresh_db.name, "state": str(tmp_path)}
    done = clay("executions", "complete", execution, "--tenant", "alpha.test", "--status", "success", "--cost", "0.2",
                "--completed-at", datetime.now(UTC).isoformat(), **run)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"execution {execution} completed, receipt signed"
    again = clay("executions", "complete", execution, "--tenant", "alpha.test", "--status", "success", "--cost",
                 "0.20", **run)  # fmt: skip
    assert again.stdout.strip() == f"execution {execution} already completed with these values: nothing changed"
    other = clay("executions", "complete", execution, "--tenant", "alpha.test", "--status", "failed", **run)
    assert other.returncode == 2 and other.stderr.startswith(
        f"clay: error: execution {execution} was already completed"
    )
    elsewhere = clay("executions", "rate", execution, "--tenant", "beta.test", "--stars", "5", **run)
    assert (elsewhere.returncode, elsewhere.stderr.strip()) == (2, f"clay: error: no execution {execution}")
    assert clay("executions", "rate", execution, "--tenant", "alpha.test", "--stars", "5", **run).returncode == 0
    verified = clay("receipts", "verify", "--tenant", "alpha.test", **run)
    assert verified.returncode == 0 and verified.stdout.splitlines()[-1] == "chain verifies", verified.stdout
    with fresh_db.admin() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE executions SET cost_usd = 0 WHERE id = %s", (execution,))
    broken = clay("receipts", "verify", "--tenant", "alpha.test", **run)
    assert broken.returncode == 1
    assert f"  BREAK: receipt #1 (execution {execution}): its fields differ from what was signed (edited)" in (
        broken.stdout.splitlines()
    )
