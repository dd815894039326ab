"""Learning routing_rules for one tenant against the database: full re-cluster or incremental.

Full: every execution embedded by the current embedder is streamed through RuleLearner in batches,
once per pass (evidence, refinement, measuring), after a bounded sample has fixed the
micro-clusters; the new rules are matched to the tenant's stored rules by centroid similarity and
update them in place; stored learned rules that match nothing are deactivated; memberships are
rewritten.
Incremental: only executions without a membership are read (once the tenant has rules, those of
the last 30 days and the members of drifting rules). Each joins the rule whose prototype it
is nearest to, when at least as alike as the rule's similarity floor; what stays unassigned (and
the members of drifting rules) is clustered on its own, and clusters that match a stored rule join
it. Statistics of the rules touched are then recomputed from memberships with set-based SQL.
Everything for a tenant is written in one transaction. Rules written by people (auto_generated
false) are never read for matching nor written.

Which executions are evidence (their outcome counts) is routing/evidence.py's one definition, both
in the batches the learner reads and in the statistics recomputed from memberships. `embedding_model`
is always an embedder's name@version tag; `embedder_name` its name alone (the learner's merge
thresholds depend on it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

from clay_pipelines.db import Database
from clay_pipelines.routing.evidence import counts_as_evidence
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


@dataclass(kw_only=True)
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
    rows = conn.execute(
        "SELECT id, name, status, public.clay_effective_constitution(id) FROM systems ORDER BY name, id"
    ).fetchall()
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


@dataclass(kw_only=True)
class LearningReport:
    tenant_id: UUID
    embedding_model: str
    mode: str  # full | incremental
    executions_read: int = 0
    assigned: int = 0
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    active_rules: int = 0
    drifting: int = 0
    seconds: float = 0.0
    top_rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class _Where:
    """A condition composed into one query, with its parameters."""

    condition: sql.Composable
    params: tuple = ()


@dataclass(frozen=True, kw_only=True)
class _TenantLearning:
    """What every step of one tenant's learning run works with, inside its one transaction."""

    conn: psycopg.Connection
    catalog: SystemCatalog
    settings: LearnerSettings
    embedding_model: str
    embedder_name: str
    report: LearningReport
    progress: Callable[[str], None]


def _start(
    conn: psycopg.Connection,
    report: LearningReport,
    embedder_name: str,
    settings: LearnerSettings | None,
    progress: Callable[[str], None],
) -> _TenantLearning:
    catalog = load_systems(conn)
    return _TenantLearning(
        conn=conn,
        catalog=catalog,
        settings=settings or learner_settings(catalog),
        embedding_model=report.embedding_model,
        embedder_name=embedder_name,
        report=report,
        progress=progress,
    )


# ---------------------------------------------------------------------------------------------
# Reading executions


# An execution's vector whatever its lifecycle state, at the one precision every state has: WARM and
# COLD rows keep it as halfvec, so a HOT row's is rounded through halfvec too. The learner then reads
# the same numbers before and after aging, and learns the same rules (tests/test_lifecycle_assets.py).
EXECUTION_VECTOR = sql.SQL("coalesce(e.request_embedding::halfvec, e.request_embedding_compact)::vector")
_EVIDENCE = counts_as_evidence("e")
_EXECUTION_COLUMNS = sql.SQL(
    "e.id, {vector}, e.system_id, e.status, e.user_satisfaction, e.cost_usd, e.duration_ms, e.user_request, {evidence}"
).format(evidence=_EVIDENCE, vector=EXECUTION_VECTOR)
# The refinement and measuring passes need no texts nor satisfaction, cost or duration: leaving
# them out saves building millions of Python values per pass.
_LEAN_COLUMNS = sql.SQL(
    "e.id, {vector}, e.system_id, e.status, NULL::numeric, NULL::numeric, NULL::integer, ''::text, {evidence}"
).format(evidence=_EVIDENCE, vector=EXECUTION_VECTOR)


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


