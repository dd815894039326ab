"""Writing the sample world into the platform database, idempotently and in one transaction."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.sample_world import catalog, generator, payroll_docs
from clay_pipelines.tars import amendments

_log = logging.getLogger(__name__)

DEPLOYER = "deploy:sample-world"  # approved_by of the platform amendments a changed catalog records

EXECUTION_COLUMNS = (
    "id",
    "tenant_id",
    "system_id",
    "system_name",
    "user_request",
    "routing_path",
    "routing_confidence",
    "routing_propensity",
    "input_data",
    "output_data",
    "governance_check",
    "status",
    "error_message",
    "started_at",
    "completed_at",
    "cost_usd",
    "user_satisfaction",
    "user_feedback",
    "should_retry_with_different_path",
    "suggested_improvements",
    "last_accessed_at",
    "access_count",
)
TELEMETRY_COLUMNS = (
    "id",
    "tenant_id",
    "server_name",
    "tool_name",
    "input_data",
    "execution_time_ms",
    "success",
    "error_message",
    "timestamp",
)
RESOURCE_COLUMNS = (
    "id",
    "tenant_id",
    "resource_type",
    "window_type",
    "window_start",
    "window_end",
    "total_budget",
    "used",
    "reserved",
    "system_quotas",
    "alert_threshold",
    "alert_sent",
    "created_at",
    "updated_at",
)
JSON_COLUMNS = {
    "input_data",
    "output_data",
    "governance_check",
    "suggested_improvements",
    "system_quotas",
}
# Tables holding the sample tenants' generated data, cleared when a different world replaces it.
WORLD_TABLES = ("executions", "mcp_telemetry_log", "resources")


@dataclass(frozen=True)
class LoadSummary:
    loaded: bool  # False when the same world was already there
    seed: int
    scale: int
    anchor_date: str
    row_counts: dict[str, int]
    payroll: dict[str, Any]
    seconds: float


def _copy_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([Jsonb(row[c]) if c in JSON_COLUMNS and row[c] is not None else row[c] for c in columns])
            count += 1
    return count


def _upsert_tenants_and_systems(conn: psycopg.Connection) -> None:
    for spec in catalog.TENANTS:
        conn.execute(
            """
            INSERT INTO tenants (id, name, domain, subscription_tier, max_users, max_monthly_budget, is_active)
            VALUES (%s, %s, %s, %s, %s, %s, true)
            ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, domain = EXCLUDED.domain,
              subscription_tier = EXCLUDED.subscription_tier, max_users = EXCLUDED.max_users,
              max_monthly_budget = EXCLUDED.max_monthly_budget, is_active = true
            """,
            (
                generator.tenant_id(spec),
                spec.name,
                spec.domain,
                spec.subscription_tier,
                spec.max_users,
                spec.max_monthly_budget,
            ),
        )
    for system in catalog.SYSTEMS:
        conn.execute(
            """
            INSERT INTO systems (id, tenant_id, name, type, description, capabilities, constitution,
                                 deployment_type, endpoint_url, api_key_required, depends_on, created_by)
            VALUES (%s, NULL, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'sample-world')
            ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type, description = EXCLUDED.description,
              capabilities = EXCLUDED.capabilities,
              deployment_type = EXCLUDED.deployment_type, endpoint_url = EXCLUDED.endpoint_url,
              api_key_required = EXCLUDED.api_key_required, depends_on = EXCLUDED.depends_on,
              updated_at = now()
            """,
            (
                generator.system_id(system.name),
                system.name,
                system.type,
                system.description,
                list(system.capabilities),
                Jsonb(system.constitution()),
                system.deployment_type,
                system.endpoint_url,
                system.api_key_required,
                [generator.system_id(d) for d in system.depends_on],
            ),
        )
        # A constitution that changed since the last load is a deployment: a platform amendment.
        amendments.deploy(conn, generator.system_id(system.name), system.constitution(), by=DEPLOYER)


def _row_counts(conn: psycopg.Connection) -> dict[str, int]:
    tenant_ids = [generator.tenant_id(t) for t in catalog.TENANTS]
    counts = {
        "tenants": conn.execute("SELECT count(*) FROM tenants WHERE id = ANY(%s)", (tenant_ids,)).fetchone()[0],
        "systems": conn.execute("SELECT count(*) FROM systems WHERE tenant_id IS NULL").fetchone()[0],
    }
    for table in WORLD_TABLES:
        query = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = ANY(%s)").format(sql.Identifier(table))
        counts[table] = conn.execute(query, (tenant_ids,)).fetchone()[0]
    return counts


class WorldReplacementError(RuntimeError):
    """The loaded world cannot be replaced in place: pipelines have built on it."""


def _refuse_if_derived(conn: psycopg.Connection, tenant_ids: list[Any]) -> None:
    """Payroll documents point at the world's executions (and through them entries, approvals and
    deliveries): deleting those executions would orphan them or fail half-way, so a database that
    has run the pipelines on the old world is not rewritten underneath them."""
    derived = conn.execute(
        "SELECT count(*) FROM payroll_documents d JOIN executions e ON e.id = d.execution_id "
        "WHERE e.tenant_id = ANY(%s)",
        (tenant_ids,),
    ).fetchone()[0]
    if derived:
        raise WorldReplacementError(
            f"the database holds a different sample world with {derived} payroll document(s) processed from it; "
            "start from an empty database (`make clean && make run`, or a new DATABASE_URL)"
        )


def world_fingerprint() -> str:
    """A hash of what the world is generated from (the generator, its catalog and the payroll
    documents' generator): a change to any of them makes a different world."""
    digest = hashlib.sha256()
    for module in (catalog, generator, payroll_docs):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def load_world(
    db: Database,
    params: generator.WorldParameters,
    world_dir: Path,
    progress: Callable[[str], None] = _log.info,
) -> LoadSummary:
    """Load the world described by params unless that very world is already loaded."""
    started = time.perf_counter()
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('clay.sample_world'))")
        previous = conn.execute(
            "SELECT seed, scale, anchor_date, world_sha256 FROM sample_world_loads ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if previous and tuple(previous[:2]) == (params.seed, params.scale) and previous[3] == world_fingerprint():
            anchor = previous[2]
            payroll = payroll_docs.generate_payroll_world(world_dir / "payroll", params.seed, anchor)
            progress(f"sample world (seed {params.seed}, scale {params.scale}) already loaded; nothing to write")
            return LoadSummary(
                False,
                params.seed,
                params.scale,
                anchor.isoformat(),
                _row_counts(conn),
                payroll,
                time.perf_counter() - started,
            )

        params = replace(params, anchor=params.anchor or datetime.now(UTC).date())
        progress(f"generating the sample world: seed {params.seed}, scale {params.scale}, ending {params.anchor}")
        executions = generator.generate_executions(params)
        telemetry = generator.generate_telemetry(params)
        resources = generator.generate_resources(params, executions, telemetry)

        _upsert_tenants_and_systems(conn)
        if previous:
            progress(f"replacing the previous sample world (seed {previous[0]}, scale {previous[1]}, or older code)")
            tenant_ids = [generator.tenant_id(t) for t in catalog.TENANTS]
            _refuse_if_derived(conn, tenant_ids)
            for table in WORLD_TABLES:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE tenant_id = ANY(%s)").format(sql.Identifier(table)), (tenant_ids,)
                )
        for table, columns, rows in (
            ("executions", EXECUTION_COLUMNS, executions),
            ("mcp_telemetry_log", TELEMETRY_COLUMNS, telemetry),
            ("resources", RESOURCE_COLUMNS, resources),
        ):
            count = _copy_rows(conn, table, columns, rows)
            progress(f"  {table}: {count:,} rows")
        counts = _row_counts(conn)
        conn.execute(
            "INSERT INTO sample_world_loads (seed, scale, anchor_date, row_counts, world_sha256) "
            "VALUES (%s, %s, %s, %s, %s)",
            (params.seed, params.scale, params.anchor, Jsonb(counts), world_fingerprint()),
        )
    assert params.anchor is not None
    payroll = payroll_docs.generate_payroll_world(world_dir / "payroll", params.seed, params.anchor)
    progress(f"  payroll: {payroll['employees']} employees, {payroll['documents']} PDFs in {payroll['inbox']}")
    return LoadSummary(
        True, params.seed, params.scale, params.anchor.isoformat(), counts, payroll, time.perf_counter() - started
    )
