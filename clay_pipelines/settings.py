"""Where the project keeps its state, and the names it gives things. Read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
SQL_DIR = PROJECT_ROOT / "sql"

APP_ROLE = "clay_app"
MAINTENANCE_ROLE = "clay_maintenance"
OWNER_ROLE = "clay_owner"
PLATFORM_DATABASE = "clay"

# The specification's nine tables; every one but tenants holds tenant data under row-level security.
TENANT_TABLES = (
    "systems",
    "executions",
    "routing_rules",
    "dreams",
    "constitutional_amendments",
    "resources",
    "payroll_entries",
    "mcp_telemetry_log",
)
PLATFORM_TABLES = ("tenants", *TENANT_TABLES)
DAGSTER_DATABASE = "dagster"


def state_dir() -> Path:
    """Project-local, git-ignored folder for the embedded database, Dagster's home and the inbox."""
    return Path(os.environ.get("CLAY_STATE_DIR") or PROJECT_ROOT / ".clay").resolve()


def pgdata_dir() -> Path:
    return state_dir() / "pgdata"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or state_dir() / "dagster_home").resolve()


def sample_world_dir() -> Path:
    """The sample world's files: payroll inbox, employee directories, ground truth."""
    return state_dir() / "world"


@dataclass(frozen=True, kw_only=True)
class TransactionLimits:
    """Bounds every transaction sets for itself with SET LOCAL (role-level settings do not apply when
    the application switches role inside a transaction). PostgreSQL durations: '10s', '5min', '0' off.
    transaction_timeout is set only on servers that have it (PostgreSQL 17 and later)."""

    lock_timeout: str
    statement_timeout: str
    idle_in_transaction_session_timeout: str
    transaction_timeout: str

    def as_settings(self) -> dict[str, str]:
        return {
            "lock_timeout": self.lock_timeout,
            "statement_timeout": self.statement_timeout,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_session_timeout,
            "transaction_timeout": self.transaction_timeout,
        }


_LIMIT_DEFAULTS = {
    # Tenant transactions serve the router and the pipelines' per-tenant steps.
    "tenant": TransactionLimits(
        lock_timeout="10s",
        statement_timeout="15min",
        idle_in_transaction_session_timeout="5min",
        transaction_timeout="1h",
    ),
    # Maintenance jobs (seeding, cross-tenant rollups) move more rows at once.
    "maintenance": TransactionLimits(
        lock_timeout="1min",
        statement_timeout="1h",
        idle_in_transaction_session_timeout="10min",
        transaction_timeout="4h",
    ),
}


def transaction_limits(kind: str) -> TransactionLimits:
    """Limits for "tenant" or "maintenance" transactions; each overridable by
    CLAY_<KIND>_<SETTING>, e.g. CLAY_TENANT_LOCK_TIMEOUT=3s or CLAY_MAINTENANCE_STATEMENT_TIMEOUT=2h."""
    defaults = _LIMIT_DEFAULTS[kind].as_settings()
    values = {name: os.environ.get(f"CLAY_{kind.upper()}_{name.upper()}") or value for name, value in defaults.items()}
    return TransactionLimits(**values)