def execution_batches(
    conn: psycopg.Connection,
    condition: sql.Composable,
    params: tuple,
    columns: dict[UUID, int],
    sample: float | None = None,
    lean: bool = False,
) -> Iterator[ExecutionBatch]:
    """The executions `e` meeting `condition`, as the learner reads them, BATCH at a time (through a
    server-side cursor): `columns` maps system ids to the learner's system columns, `sample` keeps
    about that share of the rows, and a batch's `counted` is routing/evidence.py's definition."""
    query = sql.SQL("SELECT {columns} FROM executions e WHERE {condition}").format(
        columns=_LEAN_COLUMNS if lean else _EXECUTION_COLUMNS, condition=condition
    )
    if sample is not None:
        # A sample drawn by a hash of the id, not random(): the same executions give the same rules.
        query += sql.SQL(" AND (hashtextextended(e.id::text, 0) & 1048575) < %s * 1048576")
        params = (*params, sample)
    # In time order, not the table's physical order, which every UPDATE (aging, rating) reshuffles:
    # the learner's clusters and patterns depend on the order it reads.
    query += sql.SQL(" ORDER BY e.started_at, e.id")
    vector_type = conn.adapters.types.get("vector")
    with conn.cursor(name="routing_learner_executions", binary=True) as cursor:
        if vector_type is not None:
            cursor.adapters.register_loader(vector_type.oid, _RawVectorLoader)
        cursor.itersize = BATCH
        cursor.execute(query, params)
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


def _stack(vectors: Iterable[np.ndarray]) -> np.ndarray:
    """Vectors as the rows of one matrix; no vectors, a (0, 1) matrix."""
    rows = list(vectors)
    return np.vstack(rows) if rows else np.zeros((0, 1), np.float32)


class _Source:
    """Batches of a selection, kept in memory when they fit the sample size, else re-read per pass."""

    def __init__(self, conn: psycopg.Connection, selection: _Where, columns: dict[UUID, int], limit: int) -> None:
        self.conn, self.selection, self.columns, self.limit = conn, selection, columns, limit
        count = sql.SQL("SELECT count(*) FROM executions e WHERE {where}").format(where=selection.condition)
        self.count = conn.execute(count, selection.params).fetchone()[0]
        self.cached = list(self._batches()) if self.count <= limit else None

    def passes(self, lean: bool = False) -> Iterator[ExecutionBatch]:
        """Every execution once; `lean` batches carry no texts, satisfaction, cost nor duration."""
        if self.cached is not None:
            yield from self.cached
        else:
            yield from self._batches(lean=lean)

    def sample(self, seed: int) -> np.ndarray:
        if self.cached is not None:
            return np.vstack([b.vectors for b in self.cached])
        self.conn.execute("SELECT setseed(%s)", (((seed % 1000) / 1000.0),))
        return np.vstack([b.vectors for b in self._batches(sample=self.limit / self.count)])

    def _batches(self, sample: float | None = None, lean: bool = False) -> Iterator[ExecutionBatch]:
        selection = self.selection
        return execution_batches(self.conn, selection.condition, selection.params, self.columns, sample, lean)


Assignments = list[tuple[list, np.ndarray, np.ndarray]]  # per batch: execution ids, rule index (-1: none), similarity


def _learn(run: _TenantLearning, source: _Source) -> tuple[RuleLearner, Assignments]:
    """The learner's passes over the source: sample, evidence, refinement, measuring."""
    settings = run.settings
    learner = RuleLearner(len(run.catalog.ids), run.embedder_name, settings)
    learner.fit(source.sample(settings.seed), source.count)
    run.progress(f"{len(learner.micro)} micro-clusters fitted on {source.count:,} executions")
    for batch in source.passes():
        learner.accumulate(batch)
    learner.build(run.catalog.active)
    for _ in range(settings.refine_passes):
        for batch in source.passes(lean=True):
            learner.refine(batch)
        learner.apply_refinement()
    assignments = []
    for batch in source.passes(lean=True):
        rule, sims = learner.measure(batch)
        assignments.append((batch.ids, rule, sims))
    learner.finish()
    run.progress(f"{len(learner.rules)} clusters with at least {settings.min_rule_executions} executions")
    return learner, assignments


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True, kw_only=True)
class _StoredRule:
    id: UUID
    centroid: np.ndarray
    active: bool


