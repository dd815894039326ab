"""The routing rules' checks, as plain functions: what each asserts, and the rules that break it.

Each check reads one tenant's rules in that tenant's transaction (row-level security decides what it
sees) and names every violating rule by id. The routing_rules asset declares its check specs from
RULE_CHECKS (names and descriptions live here, beside the queries) and turns the outcomes of
run_rule_checks into asset check results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import psycopg

from clay_pipelines.db import Database
from clay_pipelines.routing.learning import LearnerSettings
from clay_pipelines.routing.rule_store import learner_settings, load_systems


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    name: str
    violations: list[str]  # one line per violating rule (or pair of rules), rule ids first

    @property
    def passed(self) -> bool:
        return not self.violations


def rules_without_enough_support(conn: psycopg.Connection, settings: LearnerSettings, model: str) -> list[str]:
    rows = conn.execute(
        "SELECT id, based_on_executions FROM routing_rules WHERE is_active AND auto_generated "
        "AND coalesce(based_on_executions, 0) < %s ORDER BY id",
        (settings.min_rule_executions,),
    ).fetchall()
    return [f"{rule_id}: {support} executions" for rule_id, support in rows]


def confidence_outside_unit_interval(conn: psycopg.Connection, settings: LearnerSettings, model: str) -> list[str]:
    rows = conn.execute(
        "SELECT id, confidence_score FROM routing_rules WHERE confidence_score NOT BETWEEN 0 AND 1 ORDER BY id"
    ).fetchall()
    return [f"{rule_id}: {confidence}" for rule_id, confidence in rows]


def recommended_system_not_active(conn: psycopg.Connection, settings: LearnerSettings, model: str) -> list[str]:
    rows = conn.execute(
        "SELECT r.id, coalesce(s.status, 'missing') FROM routing_rules r "
        "LEFT JOIN systems s ON s.id = r.recommended_system_id "
        "WHERE r.is_active AND (s.id IS NULL OR s.status <> 'active') ORDER BY r.id"
    ).fetchall()
    return [f"{rule_id}: system {status}" for rule_id, status in rows]


def near_duplicate_rules(conn: psycopg.Connection, settings: LearnerSettings, model: str) -> list[str]:
    """Pairs of active rules of the embedder `model` that recommend the same system from centroids at
    least identity_similarity alike (the learner merges such pairs)."""
    rows = conn.execute(
        """
        SELECT a.id, b.id, 1 - (a.request_embedding <=> b.request_embedding) FROM routing_rules a
        JOIN routing_rules b ON a.id < b.id AND a.recommended_system_id = b.recommended_system_id
          AND a.request_embedding_model = b.request_embedding_model
        WHERE a.is_active AND b.is_active AND a.request_embedding_model = %s
          AND 1 - (a.request_embedding <=> b.request_embedding) >= %s
        ORDER BY a.id, b.id
        """,
        (model, settings.identity_similarity),
    ).fetchall()
    return [f"{a} ~ {b} ({float(similarity):.3f})" for a, b, similarity in rows]


@dataclass(frozen=True, kw_only=True)
class RuleCheck:
    name: str
    description: str
    violations: Callable[[psycopg.Connection, LearnerSettings, str], list[str]]


RULE_CHECKS = [
    RuleCheck(
        name="rules_have_enough_support",
        description="Every active learned rule is backed by at least min_rule_executions executions.",
        violations=rules_without_enough_support,
    ),
    RuleCheck(
        name="confidence_in_unit_interval",
        description="Every rule's confidence_score lies in [0, 1].",
        violations=confidence_outside_unit_interval,
    ),
    RuleCheck(
        name="recommended_system_active",
        description="Every active rule recommends a system that exists and is active.",
        violations=recommended_system_not_active,
    ),
    RuleCheck(
        name="no_near_duplicate_rules",
        description="No two active rules of a tenant recommend the same system from nearly the same centroid.",
        violations=near_duplicate_rules,
    ),
]


def tenant_violations(conn: psycopg.Connection, model: str) -> dict[str, list[str]]:
    """Every check over the rules this transaction's tenant sees, with the tenant's learner settings
    (min_rule_executions from its catch-all's constitution)."""
    settings = learner_settings(load_systems(conn))
    return {check.name: check.violations(conn, settings, model) for check in RULE_CHECKS}


def run_rule_checks(db: Database, tenant_ids: list[UUID], model: str) -> list[CheckOutcome]:
    """Every check over every tenant's rules, each tenant read in its own transaction."""
    found: dict[str, list[str]] = {check.name: [] for check in RULE_CHECKS}
    for tenant_id in tenant_ids:
        with db.tenant_transaction(tenant_id) as conn:
            for name, violations in tenant_violations(conn, model).items():
                found[name] += violations
    return [CheckOutcome(name=name, violations=violations) for name, violations in found.items()]
