"""Connection pools and the only ways the project opens a transaction.

Every transaction states whose data it touches:
  * tenant_transaction(tenant_id): the application role, app.tenant_id set for this transaction only;
  * maintenance_transaction(job): the cross-tenant maintenance role, for a named job only;
  * unscoped_transaction(): the application role with no tenant, which sees nothing under
    row-level security; used for tenant lookups.
Role, tenant, time limits and search_path are set with set_config(..., is_local => true), never with
a session-level SET. Code run inside a transaction could still leave session state behind (a
session-level set_config, a prepared statement, an advisory lock), so every connection is reset with
DISCARD ALL when it returns to its pool, and pg_temp goes last on the search_path so that a temporary
table can never stand in for a real one.

Through a transaction-mode pooler (PgBouncer, Supabase's pooler) a client connection is lent a server
connection for one transaction at a time. Nothing above depends on the session: every transaction
sets its own role, tenant, limits and search_path, advisory locks are transaction-level, and no
server-side prepared statement is ever made (psycopg's automatic ones would be created on one server
connection and looked for, or created again under the same name, on another). The DISCARD ALL reset
is left out there: the pooler would run it on whichever server connection is free at that moment,
not on the one the transaction used, so it would clean nothing in particular and cost a round trip.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from uuid import UUID

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from clay_pipelines import settings

_log = logging.getLogger(__name__)

_UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


class TenantRequiredError(ValueError):
    """A tenant-scoped transaction was asked for without a tenant."""


class UnknownTenantError(LookupError):
    """No active tenant has that name, domain or id."""


class MaintenanceJob(StrEnum):
    """The jobs allowed to use the cross-tenant maintenance role. Add one here to add a job."""

    SEED_WORLD = "seed_world"
    PLATFORM_ANALYTICS = "platform_analytics"
    SYSTEM_ROLLUPS = "system_rollups"
    SYSTEM_EMBEDDINGS = "system_embeddings"
    LIFECYCLE_PRUNE = "lifecycle_prune"
    BUDGET_ALERTS = "budget_alerts"


def _configure_connection(conn: psycopg.Connection) -> None:
    # The vector type does not exist before the first migration; nothing to adapt yet.
    with contextlib.suppress(psycopg.ProgrammingError):
        register_vector(conn)


def _reset_connection(conn: psycopg.Connection) -> None:
    """Back in the pool: drop whatever a transaction left on the session (settings, temporary
    tables, prepared statements, advisory locks, LISTENs)."""
    conn.execute("DISCARD ALL")


# Settings PostgreSQL 17 introduced; older servers (and Supabase projects not yet upgraded) lack them.
_SINCE_VERSION = {"transaction_timeout": 170000}


def _scope_transaction(
    conn: psycopg.Connection, role: str, tenant: str, limits: settings.TransactionLimits, job: str | None = None
) -> None:
    """Everything a transaction states about itself, in one round trip, all transaction-local."""
    # No JWT claims: they would make clay_current_tenant() ignore app.tenant_id (migration 021).
    values = {"role": role, "app.tenant_id": tenant, "request.jwt.claims": ""}
    if job:
        values["application_name"] = f"clay:{job}"
    for name, value in limits.as_settings().items():
        if conn.info.server_version >= _SINCE_VERSION.get(name, 0):
            values[name] = value
    calls = ", ".join(["set_config(%s, %s, true)"] * len(values))
    conn.execute(
        f"SELECT {calls}, set_config('search_path', current_setting('search_path') || ', pg_temp', true)",  # type: ignore[arg-type]
        [item for pair in values.items() for item in pair],
    )


class Database:
    """Pools for the application and maintenance roles over one PostgreSQL database."""

    def __init__(
        self,
        app_dsn: str,
        maintenance_dsn: str | None = None,
        *,
        app_role: str = settings.APP_ROLE,
        maintenance_role: str = settings.MAINTENANCE_ROLE,
        max_pool_size: int = 4,
        pooled: bool | None = None,
    ) -> None:
        """pooled: whether the DSNs lead to a transaction-mode pooler; None: a DSN does when it is the
        configured CLAY_POOLED_DATABASE_URL."""
        self.app_dsn = app_dsn
        self.maintenance_dsn = maintenance_dsn
        self.app_role = app_role
        self.maintenance_role = maintenance_role
        self.max_pool_size = max_pool_size
        self.pooled = pooled
        self._pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()

    def is_pooled(self, dsn: str) -> bool:
        if self.pooled is not None:
            return self.pooled
        return dsn == settings.current().pooled_database_url

    def _pool(self, which: str) -> ConnectionPool:
        with self._lock:
            pool = self._pools.get(which)
            if pool is None:
                dsn = self.app_dsn if which == "app" else self.maintenance_dsn
                if not dsn:
                    raise RuntimeError("no maintenance DSN configured for maintenance jobs")
                # Fail with the server's own words (wrong password, no such role) rather than a
                # pool timeout.
                psycopg.connect(dsn, connect_timeout=10).close()
                pool = ConnectionPool(
                    dsn,
                    min_size=1,
                    max_size=self.max_pool_size,
                    # No automatic server-side prepared statements: DISCARD ALL on return drops them
                    # behind psycopg's back, and transaction-mode poolers cannot keep them either.
                    kwargs={"autocommit": True, "prepare_threshold": None},
                    configure=_configure_connection,
                    reset=None if self.is_pooled(dsn) else _reset_connection,
                    open=False,
                    name=f"clay-{which}",
                )
                pool.open(wait=True, timeout=30)
                self._pools[which] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tenant_transaction(self, tenant_id: UUID) -> Iterator[psycopg.Connection]:
        if not isinstance(tenant_id, UUID):
            raise TenantRequiredError(
                f"tenant_transaction needs the tenant's UUID, got {tenant_id!r}; resolve names with resolve_tenant()"
            )
        with self._pool("app").connection() as conn, conn.transaction():
            _scope_transaction(conn, self.app_role, str(tenant_id), settings.transaction_limits("tenant"))
            yield conn

    @contextmanager
    def maintenance_transaction(self, job: MaintenanceJob) -> Iterator[psycopg.Connection]:
        if not isinstance(job, MaintenanceJob):
            raise ValueError(f"{job!r} is not a maintenance job; the allowed ones are listed in MaintenanceJob")
        with self._pool("maintenance").connection() as conn, conn.transaction():
            _scope_transaction(conn, self.maintenance_role, "", settings.transaction_limits("maintenance"), job.value)
            yield conn

    @contextmanager
    def unscoped_transaction(self) -> Iterator[psycopg.Connection]:
        with self._pool("app").connection() as conn, conn.transaction():
            _scope_transaction(conn, self.app_role, "", settings.transaction_limits("tenant"))
            yield conn

    def resolve_tenant(self, reference: str | UUID) -> UUID:
        """A tenant's id from its id, name or domain (case-insensitive); UnknownTenantError when no active
        tenant, or more than one, answers to it."""
        if isinstance(reference, UUID) or _UUID_TEXT.match(str(reference)):
            tenant_id = UUID(str(reference))
            with self.tenant_transaction(tenant_id) as conn:
                row = conn.execute("SELECT id FROM tenants WHERE id = %s AND is_active", (tenant_id,)).fetchone()
        else:
            try:
                with self.unscoped_transaction() as conn:
                    row = conn.execute("SELECT clay_admin.tenant_id_for(%s)", (reference,)).fetchone()
            except psycopg.errors.CardinalityViolation as error:
                raise UnknownTenantError(
                    f"tenant {reference!r} is ambiguous: several active tenants have that name or domain; use the id"
                ) from error
            row = row if row and row[0] else None
        if row is None:
            raise UnknownTenantError(f"unknown tenant {str(reference)!r}: no active tenant has that id, name or domain")
        return row[0]

    def tenant_names(self) -> dict[UUID, str]:
        """Every tenant's name by id, active or not: what metadata and logs show a person."""
        with self.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
            return dict(conn.execute("SELECT id, name FROM tenants ORDER BY created_at, id").fetchall())

    def tenant_ids(self) -> list[UUID]:
        """Every active tenant, for jobs that fan out per tenant (a listing, not access to their data)."""
        with self.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM tenants WHERE is_active ORDER BY created_at, id")]