def _stored_rules(conn: psycopg.Connection, embedding_model: str) -> list[_StoredRule]:
    """The tenant's learned rules of this embedder, oldest first."""
    rows = conn.execute(
        "SELECT id, request_embedding, is_active FROM routing_rules "
        "WHERE auto_generated AND request_embedding_model = %s ORDER BY created_at, id",
        (embedding_model,),
    ).fetchall()
    return [_StoredRule(id=r[0], centroid=as_array(r[1]), active=r[2]) for r in rows]


def _write_prototypes(conn: psycopg.Connection, rules: dict[UUID, LearnedRule], embedding_model: str) -> None:
    """Replace the prototypes of these rules, all in one statement batch."""
    conn.execute("DELETE FROM routing_rule_prototypes WHERE rule_id = ANY(%s)", (list(rules),))
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO routing_rule_prototypes (rule_id, ordinal, embedding, embedding_model, members) "
            "VALUES (%s, %s, %s, %s, %s)",
            [
                (rule_id, i, p, embedding_model, int(n))
                for rule_id, rule in rules.items()
                for i, (p, n) in enumerate(zip(rule.prototypes, rule.prototype_members, strict=True))
            ],
        )


_MEMBERSHIP_BATCH = 50_000


def _save_memberships(conn: psycopg.Connection, rows: Iterator[tuple[UUID, UUID, float]], embedding_model: str) -> int:
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
            (embedding_model, list(execution_ids), list(rule_ids), [float(s) for s in similarities]),
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


# ---------------------------------------------------------------------------------------------
# Statistics of rules, from their memberships


@dataclass(frozen=True, kw_only=True)
class _MemberFigures:
    """What a rule's memberships say about its shape: how many, and how alike to the rule."""

    rule_id: UUID
    support: int
    median_similarity: float
    similarity_floor: float
    cohesion: float  # mean similarity
    centroid: np.ndarray


_MEMBER_FIGURES = sql.SQL(
    """
    SELECT m.rule_id, count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY m.similarity),
           percentile_cont(0.05) WITHIN GROUP (ORDER BY m.similarity) - %s,
           avg(m.similarity), r.request_embedding
    FROM routing_memberships m JOIN routing_rules r ON r.id = m.rule_id AND r.is_active AND r.auto_generated
    WHERE m.embedding_model = %s{scope}
    GROUP BY m.rule_id, r.request_embedding
    """
)
# Columns in the order of Evidence's fields: only executions that are evidence count.
_MEMBER_EVIDENCE = sql.SQL(
    """
    SELECT m.rule_id, e.system_id, count(*), count(*) FILTER (WHERE e.status = 'success'),
           sum(e.user_satisfaction), count(e.user_satisfaction), sum(e.cost_usd), count(e.cost_usd),
           sum(e.duration_ms), count(e.duration_ms)
    FROM routing_memberships m JOIN executions e ON e.id = m.execution_id
    JOIN routing_rules r ON r.id = m.rule_id AND r.is_active AND r.auto_generated
    WHERE m.embedding_model = %s AND {evidence}{scope}
    GROUP BY m.rule_id, e.system_id
    """
)


def _member_scope(only: Collection[UUID] | None) -> _Where:
    """All the tenant's memberships `m`, or only those of these rules."""
    if only is None:
        return _Where(condition=sql.SQL(""))
    return _Where(condition=sql.SQL(" AND m.rule_id = ANY(%s)"), params=(list(only),))


def _member_figures(conn: psycopg.Connection, embedding_model: str, scope: _Where) -> list[_MemberFigures]:
    rows = conn.execute(
        _MEMBER_FIGURES.format(scope=scope.condition), (FLOOR_TOLERANCE, embedding_model, *scope.params)
    ).fetchall()
    return [
        _MemberFigures(
            rule_id=rule_id,
            support=int(support),
            median_similarity=median,
            similarity_floor=floor,
            cohesion=float(cohesion),
            centroid=as_array(embedding),
        )
        for rule_id, support, median, floor, cohesion, embedding in rows
    ]


