"""`clay eval routing`: the rule learner and the router measured on labelled intent data.

A throwaway embedded PostgreSQL (in a temporary folder) gets one tenant, one system per label and a
catch-all, and executions made from TRAIN: each text handled by its label's system with status
success, plus a `noise` share of extra executions of the same texts handled by another, randomly
chosen system with status failed. The pipeline's own code then embeds nothing twice, learns rules
(full re-cluster) and routes every TEST text through route(). Optionally the routing threshold is
calibrated on validation files first (never on the test files).
"""

from __future__ import annotations

import csv
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database, MaintenanceJob
from clay_pipelines.db import embedded as embedded_server
from clay_pipelines.db.migrations import apply_migrations
from clay_pipelines.db.targets import ensure_database
from clay_pipelines.processes import deferred_signals
from clay_pipelines.routing.embed_store import copy_embedded_executions, embed_systems
from clay_pipelines.routing.embeddings import Embedder, tag
from clay_pipelines.routing.learning import wilson_lower_bound
from clay_pipelines.routing.router import RoutingDecision, route
from clay_pipelines.routing.rule_store import learn_rules_full
from clay_pipelines.tars import amendments

CATCH_ALL = "clay-consigliere"


class EvaluationInputError(ValueError):
    """A CSV file the evaluation cannot use; the message names the file and row."""


def _not_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:  # the whole file, so that the offset is the file's
        return f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); expected a text,label CSV"
    return f"{path}: not UTF-8 text; expected a text,label CSV"


def read_labelled(path: Path, require_label: bool = True) -> list[tuple[str, str]]:
    """Rows (text, label) of a CSV with the header text,label."""
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no such file")
    rows: list[tuple[str, str]] = []
    # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            reader = csv.DictReader(handle)
            if (
                not reader.fieldnames
                or "text" not in reader.fieldnames
                or (require_label and "label" not in reader.fieldnames)
            ):
                raise EvaluationInputError(f"{path}: expected the columns text,label, found {reader.fieldnames}")
            for number, row in enumerate(reader, start=2):
                text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip()
                if "\x00" in text + label:  # valid UTF-8, but no text holds it (nor can PostgreSQL store it)
                    raise EvaluationInputError(f"{path}, row {number}: a NUL byte; expected a text,label CSV")
                if not text or (require_label and not label):
                    raise EvaluationInputError(f"{path}, row {number}: empty {'text' if not text else 'label'}")
                rows.append((text, label))
        except UnicodeDecodeError as error:
            raise EvaluationInputError(_not_utf8(path)) from error
        except csv.Error as error:
            raise EvaluationInputError(f"{path}: not a CSV the evaluation can read ({error})") from error
    if not rows:
        raise EvaluationInputError(f"{path}: no rows")
    return rows


@dataclass(kw_only=True)
class RoutedSet:
    labels: list[str]
    decisions: list[RoutingDecision]
    scores: np.ndarray  # the best rule's score, even when not accepted


def _system_id(label: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"clay-eval/system/{label}")


_TENANT_ID = uuid.uuid5(uuid.NAMESPACE_URL, "clay-eval/tenant")
_CATCH_ALL_CONSTITUTION = {
    "skill": CATCH_ALL,
    "requires_approval": [],
    "parameters": {
        "routing_confidence_threshold": 0.7,
        "capability_match_threshold": 0.35,
        "min_rule_executions": 50,
        "catch_all": True,
    },
    # What dreams may tune in the evaluation world (--dream-nights).
    "tunables": {
        "routing_confidence_threshold": {"type": "number", "min": 0.05, "max": 0.95, "step": 0.05},
        "capability_match_threshold": {"type": "number", "min": 0.1, "max": 0.8, "step": 0.05},
    },
}
# TARS in the evaluation world: each night replays one day. Archived, so the router never picks it.
_TARS_CONSTITUTION = {
    "skill": "tars",
    "requires_approval": [],
    "parameters": {"mutations_per_system": 10, "replay_window_days": 1, "watch_days": 1},
}
HISTORY_DAYS = 28
_CATCH_ALL_ID = uuid.uuid5(uuid.NAMESPACE_URL, "clay-eval/catch-all")
# Dream nights judge a threshold by outcomes, so the history holds what a router with a catch-all
# logs: this share of requests fell back to the catch-all, which serves none of the world's labels
# (a failure, as the accuracy counts it).
FALLBACK_SHARE = 0.1


