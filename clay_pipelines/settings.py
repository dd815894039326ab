"""Where the project keeps its state, and the names it gives things. Read from the environment."""

from __future__ import annotations

import os
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
