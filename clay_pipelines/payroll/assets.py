"""Dagster wiring for payroll: the inbox sensor, one dynamic partition per file, the directory cache.

Inbox layout: INBOX/<tenant name or domain>/<file>.pdf. A partition key is "<tenant>/<file>".
"""

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from psycopg.types.json import Jsonb

from clay_pipelines import settings
from clay_pipelines.db import MaintenanceJob
from clay_pipelines.metadata import markdown_table
from clay_pipelines.payroll import checks, store
from clay_pipelines.payroll.bamboohr import BambooHRClient, BambooHRConfig
from clay_pipelines.payroll.delivery import deliver_pending, reconcile
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.triage import UnreadableDocument
from clay_pipelines.resources import PostgresResource

OWNERS = ["team:payroll"]
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
            raise dg.Failure(f"PayrollSettings.passwords_json is not valid JSON: {error}") from error
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
    asset_selection=[dg.AssetKey(["payroll", "payroll_entries"])],
    description="New or changed PDFs in the payroll inbox: one partition per file, one run per content.",
)
def payroll_inbox_sensor(context: dg.SensorEvaluationContext, payroll: PayrollSettings) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    files = inbox_files(payroll.inbox())
    known = set(context.instance.get_dynamic_partitions(payroll_files.name)) if context.instance else set()
    new_keys: list[str] = []
    requests: list[dg.RunRequest] = []
    for key, path in files.items():
        digest = store.content_hash(path)
        if seen.get(key) == digest:
            continue  # the same file dropped again: nothing to do
        if key not in known:
            new_keys.append(key)
        seen[key] = digest
        # The run key is the content: the same bytes never run twice, a corrected file runs again.
        requests.append(dg.RunRequest(run_key=f"{key}@{digest}", partition_key=key, tags={"payroll/sha256": digest}))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[payroll_files.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(seen, sort_keys=True),
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
    execution_id = conn.execute(
        """
        INSERT INTO executions (system_id, system_name, user_request, routing_path, input_data, output_data,
                                governance_check, status, error_message, started_at, completed_at)
        VALUES (%s, 'domicile-governance', %s, %s, %s, %s, %s, %s, %s, %s, now()) RETURNING id
        """,
        (
            system[0] if system else None,
            f"Process payroll PDF {source_file}",
            [system[0]] if system else [],
            Jsonb({"source_file": source_file, "document_id": str(document_id) if document_id else None}),
            Jsonb(detail),
            Jsonb(governance),
            status,
            error,
            started,
        ),
    ).fetchone()[0]
    if document_id is not None:
        conn.execute("UPDATE payroll_documents SET execution_id = %s WHERE id = %s", (execution_id, document_id))


@dg.asset(
    key=["payroll", "payroll_entries"],
    partitions_def=payroll_files,
    group_name="payroll",
    kinds={"postgres", "pdf"},
    owners=OWNERS,
    deps=[employee_directory],
    description="One file version's entries in payroll_entries, resolved against the directory, queued for BambooHR.",
    check_specs=[dg.AssetCheckSpec(name, asset=["payroll", "payroll_entries"], blocking=True) for name in CHECK_NAMES],
    pool="postgres",
)
def payroll_entries(context: dg.AssetExecutionContext, postgres: PostgresResource, payroll: PayrollSettings):  # noqa: ANN201 - generator of events
    key = context.partition_key
    tenant_ref, file_name = key.split("/", 1)
    path = payroll.inbox() / tenant_ref / file_name
    tenant_id = postgres.resolve_tenant(tenant_ref)
    started_at, started = datetime.now(UTC), time.perf_counter()
    if not path.exists():
        raise dg.Failure(f"{key}: the file is no longer in the inbox ({path})")
    digest = store.content_hash(path)
    try:
        extraction = extract_document(
            path, password=payroll.password_for(key), configured_currency=payroll.default_currency
        )
    except UnreadableDocument as error:
        elapsed = (time.perf_counter() - started) * 1000
        with postgres.tenant_transaction(tenant_id) as conn:
            quarantined = store.store_quarantine(conn, file_name, digest, error.reason, error.detail)
            store.record_tool_call(
                conn, "process_payroll_pdf", {"source_file": file_name, "sha256": digest}, elapsed, False, str(error)
            )
            _record_execution(
                conn,
                file_name,
                "failed",
                started_at,
                {"quarantined": error.reason},
                str(error),
                quarantined.document_id,
            )
        target = payroll.quarantine() / tenant_ref
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target / file_name)
        raise dg.Failure(
            description=f"{file_name}: {error.detail} (quarantined to {target / file_name})",
            metadata={"file": file_name, "reason": error.reason},
        ) from error

    outcomes = checks.run_checks(extraction)
    for outcome in outcomes:
        yield dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"detail": outcome.detail},
        )
    failed = [o for o in outcomes if o.blocking and not o.passed]
    if failed:
        with postgres.tenant_transaction(tenant_id) as conn:
            store.record_tool_call(
                conn,
                "process_payroll_pdf",
                {"source_file": file_name, "sha256": digest},
                (time.perf_counter() - started) * 1000,
                False,
                "; ".join(f"{o.name}: {o.detail}" for o in failed),
            )
        raise dg.Failure(
            description=f"{file_name}: nothing written, " + "; ".join(f"{o.name} failed ({o.detail})" for o in failed)
        )

    with postgres.tenant_transaction(tenant_id) as conn:
        stored = store.store_extraction(conn, file_name, digest, extraction, store.load_resolver(conn))
        elapsed = (time.perf_counter() - started) * 1000
        summary = {"entries": stored.entries, "total_amount": float(stored.total_amount), "source_file": file_name}
        store.record_tool_call(conn, "process_payroll_pdf", summary, elapsed, True)
        if not stored.unchanged:
            _record_execution(
                conn,
                file_name,
                "success",
                started_at,
                {**summary, "version": stored.version, "unresolved": stored.unresolved},
                None,
                stored.document_id,
            )
    preview = markdown_table(
        ["line", "payee", "id", "date", "amount"],
        [[k, e.employee_name, e.employee_id, e.date, e.amount] for k, e in enumerate(extraction.entries[:20], start=1)],
    )
    yield dg.MaterializeResult(
        metadata={
            "source_file": file_name,
            "version": stored.version,
            "unchanged": stored.unchanged,
            "entries": stored.entries,
            "rows_written": 0 if stored.unchanged else stored.entries,
            "total_amount": float(stored.total_amount),
            "unresolved_names": stored.unresolved,
            "replaced_entries": stored.replaced_entries,
            "template": extraction.template or "generic",
            "warnings": dg.MetadataValue.json(extraction.warnings),
            "preview": dg.MetadataValue.md(preview),
            "outbox": f"{stored.entries} deliveries wait in the outbox for approval"
            + (f" ({stored.unresolved} also for name review)" if stored.unresolved else ""),
        }
    )


def register_inbox_partitions(instance: dg.DagsterInstance, payroll: PayrollSettings) -> list[str]:
    """Add a partition for every inbox file not yet known (what the sensor does, for headless runs)."""
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