def _build_world(
    db: Database,
    train: list[tuple[str, str]],
    embedder: Embedder,
    noise: float,
    seed: int,
    spread_from: datetime | None = None,
    served_by_catch_all: list[tuple[str, str]] | None = None,
) -> tuple[uuid.UUID, float]:
    """The evaluation's tenant, its systems and its executions with their vectors; returns the
    tenant and the embedder's throughput (texts per second). With spread_from (dream nights), the
    history also holds the catch-all's executions: FALLBACK_SHARE of the requests failed there, and
    `served_by_catch_all` (requests that fit no label) succeeded there."""
    labels = sorted({label for _, label in train})
    _create_tenant(db, labels)
    executions = _training_executions(train, labels, noise, np.random.default_rng(seed))
    if spread_from is not None:
        executions += _catch_all_executions(train, served_by_catch_all or [], np.random.default_rng(seed + 2))
    started = time.perf_counter()
    vectors = embedder.encode([text for text, _, _ in executions])
    embed_seconds = time.perf_counter() - started
    _load_executions(db, executions, vectors, tag(embedder), spread_from, np.random.default_rng(seed + 1), seed)
    return _TENANT_ID, len(executions) / embed_seconds


def _create_tenant(db: Database, labels: list[str]) -> None:
    """The tenant, the catch-all (carrying the router's parameters) and one system per label."""
    systems = [
        (
            _CATCH_ALL_ID,
            CATCH_ALL,
            "agent",
            "general questions, anything else",
            [],
            _CATCH_ALL_CONSTITUTION,
        )
    ]
    systems += [
        (
            _system_id(label),
            f"intent-{label}",
            "component",
            label.replace("_", " "),
            [label],
            {"skill": label, "requires_approval": []},
        )
        for label in labels
    ]
    systems.append((uuid.uuid5(uuid.NAMESPACE_URL, "clay-eval/tars"), "tars", "agent", "", [], _TARS_CONSTITUTION))
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, domain, subscription_tier) VALUES (%s, 'Evaluation', 'eval.example', 'enterprise')",
            (_TENANT_ID,),
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO systems (id, tenant_id, name, type, description, capabilities, constitution) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(i, _TENANT_ID, n, t, d, c, Jsonb(k)) for i, n, t, d, c, k in systems],
            )
        conn.execute("UPDATE systems SET status = 'archived' WHERE name = 'tars' AND tenant_id = %s", (_TENANT_ID,))


def _training_executions(
    train: list[tuple[str, str]], labels: list[str], noise: float, rng: np.random.Generator
) -> list[tuple[str, str, str]]:
    """(text, label of the system that handled it, status): every training text handled by its own
    label's system, successfully, and a `noise` share of them handled again by another label's
    system, which failed."""
    executions = [(text, label, "success") for text, label in train]
    for i in rng.choice(len(train), size=round(noise * len(train)), replace=False) if noise > 0 else []:
        text, label = train[i]
        others = [other for other in labels if other != label]
        executions.append((text, others[int(rng.integers(len(others)))], "failed"))
    return executions


def _catch_all_executions(
    train: list[tuple[str, str]], served: list[tuple[str, str]], rng: np.random.Generator
) -> list[tuple[str, str | None, str]]:
    """(text, None for the catch-all, status): a FALLBACK_SHARE of the training texts handled by the
    catch-all, which failed, and each `served` text handled by it, successfully."""
    picked = rng.choice(len(train), size=round(FALLBACK_SHARE * len(train)), replace=False)
    return [(train[i][0], None, "failed") for i in sorted(picked)] + [(text, None, "success") for text, _ in served]


