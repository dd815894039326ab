"""Which PostgreSQL the project talks to, and as whom.

Embedded (default): the project's own server under .clay/pgdata; databases `clay` (the platform)
and `dagster` (Dagster's instance storage) on it; each role connects as itself over the socket.

External: DATABASE_URL (any libpq URL: Supabase, RDS, a local server) is the migrating owner's
connection. The application and maintenance roles connect with CLAY_APP_DATABASE_URL and
CLAY_MAINTENANCE_DATABASE_URL when given; otherwise through DATABASE_URL, switching to their role
inside every transaction (SET LOCAL ROLE semantics), which row-level security honours equally.

Pooled (either mode): CLAY_POOLED_DATABASE_URL names a transaction-mode pooler (PgBouncer, Supabase's
pooler) in front of the platform database; the application and maintenance pools connect through it
(unless their own URLs are given), switching role inside every transaction. Migrations (a session-level
advisory lock) and Dagster's storage (LISTEN/NOTIFY) keep the direct connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from clay_pipelines import settings
from clay_pipelines.db import embedded


class ConfigurationError(RuntimeError):
    """The environment names a database that cannot be used as configured."""


@dataclass(frozen=True)
class DatabaseTarget:
    mode: str  # "embedded" or "external"
    admin_url: str  # migrations run here (as the owner role, switched to inside each migration)
    app_url: str
    maintenance_url: str
    dagster_url: str  # SQLAlchemy URL, psycopg2 driver named explicitly
    description: str
    pooled_url: str | None = None  # the transaction-mode pooler, when one is configured

    def as_environment(self) -> dict[str, str]:
        """What child processes (Dagster's code servers and run workers) need to find the database."""
        environment = {
            "CLAY_APP_DATABASE_URL": self.app_url,
            "CLAY_MAINTENANCE_DATABASE_URL": self.maintenance_url,
            "DAGSTER_PG_URL": self.dagster_url,
        }
        if self.pooled_url:
            # Their pools recognise the pooler's URL by it (clay_pipelines.db.client).
            environment["CLAY_POOLED_DATABASE_URL"] = self.pooled_url
        return environment


def _with_psycopg2_scheme(url: str) -> str:
    # SQLAlchemy 2.1 maps a bare postgresql:// URL to psycopg 3, which breaks dagster-postgres'
    # LISTEN/NOTIFY watcher; naming the driver keeps Dagster on psycopg2 whatever SQLAlchemy picks.
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def ensure_database(admin_postgres_url: str, name: str) -> None:
    with psycopg.connect(admin_postgres_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def platform_database_name() -> str:
    return settings.current().database_name


def _require_postgresql_url(variable: str, url: str) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            f"{variable} must be a postgresql:// URL, got one starting with {url.split(':', 1)[0]!r}"
        )


def _through_pooler(description: str, pooled: str | None) -> str:
    if not pooled:
        return description
    parts = urlsplit(pooled)
    return f"{description}; application connections through the pooler at {parts.hostname}:{parts.port or 5432}"


def resolve_target(start_embedded: bool = True) -> DatabaseTarget:
    """The database in use. In embedded mode this starts the server (unless told not to)."""
    configured = settings.current()
    external = configured.database_url
    pooled = configured.pooled_database_url
    if pooled:
        _require_postgresql_url("CLAY_POOLED_DATABASE_URL", pooled)
    if external:
        _require_postgresql_url("DATABASE_URL", external)
        dagster_url = configured.dagster_pg_url or _with_query(external, options="-csearch_path=dagster")
        host = urlsplit(external).hostname or "local socket"
        return DatabaseTarget(
            mode="external",
            admin_url=external,
            app_url=configured.app_database_url or pooled or external,
            maintenance_url=configured.maintenance_database_url or pooled or external,
            dagster_url=_with_psycopg2_scheme(dagster_url),
            description=_through_pooler(f"external PostgreSQL at {host} (DATABASE_URL)", pooled),
            pooled_url=pooled,
        )

    pgdata = settings.pgdata_dir()
    if not start_embedded and not embedded.is_running(pgdata):
        raise ConfigurationError(f"the embedded database at {pgdata} is not running: run `clay db start`")
    server = embedded.start(pgdata, listen=settings.pg_listen_addresses(), port=settings.pg_port())
    database = platform_database_name()
    admin_postgres = server.url("postgres")
    ensure_database(admin_postgres, database)
    ensure_database(admin_postgres, settings.DAGSTER_DATABASE)
    return DatabaseTarget(
        mode="embedded",
        admin_url=server.url(database),
        app_url=pooled or server.url(database, user=settings.APP_ROLE),
        maintenance_url=pooled or server.url(database, user=settings.MAINTENANCE_ROLE),
        dagster_url=server.url(settings.DAGSTER_DATABASE, driver="psycopg2"),
        description=_through_pooler(f"embedded PostgreSQL 18 at {pgdata} (database {database})", pooled),
        pooled_url=pooled,
    )


def ensure_dagster_schema(target: DatabaseTarget) -> None:
    """External mode keeps Dagster's tables out of the platform's public schema."""
    if target.mode != "external" or settings.current().dagster_pg_url:
        return
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS dagster")
