"""The lifecycle's thresholds, per tenant (lifecycle_policies) over the platform's defaults.

The database refuses a tenant policy shorter than the platform's (CHECK constraints in migration
018): a tenant may keep data longer, never shorter. Every boundary is computed in UTC by PostgreSQL
from timestamptz values, so a day is 24 hours whatever the server's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

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
    return PLATFORM if row is None else _thresholds(row)


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


class PolicyError(ValueError):
    """A tenant policy refused: shorter than the platform's minimum, or its thresholds out of order."""


# The options a person sets, by column; each must be at least the platform's value.
POLICY_COLUMNS = ("warm_after_days", "cold_after_days", "archive_after_days", "retention_years")


@dataclass(frozen=True, kw_only=True)
class TenantPolicy:
    tenant_id: UUID
    tenant: str
    thresholds: Thresholds
    set_by: str | None  # None: the platform's defaults apply


def tenant_policies(conn: psycopg.Connection) -> list[TenantPolicy]:
    """Every tenant's thresholds, by name. Run in a maintenance transaction: it reads every tenant."""
    rows = conn.execute(
        "SELECT t.id, t.name, p.warm_after_days, p.cold_after_days, p.archive_after_days, p.retention_years, "
        "p.updated_by FROM tenants t LEFT JOIN lifecycle_policies p ON p.tenant_id = t.id ORDER BY t.name, t.id"
    ).fetchall()
    return [
        TenantPolicy(tenant_id=tenant_id, tenant=name, thresholds=_thresholds(row) if by else PLATFORM, set_by=by)
        for tenant_id, name, *row, by in rows
    ]


def set_tenant_policy(conn: psycopg.Connection, changes: dict[str, int], *, by: str) -> Thresholds:
    """The current tenant's thresholds with `changes` (column -> value) applied, written in one upsert.
    Checked here for a readable error; the database's CHECK constraints refuse the same."""
    unknown = set(changes) - set(POLICY_COLUMNS)
    if unknown:
        raise PolicyError(f"unknown lifecycle threshold(s): {', '.join(sorted(unknown))}")
    for column, value in changes.items():
        minimum = getattr(PLATFORM, column)
        if value < minimum:
            raise PolicyError(f"{column} = {value} is shorter than the platform's legal minimum of {minimum}")
    merged = Thresholds(**{**vars(tenant_thresholds(conn)), **changes})
    if not merged.warm_after_days < merged.cold_after_days < merged.archive_after_days:
        raise PolicyError(
            f"thresholds out of order: warm_after_days {merged.warm_after_days} < cold_after_days "
            f"{merged.cold_after_days} < archive_after_days {merged.archive_after_days} must hold"
        )
    conn.execute(
        "INSERT INTO lifecycle_policies (warm_after_days, cold_after_days, archive_after_days, retention_years, "
        "updated_by) VALUES (%(warm_after_days)s, %(cold_after_days)s, %(archive_after_days)s, %(retention_years)s, "
        "%(by)s) ON CONFLICT (tenant_id) DO UPDATE SET warm_after_days = excluded.warm_after_days, "
        "cold_after_days = excluded.cold_after_days, archive_after_days = excluded.archive_after_days, "
        "retention_years = excluded.retention_years, updated_by = excluded.updated_by, updated_at = now()",
        {**vars(merged), "by": by},
    )
    return merged


def _thresholds(row: tuple | list) -> Thresholds:
    return Thresholds(warm_after_days=row[0], cold_after_days=row[1], archive_after_days=row[2], retention_years=row[3])