def _member_evidence(
    conn: psycopg.Connection, catalog: SystemCatalog, embedding_model: str, scope: _Where, index: dict[UUID, int]
) -> Evidence:
    """Evidence per rule (rows in `index` order) and system, from the executions of its members."""
    query = _MEMBER_EVIDENCE.format(evidence=_EVIDENCE, scope=scope.condition)
    evidence = Evidence.zeros(len(index), max(len(catalog.ids), 1))
    columns = catalog.column()
    for rule_id, system_id, *sums in conn.execute(query, (embedding_model, *scope.params)):
        if system_id in columns:
            for evidence_field, value in zip(fields(Evidence), sums, strict=True):
                getattr(evidence, evidence_field.name)[index[rule_id], columns[system_id]] = float(value or 0)
    return evidence


def _margins_against_active_rules(
    conn: psycopg.Connection, embedding_model: str, figures: list[_MemberFigures]
) -> np.ndarray:
    """Each rule's margin against every other active learned rule of the embedder."""
    if not figures:
        return np.ones(0)
    others = conn.execute(
        "SELECT request_embedding FROM routing_rules WHERE auto_generated AND is_active "
        "AND request_embedding_model = %s AND NOT (id = ANY(%s))",
        (embedding_model, [f.rule_id for f in figures]),
    ).fetchall()
    centroids = normalise_rows(np.vstack([f.centroid for f in figures]))
    return margins(centroids, normalise_rows(np.vstack([as_array(r[0]) for r in others])) if others else None)


def _rules_without_members(
    conn: psycopg.Connection, embedding_model: str, with_members: list[UUID], only: Collection[UUID] | None
) -> list[UUID]:
    """Active learned rules (all, or `only` these) without a single membership: no support at all."""
    scope = None if only is None else list(only)
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM routing_rules WHERE auto_generated AND is_active AND request_embedding_model = %s "
            "AND NOT (id = ANY(%s)) AND (%s::uuid[] IS NULL OR id = ANY(%s))",
            (embedding_model, with_members, scope, scope),
        )
    ]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _statistics_row(
    rule: _MemberFigures,
    evidence: Evidence,
    row: int,
    margin: float,
    catalog: SystemCatalog,
    settings: LearnerSettings,
) -> tuple | None:
    """The parameters of _UPDATE_STATISTICS for one rule, or None when it has lost its support or
    every system it could recommend."""
    ranking = rank_systems(evidence, row, settings.weights, settings)
    summary = summarise_group(evidence, row, ranking, catalog.active)
    if rule.support < settings.min_rule_executions or summary is None:
        return None
    recommended, alternatives = summary
    confidence = rule_confidence(
        rule.support,
        max(rule.cohesion, 0.0),
        margin,
        float(ranking.wilson[recommended]),
        settings.min_rule_executions,
    )
    duration_n = evidence.duration_n[row].sum()
    return (
        catalog.ids[recommended],
        [catalog.ids[s] for s in alternatives[: settings.max_alternatives]],
        rule.support,
        _decimal(_ratio(evidence.successes[row].sum(), evidence.executions[row].sum()), 4),
        _decimal(_ratio(evidence.cost_sum[row].sum(), evidence.cost_n[row].sum()), 6),
        round(evidence.duration_sum[row].sum() / duration_n) if duration_n else None,
        _decimal(confidence, 4),
        _decimal(rule.median_similarity, 4),
        _decimal(rule.similarity_floor, 4),
        rule.rule_id,
    )


_UPDATE_STATISTICS = """
UPDATE routing_rules SET
  recommended_system_id = %s, alternative_systems = %s, based_on_executions = %s,
  success_rate = %s, avg_cost_usd = %s, avg_duration_ms = %s, confidence_score = %s,
  member_similarity = %s, similarity_floor = %s, last_validated = now(), updated_at = now()
WHERE id = %s AND auto_generated
"""


