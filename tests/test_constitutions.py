"""Constitutions change only through amendments: per tenant, replayable, concurrent-safe,
append-only, reversible byte for byte, and what the router reads."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.routing.rule_store import load_systems
from clay_pipelines.tars import amendments as am
from clay_pipelines.tars import constitution as c

ROUTER = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
BASE = {
    "skill": "router",
    "prime_directives": ["Route to the specialist"],
    "requires_approval": ["delete"],
    "covenant": "Every request finds its skill.",
    "parameters": {
        "routing_confidence_threshold": 0.7,
        "capability_match_threshold": 0.35,
        "min_rule_executions": 50,
        "catch_all": True,
    },
    "tunables": {
        "routing_confidence_threshold": {"type": "number", "min": 0.05, "max": 0.95, "step": 0.05},
        "capability_match_threshold": {"type": "number", "min": 0.1, "max": 0.8, "step": 0.05},
        "min_rule_executions": {"type": "integer", "min": 20, "max": 200, "step": 10},
    },
}
THRESHOLD = "parameters.routing_confidence_threshold"
CAPABILITY = "parameters.capability_match_threshold"


@pytest.fixture
def world(fresh_db, database):
    with fresh_db.admin() as conn:
        a = conn.execute("INSERT INTO tenants (name) VALUES ('Alpha') RETURNING id").fetchone()[0]
        b = conn.execute("INSERT INTO tenants (name) VALUES ('Beta') RETURNING id").fetchone()[0]
        conn.execute(
            "INSERT INTO systems (id, tenant_id, name, type, constitution) VALUES (%s, NULL, 'router', 'agent', %s)",
            (ROUTER, Jsonb(BASE)),
        )
    return database, a, b


def _amend(db, tenant, changes, **kwargs) -> am.Amendment:
    with db.tenant_transaction(tenant) as conn:
        return am.amend(conn, am.Change(system="router", changes=changes, by="ops@alpha.com", reason="test", **kwargs))


def _platform(db, changes, **kwargs) -> am.Amendment:
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        return am.amend(
            conn, am.Change(system="router", changes=changes, by="platform@clay.dev", reason="test", **kwargs)
        )


def _effective(db, tenant) -> dict:
    with db.tenant_transaction(tenant) as conn:
        return am.effective(conn, "router").constitution


def _parameter(db, tenant, name: str):
    with db.tenant_transaction(tenant) as conn:
        return load_systems(conn).router_parameters()[name]


# -- values -----------------------------------------------------------------------------------------


def test_identity_is_the_sha256_of_rfc8785_canonical_json() -> None:
    assert c.canonical({"b": 1, "a": [0.5, "x"]}) == b'{"a":[0.5,"x"],"b":1}'
    assert c.constitution_hash({"b": 1, "a": 2}) == c.constitution_hash({"a": 2, "b": 1})
    # Money and integers beyond 2^53 keep every digit, as strings.
    assert (
        c.canonical({"budget": Decimal("1000.10"), "big": 2**60}) == b'{"big":"1152921504606846976","budget":"1000.10"}'
    )


def test_tunables_bound_automated_changes() -> None:
    assert c.check_automated(BASE, {THRESHOLD: 0.65, "parameters.min_rule_executions": 60.0}) == {
        THRESHOLD: 0.65,
        "parameters.min_rule_executions": 60,
    }
    for changes, message in (
        ({THRESHOLD: 0.99}, "above its maximum 0.95"),
        ({THRESHOLD: 0.62}, "not on its grid"),
        ({"parameters.min_rule_executions": 55.5}, "not an integer"),
        ({"parameters.catch_all": False}, "not a declared tunable"),
        ({"requires_approval": []}, "not a declared tunable"),
        ({"covenant": "anything"}, "not a declared tunable"),
    ):
        with pytest.raises(c.ConstitutionError, match=message):
            c.check_automated(BASE, changes)
    assert c.tunables(BASE)["routing_confidence_threshold"].grid()[:3] == [0.05, 0.1, 0.15]


# -- per tenant -------------------------------------------------------------------------------------


def test_a_tenants_change_is_invisible_to_another_tenant_and_read_by_the_router(world) -> None:
    db, alpha, beta = world
    amendment = _amend(db, alpha, {THRESHOLD: 0.55})
    assert amendment.amendment_type == "manual_update" and amendment.tenant_id == alpha
    assert amendment.diff == [{"op": "replace", "path": "/parameters/routing_confidence_threshold", "value": 0.55}]
    assert _parameter(db, alpha, "routing_confidence_threshold") == 0.55
    assert _parameter(db, beta, "routing_confidence_threshold") == 0.7
    with db.tenant_transaction(beta) as conn:
        assert am.amendments(conn, ROUTER, beta) == []  # Alpha's amendment is not Beta's to see
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        assert conn.execute("SELECT constitution FROM systems WHERE id = %s", (ROUTER,)).fetchone()[0] == BASE


def test_a_platform_amendment_reaches_every_tenant_that_did_not_override_the_key(world) -> None:
    db, alpha, beta = world
    _amend(db, alpha, {THRESHOLD: 0.55})
    platform = _platform(db, {THRESHOLD: 0.8, CAPABILITY: 0.4})
    assert platform.tenant_id is None
    assert _parameter(db, alpha, "routing_confidence_threshold") == 0.55  # its own override stays
    assert _parameter(db, alpha, "capability_match_threshold") == 0.4  # the platform's change reaches it
    assert _parameter(db, beta, "routing_confidence_threshold") == 0.8
    with db.tenant_transaction(beta) as conn:  # tenants read the platform's history
        assert [a.id for a in am.amendments(conn, ROUTER, beta)] == [platform.id]
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        assert am.replay_mismatches(conn) == []


def test_the_constitution_at_a_past_time_is_replayed_from_the_amendments(world) -> None:
    db, alpha, _ = world
    first = _amend(db, alpha, {THRESHOLD: 0.55})
    _platform(db, {CAPABILITY: 0.4})
    second = _amend(db, alpha, {THRESHOLD: 0.6})
    with db.tenant_transaction(alpha) as conn:
        found = am.skill(conn, "router")
        before = am.replay(conn, found, alpha, at=first.approved_at - timedelta(seconds=1))
        at_first = am.replay(conn, found, alpha, at=first.approved_at)
        now = am.replay(conn, found, alpha)
        current = am.effective(conn, "router")
    assert before == BASE
    assert at_first["parameters"]["routing_confidence_threshold"] == 0.55
    assert at_first["parameters"]["capability_match_threshold"] == 0.35
    assert c.constitution_hash(now) == current.hash == second.new_hash


def test_a_change_prepared_against_an_old_constitution_is_refused(world) -> None:
    db, alpha, _ = world
    with db.tenant_transaction(alpha) as conn:
        prepared = am.effective(conn, "router").hash
    _amend(db, alpha, {THRESHOLD: 0.55})
    with pytest.raises(am.StaleConstitutionError, match="prepared against constitution"):
        _amend(db, alpha, {THRESHOLD: 0.6}, expected_hash=prepared)
    assert _parameter(db, alpha, "routing_confidence_threshold") == 0.55


# -- append-only and no change without an amendment ----------------------------------------------


def test_amendments_are_append_only_for_the_application_role(world) -> None:
    db, alpha, _ = world
    amendment = _amend(db, alpha, {THRESHOLD: 0.55})
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant_transaction(alpha) as conn:
        conn.execute("DELETE FROM constitutional_amendments")
    with (
        pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"),
        db.tenant_transaction(alpha) as conn,
    ):
        conn.execute("UPDATE constitutional_amendments SET approved_by = 'someone-else'")
    with db.tenant_transaction(alpha) as conn:
        conn.execute("UPDATE constitutional_amendments SET rolled_back_at = now() WHERE id = %s", (amendment.id,))
    with (
        pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="already rolled back"),
        db.tenant_transaction(alpha) as conn,
    ):
        conn.execute("UPDATE constitutional_amendments SET rolled_back_at = now() WHERE id = %s", (amendment.id,))


def test_a_constitution_never_changes_without_its_amendment(world) -> None:
    db, alpha, _ = world
    _amend(db, alpha, {THRESHOLD: 0.55})
    refused = pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="only through an amendment")
    with refused, db.tenant_transaction(alpha) as conn:
        conn.execute("UPDATE constitution_state SET constitution = jsonb_set(constitution, '{covenant}', '\"none\"')")
    refused = pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="only through an amendment")
    with refused, db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        conn.execute("UPDATE systems SET constitution = '{}' WHERE id = %s", (ROUTER,))


# -- rollback ---------------------------------------------------------------------------------------


def test_rollback_restores_the_previous_constitution_byte_for_byte(world) -> None:
    db, alpha, _ = world
    before = c.canonical(_effective(db, alpha))
    amendment = _amend(db, alpha, {THRESHOLD: 0.55, "parameters.new_knob": 3})
    with db.tenant_transaction(alpha) as conn:
        undo = am.rollback(conn, amendment.id, "ops@alpha.com", "worse")
        assert am.get_amendment(conn, amendment.id).rolled_back_at is not None
    assert c.canonical(_effective(db, alpha)) == before
    assert undo.new_hash == amendment.old_hash and undo.rollback_of == amendment.id
    assert undo.evidence["rollback_of"] == str(amendment.id) and undo.amendment_type == "manual_update"
    with pytest.raises(am.AmendmentError, match="already rolled back"), db.tenant_transaction(alpha) as conn:
        am.rollback(conn, amendment.id, "ops@alpha.com", "again")


def test_rollback_is_refused_for_governance_tightening_and_under_later_changes(world) -> None:
    db, alpha, _ = world
    tightening = _amend(db, alpha, {"requires_approval": ["delete", "amend_constitution"]})
    assert tightening.amendment_type == "governance_tightening" and not tightening.can_rollback
    with pytest.raises(am.AmendmentError, match="cannot be rolled back"), db.tenant_transaction(alpha) as conn:
        am.rollback(conn, tightening.id, "ops@alpha.com", "no")
    first = _amend(db, alpha, {THRESHOLD: 0.55})
    later = _amend(db, alpha, {THRESHOLD: 0.6})
    _amend(db, alpha, {CAPABILITY: 0.4})  # other keys do not block
    with (
        pytest.raises(am.AmendmentError, match=f"roll them back first: {later.id}"),
        db.tenant_transaction(alpha) as conn,
    ):
        am.rollback(conn, first.id, "ops@alpha.com", "no")


# -- automated changes --------------------------------------------------------------------------------


def _propose(db, tenant, changes, prepared=None) -> am.Proposal:
    with db.tenant_transaction(tenant) as conn:
        prepared = prepared or am.effective(conn, "router").hash
        return am.propose_automated(
            conn, "router", changes, actor="tars:dream-cycle", evidence={"dream": "d1"}, prepared_against=prepared
        )


def test_automated_changes_apply_wait_for_approval_or_freeze(world) -> None:
    db, alpha, beta = world
    applied = _propose(db, alpha, {THRESHOLD: 0.65})
    assert applied.status == "applied" and applied.amendment.approved_by == "tars:dream-cycle"
    with pytest.raises(c.ConstitutionError, match="not a declared tunable"):
        _propose(db, alpha, {"covenant": "none"})

    _amend(db, beta, {"requires_approval": ["delete", c.APPROVAL_ACTION]})  # ARM mode for Beta
    waiting = _propose(db, beta, {THRESHOLD: 0.6})
    assert waiting.status == "pending" and _parameter(db, beta, "routing_confidence_threshold") == 0.7
    with db.tenant_transaction(beta) as conn:
        decided = am.decide_pending(conn, waiting.pending_id, "boss@beta.com", approve=True, reason="ok")
    assert decided.amendment.approved_by == "boss@beta.com" and decided.amendment.proposed_by == "tars:dream-cycle"
    assert _parameter(db, beta, "routing_confidence_threshold") == 0.6

    stale = _propose(db, beta, {THRESHOLD: 0.5})
    _amend(db, beta, {CAPABILITY: 0.45})
    with db.tenant_transaction(beta) as conn:
        assert am.decide_pending(conn, stale.pending_id, "boss@beta.com", approve=True).status == "stale"
    with db.tenant_transaction(beta) as conn:
        assert conn.execute("SELECT status FROM pending_amendments WHERE id = %s", (stale.pending_id,)).fetchone() == (
            "stale",
        )

    with db.tenant_transaction(alpha) as conn:
        am.set_frozen(conn, True, "ops@alpha.com", "audit week")
    assert _propose(db, alpha, {THRESHOLD: 0.5}).status == "frozen"
    assert _parameter(db, alpha, "routing_confidence_threshold") == 0.65


def test_the_replay_check_finds_a_stored_state_that_drifted(world, fresh_db) -> None:
    db, alpha, _ = world
    _amend(db, alpha, {THRESHOLD: 0.55})
    with fresh_db.admin() as conn:
        conn.execute("ALTER TABLE constitution_state DISABLE TRIGGER constitution_state_is_amended")
        conn.execute("UPDATE constitution_state SET constitution = jsonb_set(constitution, '{covenant}', '\"x\"')")
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        mismatches = am.replay_mismatches(conn)
    assert [(m.tenant_id, m.system_name) for m in mismatches] == [(alpha, "router")]


def test_a_deployment_that_ships_a_new_constitution_is_a_platform_amendment(world) -> None:
    db, alpha, _ = world
    shipped = c.with_changes(BASE, {"version": "1.1.0"})
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        deployed = am.deploy(conn, ROUTER, shipped, by="deploy:test")
        assert am.deploy(conn, ROUTER, shipped, by="deploy:test") is None  # the same again: nothing
    assert deployed.tenant_id is None and deployed.approved_by == "deploy:test"
    assert _effective(db, alpha)["version"] == "1.1.0"


# -- the Dagster asset --------------------------------------------------------------------------------


def test_the_constitutions_asset_lists_every_tenant_and_checks_the_replay(world, fresh_db) -> None:
    import dagster as dg

    from clay_pipelines.resources import PostgresResource
    from clay_pipelines.tars.defs import constitutions

    db, alpha, beta = world
    _amend(db, alpha, {THRESHOLD: 0.55})
    _amend(db, beta, {"requires_approval": ["delete", c.APPROVAL_ACTION]})
    _propose(db, beta, {THRESHOLD: 0.6})
    resources = {"postgres": PostgresResource(app_dsn=fresh_db.app_url, maintenance_dsn=fresh_db.maintenance_url)}

    def materialize() -> tuple[dict, dg.AssetCheckEvaluation]:
        with dg.instance_for_test() as instance:
            result = dg.materialize([constitutions], instance=instance, resources=resources)
        metadata = {
            k: v.value for k, v in result.asset_materializations_for_node("tars__constitutions")[0].metadata.items()
        }
        return metadata, result.get_asset_check_evaluations()[0]

    metadata, check = materialize()
    assert check.passed and (metadata["tenant_skills"], metadata["pending_approvals"]) == (2, 1)
    rows = [line.split(" | ") for line in metadata["constitutions"].splitlines()[2:]]
    assert [(r[0].strip("| "), r[1], r[3], r[5].strip(" |")) for r in rows] == [
        ("Alpha", "router", "yes", ""),
        ("Beta", "router", "yes", "1"),
    ]
    assert rows[0][4].startswith("manual_update by ops@alpha.com")

    with fresh_db.admin() as conn:
        conn.execute("ALTER TABLE constitution_state DISABLE TRIGGER constitution_state_is_amended")
        conn.execute("UPDATE constitution_state SET constitution = '{}' WHERE tenant_id = %s", (alpha,))
    _, check = materialize()
    assert not check.passed
    assert "| Alpha | router |" in check.metadata["mismatches"].value


def test_a_capability_expansion_is_a_platform_amendment_that_refreshes_the_embedding(world, fresh_db) -> None:
    db, alpha, _ = world
    with fresh_db.admin() as conn:
        conn.execute(
            "UPDATE systems SET capabilities = ARRAY['routing'], capabilities_embedding = '[1,0]', "
            "capabilities_embedding_model = 'test@1' WHERE id = %s",
            (ROUTER,),
        )
    with pytest.raises(am.AmendmentError, match="platform-wide skill: its capabilities change by a platform amendment"):
        _amend(db, alpha, {"capabilities": ["routing", "planning"]})
    expansion = _platform(db, {"capabilities": ["routing", "planning"]})
    assert expansion.amendment_type == "capability_expansion" and expansion.tenant_id is None
    with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
        row = conn.execute(
            "SELECT capabilities, capabilities_embedding IS NULL, capabilities_embedding_model FROM systems WHERE id = %s",
            (ROUTER,),
        ).fetchone()
    assert row == (["routing", "planning"], True, None)  # system_capability_embeddings embeds it again
    assert _effective(db, alpha)["capabilities"] == ["routing", "planning"]


def test_a_person_may_set_a_value_between_grid_points_within_the_bounds(world) -> None:
    db, alpha, _ = world
    _amend(db, alpha, {THRESHOLD: 0.1009})  # a calibrated value
    assert _parameter(db, alpha, "routing_confidence_threshold") == 0.1009
    with pytest.raises(c.ConstitutionError, match="below its minimum"):
        _amend(db, alpha, {THRESHOLD: 0.01})
