"""The sample world: deterministic, idempotent, realistic enough to learn from."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clay_pipelines.sample_world import WorldParameters, catalog, generator, load_world, loader, payroll_docs

from .conftest import WORLD_ANCHOR

ANCHOR = date(2026, 1, 15)


def test_generation_is_deterministic() -> None:
    params = WorldParameters(seed=3, scale=1, anchor=ANCHOR)
    first, second = generator.generate_executions(params), generator.generate_executions(params)
    assert first == second
    other = generator.generate_executions(WorldParameters(seed=4, scale=1, anchor=ANCHOR))
    assert [r["user_request"] for r in other[:50]] != [r["user_request"] for r in first[:50]]


def test_executions_are_varied_and_realistic() -> None:
    rows = generator.generate_executions(WorldParameters(seed=7, scale=1, anchor=ANCHOR))
    assert len(rows) == 20_000
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) == {"success", "failed", "partial", "timeout", "governance_blocked"}
    assert 0.7 < statuses["success"] / len(rows) < 0.9
    assert len({r["user_request"] for r in rows}) > 15_000  # many phrasings, not a handful of strings
    span = max(r["started_at"] for r in rows) - min(r["started_at"] for r in rows)
    assert 390 <= span.days <= 400
    assert all(r["completed_at"] >= r["started_at"] for r in rows)
    assert {r["tenant_id"] for r in rows} == {generator.tenant_id(t) for t in catalog.TENANTS}
    blocked = [r for r in rows if r["status"] == "governance_blocked"]
    assert all(
        r["governance_check"]["requires_approval"] and r["governance_check"]["approved_by"] is None for r in blocked
    )
    ratings = [r["user_satisfaction"] for r in rows if r["user_satisfaction"] is not None]
    assert set(ratings) == {1, 2, 3, 4, 5}


def test_world_has_something_to_learn() -> None:
    """Expense reports go to two skills; one of them is much better at it."""
    rows = generator.generate_executions(WorldParameters(seed=7, scale=1, anchor=ANCHOR))
    outcomes: dict[str, list[bool]] = {}
    for r in rows:
        if r["input_data"]["intent"] == "expense_report":
            outcomes.setdefault(r["system_name"], []).append(r["status"] == "success")
    rate = {system: sum(v) / len(v) for system, v in outcomes.items()}
    assert rate["ledger-lens"] > 0.85
    assert rate["domicile-governance"] < 0.5
    assert len(outcomes["domicile-governance"]) > 200


def test_loaded_world_row_counts_and_registry(world_db) -> None:
    with world_db.admin() as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (
                "tenants",
                "systems",
                "executions",
                "mcp_telemetry_log",
                "resources",
                "dreams",
                "constitutional_amendments",
            )
        }
        oms = conn.execute(
            "SELECT name, subscription_tier, max_users, max_monthly_budget FROM tenants WHERE domain = 'oms.com'"
        ).fetchone()
        tiers = {r[0] for r in conn.execute("SELECT subscription_tier FROM tenants")}
        skills = dict(conn.execute("SELECT name, constitution FROM systems").fetchall())
        depends = conn.execute(
            "SELECT array(SELECT s2.name FROM unnest(s.depends_on) d JOIN systems s2 ON s2.id = d ORDER BY 1) "
            "FROM systems s WHERE s.name = 'clay-consigliere'"
        ).fetchone()[0]
    assert counts == {
        "tenants": 3,
        "systems": 7,
        "executions": 20_000,
        "mcp_telemetry_log": 6_100,
        "resources": 594,
        "dreams": 0,
        "constitutional_amendments": 0,
    }
    assert oms == ("OMS Consulting", "enterprise", 178, Decimal("5000.00"))
    assert tiers == {"starter", "pro", "enterprise"}
    assert {"clay-consigliere", "domicile-governance", "personaplex-7b", "memvid"} <= set(skills)
    governance = skills["domicile-governance"]
    assert governance["requires_approval"] == ["upload_payroll_entries", "audit", "delete"]
    # Only the router's settings are declared tunable; other skills carry no router settings.
    assert "routing_confidence_threshold" not in governance["parameters"] and "tunables" not in governance
    assert governance["parameters"]["fallback_delay_ms"] == 500
    router = skills["clay-consigliere"]
    assert router["parameters"]["min_rule_executions"] == 50
    assert router["parameters"]["routing_confidence_threshold"] == 0.7
    assert router["tunables"]["routing_confidence_threshold"] == {
        "type": "number",
        "min": 0.05,
        "max": 0.95,
        "step": 0.05,
    }
    assert set(router["tunables"]) == {
        "routing_confidence_threshold",
        "capability_match_threshold",
        "min_rule_executions",
    }
    assert depends == ["domicile-governance", "memvid", "personaplex-7b"]


def test_seeding_twice_writes_nothing_the_second_time(world_db, tmp_path: Path) -> None:
    with world_db.database() as db:
        summary = load_world(
            db, WorldParameters(seed=7, scale=1, anchor=date(2030, 1, 1)), tmp_path, progress=lambda _: None
        )
    assert summary.loaded is False
    assert summary.anchor_date == WORLD_ANCHOR.isoformat()  # the loaded world's day, not the new one
    assert summary.row_counts["executions"] == 20_000


def test_a_different_world_replaces_the_previous_one(world_db, tmp_path: Path) -> None:
    with world_db.database() as db:
        summary = load_world(db, WorldParameters(seed=8, scale=1, anchor=ANCHOR), tmp_path, progress=lambda _: None)
    assert summary.loaded is True
    with world_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 20_000
        assert conn.execute("SELECT count(*) FROM sample_world_loads").fetchone()[0] == 2


def test_budget_usage_matches_the_executions(world_db) -> None:
    with world_db.admin() as conn:
        mismatches = conn.execute(
            """
            SELECT r.id FROM resources r
            WHERE r.resource_type = 'usd_budget'
              AND abs(r.used - (SELECT coalesce(sum(e.cost_usd), 0) FROM executions e
                                WHERE e.tenant_id = r.tenant_id AND date_trunc('hour', e.started_at) >= r.window_start
                                  AND date_trunc('hour', e.started_at) < r.window_end)) > 0.01
            """
        ).fetchall()
    assert mismatches == []


def test_directory_has_the_hard_cases() -> None:
    directory = payroll_docs.generate_directory(7)
    assert len(directory) == 178
    names = {(e.first_name, e.last_name) for e in directory}
    assert {("Kevin", "McCoy"), ("Kevin", "McCue"), ("Alvaro", "Smith"), ("Alvaro", "Smyth")} <= names
    assert any(e.preferred_name == "Bob" for e in directory if e.first_name == "Robert")
    assert any(any(ord(ch) > 127 for ch in e.first_name + e.last_name) for e in directory)
    contractors = [e for e in directory if e.employment_type == "contractor"]
    assert contractors and all(e.llc and e.llc.endswith("LLC") for e in contractors)
    assert len({e.llc for e in contractors}) == len(contractors)
    assert len({e.id for e in directory}) == 178


def test_payroll_pdfs_are_reproducible_and_their_truth_adds_up(tmp_path: Path) -> None:
    summary = payroll_docs.generate_payroll_world(tmp_path / "a", 7, ANCHOR)
    payroll_docs.generate_payroll_world(tmp_path / "b", 7, ANCHOR)
    pdfs_a = sorted((tmp_path / "a" / "inbox" / "oms.com").glob("*.pdf"))
    pdfs_b = sorted((tmp_path / "b" / "inbox" / "oms.com").glob("*.pdf"))
    assert summary["documents"] == len(pdfs_a) == 7
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert [digest(p) for p in pdfs_a] == [digest(p) for p in pdfs_b]
    layouts = Counter()
    for pdf in pdfs_a:
        truth = json.loads((tmp_path / "a" / "truth" / (pdf.stem + ".json")).read_text())
        layouts[truth["layout"]] += 1
        assert pdf.read_bytes().startswith(b"%PDF-")
        assert sum(Decimal(e["amount"]) for e in truth["entries"]) == Decimal(truth["total"])
        assert all(e["expected_employee_id"] for e in truth["entries"])
    assert layouts == {"register": 4, "statement": 3}


def test_a_world_generated_by_other_code_is_replaced(world_db, tmp_path: Path) -> None:
    with world_db.admin() as conn:
        conn.execute("UPDATE sample_world_loads SET world_sha256 = 'generated-by-an-older-catalog'")
    with world_db.database() as db:
        summary = load_world(db, WorldParameters(seed=7, scale=1, anchor=ANCHOR), tmp_path, progress=lambda _: None)
        again = load_world(db, WorldParameters(seed=7, scale=1, anchor=ANCHOR), tmp_path, progress=lambda _: None)
    assert (summary.loaded, again.loaded) == (True, False)
    with world_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 20_000
        latest = conn.execute("SELECT world_sha256 FROM sample_world_loads ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert latest == loader.world_fingerprint()


def test_a_world_the_pipelines_built_on_is_not_replaced_underneath_them(world_db, tmp_path: Path) -> None:
    with world_db.admin() as conn:
        tenant, execution = conn.execute("SELECT tenant_id, id FROM executions ORDER BY id LIMIT 1").fetchone()
        conn.execute(
            "INSERT INTO payroll_documents (tenant_id, source_file, content_hash, version, status, execution_id) "
            "VALUES (%s, 'register.pdf', 'abc', 1, 'extracted', %s)",
            (tenant, execution),
        )
    with world_db.database() as db, pytest.raises(loader.WorldReplacementError, match="1 payroll document"):
        load_world(db, WorldParameters(seed=9, scale=1, anchor=ANCHOR), tmp_path, progress=lambda _: None)
    with world_db.admin() as conn:  # nothing half-done
        assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 20_000
        assert conn.execute("SELECT count(*) FROM sample_world_loads").fetchone()[0] == 1


def test_the_live_hour_routes_reserves_completes_settles_and_signs_once(world_db, tmp_path: Path) -> None:
    from clay_pipelines.governance import keys
    from clay_pipelines.routing.embeddings import HashingEmbedder
    from clay_pipelines.sample_world.traffic import live_hour

    signing = keys.file_signer(tmp_path / "keys")
    with world_db.database() as db:
        with db.unscoped_transaction() as conn:
            keys.register(conn, signing)
        first = live_hour(db, HashingEmbedder(), signing, requests_per_tenant=3)
        again = live_hour(db, HashingEmbedder(), signing, requests_per_tenant=3)
    names = [t.name for t in catalog.TENANTS]
    assert {n: first.routed.get(n, 0) + first.refused.get(n, 0) for n in names} == dict.fromkeys(names, 3)
    assert (again.skipped, again.routed) == (names, {})  # once per world: nothing written the second time
    with world_db.admin() as conn:
        live = conn.execute(
            "SELECT count(*), count(completed_at), count(receipt_signature) FROM executions "
            "WHERE budget_reservation_id IS NOT NULL"
        ).fetchone()
        reservations = dict(conn.execute("SELECT status, count(*) FROM budget_reservations GROUP BY status").fetchall())
    routed = sum(first.routed.values())
    assert live == (routed, routed, sum(first.signed.values())) and routed > 0
    assert reservations == {"settled": routed} == {"settled": sum(first.settled.values())}
