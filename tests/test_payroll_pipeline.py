"""The payroll pipeline in Dagster: inbox sensor, one partition per file, quarantine, blocking checks."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from clay_pipelines.payroll import store
from clay_pipelines.payroll.assets import PayrollSettings, payroll_entries, payroll_files, payroll_inbox_sensor
from clay_pipelines.resources import PostgresResource
from clay_pipelines.sample_world.payroll_docs import generate_directory, generate_payroll_world

from . import payroll_pdfs


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    generate_payroll_world(tmp_path / "world", 7, date(2026, 1, 15))
    return tmp_path / "world" / "inbox"


def _sensor(inbox: Path, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor, instance=instance, resources={"payroll": PayrollSettings(inbox_dir=str(inbox))}
    )
    return payroll_inbox_sensor(context)


def test_sensor_adds_a_partition_per_file_and_runs_each_content_once(inbox: Path) -> None:
    with dg.instance_for_test() as instance:
        first = _sensor(inbox, instance, None)
        keys = sorted(r.partition_key for r in first.run_requests)
        assert len(keys) == 7 and all(k.startswith("oms.com/") for k in keys)
        assert first.dynamic_partitions_requests[0].partition_keys == keys
        request = next(r for r in first.run_requests if r.partition_key == keys[0])
        digest = store.content_hash(inbox / keys[0])
        assert request.run_key == f"{keys[0]}@{digest}"
        cursor = json.loads(first.cursor)
        assert cursor[keys[0]] == digest

        instance.add_dynamic_partitions(payroll_files.name, keys)
        # The same files again: nothing.
        again = _sensor(inbox, instance, first.cursor)
        assert (again.run_requests, again.dynamic_partitions_requests) == ([], [])

        # A corrected file under the same name: one run with a new run key, no new partition.
        path = inbox / keys[0]
        path.write_bytes(path.read_bytes() + b"\n% corrected\n")
        corrected = _sensor(inbox, instance, again.cursor)
        assert [(r.partition_key, r.run_key) for r in corrected.run_requests] == [
            (keys[0], f"{keys[0]}@{store.content_hash(path)}")
        ]
        assert corrected.dynamic_partitions_requests == []

        # A new file: a new partition.
        (inbox / "oms.com" / "late.pdf").write_bytes((inbox / keys[1]).read_bytes())
        late = _sensor(inbox, instance, corrected.cursor)
        assert [r.partition_key for r in late.run_requests] == ["oms.com/late.pdf"]
        assert late.dynamic_partitions_requests[0].partition_keys == ["oms.com/late.pdf"]


@pytest.fixture
def oms(dagster_env):
    with dagster_env.admin() as conn:
        tenant = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
    directory = generate_directory(7)
    with dagster_env.database() as db, db.tenant_transaction(tenant) as conn:
        store.sync_directory(conn, [asdict(e) for e in directory], {e.llc: e.id for e in directory if e.llc})
    return tenant


def _materialize(dagster_env, inbox: Path, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(payroll_files.name, [key])
    resources = {
        "postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url),
        "payroll": PayrollSettings(inbox_dir=str(inbox), quarantine_dir=str(inbox.parent / "quarantine")),
    }
    return dg.materialize(
        [payroll_entries], partition_key=key, instance=instance, resources=resources, raise_on_error=False
    )


def test_a_file_is_extracted_checked_and_stored(dagster_env, oms, inbox: Path) -> None:
    key = next(f"oms.com/{p.name}" for p in sorted((inbox / "oms.com").glob("payroll-register-*.pdf")))
    truth = json.loads((inbox.parent / "truth" / (Path(key).stem + ".json")).read_text())
    with dg.instance_for_test() as instance:
        result = _materialize(dagster_env, inbox, instance, key)
        assert result.success
        metadata = result.asset_materializations_for_node("payroll__payroll_entries")[0].metadata
        assert metadata["entries"].value == len(truth["entries"])
        assert metadata["unresolved_names"].value == 0
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {
            "total_reconciles": True,
            "no_duplicate_entries": True,
            "no_zero_amounts": True,
            "dates_plausible": True,
        }
        again = _materialize(dagster_env, inbox, instance, key)
        assert again.asset_materializations_for_node("payroll__payroll_entries")[0].metadata["rows_written"].value == 0
    with dagster_env.admin() as conn:
        assert conn.execute("SELECT count(*) FROM payroll_entries").fetchone()[0] == len(truth["entries"])
        assert conn.execute("SELECT status, governance_check->>'requires_approval' FROM executions").fetchall() == [
            ("success", "true")
        ]


def test_unreadable_file_is_quarantined_with_its_reason(dagster_env, oms, inbox: Path) -> None:
    bad = inbox / "oms.com" / "scan.pdf"
    payroll_pdfs.scanned(bad)
    with dg.instance_for_test() as instance:
        result = _materialize(dagster_env, inbox, instance, "oms.com/scan.pdf")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "scan.pdf: no text layer on any of its 1 page(s): a scan, OCR is needed" in failure.message
    assert not bad.exists() and (inbox.parent / "quarantine" / "oms.com" / "scan.pdf").exists()
    with dagster_env.admin() as conn:
        assert conn.execute("SELECT status, quarantine_reason FROM payroll_documents").fetchall() == [
            ("quarantined", "no_text_layer")
        ]
        assert conn.execute("SELECT count(*) FROM payroll_entries").fetchone()[0] == 0
        assert conn.execute("SELECT tool_name, success FROM mcp_telemetry_log").fetchall() == [
            ("process_payroll_pdf", False)
        ]


def test_a_total_that_does_not_reconcile_blocks_the_write(dagster_env, oms, inbox: Path) -> None:
    rows = [["10001", "MCCOY, KEVIN", "01/30/2026", "1,000.00"], ["10002", "MCCUE, KEVIN", "01/30/2026", "500.00"]]
    payroll_pdfs.ruled_register(
        inbox / "oms.com" / "off-by-a-cent.pdf",
        rows,
        ["Emp No", "Employee Name", "Pay Date", "Net Pay"],
        "Payroll",
        footer_rows=[["", "TOTAL", "", "1,500.01"]],
    )
    with dg.instance_for_test() as instance:
        result = _materialize(dagster_env, inbox, instance, "oms.com/off-by-a-cent.pdf")
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["total_reconciles"].passed is False
    assert checks["total_reconciles"].metadata["detail"].value == "extracted 1500.00 != printed 1500.01 (TOTAL)"
    with dagster_env.admin() as conn:
        assert conn.execute("SELECT count(*) FROM payroll_entries").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM payroll_documents").fetchone()[0] == 0


def test_approval_gate_and_name_review(dagster_env, oms, inbox: Path) -> None:
    from clay_pipelines.payroll.approval import ApprovalError, decide_document, resolve_entry

    rows = [["10001", "MCCOY, KEVIN", "01/30/2026", "1,000.00"], ["", "SMITH", "01/30/2026", "500.00"]]
    payroll_pdfs.ruled_register(
        inbox / "oms.com" / "gate.pdf",
        rows,
        ["Emp No", "Employee Name", "Pay Date", "Net Pay"],
        "Payroll",
        footer_rows=[["", "TOTAL", "", "1,500.00"]],
    )
    with dg.instance_for_test() as instance:
        assert _materialize(dagster_env, inbox, instance, "oms.com/gate.pdf").success

    def outbox() -> list[tuple]:
        with dagster_env.admin() as conn:
            return conn.execute(
                "SELECT e.printed_name, o.status FROM bamboohr_outbox o "
                "JOIN payroll_entries e ON e.id = o.entry_id ORDER BY 1"
            ).fetchall()

    assert outbox() == [("MCCOY, KEVIN", "awaiting_approval"), ("SMITH", "awaiting_review")]
    with dagster_env.database() as db:
        with db.tenant_transaction(oms) as conn:
            outcome = decide_document(conn, "gate.pdf", "preston@oms.com", approve=True, reason="Payroll run checked")
        assert (outcome.decision, outcome.deliveries_released, outcome.deliveries_waiting_for_review) == (
            "approved",
            1,
            1,
        )
        assert outbox() == [("MCCOY, KEVIN", "pending"), ("SMITH", "awaiting_review")]
        with (
            pytest.raises(ApprovalError, match=r"gate\.pdf version 1 was already approved"),
            db.tenant_transaction(oms) as conn,
        ):
            decide_document(conn, "gate.pdf", "preston@oms.com", approve=False)

        with db.tenant_transaction(oms) as conn:
            smith = conn.execute("SELECT entry_id FROM payroll_review_queue").fetchone()[0]
        with (
            pytest.raises(ApprovalError, match="no employee '99999' in this tenant's directory"),
            db.tenant_transaction(oms) as conn,
        ):
            resolve_entry(conn, smith, "99999", "hr@oms.com")
        with db.tenant_transaction(oms) as conn:
            assert resolve_entry(conn, smith, "10003", "hr@oms.com") == "pending"
    assert outbox() == [("MCCOY, KEVIN", "pending"), ("SMITH", "pending")]
    with dagster_env.admin() as conn:
        check = conn.execute("SELECT governance_check FROM executions").fetchone()[0]
        entry = conn.execute(
            "SELECT employee_id, employee_name, resolution FROM payroll_entries WHERE printed_name = 'SMITH'"
        ).fetchone()
    assert {k: check[k] for k in ("requires_approval", "approved_by", "reason", "gov_md_sections_checked")} == {
        "requires_approval": True,
        "approved_by": "preston@oms.com",
        "reason": "Payroll run checked",
        "gov_md_sections_checked": ["4.2", "7.1"],
    }
    assert check["approved_at"].endswith("Z")
    assert entry == ("10003", "Alvaro Smith", {"method": "manual", "by": "hr@oms.com"})


def test_rejection_stops_every_delivery(dagster_env, oms, inbox: Path) -> None:
    from clay_pipelines.payroll.approval import decide_document

    key = next(f"oms.com/{p.name}" for p in sorted((inbox / "oms.com").glob("payment-statement-*.pdf")))
    with dg.instance_for_test() as instance:
        assert _materialize(dagster_env, inbox, instance, key).success
    with dagster_env.database() as db, db.tenant_transaction(oms) as conn:
        outcome = decide_document(conn, key.split("/", 1)[1], "preston@oms.com", approve=False, reason="wrong period")
    assert outcome.decision == "rejected"
    with dagster_env.admin() as conn:
        assert conn.execute("SELECT DISTINCT status FROM bamboohr_outbox").fetchall() == [("rejected",)]
        status, check = conn.execute("SELECT status, governance_check FROM executions").fetchone()
    assert (status, check["rejected_by"], check["approved_by"]) == ("governance_blocked", "preston@oms.com", None)
