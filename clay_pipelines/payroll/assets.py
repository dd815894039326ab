"""Dagster wiring for payroll: the inbox sensor, one dynamic partition per file, the directory cache.

Inbox layout: INBOX/<tenant name or domain>/<file>.pdf. A partition key is "<tenant>/<file>".
"""

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from clay_pipelines import settings
from clay_pipelines.db import MaintenanceJob, UnknownTenantError
from clay_pipelines.metadata import markdown_table
from clay_pipelines.payroll import checks, sightings, store
from clay_pipelines.payroll.bamboohr import BambooHRClient, BambooHRConfig
from clay_pipelines.payroll.delivery import deliver_pending, reconcile
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.triage import UnreadableDocument
from clay_pipelines.platform import ledger
from clay_pipelines.resources import PostgresResource

OWNERS = ["team:payroll"]
ENTRIES = dg.AssetKey(["payroll", "payroll_entries"])
payroll_files = dg.DynamicPartitionsDefinition(name="payroll_files")


class PayrollSettings(dg.ConfigurableResource):
    """Where payroll PDFs arrive and how to open them."""

    inbox_dir: str = ""  # default: the sample world's inbox
    directory_dir: str = ""  # cached directories as <tenant>.json (+ <tenant>.llc.json), when BambooHR is not used
    quarantine_dir: str = ""
    passwords_json: str = "{}"  # {"<tenant>/<file>" or "<tenant>": "password"}
    default_currency: str | None = None

    def inbox(self) -> Path:
        return Path(self.inbox_dir) if self.inbox_dir else settings.sample_world_dir() / "payroll" / "inbox"

    def directories(self) -> Path:
        return Path(self.directory_dir) if self.directory_dir else settings.sample_world_dir() / "payroll" / "directory"

    def quarantine(self) -> Path:
        return Path(self.quarantine_dir) if self.quarantine_dir else self.inbox().parent / "quarantine"

    def password_for(self, partition_key: str) -> str | None:
        try:
            passwords = json.loads(self.passwords_json or "{}")
        except json.JSONDecodeError as error:
            raise dg.Failure(
                f"PayrollSettings.passwords_json is not valid JSON: {error}", allow_retries=False
            ) from error
        return passwords.get(partition_key) or passwords.get(partition_key.split("/", 1)[0])


class BambooHRSettings(dg.ConfigurableResource):
    """BambooHR, read from the environment at run time; unset means deliveries wait in the outbox.

    A BambooHR company belongs to one tenant: only that tenant's entries are delivered to it, and
    only its directory is read from it.
    """

    company_domain_env: str = "BAMBOOHR_COMPANY_DOMAIN"
    api_key_env: str = "BAMBOOHR_API_KEY"
    tenant_env: str = "BAMBOOHR_TENANT"  # the tenant (name, domain or id) whose BambooHR this is
    base_url_env: str = "BAMBOOHR_BASE_URL"  # optional: another gateway (a proxy, a test server)
    table: str = "customPayroll"

    def configured(self) -> bool:
        return all(os.environ.get(v) for v in (self.company_domain_env, self.api_key_env, self.tenant_env))

    def not_configured_reason(self) -> str:
        return f"BambooHR is not configured (set {self.company_domain_env}, {self.api_key_env} and {self.tenant_env})"

    def tenant(self) -> str:
        return os.environ[self.tenant_env]

    def client(self) -> BambooHRClient:
        return BambooHRClient(
            BambooHRConfig(
                company_domain=os.environ[self.company_domain_env],
                api_key=os.environ[self.api_key_env],
                table=self.table,
                base_url=os.environ.get(self.base_url_env, ""),
            )
        )


def inbox_files(inbox: Path) -> dict[str, Path]:
    """Partition key -> file, for every PDF under inbox/<tenant>/."""
    if not inbox.is_dir():
        return {}
    return {
        f"{path.parent.name}/{path.name}": path
        for path in sorted(inbox.glob("*/*"))
        if path.is_file() and path.suffix.lower() == ".pdf"
    }


