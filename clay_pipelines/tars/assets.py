"""Dagster wiring for constitutions: what every tenant's skills run under now, checked against the
replay of their amendments."""

import dagster as dg

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.metadata import markdown_table
from clay_pipelines.platform.assets import systems_registry
from clay_pipelines.resources import PostgresResource
from clay_pipelines.tars import amendments

OWNERS = ["team:tars"]
CONSTITUTIONS = dg.AssetKey(["tars", "constitutions"])


@dg.asset(
    key=CONSTITUTIONS,
    deps=[systems_registry],
    group_name="tars",
    kinds={"postgres", "python"},
    owners=OWNERS,
    description="One row per tenant and skill: the effective constitution's hash (SHA-256 of RFC 8785 JSON), the "
    "last amendment that shaped it, and the automated changes waiting for a person's approval.",
    check_specs=[
        dg.AssetCheckSpec(
            "constitutions_equal_their_replay",
            asset=CONSTITUTIONS,
            description="Every stored constitution (each skill's base and each tenant's effective one) equals the "
            "replay of its amendments.",
        )
    ],
    automation_condition=dg.AutomationCondition.on_cron("*/30 * * * *"),
    pool="postgres",
)
def constitutions(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    table: list[list[object]] = []
    pending = 0
    names = postgres.tenant_names()
    for tenant_id in postgres.tenant_ids():
        with postgres.tenant_transaction(tenant_id) as conn:
            name = names[tenant_id]
            for row in amendments.overview(conn):
                last = row.last_amendment
                pending += row.pending_approvals
                table.append(
                    [
                        name,
                        row.system_name,
                        row.hash[:16],
                        "yes" if row.amended else "",
                        f"{last.amendment_type} by {last.approved_by}, {last.approved_at:%Y-%m-%d %H:%M}"
                        if last
                        else "",
                        row.pending_approvals or "",
                    ]
                )
    with postgres.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        mismatches = amendments.replay_mismatches(conn)
    context.log.info(f"{len(table)} tenant-skill constitutions, {pending} awaiting approval")
    return dg.MaterializeResult(
        metadata={
            "constitutions": dg.MetadataValue.md(
                markdown_table(["tenant", "skill", "hash", "amended", "last amendment", "pending"], table)
            ),
            "pending_approvals": pending,
            "tenant_skills": len(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="constitutions_equal_their_replay",
                passed=not mismatches,
                metadata={
                    "mismatches": dg.MetadataValue.md(
                        markdown_table(
                            ["tenant", "skill", "stored", "replayed"],
                            [
                                [
                                    names.get(m.tenant_id, "platform") if m.tenant_id else "platform",
                                    m.system_name,
                                    m.stored_hash[:16],
                                    m.replayed_hash[:16],
                                ]
                                for m in mismatches
                            ],
                        )
                    )
                },
            )
        ],
    )


TARS_ASSETS = [constitutions]