def refresh_rule_statistics(
    conn: psycopg.Connection,
    catalog: SystemCatalog,
    settings: LearnerSettings,
    embedding_model: str,
    only: Collection[UUID] | None = None,
) -> list[UUID]:
    """Recompute the tenant's active learned rules (all of them, or `only` these) from their
    memberships: recommendation, alternatives, support, rates, similarity figures and confidence
    (its margin against every other active rule). Rules whose support fell below the minimum are
    deactivated; returns their ids."""
    scope = _member_scope(only)
    figures = _member_figures(conn, embedding_model, scope)
    index = {rule.rule_id: i for i, rule in enumerate(figures)}
    evidence = _member_evidence(conn, catalog, embedding_model, scope, index)
    rule_margins = _margins_against_active_rules(conn, embedding_model, figures)
    gone = _rules_without_members(conn, embedding_model, list(index), only)
    updates: list[tuple] = []
    for i, rule in enumerate(figures):
        update = _statistics_row(rule, evidence, i, float(rule_margins[i]), catalog, settings)
        if update is None:
            gone.append(rule.rule_id)
        else:
            updates.append(update)
    with conn.cursor() as cursor:
        cursor.executemany(_UPDATE_STATISTICS, updates)
    _deactivate(conn, gone, "support below min_rule_executions")
    return gone


