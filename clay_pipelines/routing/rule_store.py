"""Learning routing_rules for one tenant against the database: full re-cluster or incremental.

Full: every execution embedded by the current embedder is streamed (in batches, once per pass:
evidence, refinement, measuring; plus a bounded sample to fix the micro-clusters) through RuleLearner; the new clusters are matched to the
tenant's stored rules by centroid similarity and update them in place; stored learned rules that
match nothing are deactivated; memberships are rewritten.
Incremental: only executions without a membership are read (once the tenant has rules, those of
the last 30 days and the members of drifting rules). Each joins the rule whose prototype it
is nearest to, when at least as alike as the rule's similarity floor; what stays unassigned (and
the members of drifting rules) is clustered on its own, and clusters that match a stored rule join
it. Statistics of the rules touched are then recomputed from memberships with set-based SQL.
Everything for a tenant is written in one transaction. Rules written by people (auto_generated
false) are never read for matching nor written.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

from clay_pipelines.db import Database
from clay_pipelines.routing.learning import (
    FLOOR_TOLERANCE,
    Evidence,
    ExecutionBatch,
    LearnedRule,
    LearnerSettings,
    RecommendationWeights,
    RuleLearner,
    margins,
    match_rules,
    nearest,
    normalise_rows,
    rank_systems,
    rule_confidence,
    summarise_group,
)

BATCH = 10_000
CATCH_ALL_NAME = "clay-consigliere"
LEARNER = "routing-learner"  # routing_rules.created_by of learned rules (the router relies on it)
# Executions whose outcome is known: a routed request that has not completed says nothing yet,
# and a governance refusal says nothing about the system.
OUTCOME_KNOWN = "completed_at IS NOT NULL"


@dataclass
class SystemCatalog:
    ids: list[UUID]
    names: list[str]
    active: np.ndarray
    constitutions: list[dict[str, Any]]

    def column(self) -> dict[UUID, int]:
        return {system_id: i for i, system_id in enumerate(self.ids)}

    def catch_all(self) -> int | None:
        for i, constitution in enumerate(self.constitutions):
            if (constitution.get("parameters") or {}).get("catch_all") and self.active[i]:
                return i
        return self.names.index(CATCH_ALL_NAME) if CATCH_ALL_NAME in self.names else None

    def router_parameters(self) -> dict[str, Any]:
        """The router's tunables live in the catch-all system's constitution (clay-consigliere)."""
        index = self.catch_all()
        return dict((self.constitutions[index].get("parameters") or {}) if index is not None else {})


def load_systems(conn: psycopg.Connection) -> SystemCatalog:
    rows = conn.execute("SELECT id, name, status, constitution FROM systems ORDER BY name, id").fetchall()
    return SystemCatalog(
        ids=[r[0] for r in rows],
        names=[r[1] for r in rows],
        active=np.array([r[2] == "active" for r in rows], dtype=bool),
        constitutions=[r[3] or {} for r in rows],
    )


def learner_settings(catalog: SystemCatalog, **overrides: Any) -> LearnerSettings:
    parameters = catalog.router_parameters()
    values: dict[str, Any] = {}
    if "min_rule_executions" in parameters:
        values["min_rule_executions"] = int(parameters["min_rule_executions"])
    if isinstance(parameters.get("recommendation_weights"), dict):
        values["weights"] = RecommendationWeights(**parameters["recommendation_weights"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LearnerSettings(**values)


@dataclass
class LearningReport:
    tenant_id: UUID
    embedder: str
    mode: str
    executions_read: int = 0
    assigned: int = 0
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    active_rules: int = 0
    drifting: int = 0
    seconds: float = 0.0
    top_rules: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["tenant_id"] = str(self.tenant_id)
        return out


# ---------------------------------------------------------------------------------------------
# Reading executions


_EXECUTION_COLUMNS = """
    e.id, e.request_embedding, e.system_id, e.status, e.user_satisfaction, e.cost_usd, e.duration_ms,
    e.user_request, e.completed_at IS NOT NULL AND e.status <> 'governance_blocked'