@dg.sensor(
    name="payroll_inbox_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[ENTRIES],
    description="New or changed PDFs in the payroll inbox: one partition per file, one run per content change.",
)
def payroll_inbox_sensor(
    context: dg.SensorEvaluationContext, payroll: PayrollSettings, postgres: PostgresResource
) -> dg.SensorResult:
    # What was processed is read from the platform database (payroll_file_sightings), which `clay run`'s
    # materializations write too: no cursor of the sensor's own.
    files = inbox_files(payroll.inbox())
    known = set(context.instance.get_dynamic_partitions(payroll_files.name)) if context.instance else set()
    new_keys = [key for key in files if key not in known]
    requests: list[dg.RunRequest] = []
    for tenant_ref, paths in _by_tenant(files).items():
        digests = {name: store.content_hash(path) for name, path in paths.items()}
        try:
            tenant_id = postgres.resolve_tenant(tenant_ref)
        except UnknownTenantError as error:
            # Run anyway: the run fails with the reason, where a person sees it (once per content).
            context.log.warning(f"payroll inbox folder {tenant_ref!r}: {error}")
            requests += [
                _run_request(f"{tenant_ref}/{name}", digest, "unknown-tenant") for name, digest in digests.items()
            ]
            continue
        with postgres.tenant_transaction(tenant_id) as conn:
            seen = sightings.observe_all(conn, digests)
        requests += [
            _run_request(f"{tenant_ref}/{name}", sighting.content_hash, str(sighting.seq))
            for name, sighting in seen.items()
            if not sighting.processed
        ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[payroll_files.build_add_request(new_keys)] if new_keys else [],
    )


def _by_tenant(files: dict[str, Path]) -> dict[str, dict[str, Path]]:
    grouped: dict[str, dict[str, Path]] = {}
    for key, path in files.items():
        tenant_ref, name = key.split("/", 1)
        grouped.setdefault(tenant_ref, {})[name] = path
    return grouped


def _run_request(key: str, digest: str, seq: str) -> dg.RunRequest:
    # The run key is the content and how many content changes the file has had: the same bytes never run
    # twice, a corrected file runs again, and so does an earlier content put back (its number is new).
    return dg.RunRequest(
        run_key=f"{key}@{digest}@{seq}", partition_key=key, tags={"payroll/sha256": digest, "payroll/seq": seq}
    )


@dg.asset(
    key=["payroll", "employee_directory"],
    group_name="payroll",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="Each tenant's employee directory and LLC mapping, cached in the database for name resolution.",
    automation_condition=dg.AutomationCondition.on_cron("0 5 * * *"),
    pool="postgres",
)
def employee_directory(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    payroll: PayrollSettings,
    bamboohr: BambooHRSettings,
) -> dg.MaterializeResult:
    synced: dict[str, int] = {}
    bamboohr_tenant = None
    if bamboohr.configured():
        bamboohr_tenant = postgres.resolve_tenant(bamboohr.tenant())
        with bamboohr.client() as client:
            people = [
                {
                    "id": str(e["id"]),
                    "first_name": e.get("firstName") or "",
                    "last_name": e.get("lastName") or "",
                    "middle_name": e.get("middleName") or "",
                    "preferred_name": e.get("preferredName"),
                    "job_title": e.get("jobTitle"),
                    "work_email": e.get("workEmail"),
                }
                for e in client.directory()
            ]
        with postgres.tenant_transaction(bamboohr_tenant) as conn:
            llc = dict(conn.execute("SELECT llc_name, employee_id FROM llc_mappings").fetchall())
            synced[bamboohr.tenant()] = store.sync_directory(conn, people, llc)
        context.log.info(f"{bamboohr.tenant()}: {len(people)} employees from BambooHR's directory")
    for path in sorted(payroll.directories().glob("*.json")):
        if path.name.endswith(".llc.json"):
            continue
        tenant_ref = path.stem
        people = json.loads(path.read_text())
        llc_path = path.with_name(f"{tenant_ref}.llc.json")
        llc = json.loads(llc_path.read_text()) if llc_path.exists() else {}
        tenant_id = postgres.resolve_tenant(tenant_ref)
        if tenant_id == bamboohr_tenant:
            continue  # BambooHR is this tenant's source of truth
        with postgres.tenant_transaction(tenant_id) as conn:
            synced[tenant_ref] = store.sync_directory(conn, people, llc)
        context.log.info(f"{tenant_ref}: {synced[tenant_ref]} employees, {len(llc)} LLC mappings")
    return dg.MaterializeResult(
        metadata={
            "tenants": len(synced),
            "employees": sum(synced.values()),
            "rows_written": sum(synced.values()),
            "by_tenant": dg.MetadataValue.json(synced),
        }
    )