def merge_near_duplicates(conn: psycopg.Connection, embedding_model: str, threshold: float) -> dict[UUID, UUID]:
    """Active learned rules of the tenant that recommend the same system and whose centroids are at
    least `threshold` alike are one rule: the younger one's members move to the older one, and the
    younger one is deactivated. Returns {rule merged away: the rule it went into}."""
    rows = conn.execute(
        "SELECT id, request_embedding, recommended_system_id FROM routing_rules "
        "WHERE auto_generated AND is_active AND request_embedding_model = %s ORDER BY created_at, id",
        (embedding_model,),
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


# ---------------------------------------------------------------------------------------------
# Learned rules into stored ones


_UPDATE_LEARNED = """
UPDATE routing_rules SET request_pattern = %s, request_embedding = %s, request_embedding_model = %s,
  recommended_system_id = %s, alternative_systems = %s, based_on_executions = %s,
  confidence_score = %s, is_active = true, deactivated_at = NULL, deactivation_reason = NULL,
  updated_at = now()
WHERE id = %s AND auto_generated
"""
_INSERT_LEARNED = """
INSERT INTO routing_rules (id, request_pattern, request_embedding, request_embedding_model,
  recommended_system_id, alternative_systems, based_on_executions, confidence_score,
  auto_generated, created_by)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true, %s)
"""


def _rule_values(run: _TenantLearning, rule: LearnedRule) -> tuple:
    """A learned rule's columns, in the order _UPDATE_LEARNED and _INSERT_LEARNED share."""
    ids = run.catalog.ids
    return (
        rule.pattern,
        rule.centroid,
        run.embedding_model,
        ids[rule.recommended],
        [ids[s] for s in rule.alternatives],
        rule.executions,
        _decimal(rule.confidence, 4),
    )


def _membership_rows(assignments: Assignments, rule_ids: dict[int, UUID]) -> Iterator[tuple[UUID, UUID, float]]:
    for ids, rule, sims in assignments:
        for execution_id, r, s in zip(ids, rule.tolist(), sims.tolist(), strict=True):
            if r >= 0:
                yield execution_id, rule_ids[r], s


def _upsert_learned(
    run: _TenantLearning, learner: RuleLearner, assignments: Assignments, stored: list[_StoredRule]
) -> dict[int, UUID]:
    """Match learned rules to stored rules, update or insert them, write prototypes and
    memberships. Returns {learned rule index: rule id}."""
    rules = learner.rules
    matched = match_rules(
        _stack(r.centroid for r in rules), _stack(s.centroid for s in stored), run.settings.identity_similarity
    )
    rule_ids = {i: stored[matched[i]].id if i in matched else uuid4() for i in range(len(rules))}
    updates = [(*_rule_values(run, rule), rule_ids[i]) for i, rule in enumerate(rules) if i in matched]
    inserts = [(rule_ids[i], *_rule_values(run, rule), LEARNER) for i, rule in enumerate(rules) if i not in matched]
    with run.conn.cursor() as cursor:
        cursor.executemany(_UPDATE_LEARNED, updates)
        cursor.executemany(_INSERT_LEARNED, inserts)
    run.report.updated += len(updates)
    run.report.created += len(inserts)
    _write_prototypes(run.conn, {rule_ids[i]: rule for i, rule in enumerate(rules)}, run.embedding_model)
    run.report.assigned += _save_memberships(run.conn, _membership_rows(assignments, rule_ids), run.embedding_model)
    return rule_ids


# ---------------------------------------------------------------------------------------------
# Entry points


def learn_rules_full(
    db: Database,
    tenant_id: UUID,
    embedding_model: str,
    embedder_name: str,
    settings: LearnerSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> LearningReport:
    """Re-cluster every execution of the tenant embedded by `embedding_model`."""
    started = time.perf_counter()
    report = LearningReport(tenant_id=tenant_id, embedding_model=embedding_model, mode="full")
    with db.tenant_transaction(tenant_id) as conn:
        run = _start(conn, report, embedder_name, settings, progress)
        embedded = _Where(condition=sql.SQL("e.request_embedding_model = %s"), params=(embedding_model,))
        source = _Source(conn, embedded, run.catalog.column(), run.settings.sample_size)
        report.executions_read = source.count
        report.deactivated += _retire_other_embedders(conn, embedding_model)
        stored = _stored_rules(conn, embedding_model)
        if source.count:
            learner, assignments = _learn(run, source)
        else:
            learner, assignments = RuleLearner(len(run.catalog.ids), embedder_name, run.settings), []
        conn.execute("DELETE FROM routing_memberships")
        kept = set(_upsert_learned(run, learner, assignments, stored).values())
        unsupported = [rule.id for rule in stored if rule.active and rule.id not in kept]
        report.deactivated += _deactivate(conn, unsupported, "no longer supported")
        report.deactivated += len(merge_near_duplicates(conn, embedding_model, run.settings.identity_similarity))
        report.deactivated += len(refresh_rule_statistics(conn, run.catalog, run.settings, embedding_model))
        _finish_report(conn, report, embedding_model)
    report.seconds = time.perf_counter() - started
    return report


def learn_rules_incremental(
    db: Database,
    tenant_id: UUID,
    embedding_model: str,
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
    report = LearningReport(tenant_id=tenant_id, embedding_model=embedding_model, mode="incremental")
    with db.tenant_transaction(tenant_id) as conn:
        run = _start(conn, report, embedder_name, settings, progress)
        # First, so that the executions they held are free to join this embedder's rules.
        report.deactivated += _retire_other_embedders(conn, embedding_model)
        drifting, released = _release_drifting_rules(run, drift_days)
        report.drifting = len(drifting)
        prototypes = _active_prototypes(conn, embedding_model)
        unassigned = _unassigned(embedding_model, window_days, released, windowed=prototypes is not None)
        # Rules that point at a system no longer active must drop it, new members or not.
        touched = drifting | _rules_with_inactive_systems(conn, embedding_model)
        if prototypes is not None:
            touched |= _join_nearest_rules(run, prototypes, unassigned)
        touched |= _cluster_the_rest(run, unassigned, count_read=prototypes is None)
        merged = merge_near_duplicates(conn, embedding_model, run.settings.identity_similarity)
        report.deactivated += len(merged)
        touched = (touched - set(merged)) | set(merged.values())
        # Only the rules that gained or lost members: the others' statistics have not changed.
        refreshed = refresh_rule_statistics(conn, run.catalog, run.settings, embedding_model, only=touched)
        report.deactivated += len(refreshed)
        _finish_report(conn, report, embedding_model)
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------------------------------
# Steps of the incremental run


_DRIFTING_RULES = """
SELECT r.id FROM executions e
JOIN routing_memberships m ON m.execution_id = e.id
JOIN routing_rules r ON r.id = m.rule_id
WHERE r.auto_generated AND r.is_active AND r.request_embedding_model = %s
  AND e.started_at >= now() - make_interval(days => %s)
GROUP BY r.id, r.similarity_floor
HAVING count(*) >= %s AND avg(m.similarity) < r.similarity_floor
"""


def _release_drifting_rules(run: _TenantLearning, days: int) -> tuple[set[UUID], list[UUID]]:
    """Rules whose members of the last `days` days are, on average, less alike than the rule's
    similarity floor lose every membership, so that those executions are measured again. Returns
    (the drifting rules, the executions released)."""
    min_recent = run.settings.min_rule_executions // 2
    drifting = [r[0] for r in run.conn.execute(_DRIFTING_RULES, (run.embedding_model, days, min_recent))]
    if not drifting:
        return set(), []
    released = run.conn.execute(
        "DELETE FROM routing_memberships WHERE rule_id = ANY(%s) RETURNING execution_id", (drifting,)
    )
    return set(drifting), [r[0] for r in released]


@dataclass(frozen=True, kw_only=True)
class _RulePrototypes:
    matrix: np.ndarray  # unit rows, every active learned rule's prototypes
    owners: list[UUID]  # the rule of each row
    floors: np.ndarray  # the similarity floor of each row's rule


def _active_prototypes(conn: psycopg.Connection, embedding_model: str) -> _RulePrototypes | None:
    """The prototypes of the tenant's active learned rules; None when it has none."""
    rows = conn.execute(
        """
        SELECT p.rule_id, p.embedding, r.similarity_floor FROM routing_rule_prototypes p
        JOIN routing_rules r ON r.id = p.rule_id AND r.is_active AND r.auto_generated
        WHERE p.embedding_model = %s ORDER BY p.rule_id, p.ordinal
        """,
        (embedding_model,),
    ).fetchall()
    if not rows:
        return None
    return _RulePrototypes(
        matrix=normalise_rows(np.vstack([as_array(r[1]) for r in rows])),
        owners=[r[0] for r in rows],
        floors=np.array([float(r[2] if r[2] is not None else 0.0) for r in rows]),
    )


_UNASSIGNED = sql.SQL(
    "e.request_embedding_model = %s AND NOT EXISTS (SELECT 1 FROM routing_memberships m WHERE m.execution_id = e.id)"
)
_RECENT_OR_RELEASED = sql.SQL(" AND (e.started_at >= now() - make_interval(days => %s) OR e.id = ANY(%s))")


def _unassigned(embedding_model: str, window_days: int, released: list[UUID], windowed: bool) -> _Where:
    """Executions of the embedder that no rule holds; `windowed` (the tenant has rules), only those
    of the last `window_days` days and the `released` ones."""
    if not windowed:
        return _Where(condition=_UNASSIGNED, params=(embedding_model,))
    return _Where(condition=_UNASSIGNED + _RECENT_OR_RELEASED, params=(embedding_model, window_days, released))


def _rules_with_inactive_systems(conn: psycopg.Connection, embedding_model: str) -> set[UUID]:
    """Active learned rules that recommend, or offer as an alternative, a system not active (or gone)."""
    rows = conn.execute(
        """
        SELECT r.id FROM routing_rules r
        WHERE r.auto_generated AND r.is_active AND r.request_embedding_model = %s
          AND EXISTS (
            SELECT 1 FROM unnest(r.alternative_systems || r.recommended_system_id) AS u(system_id)
            LEFT JOIN systems s ON s.id = u.system_id
            WHERE s.id IS NULL OR s.status <> 'active')
        """,
        (embedding_model,),
    )
    return {r[0] for r in rows}


def _join_nearest_rules(run: _TenantLearning, prototypes: _RulePrototypes, unassigned: _Where) -> set[UUID]:
    """Each unassigned execution joins the rule whose prototype is nearest, when at least as alike
    as that rule's similarity floor. Returns the rules that gained members."""
    joined: list[tuple[UUID, UUID, float]] = []
    left_over = 0
    for batch in execution_batches(run.conn, unassigned.condition, unassigned.params, run.catalog.column()):
        run.report.executions_read += len(batch)
        best, sims = nearest(batch.vectors, prototypes.matrix)
        joins = sims >= prototypes.floors[best]
        joined += [(batch.ids[i], prototypes.owners[best[i]], float(sims[i])) for i in np.flatnonzero(joins)]
        left_over += int((~joins).sum())
    run.report.assigned += _save_memberships(run.conn, iter(joined), run.embedding_model)
    run.progress(f"{len(joined):,} new executions joined existing rules; {left_over:,} left over")
    return {rule_id for _, rule_id, _ in joined}


def _cluster_the_rest(run: _TenantLearning, unassigned: _Where, count_read: bool) -> set[UUID]:
    """Learn rules from the executions still unassigned, when there are enough of them; learned
    rules that match an active stored rule update it. Returns the rules written."""
    source = _Source(run.conn, unassigned, run.catalog.column(), run.settings.sample_size)
    if count_read:
        run.report.executions_read = source.count
    if source.count < run.settings.min_rule_executions:
        return set()
    learner, assignments = _learn(run, source)
    stored = [rule for rule in _stored_rules(run.conn, run.embedding_model) if rule.active]
    return set(_upsert_learned(run, learner, assignments, stored).values())


def _retire_other_embedders(conn: psycopg.Connection, embedding_model: str) -> int:
    """Learned rules of another embedder (or version) cannot be compared with today's requests."""
    other = conn.execute(
        "SELECT id FROM routing_rules WHERE auto_generated AND is_active AND request_embedding_model IS DISTINCT FROM %s",
        (embedding_model,),
    ).fetchall()
    return _deactivate(conn, [r[0] for r in other], f"embedder changed to {embedding_model}")


def _finish_report(conn: psycopg.Connection, report: LearningReport, embedding_model: str) -> None:
    report.active_rules = conn.execute(
        "SELECT count(*) FROM routing_rules WHERE is_active AND request_embedding_model = %s", (embedding_model,)
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
            (embedding_model,),
        )
    ]


def coverage(db: Database, tenant_id: UUID, embedding_model: str, days: int = 30) -> tuple[int, int]:
    """(executions of the last `days` days covered by an active rule, all of them)."""
    with db.tenant_transaction(tenant_id) as conn:
        row = conn.execute(
            """
            SELECT count(m.execution_id), count(*) FROM executions e
            LEFT JOIN routing_memberships m ON m.execution_id = e.id AND m.embedding_model = %s
            WHERE e.started_at >= now() - make_interval(days => %s)
            """,
            (embedding_model, days),
        ).fetchone()
    return int(row[0]), int(row[1])


# ---------------------------------------------------------------------------------------------
# Learning in memory, as of a moment (for dreams: rules as they were, from the history before then)


@dataclass(frozen=True, kw_only=True)
class InMemoryRules:
    """Rules learned without writing anything: what the learner would have made from the executions
    selected. `member_similarity[i]` is the median similarity of rule i's members (what the router
    scales a match by); `micro` the micro-cluster centroids (the outcome model's cells)."""

    catalog: SystemCatalog
    rules: list[LearnedRule]
    member_similarity: np.ndarray
    micro: np.ndarray
    executions: int


def learn_in_memory(
    conn: psycopg.Connection,
    embedding_model: str,
    embedder_name: str,
    *,
    started_before: datetime,
    settings: LearnerSettings | None = None,
) -> InMemoryRules:
    """The tenant's rules as the learner makes them from executions that started, and ended if they
    did, before `started_before`: nothing after that moment shapes them. Reads only; writes nothing."""
    report = LearningReport(tenant_id=UUID(int=0), embedding_model=embedding_model, mode="in_memory")
    run = _start(conn, report, embedder_name, settings, lambda _: None)
    before = _Where(
        condition=sql.SQL(
            "e.request_embedding_model = %s AND e.started_at < %s AND (e.completed_at IS NULL OR e.completed_at < %s)"
        ),
        params=(embedding_model, started_before, started_before),
    )
    source = _Source(conn, before, run.catalog.column(), run.settings.sample_size)
    if not source.count:
        return InMemoryRules(
            catalog=run.catalog, rules=[], member_similarity=np.zeros(0), micro=np.zeros((0, 1)), executions=0
        )
    learner, assignments = _learn(run, source)
    similarity = np.zeros(len(learner.rules))
    for i in range(len(learner.rules)):
        members = [sims[rule == i] for _, rule, sims in assignments]
        joined = np.concatenate(members) if members else np.zeros(0)
        similarity[i] = float(np.median(joined)) if joined.size else 0.0
    assert learner.micro is not None
    return InMemoryRules(
        catalog=run.catalog,
        rules=learner.rules,
        member_similarity=similarity,
        micro=learner.micro,
        executions=source.count,
    )