"""
# The refinement and measuring passes need no texts nor satisfaction, cost or duration: leaving
# them out saves building millions of Python values per pass.
_LEAN_COLUMNS = """
    e.id, e.request_embedding, e.system_id, e.status, NULL::numeric, NULL::numeric, NULL::integer, ''::text,
    e.completed_at IS NOT NULL AND e.status <> 'governance_blocked'
"""


class _RawVectorLoader(Loader):
    """pgvector's binary value as bytes: a batch is decoded in one go by _decode_vectors."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def _decode_vectors(raw: list[bytes]) -> np.ndarray:
    """pgvector's binary format: uint16 dimension, uint16 unused, then big-endian float32s."""
    if len({len(r) for r in raw}) == 1:
        # The 4-byte header occupies one float32 slot per row, dropped after the reshape.
        return np.frombuffer(b"".join(raw), dtype=">f4").reshape(len(raw), -1)[:, 1:].astype(np.float32)
    return np.vstack([np.frombuffer(r, dtype=">f4", offset=4) for r in raw]).astype(np.float32)


def _batches(
    conn: psycopg.Connection,
    where: str,
    params: tuple,
    columns: dict[UUID, int],
    sample: float | None = None,
    lean: bool = False,
) -> Iterator[ExecutionBatch]:
    sql = f"SELECT {_LEAN_COLUMNS if lean else _EXECUTION_COLUMNS} FROM executions e WHERE {where}"
    if sample is not None:
        sql += " AND random() < %s"
        params = (*params, sample)
    vector_type = conn.adapters.types.get("vector")
    with conn.cursor(name="routing_learner_executions", binary=True) as cursor:
        if vector_type is not None:
            cursor.adapters.register_loader(vector_type.oid, _RawVectorLoader)
        cursor.itersize = BATCH
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(BATCH):
            yield _to_batch(rows, columns)


def _to_batch(rows: list[tuple], columns: dict[UUID, int]) -> ExecutionBatch:
    n = len(rows)
    if not n:
        vectors = np.zeros((0, 1), np.float32)
    elif isinstance(rows[0][1], bytes):
        vectors = _decode_vectors([r[1] for r in rows])
    else:
        vectors = np.vstack([as_array(r[1]) for r in rows])
    return ExecutionBatch(
        ids=[r[0] for r in rows],
        vectors=normalise_rows(vectors),
        system=np.array([columns.get(r[2], -1) for r in rows], dtype=np.int64),
        success=np.array([r[3] == "success" for r in rows], dtype=bool),
        satisfaction=np.array([np.nan if r[4] is None else float(r[4]) for r in rows]),
        cost=np.array([np.nan if r[5] is None else float(r[5]) for r in rows]),
        duration=np.array([np.nan if r[6] is None else float(r[6]) for r in rows]),
        counted=np.array([bool(r[8]) for r in rows], dtype=bool),
        texts=[r[7] for r in rows],
    )