CHECK_NAMES = ["total_reconciles", "no_duplicate_entries", "no_zero_amounts", "dates_plausible"]


def _record_execution(
    conn: Any,
    source_file: str,
    status: str,
    started: datetime,
    detail: dict[str, Any],
    error: str | None,
    document_id: Any = None,
) -> None:
    """The file as an executions row of domicile-governance; its governance_check awaits approval."""
    system = conn.execute("SELECT id FROM systems WHERE name = 'domicile-governance'").fetchone()
    governance = {
        "requires_approval": True,
        "action": "upload_payroll_entries",
        "approved_by": None,
        "approved_at": None,
        "reason": None,
        "gov_md_sections_checked": [],
    }
    execution_id = ledger.log_execution(
        conn,
        ledger.ExecutionRecord(
            system_id=system[0] if system else None,
            system_name="domicile-governance",
            user_request=f"Process payroll PDF {source_file}",
            routing_path=[system[0]] if system else [],
            input_data={"source_file": source_file, "document_id": str(document_id) if document_id else None},
            output_data=detail,
            governance_check=governance,
            status=status,
            error_message=error,
            started_at=started,
            completed_at=datetime.now(UTC),
        ),
    )
    if document_id is not None:
        conn.execute("UPDATE payroll_documents SET execution_id = %s WHERE id = %s", (execution_id, document_id))


@dg.multi_asset(
    name="payroll__payroll_entries",
    specs=[
        dg.AssetSpec(
            ENTRIES,
            group_name="payroll",
            kinds={"postgres", "pdf"},
            owners=OWNERS,
            deps=[employee_directory],
            description="One file version's entries in payroll_entries, resolved against the directory, queued for "
            "BambooHR.",
        )
    ],
    partitions_def=payroll_files,
    check_specs=[dg.AssetCheckSpec(name, asset=ENTRIES, blocking=True) for name in CHECK_NAMES],
    # Outputs and check results are optional: a file that has left the inbox reports its state (an
    # observation) and materializes nothing, and its checks have nothing to evaluate.
    can_subset=True,
    pool="postgres",
)
def payroll_entries(context: dg.AssetExecutionContext, postgres: PostgresResource, payroll: PayrollSettings):  # noqa: ANN201 - generator of events
    key = context.partition_key
    tenant_ref, file_name = key.split("/", 1)
    path = payroll.inbox() / tenant_ref / file_name
    tenant_id = _tenant(postgres, key, tenant_ref)
    started_at, started = datetime.now(UTC), time.perf_counter()
    try:
        digest = store.content_hash(path)
    except FileNotFoundError:
        yield _gone(context, postgres, tenant_id, file_name)
        return
    try:
        extraction = extract_document(
            path, password=payroll.password_for(key), configured_currency=payroll.default_currency
        )
    except UnreadableDocument as error:
        raise _quarantine(postgres, payroll, tenant_id, key, path, digest, error, started_at, started) from error
    outcomes = checks.run_checks(extraction)
    yield from _check_results(context, outcomes)
    _stop_on_failed_checks(postgres, tenant_id, file_name, digest, outcomes, started)
    with postgres.tenant_transaction(tenant_id) as conn:
        stored = store.store_extraction(conn, file_name, digest, extraction, store.load_resolver(conn))
        sightings.record_outcome(conn, file_name, digest, stored.status, document_id=stored.document_id)
        if not stored.unchanged:  # an unchanged re-run is no new work: no tool call, no execution recorded
            _record_new_version(conn, file_name, digest, stored, started_at, _ms(started))
    if stored.status == "duplicate":
        metadata = _duplicate_metadata(stored)
        yield dg.AssetObservation(asset_key=ENTRIES, partition=key, metadata=metadata)
        raise dg.Failure(description=_duplicate_message(stored), metadata=metadata, allow_retries=False)
    if stored.orphaned_copies:
        context.log.warning(
            f"{file_name}: its previous content is live nowhere now, and these copies of it are left as duplicates "
            f"for a person to remove: {', '.join(stored.orphaned_copies)}"
        )
    yield _materialization(extraction, stored)


