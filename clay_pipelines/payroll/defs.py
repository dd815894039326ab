"""Dagster wiring for payroll: the inbox sensor, one dynamic partition per file, the directory cache.

Inbox layout: INBOX/<tenant name or domain>/<file>.pdf. A partition key is "<tenant>/<file>".
"""

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import dagster as dg

from clay_pipelines import settings
from clay_pipelines.db import MaintenanceJob, UnknownTenantError
from clay_pipelines.deploy.instance import PAYROLL_TENANT_TAG
from clay_pipelines.metadata import markdown_table
from clay_pipelines.payroll import checks, delivery, processing, sightings, store
from clay_pipelines.payroll.bamboohr import BambooHRClient, BambooHRConfig, directory_people
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.model import Extraction
from clay_pipelines.payroll.triage import UnreadableDocument
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
    """BambooHR, read from the environment at run time (BAMBOOHR_COMPANY_DOMAIN, BAMBOOHR_API_KEY,
    BAMBOOHR_TENANT, BAMBOOHR_BASE_URL: clay_pipelines/settings.py); unset means deliveries wait in
    the outbox.

    A BambooHR company belongs to one tenant: only that tenant's entries are delivered to it, and
    only its directory is read from it.
    """

    table: str = "customPayroll"

    def configured(self) -> bool:
        return all(settings.env(v) for v in ("BAMBOOHR_COMPANY_DOMAIN", "BAMBOOHR_API_KEY", "BAMBOOHR_TENANT"))

    def not_configured_reason(self) -> str:
        return "BambooHR is not configured (set BAMBOOHR_COMPANY_DOMAIN, BAMBOOHR_API_KEY and BAMBOOHR_TENANT)"

    def tenant(self) -> str:
        return settings.env("BAMBOOHR_TENANT") or ""

    def client(self) -> BambooHRClient:
        return BambooHRClient(
            BambooHRConfig(
                company_domain=settings.env("BAMBOOHR_COMPANY_DOMAIN") or "",
                api_key=settings.env("BAMBOOHR_API_KEY") or "",
                table=self.table,
                base_url=settings.env("BAMBOOHR_BASE_URL") or "",
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
    # The tenant tag lets a deployment's run queue take a tenant's files one at a time, in order.
    tags = {"payroll/sha256": digest, "payroll/seq": seq, PAYROLL_TENANT_TAG: key.split("/", 1)[0]}
    return dg.RunRequest(run_key=f"{key}@{digest}@{seq}", partition_key=key, tags=tags)


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
    names = postgres.tenant_names()
    synced: dict[str, int] = {}
    bamboohr_tenant = None
    if bamboohr.configured():
        bamboohr_tenant = postgres.resolve_tenant(bamboohr.tenant())
        with bamboohr.client() as client:
            people = directory_people(client.directory())
        with postgres.tenant_transaction(bamboohr_tenant) as conn:
            synced[names[bamboohr_tenant]] = store.sync_directory(conn, people, store.cached_llc_mapping(conn))
        context.log.info(f"{names[bamboohr_tenant]}: {len(people)} employees from BambooHR's directory")
    for cached in store.directory_files(payroll.directories()):
        tenant_id = postgres.resolve_tenant(cached.tenant_ref)
        if tenant_id == bamboohr_tenant:
            continue  # BambooHR is this tenant's source of truth
        with postgres.tenant_transaction(tenant_id) as conn:
            synced[names[tenant_id]] = store.sync_directory(conn, cached.people, cached.llc_mapping)
        context.log.info(f"{names[tenant_id]}: {len(cached.people)} employees, {len(cached.llc_mapping)} LLC mappings")
    return dg.MaterializeResult(
        metadata={
            "tenants": len(synced),
            "employees": sum(synced.values()),
            "rows_written": sum(synced.values()),
            "by_tenant": dg.MetadataValue.json(synced),
        }
    )


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
    check_specs=[
        dg.AssetCheckSpec(check.name, asset=ENTRIES, blocking=True, description=check.description)
        for check in checks.CHECKS
    ],
    # Outputs and check results are optional: a file that has left the inbox reports its state (an
    # observation) and materializes nothing, and its checks have nothing to evaluate.
    can_subset=True,
    pool="postgres",
)
def payroll_entries(context: dg.AssetExecutionContext, postgres: PostgresResource, payroll: PayrollSettings):  # noqa: ANN201 - generator of events
    tenant_ref, file_name = context.partition_key.split("/", 1)
    path = payroll.inbox() / tenant_ref / file_name
    tenant_id = _tenant(postgres, context.partition_key, tenant_ref)
    try:
        run = processing.FileRun(source_file=file_name, digest=store.content_hash(path))
    except FileNotFoundError:
        yield _gone(context, postgres, tenant_id, file_name)
        return
    extraction = _extract(postgres, payroll, tenant_id, path, run, context.partition_key)
    outcomes = checks.run_checks(extraction)
    yield from _check_results(context, outcomes)
    _stop_on_failed_checks(postgres, tenant_id, run, outcomes)
    with postgres.tenant_transaction(tenant_id) as conn:
        stored = processing.store_version(conn, run, extraction)
    yield from _stored(context, extraction, stored)


def _tenant(postgres: PostgresResource, key: str, tenant_ref: str) -> UUID:
    try:
        return postgres.resolve_tenant(tenant_ref)
    except UnknownTenantError as error:
        raise dg.Failure(f"{key}: the inbox folder names no tenant: {error}", allow_retries=False) from error


def _gone(
    context: dg.AssetExecutionContext, postgres: PostgresResource, tenant_id: UUID, file_name: str
) -> dg.AssetObservation:
    """A file that has left the inbox (quarantined, removed) is a state to report, not a failure."""
    with postgres.tenant_transaction(tenant_id) as conn:
        gone = processing.file_gone(conn, file_name)
    if gone.copy_retired:
        context.log.info(f"{file_name}: the duplicate left the inbox; its record is no longer live")
    context.log.info(gone.description())
    state = gone.state
    return dg.AssetObservation(
        asset_key=ENTRIES,
        partition=context.partition_key,
        description=gone.description(),
        metadata={
            "source_file": file_name,
            "in_inbox": False,
            "state": state.describe() if state else "never stored",
            "live_version": state.live_version if state else None,
            "needs": (state.needs() if state else None) or "nothing",
        },
    )


def _extract(
    postgres: PostgresResource, payroll: PayrollSettings, tenant_id: UUID, path: Path, run: processing.FileRun, key: str
) -> Extraction:
    """The file's entries; an unreadable file is quarantined and its run fails, not to be retried."""
    try:
        return extract_document(path, password=payroll.password_for(key), configured_currency=payroll.default_currency)
    except UnreadableDocument as error:
        with postgres.tenant_transaction(tenant_id) as conn:
            quarantined = processing.record_quarantine(conn, run, error)
        target = processing.move_to_quarantine(path, payroll.quarantine() / key.split("/", 1)[0], run)
        raise dg.Failure(
            description=f"{run.source_file}: {error.detail} (quarantined to {target})",
            metadata={"file": run.source_file, "reason": error.reason, "version": quarantined.version},
            allow_retries=False,
        ) from error


def _check_results(
    context: dg.AssetExecutionContext, outcomes: list[checks.CheckOutcome]
) -> Iterator[dg.AssetCheckResult]:
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
    postgres: PostgresResource, tenant_id: UUID, run: processing.FileRun, outcomes: list[checks.CheckOutcome]
) -> None:
    """A failed blocking check writes nothing but its tool call: one per content and result, however often it runs."""
    failed = processing.failed_checks(outcomes)
    if not failed:
        return
    with postgres.tenant_transaction(tenant_id) as conn:
        processing.record_failed_checks(conn, run, failed)
    raise dg.Failure(description=processing.failed_checks_message(run.source_file, failed), allow_retries=False)