def as_array(value: Any) -> np.ndarray:
    """A vector as float32, whether the driver returned a numpy array (text) or a Vector (binary)."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


class _Source:
    """Batches of a query, kept in memory when they fit the sample size, else re-read per pass."""

    def __init__(
        self, conn: psycopg.Connection, where: str, params: tuple, columns: dict[UUID, int], limit: int
    ) -> None:
        self.conn, self.where, self.params, self.columns = conn, where, params, columns
        self.count = conn.execute(f"SELECT count(*) FROM executions e WHERE {where}", params).fetchone()[0]
        self.cached = list(_batches(conn, where, params, columns)) if self.count <= limit else None
        self.limit = limit

    def passes(self, lean: bool = False) -> Iterator[ExecutionBatch]:
        """Every execution once; `lean` batches carry no texts, satisfaction, cost nor duration."""
        if self.cached is not None:
            yield from self.cached
        else:
            yield from _batches(self.conn, self.where, self.params, self.columns, lean=lean)

    def sample(self, seed: int) -> np.ndarray:
        if self.cached is not None:
            return np.vstack([b.vectors for b in self.cached])
        self.conn.execute("SELECT setseed(%s)", (((seed % 1000) / 1000.0),))
        chunks = [
            b.vectors for b in _batches(self.conn, self.where, self.params, self.columns, self.limit / self.count)
        ]
        return np.vstack(chunks)


def _learn(
    source: _Source,
    catalog: SystemCatalog,
    embedder_name: str,
    settings: LearnerSettings,
    progress: Callable[[str], None],
) -> tuple[RuleLearner, list[tuple[list, np.ndarray, np.ndarray]]]:
    learner = RuleLearner(len(catalog.ids), embedder_name, settings)
    learner.fit(source.sample(settings.seed), source.count)
    progress(f"{len(learner.micro)} micro-clusters fitted on {source.count:,} executions")
    for batch in source.passes():
        learner.accumulate(batch)
    learner.build(catalog.active)
    for _ in range(settings.refine_passes):
        for batch in source.passes(lean=True):
            learner.refine(batch)
        learner.apply_refinement()
    assignments = []
    for batch in source.passes(lean=True):
        rule, sims = learner.measure(batch)
        assignments.append((batch.ids, rule, sims))
    learner.finish()
    progress(f"{len(learner.rules)} clusters with at least {settings.min_rule_executions} executions")
    return learner, assignments


# ---------------------------------------------------------------------------------------------
# Writing


def _stored_rules(conn: psycopg.Connection, model: str) -> list[tuple[UUID, np.ndarray, bool]]:
    rows = conn.execute(
        "SELECT id, request_embedding, is_active FROM routing_rules "
        "WHERE auto_generated AND request_embedding_model = %s ORDER BY created_at, id",
        (model,),
    ).fetchall()
    return [(r[0], as_array(r[1]), r[2]) for r in rows]


def _write_prototypes(conn: psycopg.Connection, rules: dict[UUID, LearnedRule], model: str) -> None:
    """Replace the prototypes of these rules, all in one statement batch."""
    conn.execute("DELETE FROM routing_rule_prototypes WHERE rule_id = ANY(%s)", (list(rules),))
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO routing_rule_prototypes (rule_id, ordinal, embedding, embedding_model, members) "
            "VALUES (%s, %s, %s, %s, %s)",
            [
                (rule_id, i, p, model, int(n))
                for rule_id, rule in rules.items()
                for i, (p, n) in enumerate(zip(rule.prototypes, rule.prototype_members, strict=True))
            ],
        )


_MEMBERSHIP_BATCH = 50_000


def _save_memberships(conn: psycopg.Connection, rows: Iterator[tuple[UUID, UUID, float]], model: str) -> int:
    """Upsert memberships in batches of arrays sent in binary (the application role has no
    temporary tables, and COPY cannot write a table under row-level security)."""
    written = 0
    while batch := list(itertools.islice(rows, _MEMBERSHIP_BATCH)):
        execution_ids, rule_ids, similarities = zip(*batch, strict=True)
        conn.execute(
            """
            INSERT INTO routing_memberships (execution_id, rule_id, similarity, embedding_model)
            SELECT execution_id, rule_id, similarity, %s
            FROM unnest(%b::uuid[], %b::uuid[], %b::real[]) AS b(execution_id, rule_id, similarity)
            ON CONFLICT (execution_id) DO UPDATE
              SET rule_id = EXCLUDED.rule_id, similarity = EXCLUDED.similarity,
                  embedding_model = EXCLUDED.embedding_model, assigned_at = now()
            """,
            (model, list(execution_ids), list(rule_ids), [float(s) for s in similarities]),
        )
        written += len(batch)
    return written


def _deactivate(conn: psycopg.Connection, rule_ids: list[UUID], reason: str) -> int:
    if not rule_ids:
        return 0
    conn.execute("DELETE FROM routing_rule_prototypes WHERE rule_id = ANY(%s)", (rule_ids,))
    conn.execute("DELETE FROM routing_memberships WHERE rule_id = ANY(%s)", (rule_ids,))
    result = conn.execute(
        "UPDATE routing_rules SET is_active = false, deactivated_at = now(), deactivation_reason = %s, "
        "updated_at = now() WHERE id = ANY(%s) AND auto_generated AND is_active",
        (reason, rule_ids),
    )
    return result.rowcount


def refresh_rule_statistics(
    conn: psycopg.Connection,
    catalog: SystemCatalog,
    settings: LearnerSettings,
    model: str,
    only: Collection[UUID] | None = None,
) -> list[UUID]:
    """Recompute the tenant's active learned rules (all of them, or `only` these) from their
    memberships: recommendation, alternatives, support, rates, similarity figures and confidence
    (its margin against every other active rule). Rules whose support fell below the minimum are
    deactivated; returns their ids."""
    columns = catalog.column()
    scope, scope_params = ("", ()) if only is None else (" AND m.rule_id = ANY(%s)", (list(only),))
    per_system = conn.execute(
        f"""
        SELECT m.rule_id, e.system_id,
               count(*) FILTER (WHERE e.{OUTCOME_KNOWN} AND e.status <> 'governance_blocked'),
               count(*) FILTER (WHERE e.status = 'success' AND e.{OUTCOME_KNOWN}),
               sum(e.user_satisfaction) FILTER (WHERE e.status <> 'governance_blocked'),
               count(e.user_satisfaction) FILTER (WHERE e.status <> 'governance_blocked'),
               sum(e.cost_usd) FILTER (WHERE e.{OUTCOME_KNOWN} AND e.status <> 'governance_blocked'),
               count(e.cost_usd) FILTER (WHERE e.{OUTCOME_KNOWN} AND e.status <> 'governance_blocked'),
               sum(e.duration_ms) FILTER (WHERE e.{OUTCOME_KNOWN} AND e.status <> 'governance_blocked'),
               count(e.duration_ms) FILTER (WHERE e.{OUTCOME_KNOWN} AND e.status <> 'governance_blocked')
        FROM routing_memberships m JOIN executions e ON e.id = m.execution_id
        JOIN routing_rules r ON r.id = m.rule_id AND r.is_active AND r.auto_generated
        WHERE m.embedding_model = %s{scope}
        GROUP BY m.rule_id, e.system_id
        """,
        (model, *scope_params),
    ).fetchall()
    shape = conn.execute(
        f"""
        SELECT m.rule_id, count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY m.similarity),
               percentile_cont(0.05) WITHIN GROUP (ORDER BY m.similarity) - %s,
               avg(m.similarity), r.request_embedding
        FROM routing_memberships m JOIN routing_rules r ON r.id = m.rule_id AND r.is_active AND r.auto_generated
        WHERE m.embedding_model = %s{scope}
        GROUP BY m.rule_id, r.request_embedding
        """,
        (FLOOR_TOLERANCE, model, *scope_params),
    ).fetchall()
    rule_ids = [r[0] for r in shape]
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    evidence = Evidence.zeros(len(rule_ids), max(len(catalog.ids), 1))
    for rule_id, system_id, n, ok, sat, sat_n, cost, cost_n, dur, dur_n in per_system:
        if system_id not in columns:
            continue
        row, col = index[rule_id], columns[system_id]
        evidence.executions[row, col] = n
        evidence.successes[row, col] = ok
        evidence.satisfaction_sum[row, col] = float(sat or 0)
        evidence.satisfaction_n[row, col] = sat_n
        evidence.cost_sum[row, col] = float(cost or 0)
        evidence.cost_n[row, col] = cost_n
        evidence.duration_sum[row, col] = float(dur or 0)
        evidence.duration_n[row, col] = dur_n
    centroids = normalise_rows(np.vstack([as_array(r[5]) for r in shape])) if shape else None
    other_rows = conn.execute(
        "SELECT request_embedding FROM routing_rules WHERE auto_generated AND is_active "
        "AND request_embedding_model = %s AND NOT (id = ANY(%s))",
        (model, rule_ids),
    ).fetchall()
    others = normalise_rows(np.vstack([as_array(r[0]) for r in other_rows])) if other_rows else None
    rule_margins = margins(centroids, others) if centroids is not None else []
    # Active learned rules in scope without a single membership left have no support at all.
    gone: list[UUID] = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM routing_rules WHERE auto_generated AND is_active AND request_embedding_model = %s "
            "AND NOT (id = ANY(%s)) AND (%s::uuid[] IS NULL OR id = ANY(%s))",
            (model, rule_ids, None if only is None else list(only), None if only is None else list(only)),
        )
    ]
    updates: list[tuple] = []
    for i, (rule_id, support, median, floor, cohesion, _) in enumerate(shape):
        ranking = rank_systems(evidence, i, settings.weights, settings)
        summary = summarise_group(evidence, i, ranking, catalog.active)
        if support < settings.min_rule_executions or summary is None:
            gone.append(rule_id)
            continue
        recommended, alternatives = summary
        n_all = evidence.executions[i].sum()
        confidence = rule_confidence(
            int(support),
            max(float(cohesion), 0.0),
            float(rule_margins[i]),
            float(ranking.wilson[recommended]),
            settings.min_rule_executions,
        )
        updates.append(
            (
                catalog.ids[recommended],
                [catalog.ids[s] for s in alternatives[: settings.max_alternatives]],
                int(support),
                _decimal(evidence.successes[i].sum() / n_all if n_all else None, 4),
                _decimal(
                    evidence.cost_sum[i].sum() / evidence.cost_n[i].sum() if evidence.cost_n[i].sum() else None, 6
                ),
                round(evidence.duration_sum[i].sum() / evidence.duration_n[i].sum())
                if evidence.duration_n[i].sum()
                else None,
                _decimal(confidence, 4),
                _decimal(median, 4),
                _decimal(floor, 4),
                rule_id,
            )
        )
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            UPDATE routing_rules SET
              recommended_system_id = %s, alternative_systems = %s, based_on_executions = %s,
              success_rate = %s, avg_cost_usd = %s, avg_duration_ms = %s, confidence_score = %s,
              member_similarity = %s, similarity_floor = %s, last_validated = now(), updated_at = now()
            WHERE id = %s AND auto_generated
            """,
            updates,
        )
    _deactivate(conn, gone, "support below min_rule_executions")
    return gone


