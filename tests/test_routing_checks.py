"""The routing rules' checks as plain functions: on a constructed world, each names exactly the rules
that break it, reads only the tenant's own rules, and every tenant's outcomes add up."""

from __future__ import annotations

import pytest

from clay_pipelines.routing import checks
from clay_pipelines.routing.embeddings import HashingEmbedder
from clay_pipelines.routing.learning import LearnerSettings
from clay_pipelines.routing.rule_store import learn_rules_full, learner_settings, load_systems
from tests import routing_world as world

MODEL = "hashing@1"
NAMES = [
    "rules_have_enough_support",
    "confidence_in_unit_interval",
    "recommended_system_active",
    "no_near_duplicate_rules",
]


@pytest.fixture
def acme(fresh_db):
    """Acme's two learned rules (payroll-bot 90 executions, writer 80)."""
    with fresh_db.database() as db:
        world.build(db)
        world.add_executions(db, world.ACME, world.payroll_rows() + world.email_rows())
        learn_rules_full(db, world.ACME, MODEL, "hashing")
        yield db


def _learned(db) -> dict[str, object]:
    with db.tenant_transaction(world.ACME) as conn:
        return dict(
            conn.execute(
                "SELECT s.name, r.id FROM routing_rules r JOIN systems s ON s.id = r.recommended_system_id "
                "WHERE r.auto_generated AND r.is_active"
            ).fetchall()
        )


def test_a_sound_set_of_rules_passes_every_check(acme) -> None:
    assert [c.name for c in checks.RULE_CHECKS] == NAMES
    with acme.tenant_transaction(world.ACME) as conn:
        assert checks.tenant_violations(conn, MODEL) == {name: [] for name in NAMES}
    outcomes = checks.run_rule_checks(acme, [world.ACME, world.OTHER], MODEL)
    assert [(o.name, o.passed, o.violations) for o in outcomes] == [(name, True, []) for name in NAMES]


def test_each_check_names_exactly_the_rules_that_break_it(acme, fresh_db) -> None:
    learned = _learned(acme)
    assert sorted(learned) == ["payroll-bot", "writer"]
    with acme.tenant_transaction(world.ACME) as conn:
        # A person's copy of the learned payroll rule: same centroid, same system.
        copy = conn.execute(
            "INSERT INTO routing_rules (request_pattern, request_embedding, request_embedding_model, "
            "recommended_system_id, confidence_score, auto_generated, created_by) "
            "SELECT request_pattern, request_embedding, request_embedding_model, recommended_system_id, 0.5, false, "
            "'ops@acme.test' FROM routing_rules WHERE id = %s RETURNING id",
            (learned["payroll-bot"],),
        ).fetchone()[0]
        # A person's rule for the generalist, which is then retired.
        human = conn.execute(
            "INSERT INTO routing_rules (request_pattern, request_embedding, request_embedding_model, "
            "recommended_system_id, confidence_score, auto_generated, created_by) "
            "VALUES ('expense report', %s, %s, %s, 0.9, false, 'ops@acme.test') RETURNING id",
            (HashingEmbedder().encode(["expense report"])[0], MODEL, world.SYSTEMS["generalist"]),
        ).fetchone()[0]
    with fresh_db.admin() as conn:
        conn.execute("UPDATE systems SET status = 'deprecated' WHERE id = %s", (world.SYSTEMS["generalist"],))
        conn.execute("UPDATE routing_rules SET based_on_executions = 12 WHERE id = %s", (learned["writer"],))
        # The table refuses such a confidence; without the constraint, the check still finds it.
        conn.execute("ALTER TABLE routing_rules DROP CONSTRAINT routing_rules_confidence_score_check")
        conn.execute("UPDATE routing_rules SET confidence_score = 1.5 WHERE id = %s", (human,))

    first, second = sorted([copy, learned["payroll-bot"]])
    expected = {
        "rules_have_enough_support": [f"{learned['writer']}: 12 executions"],
        "confidence_in_unit_interval": [f"{human}: 1.5"],
        "recommended_system_active": [f"{human}: system deprecated"],
        "no_near_duplicate_rules": [f"{first} ~ {second} (1.000)"],
    }
    with acme.tenant_transaction(world.ACME) as conn:
        assert checks.tenant_violations(conn, MODEL) == expected
        # Another embedder's rules are not compared with these.
        assert checks.near_duplicate_rules(conn, learner_settings(load_systems(conn)), "minilm@1") == []
    with acme.tenant_transaction(world.OTHER) as conn:
        assert checks.tenant_violations(conn, MODEL) == {name: [] for name in NAMES}  # Acme's rules are not its own
    outcomes = checks.run_rule_checks(acme, [world.ACME, world.OTHER], MODEL)
    assert [(o.name, o.passed, o.violations) for o in outcomes] == [(name, False, expected[name]) for name in NAMES]


def test_support_is_measured_against_the_minimum_in_force(acme) -> None:
    """A higher min_rule_executions (a tenant's constitution may set one) makes the thinner rule a violation."""
    learned = _learned(acme)
    with acme.tenant_transaction(world.ACME) as conn:
        catalog_settings = learner_settings(load_systems(conn))
        assert catalog_settings.min_rule_executions == 50  # the world's catch-all says so
        assert checks.rules_without_enough_support(conn, catalog_settings, MODEL) == []
        stricter = LearnerSettings(min_rule_executions=85)
        assert checks.rules_without_enough_support(conn, stricter, MODEL) == [f"{learned['writer']}: 80 executions"]
