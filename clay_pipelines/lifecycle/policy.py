"""The lifecycle's thresholds, per tenant (lifecycle_policies) over the platform's defaults.

The database refuses a tenant policy shorter than the platform's (CHECK constraints in migration
018): a tenant may keep data longer, never shorter. Every boundary is computed in UTC by PostgreSQL
from timestamptz values, so a day is 24 hours whatever the server's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from clay_pipelines import settings

STATES = ("HOT", "WARM", "COLD", "ARCHIVED", "PRUNED")
LIVE_STATES = ("HOT", "WARM", "COLD")
# The content an archive or an erasure removes from the row; every other column stays as written
# (foreign keys, rollups, budgets and receipts read them). The vector and its model tag go with the
# request they were computed from.
CONTENT_COLUMNS = ("user_request", "input_data", "output_data", "user_feedback", "suggested_improvements")
COLD_COLUMNS = ("input_data", "output_data", "user_feedback", "suggested_improvements")
VECTOR_COLUMNS = ("request_embedding", "request_embedding_compact", "request_embedding_model")
ARCHIVED_MARKER = "[archived]"
ERASED_MARKER = "[erased]"


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    warm_after_days: int = 30
    cold_after_days: int = 90
    archive_after_days: int = 365
    retention_years: int = 7


PLATFORM = Thresholds()


def tenant_thresholds(conn: psycopg.Connection) -> Thresholds:
    """The current tenant's thresholds (its lifecycle_policies row, else the platform's)."""
    row = conn.execute(
        "SELECT warm_after_days, cold_after_days, archive_after_days, retention_years FROM lifecycle_policies "
        "WHERE tenant_id = public.clay_current_tenant()"
    ).fetchone()
    if row is None:
        return PLATFORM
    return Thresholds(warm_after_days=row[0], cold_after_days=row[1], archive_after_days=row[2], retention_years=row[3])


def retention_enabled() -> bool:
    """Destructive steps (archive-away, prune, telemetry and dream deletion) run only when enabled;
    otherwise they report what they would do."""
    return settings.env("CLAY_LIFECYCLE_RETENTION_ENABLED") in ("1", "true", "yes")


def archive_url() -> str:
    """Where archives go: a local folder by default, any fsspec URL (s3://bucket/prefix) by configuration."""
    return settings.env("CLAY_ARCHIVE_URL") or str(settings.state_dir() / "archive")


def telemetry_raw_days() -> int:
    return int(settings.env("CLAY_TELEMETRY_RAW_DAYS") or 90)


def dream_retention_days() -> int:
    return int(settings.env("CLAY_DREAM_RETENTION_DAYS") or 730)
