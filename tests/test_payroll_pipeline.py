"""The payroll pipeline in Dagster: inbox sensor, one partition per file, quarantine, blocking checks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from clay_pipelines.payroll import store
from clay_pipelines.payroll.defs import PayrollSettings, payroll_entries, payroll_files, payroll_inbox_sensor
from clay_pipelines.resources import PostgresResource
from clay_pipelines.sample_world.payroll_docs import generate_directory, generate_payroll_world

from . import payroll_pdfs


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    generate_payroll_world(tmp_path / "world", 7, date(2026, 1, 15))
    return tmp_path / "world" / "inbox"


def _resources(dagster_env, inbox: Path) -> dict:
    return {
        "postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url),
        "payroll": PayrollSettings(inbox_dir=str(inbox), quarantine_dir=str(inbox.parent / "quarantine")),
    }


def _sensor(dagster_env, inbox: Path, instance: dg.DagsterInstance) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=_resources(dagster_env, inbox)) as context:
        return payroll_inbox_sensor(context)


@pytest.fixture
def oms(dagster_env):
    with dagster_env.admin() as conn:
        tenant = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
    directory = generate_directory(7)
    with dagster_env.database() as db, db.tenant_transaction(tenant) as conn:
        store.sync_directory(conn, [asdict(e) for e in directory], {e.llc: e.id for e in directory if e.llc})
    return tenant


def test_sensor_adds_a_partition_per_file_and_runs_each_content_once(dagster_env, oms, inbox: Path) -> None:
    with dg.instance_for_test() as instance:
        first = _sensor(dagster_env, inbox, instance)
        keys = sorted(r.partition_key for r in first.run_requests)
        assert len(keys) == 7 and all(k.startswith("oms.com/") for k in keys)
        assert first.dynamic_partitions_requests[0].partition_keys == keys
        request = next(r for r in first.run_requests if r.partition_key == keys[0])
        digest = store.content_hash(inbox / keys[0])
        assert request.run_key == f"{keys[0]}@{digest}@1"
        instance.add_dynamic_partitions(payroll_files.name, keys)

        # Not processed yet: the same requests again (Dagster drops a run key it has already launched).
        again = _sensor(dagster_env, inbox, instance)
        assert sorted(r.run_key for r in again.run_requests) == sorted(r.run_key for r in first.run_requests)
        assert again.dynamic_partitions_requests == []

        # A corrected file under the same name: a new run key (content and sequence), no new partition.
        path = inbox / keys[0]
        path.write_bytes(path.read_bytes() + b"\n% corrected\n")
        corrected = _sensor(dagster_env, inbox, instance)
        assert f"{keys[0]}@{store.content_hash(path)}@2" in {r.run_key for r in corrected.run_requests}
        assert corrected.dynamic_partitions_requests == []

        # A new file: a new partition.
        (inbox / "oms.com" / "late.pdf").write_bytes((inbox / keys[1]).read_bytes())
        late = _sensor(dagster_env, inbox, instance)
        assert late.dynamic_partitions_requests[0].partition_keys == ["oms.com/late.pdf"]
        assert "oms.com/late.pdf" in {r.partition_key for r in late.run_requests}


def _materialize(dagster_env, inbox: Path, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition(payroll_files.name, key):
        instance.add_dynamic_partitions(payroll_files.name, [key])
    return dg.materialize(
        [payroll_entries],
        partition_key=key,
        instance=instance,
        resources=_resources(dagster_env, inbox),
        raise_on_error=False,
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
    digest = store.content_hash(bad)
    with dg.instance_for_test() as instance:
        result = _materialize(dagster_env, inbox, instance, "oms.com/scan.pdf")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "scan.pdf: no text layer on any of its 1 page(s): a scan, OCR is needed" in failure.message
    assert not bad.exists() and (inbox.parent / "quarantine" / "oms.com" / f"scan.{digest[:16]}.pdf").exists()
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


# ---------------------------------------------------------------------------------------------
# Files that come back, come twice, or go away


@pytest.fixture
def shelf(inbox: Path) -> Path:
    """The sample PDFs moved out of the inbox, to drop in one at a time: the inbox starts empty."""
    shelf = inbox.parent / "shelf"
    shelf.mkdir()
    for path in (inbox / "oms.com").iterdir():
        path.rename(shelf / path.name)
    return shelf


def _register(shelf: Path, n: int = 0) -> Path:
    return sorted(shelf.glob("payroll-register-*.pdf"))[n]


def _drop(source: Path, inbox: Path, name: str) -> str:
    (inbox / "oms.com" / name).write_bytes(source.read_bytes())
    return f"oms.com/{name}"


def _truth(source: Path) -> list[tuple[str, str]]:
    truth = json.loads((source.parent.parent / "truth" / f"{source.stem}.json").read_text())
    return [(e["expected_employee_id"], e["amount"]) for e in truth["entries"]]


def _count(dagster_env, table: str) -> int:
    with dagster_env.admin() as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]


def test_a_file_put_back_to_an_earlier_content_runs_again_and_its_entries_return(
    dagster_env, oms, inbox: Path, shelf: Path
) -> None:
    first, second = _register(shelf, 0), _register(shelf, 1)
    with dg.instance_for_test() as instance:
        run_keys = []
        for source in (first, second, first):
            key = _drop(source, inbox, "run.pdf")
            (request,) = _sensor(dagster_env, inbox, instance).run_requests
            run_keys.append(request.run_key)
            assert _materialize(dagster_env, inbox, instance, key).success
    digest = store.content_hash(first)
    assert run_keys[0] == f"oms.com/run.pdf@{digest}@1" and run_keys[2] == f"oms.com/run.pdf@{digest}@3"
    assert len(set(run_keys)) == 3  # the earlier content put back is a run of its own
    with dagster_env.admin() as conn:
        entries = conn.execute("SELECT employee_id, amount::text FROM payroll_entries ORDER BY line_no").fetchall()
        versions = conn.execute("SELECT version, status FROM payroll_documents ORDER BY version").fetchall()
    assert entries == _truth(first)
    assert versions == [(1, "superseded"), (2, "superseded"), (3, "extracted")]


def test_clay_run_and_the_sensor_share_what_was_processed(dagster_env, oms, inbox: Path, shelf: Path) -> None:
    from clay_pipelines.payroll.defs import register_inbox_partitions

    _drop(_register(shelf, 0), inbox, "jan.pdf")
    payroll_pdfs.ruled_register(
        inbox / "oms.com" / "off-by-a-cent.pdf",
        [["10001", "MCCOY, KEVIN", "01/30/2026", "1,000.00"]],
        ["Emp No", "Employee Name", "Pay Date", "Net Pay"],
        "Payroll",
        footer_rows=[["", "TOTAL", "", "1,000.01"]],
    )
    with dg.instance_for_test() as instance:
        # What `clay run` does: register the inbox, materialize every partition (one fails its checks).
        keys = register_inbox_partitions(instance, PayrollSettings(inbox_dir=str(inbox)))
        assert sorted(keys) == ["oms.com/jan.pdf", "oms.com/off-by-a-cent.pdf"]
        outcomes = {key: _materialize(dagster_env, inbox, instance, key).success for key in keys}
        assert outcomes == {"oms.com/jan.pdf": True, "oms.com/off-by-a-cent.pdf": False}
        # Then the UI starts: the sensor has nothing to do.
        started = _sensor(dagster_env, inbox, instance)
        assert (started.run_requests, started.dynamic_partitions_requests) == ([], [])
        # Until a file changes.
        _drop(_register(shelf, 1), inbox, "jan.pdf")
        (request,) = _sensor(dagster_env, inbox, instance).run_requests
        assert request.run_key.startswith("oms.com/jan.pdf@") and request.run_key.endswith("@2")


def test_a_file_that_has_gone_is_a_state_not_a_failure(dagster_env, oms, inbox: Path, shelf: Path) -> None:
    payroll_pdfs.scanned(inbox / "oms.com" / "scan.pdf")
    digest = store.content_hash(inbox / "oms.com" / "scan.pdf")
    good = _drop(_register(shelf, 0), inbox, "jan.pdf")
    with dg.instance_for_test() as instance:
        assert not _materialize(dagster_env, inbox, instance, "oms.com/scan.pdf").success
        assert _materialize(dagster_env, inbox, instance, good).success
        (inbox / "oms.com" / "jan.pdf").unlink()
        before = {t: _count(dagster_env, t) for t in ("executions", "mcp_telemetry_log", "payroll_entries")}
        quarantined = _materialize(dagster_env, inbox, instance, "oms.com/scan.pdf")
        removed = _materialize(dagster_env, inbox, instance, good)
        never = _materialize(dagster_env, inbox, instance, "oms.com/never-there.pdf")
        after = {t: _count(dagster_env, t) for t in ("executions", "mcp_telemetry_log", "payroll_entries")}
    entries = len(_truth(_register(shelf, 0)))
    for result in (quarantined, removed, never):
        assert result.success
        assert result.asset_materializations_for_node("payroll__payroll_entries") == []
    assert [o.description for r in (quarantined, removed, never) for o in _observations(r)] == [
        f"scan.pdf: moved to quarantine; version 1 quarantined (no_text_layer) as scan.{digest[:16]}.pdf; "
        "no live version",
        f"jan.pdf: no longer in the inbox; version 1 live: {entries} entries, approval awaiting",
        "never-there.pdf: no longer in the inbox; nothing was stored for it",
    ]
    assert _observations(quarantined)[0].metadata["needs"].value == "fix the file and drop it in the inbox again"
    assert after == before  # entries of a removed file stay; nothing new is recorded


def test_every_quarantined_version_is_kept(dagster_env, oms, inbox: Path, shelf: Path) -> None:
    scan = inbox / "oms.com" / "scan.pdf"
    payroll_pdfs.scanned(scan)
    contents = [scan.read_bytes(), b"not a pdf at all"]
    with dg.instance_for_test() as instance:
        assert not _materialize(dagster_env, inbox, instance, "oms.com/scan.pdf").success
        scan.write_bytes(contents[1])
        assert not _materialize(dagster_env, inbox, instance, "oms.com/scan.pdf").success
    quarantine = inbox.parent / "quarantine" / "oms.com"
    kept = {p.name: p.read_bytes() for p in quarantine.iterdir()}
    assert kept == {store.quarantine_name("scan.pdf", hashlib.sha256(c).hexdigest()): c for c in contents}
    with dagster_env.admin() as conn:
        assert conn.execute(
            "SELECT version, status, quarantine_reason FROM payroll_documents ORDER BY version"
        ).fetchall() == [(1, "quarantined", "no_text_layer"), (2, "quarantined", "not_pdf")]


def _failing_file(kind: str, inbox: Path, shelf: Path) -> str:
    if kind == "unreadable":
        payroll_pdfs.scanned(inbox / "oms.com" / "bad.pdf")
    elif kind == "failed_checks":
        payroll_pdfs.ruled_register(
            inbox / "oms.com" / "bad.pdf",
            [["10001", "MCCOY, KEVIN", "01/30/2026", "1,000.00"]],
            ["Emp No", "Employee Name", "Pay Date", "Net Pay"],
            "Payroll",
            footer_rows=[["", "TOTAL", "", "1,000.01"]],
        )
    else:
        _drop(_register(shelf, 0), inbox, "bad.pdf")
    return "oms.com/bad.pdf"


def _run_with_retries(dagster_env, inbox: Path, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    """A run of one partition under a retry policy that would retry any failure it is allowed to."""
    job = dg.define_asset_job("retrying", selection=[payroll_entries], op_retry_policy=dg.RetryPolicy(max_retries=2))
    defs = dg.Definitions(assets=[payroll_entries], jobs=[job], resources=_resources(dagster_env, inbox))
    instance.add_dynamic_partitions(payroll_files.name, [key])
    return defs.resolve_job_def("retrying").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )


def _retries(result: dg.ExecuteInProcessResult) -> list:
    return [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


@pytest.mark.parametrize("kind", ["unreadable", "failed_checks", "duplicate"])
def test_permanent_failures_are_not_retried(dagster_env, oms, inbox: Path, shelf: Path, kind: str) -> None:
    with dg.instance_for_test() as instance:
        if kind == "duplicate":
            assert _materialize(dagster_env, inbox, instance, _drop(_register(shelf, 0), inbox, "original.pdf")).success
        key = _failing_file(kind, inbox, shelf)
        telemetry_before = _count(dagster_env, "mcp_telemetry_log WHERE NOT success")
        result = _run_with_retries(dagster_env, inbox, instance, key)
    assert not result.success
    assert _retries(result) == []
    assert _count(dagster_env, "mcp_telemetry_log WHERE NOT success") == telemetry_before + 1


def test_a_renamed_copy_is_stored_once_and_put_in_front_of_a_person(dagster_env, oms, inbox: Path, shelf: Path) -> None:
    from clay_pipelines.payroll.approval import ApprovalError, decide_document, pending

    source = _register(shelf, 0)
    with dg.instance_for_test() as instance:
        assert _materialize(dagster_env, inbox, instance, _drop(source, inbox, "jan.pdf")).success
        before = {t: _count(dagster_env, t) for t in ("payroll_entries", "bamboohr_outbox", "payroll_review_queue")}
        copy = _materialize(dagster_env, inbox, instance, _drop(source, inbox, "jan-final.pdf"))
        again = _materialize(dagster_env, inbox, instance, "oms.com/jan-final.pdf")
    assert not copy.success and not again.success
    message = "jan-final.pdf: the same content as jan.pdf, already stored; nothing stored for the copy (remove it"
    assert message in copy.get_step_failure_events()[0].step_failure_data.error.message
    (observation,) = _observations(copy)
    assert {k: observation.metadata[k].value for k in ("status", "duplicate_of", "content_live_in")} == {
        "status": "duplicate",
        "duplicate_of": "jan.pdf",
        "content_live_in": "jan.pdf",
    }
    after = {t: _count(dagster_env, t) for t in ("payroll_entries", "bamboohr_outbox", "payroll_review_queue")}
    assert after == before
    with dagster_env.admin() as conn:
        assert conn.execute(
            "SELECT d.source_file, d.status, o.source_file FROM payroll_documents d "
            "LEFT JOIN payroll_documents o ON o.id = d.duplicate_of ORDER BY 1"
        ).fetchall() == [("jan-final.pdf", "duplicate", "jan.pdf"), ("jan.pdf", "extracted", None)]
        # One refused upload recorded, not one per run.
        assert conn.execute(
            "SELECT status, error_message FROM executions WHERE input_data->>'source_file' = 'jan-final.pdf'"
        ).fetchall() == [("failed", message + " from the inbox)")]
    with dagster_env.database() as db, db.tenant_transaction(oms) as conn:
        waiting = {s.source_file: s.needs() for s in pending(conn)}
        assert waiting == {
            "jan-final.pdf": "remove the copy (jan.pdf holds this content)",
            "jan.pdf": "approve or reject",
        }
        with pytest.raises(
            ApprovalError, match=r"jan-final\.pdf has nothing to approve: version 1 duplicates jan\.pdf"
        ):
            decide_document(conn, "jan-final.pdf", "preston@oms.com", approve=True)
    # The person removes the copy: its next run reports that and the listing lets it go.
    (inbox / "oms.com" / "jan-final.pdf").unlink()
    with dg.instance_for_test() as instance:
        removed = _materialize(dagster_env, inbox, instance, "oms.com/jan-final.pdf")
    assert removed.success
    assert [o.description for o in _observations(removed)] == [
        "jan-final.pdf: no longer in the inbox; no live version (version 1: the copy left the inbox)"
    ]
    with dagster_env.database() as db, db.tenant_transaction(oms) as conn:
        assert [s.source_file for s in pending(conn)] == ["jan.pdf"]


def test_an_unchanged_rerun_records_no_new_work(dagster_env, oms, inbox: Path, shelf: Path) -> None:
    tables = ("executions", "mcp_telemetry_log", "payroll_documents", "payroll_entries", "payroll_file_sightings")
    good = _drop(_register(shelf, 0), inbox, "jan.pdf")
    bad = _failing_file("failed_checks", inbox, shelf)
    with dg.instance_for_test() as instance:
        assert _materialize(dagster_env, inbox, instance, good).success
        assert not _materialize(dagster_env, inbox, instance, bad).success
        before = {t: _count(dagster_env, t) for t in tables}
        rerun = _materialize(dagster_env, inbox, instance, good)
        assert not _materialize(dagster_env, inbox, instance, bad).success
        after = {t: _count(dagster_env, t) for t in tables}
    assert after == before
    assert before["executions"] == 1 and before["mcp_telemetry_log"] == 2
    metadata = rerun.asset_materializations_for_node("payroll__payroll_entries")[0].metadata
    assert (metadata["unchanged"].value, metadata["version"].value, metadata["rows_written"].value) == (True, 1, 0)


def test_an_inbox_folder_that_names_no_tenant_fails_its_run_once(dagster_env, oms, inbox: Path, shelf: Path) -> None:
    (inbox / "nobody.example").mkdir()
    key = "nobody.example/jan.pdf"
    (inbox / key).write_bytes(_register(shelf, 0).read_bytes())
    with dg.instance_for_test() as instance:
        (request,) = _sensor(dagster_env, inbox, instance).run_requests
        assert request.run_key == f"{key}@{store.content_hash(inbox / key)}@unknown-tenant"
        result = _run_with_retries(dagster_env, inbox, instance, key)
    assert not result.success and _retries(result) == []
    assert result.get_step_failure_events()[0].step_failure_data.error.message.startswith(
        "dagster._core.definitions.events.Failure: nobody.example/jan.pdf: the inbox folder names no tenant: "
        "unknown tenant 'nobody.example'"
    )