def _check_results(context: dg.AssetExecutionContext, outcomes: list[Any]) -> Iterator[dg.AssetCheckResult]:
    selected = context.selected_asset_check_keys
    for outcome in outcomes:
        if dg.AssetCheckKey(ENTRIES, outcome.name) in selected:
            yield dg.AssetCheckResult(
                asset_key=ENTRIES,
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"detail": outcome.detail},
            )


def _stop_on_failed_checks(
    postgres: PostgresResource, tenant_id: Any, file_name: str, digest: str, outcomes: list[Any], started: float
) -> None:
    """A failed blocking check writes nothing but its tool call: one per content and result, however often it runs."""
    failed = [o for o in outcomes if o.blocking and not o.passed]
    if not failed:
        return
    detail = "; ".join(f"{o.name}: {o.detail}" for o in failed)
    with postgres.tenant_transaction(tenant_id) as conn:
        if sightings.record_outcome(conn, file_name, digest, "failed_checks", detail):
            store.record_tool_call(
                conn, "process_payroll_pdf", _tool_input(file_name, digest), _ms(started), False, detail
            )
    raise dg.Failure(
        description=f"{file_name}: nothing written, " + "; ".join(f"{o.name} failed ({o.detail})" for o in failed),
        allow_retries=False,
    )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _tool_input(file_name: str, digest: str) -> dict[str, Any]:
    return {"source_file": file_name, "sha256": digest}


def _tenant(postgres: PostgresResource, key: str, tenant_ref: str) -> Any:
    try:
        return postgres.resolve_tenant(tenant_ref)
    except UnknownTenantError as error:
        raise dg.Failure(f"{key}: the inbox folder names no tenant: {error}", allow_retries=False) from error


def _gone(context: dg.AssetExecutionContext, postgres: PostgresResource, tenant_id: Any, file_name: str) -> Any:
    """A file that has left the inbox (quarantined, removed) is a state to report, not a failure."""
    with postgres.tenant_transaction(tenant_id) as conn:
        if store.retire_removed_copy(conn, file_name):
            context.log.info(f"{file_name}: the duplicate left the inbox; its record is no longer live")
        states = store.file_states(conn, file_name)
    state = states[0] if states else None
    where = "moved to quarantine" if state and state.latest_status == "quarantined" else "no longer in the inbox"
    description = f"{file_name}: {where}; " + (state.describe() if state else "nothing was stored for it")
    context.log.info(description)
    return dg.AssetObservation(
        asset_key=ENTRIES,
        partition=context.partition_key,
        description=description,
        metadata={
            "source_file": file_name,
            "in_inbox": False,
            "state": state.describe() if state else "never stored",
            "live_version": state.live_version if state else None,
            "needs": (state.needs() if state else None) or "nothing",
        },
    )