def merge_near_duplicates(conn: psycopg.Connection, model: str, threshold: float) -> dict[UUID, UUID]:
    """Active learned rules of the tenant that recommend the same system and whose centroids are at
    least `threshold` alike are one rule: the younger one's members move to the older one, and the
    younger one is deactivated. Returns {rule merged away: the rule it went into}."""
    rows = conn.execute(
        "SELECT id, request_embedding, recommended_system_id FROM routing_rules "
        "WHERE auto_generated AND is_active AND request_embedding_model = %s ORDER BY created_at, id",
        (model,),
    ).fetchall()
    if len(rows) < 2:
        return {}
    centroids = normalise_rows(np.vstack([as_array(r[1]) for r in rows]))
    systems = np.unique([str(r[2]) for r in rows], return_inverse=True)[1]
    merged: dict[int, int] = {}
    # Only rules of the same system can merge: compare within each system's rules.
    for members in (np.flatnonzero(systems == s) for s in np.unique(systems)):
        if len(members) < 2:
            continue
        sims = centroids[members] @ centroids[members].T
        for b in range(len(members)):
            for a in np.flatnonzero(sims[:b, b] >= threshold).tolist():
                if members[a] not in merged:  # into the oldest rule that stays
                    merged[int(members[b])] = int(members[a])
                    break
    for j, i in merged.items():
        conn.execute("UPDATE routing_memberships SET rule_id = %s WHERE rule_id = %s", (rows[i][0], rows[j][0]))
        _deactivate(conn, [rows[j][0]], f"merged into {rows[i][0]}")
    return {rows[j][0]: rows[i][0] for j, i in merged.items()}