def _load_executions(
    db: Database,
    executions: list[tuple[str, str | None, str]],
    vectors: np.ndarray,
    embedding_model: str,
    spread_from: datetime | None = None,
    rng: np.random.Generator | None = None,
    seed: int = 0,
) -> None:
    """The executions, written by binary COPY: a second apart over a day 30 days ago, or (for dream
    nights) at seeded random times over HISTORY_DAYS days from `spread_from`. Their ids follow the
    seed, so dream nights split the same requests into halves whenever they run on the same dates."""
    if spread_from is None or rng is None:
        starts = [datetime.now(UTC) - timedelta(days=30) + timedelta(seconds=i) for i in range(len(executions))]
    else:
        offsets = rng.uniform(0, HISTORY_DAYS * 86400, size=len(executions))
        starts = [spread_from + timedelta(seconds=float(o)) for o in offsets]
    rows = (
        (
            uuid.uuid5(_TENANT_ID, f"execution/{seed}/{i}"),
            _TENANT_ID,
            _CATCH_ALL_ID if label is None else _system_id(label),
            CATCH_ALL if label is None else f"intent-{label}",
            text,
            vector,
            embedding_model,
            Jsonb({"requires_approval": False}),
            status,
            started,
            started + timedelta(milliseconds=800),
            Decimal("0.01"),
        )
        for i, ((text, label, status), vector, started) in enumerate(zip(executions, vectors, starts, strict=True))
    )
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        copy_embedded_executions(conn, rows, with_ids=True)


def _route_all(
    db: Database, tenant_id: uuid.UUID, rows: list[tuple[str, str]], embedder: Embedder
) -> tuple[RoutedSet, list[float]]:
    vectors = embedder.encode([text for text, _ in rows])
    decisions: list[RoutingDecision] = []
    latencies: list[float] = []
    for (text, _), vector in zip(rows, vectors, strict=True):
        started = time.perf_counter()
        decisions.append(route(db, tenant_id, text, embedder, vector=vector))
        latencies.append((time.perf_counter() - started) * 1000)
    scores = np.array([d.rule_score if d.rule_score is not None else 0.0 for d in decisions])
    return RoutedSet(labels=[label for _, label in rows], decisions=decisions, scores=scores), latencies


def _correct(decision: RoutingDecision, label: str) -> bool:
    return decision.system_name == f"intent-{label}"


def _at_threshold(routed: RoutedSet, threshold: float) -> np.ndarray:
    """Which requests a rule would take at `threshold` (the router's own decision otherwise)."""
    return routed.scores >= threshold


def calibrate_threshold(in_scope: RoutedSet, oos: RoutedSet | None, oos_recall_target: float) -> float:
    """The threshold that maximises in-scope accuracy on validation; with OOS validation data, the
    best one whose OOS recall (share left to the fallback) reaches the target with 95% confidence:
    the Wilson lower bound of the recall, not the observed share, must reach it, because a hundred
    OOS validation requests leave the observed share several points off the recall on new data."""
    rule_correct = np.array(
        [d.rule_system == f"intent-{label}" for d, label in zip(in_scope.decisions, in_scope.labels, strict=True)]
    )
    candidates = np.unique(np.round(np.concatenate([in_scope.scores, oos.scores if oos else []]), 4))
    best, best_accuracy = 0.0, -1.0
    for threshold in candidates:
        accuracy = float(np.mean(rule_correct & _at_threshold(in_scope, threshold)))
        if oos is not None:
            left = int(np.sum(~_at_threshold(oos, threshold)))
            if float(wilson_lower_bound(np.array([left]), np.array([len(oos.scores)]))[0]) < oos_recall_target:
                continue
        if accuracy > best_accuracy:
            best, best_accuracy = float(threshold), accuracy
    return best


def _set_threshold(db: Database, threshold: float) -> None:
    """The calibrated threshold, as the evaluation world's platform amendment (constitutions change
    only through amendments)."""
    with db.maintenance_transaction(MaintenanceJob.SEED_WORLD) as conn:
        current = amendments.effective(conn, CATCH_ALL).constitution
        if current.get("parameters", {}).get("routing_confidence_threshold") == threshold:
            return
        amendments.amend(
            conn,
            amendments.Change(
                system=CATCH_ALL,
                changes={"parameters.routing_confidence_threshold": threshold},
                by="evaluation@clay.local",
                reason="threshold calibrated on validation data",
            ),
        )


