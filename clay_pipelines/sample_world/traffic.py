"""The sample world's live hour: requests of each tenant routed now by the real router (which
reserves budget), executed as the catalog says the chosen skill performs, and completed through the
execution path (which settles the reservation and signs the receipt). It is what `make run` shows
of route -> reserve -> execute -> settle -> receipt; the loaded history was already completed.

Run once per world: a tenant that already has executions routed with a reservation is left alone,
so running it again writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

import numpy as np

from clay_pipelines.db import Database
from clay_pipelines.governance import budgets, completion
from clay_pipelines.governance.keys import Signer
from clay_pipelines.routing.embeddings import Embedder
from clay_pipelines.routing.router import RoutingDecision, route
from clay_pipelines.sample_world import catalog, generator


@dataclass(kw_only=True)
class LiveHour:
    """Per tenant: requests routed, reservations held and settled, refusals, receipts signed."""

    routed: dict[str, int] = field(default_factory=dict)
    settled: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    signed: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def live_hour(
    db: Database,
    embedder: Embedder,
    signer: Signer,
    *,
    requests_per_tenant: int = 12,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
) -> LiveHour:
    rng = np.random.default_rng([seed, 1])
    weights = np.array([intent.weight for intent in catalog.INTENTS], dtype=float)
    report = LiveHour()
    for spec in catalog.TENANTS:
        tenant_id = generator.tenant_id(spec)
        if _already_live(db, tenant_id):
            report.skipped.append(spec.name)
            continue
        for _ in range(requests_per_tenant):
            intent = catalog.INTENTS[int(rng.choice(len(weights), p=weights / weights.sum()))]
            _serve(db, tenant_id, spec, intent, embedder, signer, rng, report)
        progress(
            f"{spec.name}: {report.routed.get(spec.name, 0)} routed, {report.settled.get(spec.name, 0)} settled, "
            f"{report.refused.get(spec.name, 0)} refused for budget"
        )
    return report


def _already_live(db: Database, tenant_id: UUID) -> bool:
    with db.tenant_transaction(tenant_id) as conn:
        return bool(
            conn.execute("SELECT EXISTS (SELECT 1 FROM executions WHERE budget_reservation_id IS NOT NULL)").fetchone()[
                0
            ]
        )


def _serve(
    db: Database,
    tenant_id: UUID,
    spec: catalog.TenantSpec,
    intent: catalog.IntentSpec,
    embedder: Embedder,
    signer: Signer,
    rng: np.random.Generator,
    report: LiveHour,
) -> None:
    request = generator.phrase_request(intent, rng)
    try:
        decision = route(db, tenant_id, request, embedder, dry_run=False)
    except budgets.BudgetRefusedError:
        report.refused[spec.name] = report.refused.get(spec.name, 0) + 1
        return
    report.routed[spec.name] = report.routed.get(spec.name, 0) + 1
    status, cost = _outcome(decision, intent, spec, rng)
    done = completion.complete(
        db, tenant_id, decision.execution_id, status, signer=signer, output={"live": True}, cost_usd=cost
    )
    report.settled[spec.name] = report.settled.get(spec.name, 0) + int(done.reservation_settled)
    report.signed[spec.name] = report.signed.get(spec.name, 0) + done.signed


def _outcome(
    decision: RoutingDecision, intent: catalog.IntentSpec, spec: catalog.TenantSpec, rng: np.random.Generator
) -> tuple[str, Decimal]:
    """What the chosen skill does with the request, as the catalog says it performs."""
    performance = intent.performance.get(decision.system_name or "")
    if performance is None:  # a skill the catalog never gave this kind: it does not serve it
        return "failed", Decimal("0.0000")
    status = "success" if rng.random() < performance.success else "failed"
    cost = performance.cost_usd * spec.cost_multiplier * float(np.exp(rng.normal(0, 0.4)))
    return status, Decimal(f"{cost:.4f}")
