"""A small constructed routing world whose right answers are known exactly.

Two kinds of request for tenant "Acme": payroll runs (payroll-bot succeeds 9 times in 10,
generalist once in 10) and email drafting (only writer handles it, 95% success). The catch-all
(clay-consigliere) carries the router's parameters. A second tenant, "Other", has executions of
its own and no rules until it learns them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from psycopg.types.json import Jsonb

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.routing.embeddings import HashingEmbedder, tag

ACME = uuid.UUID("00000000-0000-0000-0000-00000000a001")
OTHER = uuid.UUID("00000000-0000-0000-0000-00000000a002")
SYSTEMS = {
    "clay-consigliere": uuid.UUID("00000000-0000-0000-0000-0000000000c1"),
    "payroll-bot": uuid.UUID("00000000-0000-0000-0000-0000000000c2"),
    "generalist": uuid.UUID("00000000-0000-0000-0000-0000000000c3"),
    "writer": uuid.UUID("00000000-0000-0000-0000-0000000000c4"),
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
PAYROLL = ["process the payroll for {}", "run payroll for {}", "upload the {} payroll register"]
PEOPLE = ["the client", "the team", "our CFO", "new hires", "the board", "a vendor"]
TOPICS = ["the office move", "the pricing change", "the holiday schedule", "the hiring freeze"]
EMAIL = ["draft an email to {} about {}", "write a note to {} on {}", "compose a message for {} regarding {}"]


def payroll_texts(n: int) -> list[str]:
    return [PAYROLL[i % 3].format(MONTHS[(i // 3) % len(MONTHS)]) for i in range(n)]


def email_texts(n: int) -> list[str]:
    return [EMAIL[i % 3].format(PEOPLE[(i // 3) % len(PEOPLE)], TOPICS[(i // 7) % len(TOPICS)]) for i in range(n)]


def _constitution(name: str, approval: list[str], **parameters: object) -> dict:
    return {"skill": name, "requires_approval": approval, "parameters": parameters}


def build(db: Database, threshold: float = 0.6) -> None:
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        for tenant_id, name, domain in ((ACME, "Acme", "acme.test"), (OTHER, "Other", "other.test")):
            conn.execute(
                "INSERT INTO tenants (id, name, domain, subscription_tier) VALUES (%s, %s, %s, 'pro')",
                (tenant_id, name, domain),
            )
        specs = [
            (
                "clay-consigliere",
                "agent",
                "router and general questions",
                ["routing", "conversation"],
                _constitution(
                    "clay-consigliere",
                    ["delete"],
                    routing_confidence_threshold=threshold,
                    min_rule_executions=50,
                    catch_all=True,
                    capability_match_threshold=0.35,
                ),
            ),
            (
                "payroll-bot",
                "component",
                "payroll processing and payroll register uploads",
                ["payroll", "bamboohr"],
                _constitution("payroll-bot", ["upload_payroll_entries"]),
            ),
            ("generalist", "product", "general purpose assistant", ["general"], _constitution("generalist", [])),
            ("writer", "product", "drafting emails and notes", ["writing", "email"], _constitution("writer", [])),
        ]
        for name, kind, description, capabilities, constitution in specs:
            conn.execute(
                "INSERT INTO systems (id, tenant_id, name, type, description, capabilities, constitution) "
                "VALUES (%s, NULL, %s, %s, %s, %s, %s)",
                (SYSTEMS[name], name, kind, description, capabilities, Jsonb(constitution)),
            )


def add_executions(
    db: Database, tenant_id: uuid.UUID, rows: list[tuple[str, str, str]], days_ago: int = 5, cost: str = "0.0100"
) -> None:
    """rows: (request, system name, status); embedded with the hashing embedder."""
    embedder = HashingEmbedder()
    vectors = embedder.encode([r[0] for r in rows])
    start = datetime.now(UTC) - timedelta(days=days_ago)
    with db.tenant_transaction(tenant_id) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO executions (system_id, system_name, user_request, request_embedding, request_embedding_model, "
            "governance_check, status, started_at, completed_at, cost_usd, user_satisfaction) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    SYSTEMS[system],
                    system,
                    text,
                    vector,
                    tag(embedder),
                    Jsonb({"requires_approval": False}),
                    status,
                    start + timedelta(minutes=i),
                    start + timedelta(minutes=i, milliseconds=700 + 10 * (i % 7)),
                    Decimal(cost),
                    5 if status == "success" else 2,
                )
                for i, ((text, system, status), vector) in enumerate(zip(rows, vectors, strict=True))
            ],
        )


def payroll_rows(n_bot: int = 60, n_generalist: int = 30) -> list[tuple[str, str, str]]:
    texts = payroll_texts(max(n_bot, n_generalist))
    rows = [(texts[i], "payroll-bot", "failed" if i % 10 == 9 else "success") for i in range(n_bot)]
    rows += [(texts[i], "generalist", "success" if i % 10 == 5 else "failed") for i in range(n_generalist)]
    return rows


def email_rows(n: int = 80) -> list[tuple[str, str, str]]:
    return [(text, "writer", "failed" if i % 20 == 19 else "success") for i, text in enumerate(email_texts(n))]


def rewrite_completed_costs(test_db, cost: float) -> None:
    """Test set-up only: a completed execution's cost is final (the execution_guard trigger), so the
    fixture's history is rewritten by the owner with the guard off."""
    with test_db.admin() as conn, conn.transaction():
        conn.execute("ALTER TABLE executions DISABLE TRIGGER execution_guard")
        conn.execute("UPDATE executions SET cost_usd = %s", (cost,))
        conn.execute("ALTER TABLE executions ENABLE TRIGGER execution_guard")