def evaluate_routing(
    train_path: Path,
    test_path: Path,
    embedder: Embedder,
    *,
    noise: float = 0.15,
    seed: int = 0,
    oos_path: Path | None = None,
    calibrate_path: Path | None = None,
    calibrate_oos_path: Path | None = None,
    oos_recall_target: float = 0.80,
    dream_nights: int = 0,
    oos_history_path: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    if dream_nights < 0 or dream_nights > HISTORY_DAYS - 21:
        raise EvaluationInputError(f"the number of dream nights must be 0 to {HISTORY_DAYS - 21}, got {dream_nights}")
    if not 0 <= noise < 1:
        raise EvaluationInputError(f"the share of noise must be in [0, 1), got {noise}")
    if oos_history_path is not None and not dream_nights:
        raise EvaluationInputError("--oos-history adds to the history dream nights replay: give --dream-nights too")
    inputs = _read_inputs(train_path, test_path, oos_path, calibrate_path, calibrate_oos_path, oos_history_path)
    with tempfile.TemporaryDirectory(prefix="clay-eval-") as folder:
        pgdata = Path(folder) / "pgdata"
        try:
            # A signal while the server starts must not leave it running unseen, nor one while it stops
            # leave it half stopped: both wait for the step to finish, then unwind through `finally`.
            with deferred_signals():
                server = embedded_server.start(pgdata)
            ensure_database(server.url("postgres"), "clay_eval")
            admin = server.url("clay_eval")
            apply_migrations(admin)
            # The router never searches executions by vector; without this index the load is a plain COPY.
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP INDEX IF EXISTS executions_embedding_{embedder.name}{embedder.version}_hnsw")
            with Database(server.url("clay_eval", "clay_app"), server.url("clay_eval", "clay_maintenance")) as db:
                result = _evaluate(db, inputs, embedder, noise, seed, oos_recall_target, progress, dream_nights)
        finally:
            with deferred_signals():
                embedded_server.stop(pgdata)
    return result


@dataclass(frozen=True, kw_only=True)
class _Inputs:
    train: list[tuple[str, str]]
    test: list[tuple[str, str]]
    oos: list[tuple[str, str]] | None
    calibration: list[tuple[str, str]] | None
    calibration_name: str | None
    calibration_oos: list[tuple[str, str]] | None
    oos_history: list[tuple[str, str]] | None = None


def _read_inputs(
    train_path: Path,
    test_path: Path,
    oos_path: Path | None,
    calibrate_path: Path | None,
    calibrate_oos_path: Path | None,
    oos_history_path: Path | None = None,
) -> _Inputs:
    """Every file read and checked before anything starts: a bad one fails in a second, not after
    the learning."""
    train, test = read_labelled(train_path), read_labelled(test_path)
    unknown = sorted({label for _, label in test} - {label for _, label in train})
    inputs = _Inputs(
        train=train,
        test=test,
        oos=read_labelled(oos_path, require_label=False) if oos_path else None,
        calibration=read_labelled(calibrate_path) if calibrate_path else None,
        calibration_name=calibrate_path.name if calibrate_path else None,
        calibration_oos=read_labelled(calibrate_oos_path, require_label=False) if calibrate_oos_path else None,
        oos_history=read_labelled(oos_history_path, require_label=False) if oos_history_path else None,
    )
    if unknown:
        raise EvaluationInputError(f"{test_path}: labels not in {train_path}: {', '.join(unknown[:5])}")
    return inputs


def _evaluate(
    db: Database,
    inputs: _Inputs,
    embedder: Embedder,
    noise: float,
    seed: int,
    oos_recall_target: float,
    progress: Callable[[str], None],
    dream_nights: int = 0,
) -> dict[str, Any]:
    """Build the world, learn, optionally calibrate or dream, route the test texts; the figures."""
    progress(f"{len(inputs.train):,} training texts, {len({label for _, label in inputs.train})} labels")
    # Dream nights need history spread over days, and nights after the moment their promotions are
    # made: the world's days lie ahead of the wall clock, starting tomorrow at the cycle's hour.
    spread_from = _first_day() if dream_nights else None
    tenant_id, embed_per_s = _build_world(db, inputs.train, embedder, noise, seed, spread_from, inputs.oos_history)
    embed_systems(db, tenant_id, embedder)
    nights = _dream(db, tenant_id, embedder, spread_from, dream_nights, progress) if spread_from else None
    started = time.perf_counter()
    report = learn_rules_full(db, tenant_id, tag(embedder), embedder.name, progress=progress)
    learn_s = time.perf_counter() - started
    result: dict[str, Any] = {"embedder": tag(embedder), "rules": report.active_rules}
    if inputs.calibration is not None:
        result["threshold"] = _calibrate(db, tenant_id, inputs, embedder, oos_recall_target, progress)
    routed, latencies = _route_all(db, tenant_id, inputs.test, embedder)
    result.update(_accuracy(routed))
    result.update(
        {
            "embed_per_s": round(embed_per_s, 1),
            "learn_s": round(learn_s, 2),
            "route_p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "route_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        }
    )
    if nights is not None:
        result["dream_nights"] = nights
        with db.tenant_transaction(tenant_id) as conn:
            parameters = amendments.effective(conn, CATCH_ALL).constitution["parameters"]
        result["dreamed_threshold"] = parameters["routing_confidence_threshold"]
    if inputs.oos is not None:
        routed_oos, _ = _route_all(db, tenant_id, inputs.oos, embedder)
        result["in_scope_accuracy"] = result["accuracy"]
        result["oos_recall"] = round(float(np.mean([d.path != "rule" for d in routed_oos.decisions])), 4)
        # Reaching the catch-all by any path (the rule path included, once it has learned OOS requests).
        result["oos_to_catch_all"] = round(
            float(np.mean([d.system_name == CATCH_ALL for d in routed_oos.decisions])), 4
        )
    return result


def _first_day() -> datetime:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, 3, 0, tzinfo=UTC)