def _stored(context: dg.AssetExecutionContext, extraction: Extraction, stored: store.StoredVersion) -> Iterator[Any]:
    """The materialization of a stored version; a duplicate is an observation and a failed run."""
    if stored.status == "duplicate":
        metadata = _duplicate_metadata(stored)
        yield dg.AssetObservation(asset_key=ENTRIES, partition=context.partition_key, metadata=metadata)
        raise dg.Failure(description=processing.duplicate_message(stored), metadata=metadata, allow_retries=False)
    if warning := processing.orphaned_copies_message(stored):
        context.log.warning(warning)
    yield _materialization(extraction, stored)


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


def _materialization(extraction: Extraction, stored: store.StoredVersion) -> dg.MaterializeResult:
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


def _due_deliveries(postgres: PostgresResource, bamboohr: BambooHRSettings) -> tuple[int, str]:
    """Deliveries due now: the configured tenant's, or (unconfigured, for the message) every tenant's."""
    if bamboohr.configured():
        with postgres.tenant_transaction(postgres.resolve_tenant(bamboohr.tenant())) as conn:
            return delivery.due_deliveries(conn)
    with postgres.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        return delivery.due_deliveries(conn)


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
    waiting, _ = _due_deliveries(postgres, bamboohr)
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
        report = delivery.deliver_pending(postgres.database, tenant_id, client)
    totals = {k: getattr(report, k) for k in ("delivered", "adopted", "dead_letters", "retry_later")}
    errors = report.errors
    context.log.info(f"{postgres.tenant_names()[tenant_id]}: {report.delivered} delivered, {len(errors)} failed")
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
    waiting, newest = _due_deliveries(postgres, bamboohr)
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
    check_specs=[
        dg.AssetCheckSpec(
            "bamboohr_matches_payroll_entries",
            asset=["payroll", "bamboohr_reconciliation"],
            description="Every entry delivered to BambooHR is there with the same date, amount, currency and "
            "comment, and BambooHR holds no row tagged with an entry payroll_entries does not have.",
        )
    ],
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
        report = delivery.reconcile(postgres.database, postgres.resolve_tenant(bamboohr.tenant()), client)
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


payroll_job = dg.define_asset_job(
    "payroll_files",
    selection=dg.AssetSelection.assets(["payroll", "payroll_entries"]),
    description="Extract, check and store one payroll file (one partition per file).",
)

defs = dg.load_definitions_from_module(
    sys.modules[__name__], resources={"payroll": PayrollSettings(), "bamboohr": BambooHRSettings()}
)
