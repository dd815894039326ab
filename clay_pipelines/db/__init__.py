"""Database access: the embedded server, connection targets, migrations and tenant-scoped sessions."""

from clay_pipelines.db.client import (
    Database,
    MaintenanceJob,
    TenantRequiredError,
    UnknownTenantError,
)
from clay_pipelines.db.targets import DatabaseTarget, resolve_target

__all__ = [
    "Database",
    "DatabaseTarget",
    "MaintenanceJob",
    "TenantRequiredError",
    "UnknownTenantError",
    "resolve_target",
]
