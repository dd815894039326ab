"""`clay amend`, `clay constitution`, `clay amendments`, run as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from psycopg.types.json import Jsonb

from tests.test_constitutions import BASE, ROUTER


def clay(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CLAY_DATABASE_NAME": database}
    return subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_amend_show_history_rollback_and_the_refusals(fresh_db) -> None:
    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO tenants (name, domain) VALUES ('Alpha', 'alpha.com'), ('Beta', 'beta.com')")
        conn.execute(
            "INSERT INTO systems (id, tenant_id, name, type, constitution) VALUES (%s, NULL, 'router', 'agent', %s)",
            (ROUTER, Jsonb(BASE)),
        )
    db = fresh_db.name
    amended = clay(
        "amend", "router", "--tenant", "alpha.com", "--set", "routing_confidence_threshold=0.55",
        "--by", "ops@alpha.com", "--reason", "too many fallbacks", database=db,
    )  # fmt: skip
    assert amended.returncode == 0, amended.stderr
    first_line, patch_line = amended.stdout.splitlines()
    assert first_line.startswith("router: manual_update ") and " for this tenant, " in first_line
    assert patch_line == "  replace /parameters/routing_confidence_threshold = 0.55"
    amendment_id = first_line.split()[2]

    shown = json.loads(clay("constitution", "show", "router", "--tenant", "alpha.com", "--json", database=db).stdout)
    assert shown["parameters"]["routing_confidence_threshold"] == 0.55
    other = json.loads(clay("constitution", "show", "router", "--tenant", "beta.com", "--json", database=db).stdout)
    assert other == BASE

    history = clay("constitution", "history", "router", "--tenant", "alpha.com", database=db).stdout.splitlines()
    assert len(history) == 1 and amendment_id in history[0] and "/parameters/routing_confidence_threshold" in history[0]

    out_of_bounds = clay(
        "amend", "router", "--tenant", "alpha.com", "--set", "routing_confidence_threshold=2",
        "--by", "ops@alpha.com", "--reason", "x", database=db,
    )  # fmt: skip
    assert out_of_bounds.returncode == 2
    assert out_of_bounds.stderr.strip() == "clay: error: routing_confidence_threshold=2 is above its maximum 0.95"

    rolled = clay(
        "amendments", "rollback", amendment_id, "--tenant", "alpha.com", "--by", "ops@alpha.com", "--reason", "undo",
        database=db,
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr
    again = clay(
        "amendments", "rollback", amendment_id, "--tenant", "alpha.com", "--by", "ops@alpha.com", "--reason", "undo",
        database=db,
    )  # fmt: skip
    assert again.returncode == 2 and "was already rolled back" in again.stderr
    shown = json.loads(clay("constitution", "show", "router", "--tenant", "alpha.com", "--json", database=db).stdout)
    assert shown == BASE

    listed = clay("amendments", "list", "--tenant", "alpha.com", database=db).stdout.splitlines()
    assert len(listed) == 2 and "rolled back" in listed[0]
    no_tenant = clay("amendments", "list", database=db)
    assert no_tenant.returncode == 2 and "name the tenant" in no_tenant.stderr


def test_eval_dreams_prints_the_figures_as_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", "eval", "dreams", "--seeds", "1", "--bootstrap", "10",
         "--workers", "1", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["seeds"] == 1
    assert set(figures) >= {
        "false_promotion_rate",
        "false_promotion_upper",
        "planted_promotion_rate",
        "planted_promotion_lower",
        "success_rate_mae",
        "interval_coverage",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", "eval", "dreams", "--seeds", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--bootstrap at least 2")


def test_eval_routing_dreams_nights_over_spread_history(tmp_path) -> None:
    """--dream-nights: the history spread over 28 days, each night dreamed as the latest (its
    promotion applies before the next), the dreamed threshold reported beside the accuracy."""
    from clay_pipelines.routing.embeddings import HashingEmbedder
    from clay_pipelines.routing.evaluation import evaluate_routing
    from tests import routing_world as world

    def write(name: str, rows: list[tuple[str, str]]) -> Path:
        path = tmp_path / name
        path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
        return path

    payroll, email = world.payroll_texts(300), world.email_texts(300)
    train = write("train.csv", [(t, "payroll") for t in payroll[:260]] + [(t, "email") for t in email[:260]])
    test = write("test.csv", [(t, "payroll") for t in payroll[260:]] + [(t, "email") for t in email[260:]])
    result = evaluate_routing(train, test, HashingEmbedder(), noise=0.15, seed=0, dream_nights=2)
    assert [night["night"] for night in result["dream_nights"]] == sorted(n["night"] for n in result["dream_nights"])
    assert len(result["dream_nights"]) == 2
    assert 0.05 <= result["dreamed_threshold"] <= 0.95 and 0 <= result["accuracy"] <= 1


def test_dream_nights_history_holds_the_catch_alls_fallbacks_and_what_it_served(tmp_path) -> None:
    import numpy as np
    import pytest

    from clay_pipelines.routing.embeddings import HashingEmbedder
    from clay_pipelines.routing.evaluation import (
        FALLBACK_SHARE,
        EvaluationInputError,
        _catch_all_executions,
        evaluate_routing,
    )

    train = [(f"text {i}", "a") for i in range(50)]
    rows = _catch_all_executions(train, [("will it rain", "")], np.random.default_rng(0))
    failed = [text for text, label, status in rows if status == "failed"]
    assert len(failed) == round(FALLBACK_SHARE * 50) == 5 and len(set(failed)) == 5
    assert set(failed) <= {text for text, _ in train}
    assert all(label is None for _, label, _ in rows)  # None: the catch-all
    assert rows[-1] == ("will it rain", None, "success")
    with pytest.raises(EvaluationInputError, match="give --dream-nights too"):
        evaluate_routing(tmp_path / "t.csv", tmp_path / "t.csv", HashingEmbedder(), oos_history_path=tmp_path / "o.csv")


def test_the_dream_nights_world_repeats_its_execution_ids_so_the_halves_repeat(pg_server) -> None:
    """Nights split the window into halves by a hash of the cycle id and each execution id: a world
    built twice from one seed (two databases) holds the same executions under the same ids, and
    another seed draws other ids."""
    from datetime import UTC, datetime

    from clay_pipelines.routing.embeddings import HashingEmbedder
    from clay_pipelines.routing.evaluation import _build_world
    from tests import routing_world as world
    from tests.conftest import create_database, drop_database

    train = [(t, "payroll") for t in world.payroll_texts(40)] + [(t, "email") for t in world.email_texts(40)]
    spread_from = datetime(2027, 1, 1, 3, tzinfo=UTC)

    def built(seed: int) -> list[tuple]:
        db = create_database(pg_server)
        try:
            with db.database() as client:
                tenant_id, _ = _build_world(client, train, HashingEmbedder(), 0.15, seed, spread_from)
                with client.tenant_transaction(tenant_id) as conn:
                    return conn.execute(
                        "SELECT id, system_name, user_request, status, started_at FROM executions ORDER BY id"
                    ).fetchall()
        finally:
            drop_database(db)

    first, again, other = built(3), built(3), built(4)
    assert len(first) == 80 + 12 + 8 and first == again  # training, noise failures, catch-all failures
    assert not {row[0] for row in first} & {row[0] for row in other}