def _quarantine(
    postgres: PostgresResource,
    payroll: PayrollSettings,
    tenant_id: Any,
    key: str,
    path: Path,
    digest: str,
    error: UnreadableDocument,
    started_at: datetime,
    started: float,
) -> dg.Failure:
    """Record the unreadable version (once per content) and move the file out of the inbox under a name of its own."""
    tenant_ref, file_name = key.split("/", 1)
    with postgres.tenant_transaction(tenant_id) as conn:
        quarantined = store.store_quarantine(conn, file_name, digest, error.reason, error.detail)
        sightings.record_outcome(conn, file_name, digest, "quarantined", error.reason, quarantined.document_id)
        if not quarantined.unchanged:
            store.record_tool_call(
                conn, "process_payroll_pdf", _tool_input(file_name, digest), _ms(started), False, str(error)
            )
            _record_execution(
                conn,
                file_name,
                "failed",
                started_at,
                {"quarantined": error.reason, "version": quarantined.version},
                str(error),
                quarantined.document_id,
            )
    # After the commit: if the move fails, the file stays in the inbox and the next run moves it (same name).
    target = payroll.quarantine() / tenant_ref / store.quarantine_name(file_name, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
    return dg.Failure(
        description=f"{file_name}: {error.detail} (quarantined to {target})",
        metadata={"file": file_name, "reason": error.reason, "version": quarantined.version},
        allow_retries=False,
    )


def _record_new_version(
    conn: Any, file_name: str, digest: str, stored: store.StoredVersion, started_at: datetime, elapsed_ms: float
) -> None:
    """A new version's tool call and executions row; a duplicate is a refused upload."""
    if stored.status == "duplicate":
        message = _duplicate_message(stored)
        store.record_tool_call(conn, "process_payroll_pdf", _tool_input(file_name, digest), elapsed_ms, False, message)
        detail = {"duplicate_of": stored.duplicate_of.source_file, "version": stored.version}  # type: ignore[union-attr]
        _record_execution(conn, file_name, "failed", started_at, detail, message, stored.document_id)
        return
    summary = {"entries": stored.entries, "total_amount": float(stored.total_amount), "source_file": file_name}
    store.record_tool_call(conn, "process_payroll_pdf", summary, elapsed_ms, True)
    _record_execution(
        conn,
        file_name,
        "success",
        started_at,
        {**summary, "version": stored.version, "unresolved": stored.unresolved},
        None,
        stored.document_id,
    )


def _duplicate_message(stored: store.StoredVersion) -> str:
    copied = stored.duplicate_of
    assert copied is not None
    if copied.live_in is not None:
        return (
            f"{stored.source_file}: the same content as {copied.live_in}, already stored; nothing stored for the copy "
            f"(remove it from the inbox)"
        )
    return (
        f"{stored.source_file}: a copy of {copied.source_file} version {copied.version}, which {copied.source_file} "
        f"has since replaced; nothing stored (remove the copy, or put it back as {copied.source_file})"
    )


def _duplicate_metadata(stored: store.StoredVersion) -> dict[str, Any]:
    copied = stored.duplicate_of
    assert copied is not None
    return {
        "source_file": stored.source_file,
        "version": stored.version,
        "status": "duplicate",
        "duplicate_of": copied.source_file,
        "duplicate_of_version": copied.version,
        "content_live_in": copied.live_in or "no file (orphaned copy)",
        "rows_written": 0,
    }


def _materialization(extraction: Any, stored: store.StoredVersion) -> dg.MaterializeResult:
    preview = markdown_table(
        ["line", "payee", "id", "date", "amount"],
        [[k, e.employee_name, e.employee_id, e.date, e.amount] for k, e in enumerate(extraction.entries[:20], start=1)],
    )
    return dg.MaterializeResult(
        asset_key=ENTRIES,
        metadata={
            "source_file": stored.source_file,
            "version": stored.version,
            "unchanged": stored.unchanged,
            "entries": stored.entries,
            "rows_written": 0 if stored.unchanged else stored.entries,
            "total_amount": float(stored.total_amount),
            "unresolved_names": stored.unresolved,
            "replaced_entries": stored.replaced_entries,
            "orphaned_copies": dg.MetadataValue.json(list(stored.orphaned_copies)),
            "template": extraction.template or "generic",
            "warnings": dg.MetadataValue.json(extraction.warnings),
            "preview": dg.MetadataValue.md(preview),
            "outbox": f"{stored.entries} deliveries wait in the outbox for approval"
            + (f" ({stored.unresolved} also for name review)" if stored.unresolved else ""),
        },
    )


def register_inbox_partitions(instance: dg.DagsterInstance, payroll: PayrollSettings) -> list[str]:
    """Add a partition for every inbox file not yet known (what the sensor does, for headless runs).

    The runs record each content they process in payroll_file_sightings, which the inbox sensor reads:
    a file handled here is not run again when the sensor starts.
    """
    known = set(instance.get_dynamic_partitions(payroll_files.name))
    new_keys = [key for key in inbox_files(payroll.inbox()) if key not in known]
    if new_keys:
        instance.add_dynamic_partitions(payroll_files.name, new_keys)
    return new_keys


# ---------------------------------------------------------------------------------------------
# Delivery to BambooHR


def _pending_deliveries(postgres: PostgresResource, tenant: str | None = None) -> tuple[int, str]:
    """Deliveries due now: the configured tenant's, or (unconfigured, for the message) every tenant's."""
    query = (
        "SELECT count(*), coalesce(max(id::text), '') FROM bamboohr_outbox "
        "WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
    )
    if tenant is not None:
        with postgres.tenant_transaction(postgres.resolve_tenant(tenant)) as conn:
            count, newest = conn.execute(query).fetchone()
    else:
        with postgres.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
            count, newest = conn.execute(query).fetchone()
    return int(count), newest


@dg.asset(
    key=["payroll", "bamboohr_deliveries"],
    deps=[payroll_entries],
    group_name="payroll",
    kinds={"python", "postgres"},
    owners=OWNERS,
    description="Approved payroll entries delivered from the outbox to BambooHR (the dual-write).",
    pool="bamboohr",
)
def bamboohr_deliveries(
    context: dg.AssetExecutionContext, postgres: PostgresResource, bamboohr: BambooHRSettings
) -> dg.MaterializeResult:
    waiting, _ = _pending_deliveries(postgres, bamboohr.tenant() if bamboohr.configured() else None)
    if not bamboohr.configured():
        context.log.warning(f"{bamboohr.not_configured_reason()}: {waiting} approved deliveries wait in the outbox")
        return dg.MaterializeResult(
            metadata={
                "configured": False,
                "waiting_in_outbox": waiting,
                "delivered": 0,
                "rows_written": 0,
                "status": f"{bamboohr.not_configured_reason()}: deliveries wait in the outbox",
            }
        )
    tenant_id = postgres.resolve_tenant(bamboohr.tenant())
    with bamboohr.client() as client:
        report = deliver_pending(postgres.database, tenant_id, client)
    totals = {k: getattr(report, k) for k in ("delivered", "adopted", "dead_letters", "retry_later")}
    errors = report.errors
    context.log.info(f"{bamboohr.tenant()}: {report.delivered} delivered, {len(errors)} failed")
    for error in errors[:20]:
        context.log.warning(error)
    return dg.MaterializeResult(
        metadata={
            "configured": True,
            **totals,
            "rows_written": totals["delivered"],
            "errors": dg.MetadataValue.json(errors[:50]),
        }
    )


@dg.sensor(
    name="payroll_delivery_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[dg.AssetKey(["payroll", "bamboohr_deliveries"])],
    description="Approved payroll deliveries waiting in the outbox: deliver them to BambooHR.",
)
def payroll_delivery_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, bamboohr: BambooHRSettings
) -> dg.SensorResult | dg.SkipReason:
    waiting, newest = _pending_deliveries(postgres, bamboohr.tenant() if bamboohr.configured() else None)
    if not waiting:
        return dg.SkipReason("no approved deliveries wait in the outbox")
    if not bamboohr.configured():
        return dg.SkipReason(f"{bamboohr.not_configured_reason()}: {waiting} approved deliveries wait in the outbox")
    # One run per state of the queue: approving more files, or retries coming due, makes a new one.
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"deliver:{waiting}:{newest}")])