def _dream(
    db: Database,
    tenant_id: uuid.UUID,
    embedder: Embedder,
    spread_from: datetime,
    nights: int,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Night k replays day 21 + k with rules and outcomes of the days before it, as the latest night:
    its promotion applies before the next night. No labels: only logged outcomes."""
    from clay_pipelines.tars.cycle import dream_night, moment_of
    from clay_pipelines.tars.watch import check_watches

    out = []
    for k in range(nights):
        night = (spread_from + timedelta(days=22 + k)).date()
        # The watch runs before each night as it would hourly: a promotion's keys are dreamed again
        # once its watch (one day here) has closed, or rolled back.
        with db.tenant_transaction(tenant_id) as conn:
            check_watches(conn, moment_of(night))
        report = dream_night(db, tenant_id, night, embedder, latest=True)
        found = [s for s in report.skills if s.system_name == CATCH_ALL]
        if not found:  # every tunable of the router under a promotion's watch: nothing to dream
            out.append({"night": night.isoformat(), "outcomes": {}, "promoted": None, "skipped": "under watch"})
            progress(f"dream night {k + 1}/{nights}: the router's tunables are under watch")
            continue
        skill = found[0]
        out.append({"night": night.isoformat(), "outcomes": skill.outcomes, "promoted": skill.promoted})
        progress(f"dream night {k + 1}/{nights}: {skill.outcomes}; promoted {skill.promoted}")
    return out


def _calibrate(
    db: Database,
    tenant_id: uuid.UUID,
    inputs: _Inputs,
    embedder: Embedder,
    oos_recall_target: float,
    progress: Callable[[str], None],
) -> float:
    """routing_confidence_threshold chosen on the validation files and set; returns it."""
    calibrated, _ = _route_all(db, tenant_id, inputs.calibration or [], embedder)
    calibrated_oos = _route_all(db, tenant_id, inputs.calibration_oos, embedder)[0] if inputs.calibration_oos else None
    threshold = calibrate_threshold(calibrated, calibrated_oos, oos_recall_target)
    _set_threshold(db, threshold)
    progress(f"routing_confidence_threshold calibrated on {inputs.calibration_name}: {threshold}")
    return threshold


def _accuracy(routed: RoutedSet) -> dict[str, float]:
    """Share routed to the label's system, share with it among the first three, share taken by a rule."""
    pairs = list(zip(routed.decisions, routed.labels, strict=True))
    return {
        "accuracy": round(float(np.mean([_correct(d, label) for d, label in pairs])), 4),
        "top3": round(
            float(np.mean([f"intent-{label}" in [d.system_name, *d.alternatives][:3] for d, label in pairs])), 4
        ),
        "coverage": round(float(np.mean([d.path == "rule" for d in routed.decisions])), 4),
    }
