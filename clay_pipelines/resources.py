"""Dagster resources. Thin: the logic lives in the domain packages and in clay_pipelines.db."""

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from clay_pipelines.db import Database, MaintenanceJob


class PostgresResource(dg.ConfigurableResource):
    """The platform database: a psycopg 3 pool per role, transactions scoped to a tenant or a named job."""

    app_dsn: str
    maintenance_dsn: str
    max_pool_size: int = 4

    _database: Database | None = PrivateAttr(default=None)

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = Database(self.app_dsn, self.maintenance_dsn, max_pool_size=self.max_pool_size)
        return self._database

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None

    @contextmanager
    def tenant_transaction(self, tenant_id: UUID) -> Iterator[psycopg.Connection]:
        with self.database.tenant_transaction(tenant_id) as conn:
            yield conn

    @contextmanager
    def maintenance_transaction(self, job: MaintenanceJob) -> Iterator[psycopg.Connection]:
        with self.database.maintenance_transaction(job) as conn:
            yield conn

    def resolve_tenant(self, reference: str | UUID) -> UUID:
        return self.database.resolve_tenant(reference)

    def tenant_ids(self) -> list[UUID]:
        return self.database.tenant_ids()

    def tenant_names(self) -> dict[UUID, str]:
        return self.database.tenant_names()
