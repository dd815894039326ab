"""`clay payroll pending`: the payroll files that wait for a person, as a person reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal

from clay_pipelines.payroll import store
from clay_pipelines.payroll.model import Entry, Extraction


def clay(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CLAY_DATABASE_NAME": database}
    return subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_pending_lists_approvals_duplicates_and_quarantined_files(fresh_db) -> None:
    with fresh_db.admin() as conn:
        tenant = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
    entries = [
        Entry(employee_name="Ann Li", amount=Decimal("10.00"), page=1, date=date(2026, 1, 30)),
        Entry(employee_name="Li", amount=Decimal("5.00"), page=1, date=date(2026, 1, 30)),
    ]
    with fresh_db.database() as db, db.tenant_transaction(tenant) as conn:
        store.sync_directory(conn, [{"id": "7", "first_name": "Ann", "last_name": "Li"}], {})
        for name in ("jan.pdf", "jan-final.pdf", "dec.pdf"):
            extraction = Extraction(
                source_file=name, pages=1, template=None, entries=entries[:1] if name == "dec.pdf" else entries
            )
            store.store_extraction(
                conn, name, "dec" if name == "dec.pdf" else "jan", extraction, store.load_resolver(conn)
            )
        store.store_quarantine(conn, "scan.pdf", "0123456789abcdef99", "no_text_layer", "a scan")
        conn.execute("UPDATE payroll_documents SET approval_status = 'approved' WHERE source_file = 'dec.pdf'")

    listed = clay("payroll", "pending", "--tenant", "oms.com", database=fresh_db.name)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "jan-final.pdf: version 1 duplicates jan.pdf: nothing stored -> remove the copy (jan.pdf holds this content)",
        "jan.pdf: version 1 live: 2 entries, approval awaiting, 1 name(s) to review -> approve or reject; resolve 1 "
        "name(s)",
        "scan.pdf: version 1 quarantined (no_text_layer) as scan.0123456789abcdef.pdf; no live version -> fix the file "
        "and drop it in the inbox again",
    ]
    everything = clay("payroll", "pending", "--tenant", "oms.com", "--all", "--json", database=fresh_db.name)
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout)[0] == {
        "source_file": "dec.pdf",
        "state": "version 1 live: 1 entries, approval approved",
        "needs": None,
    }
    unknown = clay("payroll", "pending", "--tenant", "nobody.example", database=fresh_db.name)
    assert unknown.returncode != 0 and unknown.stderr.count("\n") == 1