def _decimal(value: float | None, places: int) -> Decimal | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(Decimal(str(float(value))), places)


def _upsert_learned(
    conn: psycopg.Connection,
    learner: RuleLearner,
    assignments: list[tuple[list, np.ndarray, np.ndarray]],
    stored: list[tuple[UUID, np.ndarray, bool]],
    model: str,
    settings: LearnerSettings,
    catalog: SystemCatalog,
    report: LearningReport,
) -> dict[int, UUID]:
    """Match learned clusters to stored rules, update or insert them, write prototypes and
    memberships. Returns {learned rule index: rule id}."""
    rules = learner.rules
    new_centroids = np.vstack([r.centroid for r in rules]) if rules else np.zeros((0, 1), np.float32)
    old_centroids = np.vstack([c for _, c, _ in stored]) if stored else np.zeros((0, 1), np.float32)
    matched = match_rules(new_centroids, old_centroids, settings.identity_similarity)
    rule_ids: dict[int, UUID] = {}
    updates: list[tuple] = []
    inserts: list[tuple] = []
    for i, rule in enumerate(rules):
        values = (
            rule.pattern,
            rule.centroid,
            model,
            catalog.ids[rule.recommended],
            [catalog.ids[s] for s in rule.alternatives],
            rule.executions,
            _decimal(rule.confidence, 4),
        )
        if i in matched:
            rule_ids[i] = stored[matched[i]][0]
            updates.append((*values, rule_ids[i]))
        else:
            rule_ids[i] = uuid4()
            inserts.append((rule_ids[i], *values, LEARNER))
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            UPDATE routing_rules SET request_pattern = %s, request_embedding = %s, request_embedding_model = %s,
              recommended_system_id = %s, alternative_systems = %s, based_on_executions = %s,
              confidence_score = %s, is_active = true, deactivated_at = NULL, deactivation_reason = NULL,
              updated_at = now()
            WHERE id = %s AND auto_generated
            """,
            updates,
        )
        cursor.executemany(
            """
            INSERT INTO routing_rules (id, request_pattern, request_embedding, request_embedding_model,
              recommended_system_id, alternative_systems, based_on_executions, confidence_score,
              auto_generated, created_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true, %s)
            """,
            inserts,
        )
    report.updated += len(updates)
    report.created += len(inserts)
    _write_prototypes(conn, {rule_ids[i]: rule for i, rule in enumerate(rules)}, model)

    def membership_rows() -> Iterator[tuple[UUID, UUID, float]]:
        for ids, rule, sims in assignments:
            for execution_id, r, s in zip(ids, rule.tolist(), sims.tolist(), strict=True):
                if r >= 0:
                    yield execution_id, rule_ids[r], s

    report.assigned += _save_memberships(conn, membership_rows(), model)
    return rule_ids


# ---------------------------------------------------------------------------------------------
# Entry points


def learn_rules_full(
    db: Database,
    tenant_id: UUID,
    model: str,
    embedder_name: str,
    settings: LearnerSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> LearningReport:
    """Re-cluster every execution of the tenant embedded by `model`."""
    started = time.perf_counter()
    report = LearningReport(tenant_id, model, "full")
    with db.tenant_transaction(tenant_id) as conn:
        catalog = load_systems(conn)
        settings = settings or learner_settings(catalog)
        source = _Source(conn, "e.request_embedding_model = %s", (model,), catalog.column(), settings.sample_size)
        report.executions_read = source.count
        report.deactivated += _retire_other_embedders(conn, model)
        stored = _stored_rules(conn, model)
        if source.count:
            learner, assignments = _learn(source, catalog, embedder_name, settings, progress)
        else:
            learner, assignments = RuleLearner(len(catalog.ids), embedder_name, settings), []
        conn.execute("DELETE FROM routing_memberships")
        rule_ids = _upsert_learned(conn, learner, assignments, stored, model, settings, catalog, report)
        kept = set(rule_ids.values())
        report.deactivated += _deactivate(
            conn, [rule_id for rule_id, _, active in stored if active and rule_id not in kept], "no longer supported"
        )
        report.deactivated += len(merge_near_duplicates(conn, model, settings.identity_similarity))
        report.deactivated += len(refresh_rule_statistics(conn, catalog, settings, model))
        _finish_report(conn, report, model)
    report.seconds = time.perf_counter() - started
    return report


def learn_rules_incremental(
    db: Database,
    tenant_id: UUID,
    model: str,
    embedder_name: str,
    settings: LearnerSettings | None = None,
    drift_days: int = 30,
    window_days: int = 30,
    progress: Callable[[str], None] = lambda _: None,
) -> LearningReport:
    """Assign new executions to existing rules; cluster what is left, and the members of rules
    that drifted (their recent members much less alike than the rule's median).

    Once the tenant has rules, only executions of the last `window_days` days (and the members of
    drifting rules) are considered: an old execution that no rule took is left to the full
    re-cluster, so a daily run does not re-read the history it already passed over."""
    started = time.perf_counter()
    report = LearningReport(tenant_id, model, "incremental")
    with db.tenant_transaction(tenant_id) as conn:
        catalog = load_systems(conn)
        settings = settings or learner_settings(catalog)
        # First, so that the executions they held are free to join this embedder's rules.
        report.deactivated += _retire_other_embedders(conn, model)
        drifting = conn.execute(
            """
            SELECT r.id FROM executions e
            JOIN routing_memberships m ON m.execution_id = e.id
            JOIN routing_rules r ON r.id = m.rule_id
            WHERE r.auto_generated AND r.is_active AND r.request_embedding_model = %s
              AND e.started_at >= now() - make_interval(days => %s)
            GROUP BY r.id, r.similarity_floor
            HAVING count(*) >= %s AND avg(m.similarity) < r.similarity_floor
            """,
            (model, drift_days, settings.min_rule_executions // 2),
        ).fetchall()
        report.drifting = len(drifting)
        reconsidered: list[UUID] = []
        if drifting:
            reconsidered = [
                r[0]
                for r in conn.execute(
                    "DELETE FROM routing_memberships WHERE rule_id = ANY(%s) RETURNING execution_id",
                    ([r[0] for r in drifting],),
                )
            ]

        prototypes = conn.execute(
            """
            SELECT p.rule_id, p.embedding, r.similarity_floor FROM routing_rule_prototypes p
            JOIN routing_rules r ON r.id = p.rule_id AND r.is_active AND r.auto_generated
            WHERE p.embedding_model = %s ORDER BY p.rule_id, p.ordinal
            """,
            (model,),
        ).fetchall()
        unassigned_where = (
            "e.request_embedding_model = %s AND NOT EXISTS "
            "(SELECT 1 FROM routing_memberships m WHERE m.execution_id = e.id)"
        )
        unassigned_params: tuple = (model,)
        if prototypes:
            unassigned_where += " AND (e.started_at >= now() - make_interval(days => %s) OR e.id = ANY(%s))"
            unassigned_params = (model, window_days, reconsidered)
        columns = catalog.column()
        touched: set[UUID] = {r[0] for r in drifting}
        # Rules that point at a system no longer active must drop it, new members or not.
        touched.update(
            r[0]
            for r in conn.execute(
                """
                SELECT r.id FROM routing_rules r
                WHERE r.auto_generated AND r.is_active AND r.request_embedding_model = %s
                  AND EXISTS (
                    SELECT 1 FROM unnest(r.alternative_systems || r.recommended_system_id) AS u(system_id)
                    LEFT JOIN systems s ON s.id = u.system_id
                    WHERE s.id IS NULL OR s.status <> 'active')
                """,
                (model,),
            )
        )
        assigned_rows: list[tuple[UUID, UUID, float]] = []
        leftover = 0
        if prototypes:
            matrix = normalise_rows(np.vstack([as_array(p[1]) for p in prototypes]))
            owners = [p[0] for p in prototypes]
            floors = np.array([float(p[2] if p[2] is not None else 0.0) for p in prototypes])
            for batch in _batches(conn, unassigned_where, unassigned_params, columns):
                report.executions_read += len(batch)
                best, sims = nearest(batch.vectors, matrix)
                joins = sims >= floors[best]
                assigned_rows += [(batch.ids[i], owners[best[i]], float(sims[i])) for i in np.flatnonzero(joins)]
                leftover += int((~joins).sum())
            report.assigned += _save_memberships(conn, iter(assigned_rows), model)
            touched.update(rule_id for _, rule_id, _ in assigned_rows)
            progress(f"{len(assigned_rows):,} new executions joined existing rules; {leftover:,} left over")
        source = _Source(conn, unassigned_where, unassigned_params, columns, settings.sample_size)
        if not prototypes:
            report.executions_read = source.count
        if source.count >= settings.min_rule_executions:
            learner, assignments = _learn(source, catalog, embedder_name, settings, progress)
            stored = [s for s in _stored_rules(conn, model) if s[2]]
            touched.update(
                _upsert_learned(conn, learner, assignments, stored, model, settings, catalog, report).values()
            )
        merged = merge_near_duplicates(conn, model, settings.identity_similarity)
        report.deactivated += len(merged)
        touched = (touched - set(merged)) | set(merged.values())
        # Only the rules that gained or lost members: the others' statistics have not changed.
        report.deactivated += len(refresh_rule_statistics(conn, catalog, settings, model, only=touched))
        _finish_report(conn, report, model)
    report.seconds = time.perf_counter() - started
    return report


def _retire_other_embedders(conn: psycopg.Connection, model: str) -> int:
    """Learned rules of another embedder (or version) cannot be compared with today's requests."""
    other = conn.execute(
        "SELECT id FROM routing_rules WHERE auto_generated AND is_active AND request_embedding_model IS DISTINCT FROM %s",
        (model,),
    ).fetchall()
    return _deactivate(conn, [r[0] for r in other], f"embedder changed to {model}")


def _finish_report(conn: psycopg.Connection, report: LearningReport, model: str) -> None:
    report.active_rules = conn.execute(
        "SELECT count(*) FROM routing_rules WHERE is_active AND request_embedding_model = %s", (model,)
    ).fetchone()[0]
    report.top_rules = [
        {
            "pattern": r[0],
            "system": r[1],
            "support": r[2],
            "confidence": float(r[3]),
            "success_rate": None if r[4] is None else float(r[4]),
        }
        for r in conn.execute(
            """
            SELECT r.request_pattern, s.name, r.based_on_executions, r.confidence_score, r.success_rate
            FROM routing_rules r LEFT JOIN systems s ON s.id = r.recommended_system_id
            WHERE r.is_active AND r.request_embedding_model = %s
            ORDER BY r.based_on_executions DESC, r.confidence_score DESC LIMIT 10
            """,
            (model,),
        )
    ]


def coverage(db: Database, tenant_id: UUID, model: str, days: int = 30) -> tuple[int, int]:
    """(executions of the last `days` days covered by an active rule, all of them)."""
    with db.tenant_transaction(tenant_id) as conn:
        row = conn.execute(
            """
            SELECT count(m.execution_id), count(*) FROM executions e
            LEFT JOIN routing_memberships m ON m.execution_id = e.id AND m.embedding_model = %s
            WHERE e.started_at >= now() - make_interval(days => %s)
            """,
            (model, days),
        ).fetchone()
    return int(row[0]), int(row[1])