@dg.asset(
    key=["payroll", "bamboohr_reconciliation"],
    deps=[bamboohr_deliveries],
    group_name="payroll",
    kinds={"python"},
    owners=OWNERS,
    description="Nightly comparison of delivered payroll_entries with the rows BambooHR holds.",
    check_specs=[dg.AssetCheckSpec("bamboohr_matches_payroll_entries", asset=["payroll", "bamboohr_reconciliation"])],
    automation_condition=dg.AutomationCondition.on_cron("30 2 * * *"),
    pool="bamboohr",
)
def bamboohr_reconciliation(
    context: dg.AssetExecutionContext, postgres: PostgresResource, bamboohr: BambooHRSettings
) -> dg.MaterializeResult:
    if not bamboohr.configured():
        return dg.MaterializeResult(
            metadata={"configured": False, "status": bamboohr.not_configured_reason()},
            check_results=[
                dg.AssetCheckResult(
                    check_name="bamboohr_matches_payroll_entries",
                    passed=True,
                    metadata={"skipped": bamboohr.not_configured_reason()},
                )
            ],
        )
    with bamboohr.client() as client:
        report = reconcile(postgres.database, postgres.resolve_tenant(bamboohr.tenant()), client)
    checked = report.checked_entries
    differences = {k: getattr(report, k) for k in ("missing_in_bamboohr", "differing", "unknown_in_bamboohr")}
    clean = not any(differences.values())
    return dg.MaterializeResult(
        metadata={"configured": True, "checked_entries": checked, **{k: len(v) for k, v in differences.items()}},
        check_results=[
            dg.AssetCheckResult(
                check_name="bamboohr_matches_payroll_entries",
                passed=clean,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={k: dg.MetadataValue.json(v[:50]) for k, v in differences.items()},
            )
        ],
    )


PAYROLL_ASSETS = [employee_directory, payroll_entries, bamboohr_deliveries, bamboohr_reconciliation]
PAYROLL_SENSORS = [payroll_inbox_sensor, payroll_delivery_sensor]
