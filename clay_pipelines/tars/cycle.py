"""One dream night of one tenant, against the database: point in time, replay, decision, dreams rows,
and (the latest night only) the promotion through an amendment.

Point in time. The cycle of night N (cycle_id dream-N-03:00, moment N at 03:00 UTC) sees only
executions that started and ended before N. Its replay window is the `replay_window_days` before N;
the rules it replays are learned in memory (routing/rule_store.learn_in_memory) from the executions
before the window, so the window's outcomes never shaped the rules that route it (a time split), and
the outcome model is fitted on the same pre-window history. The constitution replayed is the one in
force at N (replayed from the amendments). Known approximations, recorded in every dream's
test_input: a change made to an old execution after N (a rating added later) is visible; systems'
statuses, capability embeddings and budgets are today's, not N's.

A backfilled night (not the latest) is an evaluation record: its dreams say what the rule decided,
and nothing is promoted from it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database
from clay_pipelines.routing.embeddings import Embedder, tag
from clay_pipelines.routing.learning import nearest
from clay_pipelines.routing.router import RoutingContext, RuleCandidate
from clay_pipelines.routing.rule_store import (
    EXECUTION_VECTOR,
    InMemoryRules,
    SystemCatalog,
    as_array,
    learn_in_memory,
)
from clay_pipelines.tars import amendments as am
from clay_pipelines.tars import constitution as c
from clay_pipelines.tars import decision, proposals
from clay_pipelines.tars.estimators import outcomes_from_rows
from clay_pipelines.tars.replay import (
    ReplayRequests,
    RuleIndex,
    nearest_capability_lists,
    nearest_rule_candidates,
    replay,
    settings_of,
)

TARS = "tars"
ACTOR = "tars:dream-cycle"
CYCLE_TIME = "03:00"
DEFAULTS = {"mutations_per_system": 10, "replay_window_days": 7, "watch_days": 7}
EXAMPLES = 5


def cycle_id_for(night: date) -> str:
    return f"dream-{night:%Y-%m-%d}-{CYCLE_TIME}"


def moment_of(night: date) -> datetime:
    return datetime(night.year, night.month, night.day, 3, 0, tzinfo=UTC)


@dataclass(kw_only=True)
class SkillNight:
    """What one skill's cycle did: dreams written, their outcomes, the promotion if any."""

    system_name: str
    dreams_written: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    promoted: dict[str, Any] | None = None  # the mutation
    promotion_status: str | None = None  # applied | pending | frozen | stale | evaluation_only
    skipped_reason: str | None = None
    window_requests: int = 0
    seconds: float = 0.0


@dataclass(kw_only=True)
class NightReport:
    tenant_id: UUID
    night: date
    cycle_id: str
    skills: list[SkillNight] = field(default_factory=list)


# -- reading the night's world -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Dreaming:
    """How TARS dreams for this tenant (its constitution as of the night) and the rule."""

    limit: int
    window_days: int
    watch_days: int
    rule: dict[str, Any]


def _dreaming(conn: psycopg.Connection, moment: datetime) -> _Dreaming:
    try:
        found = am.skill(conn, TARS)
        tars = am.replay(conn, found, am.current_tenant(conn), at=moment)
    except am.AmendmentError:
        tars = {}
    parameters = {**DEFAULTS, **(tars.get("parameters") or {})}
    return _Dreaming(
        limit=int(parameters["mutations_per_system"]),
        window_days=int(parameters["replay_window_days"]),
        watch_days=int(parameters["watch_days"]),
        rule=decision.rule_from_constitution(tars),
    )


# Vectors read as the learner reads them (half precision whatever the row's lifecycle state), so the
# rules a night re-learns are the rules production learns.
_EXECUTIONS = sql.SQL("""
SELECT e.id, {vector}, e.system_name, e.status, e.completed_at IS NOT NULL, e.cost_usd, e.duration_ms,
       e.user_satisfaction, e.routing_propensity, e.user_request
FROM executions e
WHERE e.request_embedding_model = %(model)s AND e.started_at >= %(since)s AND e.started_at < %(until)s
  AND (e.completed_at IS NULL OR e.completed_at < %(moment)s)
  AND (e.completed_at IS NOT NULL OR e.status = 'governance_blocked')
ORDER BY e.started_at, e.id
""").format(vector=EXECUTION_VECTOR)


@dataclass(frozen=True, kw_only=True)
class _Logged:
    ids: list[str]
    vectors: np.ndarray
    rows: list[dict[str, Any]]
    texts: list[str]


def _logged(
    conn: psycopg.Connection, model: str, since: datetime, until: datetime, moment: datetime, micro: np.ndarray
) -> _Logged:
    """Executions whose outcome was known by `moment`, each with its micro-cluster."""
    rows = conn.execute(
        _EXECUTIONS, {"model": model, "since": since, "until": until, "moment": moment}, prepare=False
    ).fetchall()
    vectors = np.vstack([as_array(r[1]) for r in rows]) if rows else np.zeros((0, micro.shape[1]), np.float32)
    clusters = nearest(vectors, micro)[0] if len(rows) else np.zeros(0, np.int64)
    dicts = [
        {
            "cluster": int(cluster),
            "system_name": r[2],
            "status": r[3],
            "completed": r[4],
            "cost_usd": r[5],
            "duration_ms": r[6],
            "user_satisfaction": r[7],
            "routing_propensity": r[8],
        }
        for r, cluster in zip(rows, clusters, strict=True)
    ]
    return _Logged(ids=[str(r[0]) for r in rows], vectors=vectors, rows=dicts, texts=[r[9] for r in rows])


def _rule_index(learned: InMemoryRules) -> RuleIndex:
    catalog = learned.catalog
    rules = [
        RuleCandidate(
            rule_id=UUID(int=i + 1),
            similarity=0.0,
            pattern=rule.pattern,
            recommended=catalog.ids[rule.recommended],
            alternatives=[catalog.ids[a] for a in rule.alternatives],
            confidence=float(rule.confidence),
            member_similarity=float(learned.member_similarity[i]),
        )
        for i, rule in enumerate(learned.rules)
    ]
    prototypes = [rule.prototypes for rule in learned.rules]
    owners = [np.full(len(p), i) for i, p in enumerate(prototypes)]
    return RuleIndex(
        rules=rules,
        prototypes=np.vstack(prototypes) if prototypes else np.zeros((0, learned.micro.shape[1]), np.float32),
        prototype_rule=np.concatenate(owners).astype(np.int64) if owners else np.zeros(0, np.int64),
    )


def _capabilities(conn: psycopg.Connection, model: str) -> tuple[list[tuple[UUID, str]], np.ndarray]:
    rows = conn.execute(
        "SELECT id, name, capabilities_embedding FROM systems WHERE capabilities_embedding_model = %s "
        "AND status = 'active' ORDER BY name",
        (model,),
    ).fetchall()
    if not rows:
        return [], np.zeros((0, 1), np.float32)
    return [(r[0], r[1]) for r in rows], np.vstack([as_array(r[2]) for r in rows])


def _base_context(catalog: SystemCatalog, constitution: dict[str, Any], model: str) -> RoutingContext:
    parameters = constitution.get("parameters") or {}
    catch_all = catalog.catch_all()
    return RoutingContext(
        names=dict(zip(catalog.ids, catalog.names, strict=True)),
        active=frozenset(s for s, on in zip(catalog.ids, catalog.active, strict=True) if on),
        blocked={},
        threshold=float(parameters.get("routing_confidence_threshold", 0.7)),
        capability_threshold=float(parameters.get("capability_match_threshold", 0.35)),
        catch_all=None if catch_all is None else (catalog.ids[catch_all], catalog.names[catch_all]),
        nearest_capabilities=list,
        embedder_tag=model,
    )


# -- one skill's night ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Evaluated:
    record: dict[str, Any]
    test_input: dict[str, Any]
    examples: dict[str, list[dict[str, Any]]]  # mutation hash -> requests whose system changes


@dataclass(frozen=True, kw_only=True)
class _NightData:
    """Everything the decision needs, read in one transaction (the computing happens after it)."""

    learned: InMemoryRules
    history: _Logged
    window: _Logged
    capability_systems: list[tuple[UUID, str]]
    capability_vectors: np.ndarray
    window_start: datetime


def _read_night(
    conn: psycopg.Connection, dreaming: _Dreaming, moment: datetime, embedder: Embedder
) -> _NightData | str:
    """The night's world as it was, or why it cannot be evaluated."""
    model = tag(embedder)
    window_start = moment - timedelta(days=dreaming.window_days)
    learned = learn_in_memory(conn, model, embedder.name, started_before=window_start)
    if not learned.rules:
        return (
            f"no routing rules could be learned from the {learned.executions} executions before {window_start:%Y-%m-%d}"
        )
    window = _logged(conn, model, window_start, moment, moment, learned.micro)
    if len(window.ids) < 2:
        return f"only {len(window.ids)} executions with known outcomes in the replay window"
    history = _logged(conn, model, datetime(1970, 1, 1, tzinfo=UTC), window_start, window_start, learned.micro)
    capability_systems, capability_vectors = _capabilities(conn, model)
    return _NightData(
        learned=learned,
        history=history,
        window=window,
        capability_systems=capability_systems,
        capability_vectors=capability_vectors,
        window_start=window_start,
    )


def _evaluate(
    data: _NightData, constitution: dict[str, Any], dreaming: _Dreaming, cycle_id: str, moment: datetime, model: str
) -> _Evaluated:
    """The decision record of one skill's night (no database)."""
    learned, window, history = data.learned, data.window, data.history
    systems = learned.catalog.names
    window_outcomes, _ = outcomes_from_rows(window.rows, systems)
    history_outcomes, _ = outcomes_from_rows(history.rows, systems)
    requests = ReplayRequests(
        candidates=nearest_rule_candidates(window.vectors, _rule_index(learned)),
        capabilities=nearest_capability_lists(window.vectors, data.capability_vectors, data.capability_systems),
    )
    base = _base_context(learned.catalog, constitution, model)
    record = decision.dream_cycle(
        constitution=constitution,
        cycle_id=cycle_id,
        limit=dreaming.limit,
        requests=requests,
        base=base,
        systems=systems,
        window=window_outcomes,
        history=history_outcomes,
        request_ids=window.ids,
        clusters=len(learned.micro),
        rule=dreaming.rule,
        history_ids=history.ids,
        unblockable=[not (c.get("requires_approval") or []) for c in learned.catalog.constitutions],
    )
    test_input = {
        "window": {"from": data.window_start.isoformat(), "to": moment.isoformat()},
        "window_requests": len(window.ids),
        "history_requests": len(history.ids),
        "split": "half A selects, half B confirms (by a hash of the cycle id and each execution id)",
        "seed": cycle_id,
        "execution_ids_sha256": hashlib.sha256("\n".join(window.ids).encode()).hexdigest(),
        "rules_replayed": len(learned.rules),
        "rules_learned_from": f"{learned.executions} executions that started and ended before the window",
        "known_leaks": [
            "changes made after the night to old executions (ratings added later) are visible",
            "systems' statuses, capability embeddings and budgets are today's, not the night's",
        ],
    }
    return _Evaluated(record=record, test_input=test_input, examples=_examples(record, requests, base, window))


def _examples(
    record: dict[str, Any], requests: ReplayRequests, base: RoutingContext, window: _Logged
) -> dict[str, list[dict[str, Any]]]:
    """For each mutation, a few requests whose chosen system changes, with both arms' choices."""
    current = record.get("current_settings") or {}
    mutations = [p["mutation"] for p in record["proposals"]]
    if not mutations:
        return {}
    sample = min(len(requests), 400)
    subset = ReplayRequests(candidates=requests.candidates[:sample], capabilities=requests.capabilities[:sample])
    arms = replay(subset, base, [current, *({**current, **settings_of(m)} for m in mutations)])
    out: dict[str, list[dict[str, Any]]] = {}
    for entry, arm in zip(record["proposals"], arms[1:], strict=True):
        changed = [i for i in range(sample) if arm.system[i] != arms[0].system[i]][:EXAMPLES]
        out[entry["hash"]] = [
            {
                "request": window.texts[i],
                "logged": window.rows[i]["system_name"],
                "current": arms[0].system[i],
                "dream": arm.system[i],
            }
            for i in changed
        ]
    return out


# -- writing the night ------------------------------------------------------------------------------

_STATUS = {
    decision.REJECT: "rejected",
    decision.INCONCLUSIVE: "inconclusive",
    decision.NOT_SELECTED: "not_selected",
    decision.PROMOTE: "promotable",
}


def _family_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The night's record less the proposals (each dream row holds its own entry), with their order so
    that the whole record can be rebuilt (tars/reports.night_record) and re-checked."""
    summary = {k: v for k, v in record.items() if k != "proposals"}
    summary["proposal_order"] = [entry["hash"] for entry in record["proposals"]]
    return summary


def _changes_from(constitution: dict[str, Any], mutation: dict[str, Any]) -> dict[str, Any]:
    parameters = constitution.get("parameters") or {}
    return {key: {"from": parameters.get(c.path_of(key)[-1]), "to": value} for key, value in mutation.items()}


def _insert_dream(conn: psycopg.Connection, values: dict[str, Any]) -> bool:
    """One dreams row; False when the night already has it (a re-run writes nothing new)."""
    row = conn.execute(
        """
        INSERT INTO dreams (system_id, system_name, cycle_id, mutations, test_input, normal_output, dream_output,
          outcome, dreamed_at, dream_duration_ms, mutation_hash, status, night, evaluation_only)
        VALUES (%(system_id)s, %(system_name)s, %(cycle_id)s, %(mutations)s, %(test_input)s, %(normal_output)s,
          %(dream_output)s, %(outcome)s, %(dreamed_at)s, %(duration)s, %(hash)s, %(status)s, %(night)s,
          %(evaluation_only)s)
        ON CONFLICT (tenant_id, system_id, cycle_id, mutation_hash) DO NOTHING
        RETURNING id
        """,
        {key: Jsonb(value) if isinstance(value, dict | list) else value for key, value in values.items()},
    ).fetchone()
    return row is not None


def _write_dreams(
    conn: psycopg.Connection,
    skill: am.Skill,
    constitution: dict[str, Any],
    evaluated: _Evaluated,
    night: date,
    latest: bool,
    seconds: float,
) -> SkillNight:
    record = evaluated.record
    result = SkillNight(system_name=skill.name, window_requests=evaluated.test_input["window_requests"])
    common = {
        "system_id": skill.id,
        "system_name": skill.name,
        "cycle_id": record["cycle_id"],
        "test_input": evaluated.test_input,
        "normal_output": {"settings": record.get("current_settings"), "estimates": record["current"]},
        "dreamed_at": moment_of(night),
        "duration": int(seconds * 1000),
        "night": night,
        "evaluation_only": not latest,
    }
    family = _family_summary(record)
    for entry in record["proposals"]:
        status = _STATUS[entry["outcome"]]
        outcome = {"decision": entry["outcome"], "entry": {k: v for k, v in entry.items() if k != "mutation"}}
        written = _insert_dream(
            conn,
            {
                **common,
                "mutations": {
                    "changes": _changes_from(constitution, entry["mutation"]),
                    "mutation": entry["mutation"],
                    "proposed_as": entry.get("proposed_as"),
                },
                "dream_output": {
                    "half_a": entry.get("half_a"),
                    "half_b": entry.get("half_b"),
                    "examples": evaluated.examples.get(entry["hash"], []),
                },
                "outcome": {**outcome, "record": family},
                "hash": entry["hash"],
                "status": status,
            },
        )
        result.dreams_written += int(written)
        result.outcomes[status] = result.outcomes.get(status, 0) + 1
    for skipped in record.get("skipped", []):
        written = _insert_dream(
            conn,
            {
                **common,
                "mutations": {"mutation": skipped["mutation"]},
                "normal_output": None,
                "dream_output": None,
                "outcome": {"decision": "skipped", "reason": skipped["reason"]},
                "hash": skipped["hash"],
                "status": "skipped",
            },
        )
        result.dreams_written += int(written)
        result.outcomes["skipped"] = result.outcomes.get("skipped", 0) + 1
    return result


def _skip_all(
    conn: psycopg.Connection,
    skill: am.Skill,
    constitution: dict[str, Any],
    dreaming: _Dreaming,
    night: date,
    reason: str,
) -> SkillNight:
    """A night that could not be evaluated: every planned mutation recorded as skipped, with why."""
    result = SkillNight(system_name=skill.name, skipped_reason=reason)
    planned = proposals.plan(constitution, cycle_id_for(night), dreaming.limit)
    for mutation in planned.mutations:
        written = _insert_dream(
            conn,
            {
                "system_id": skill.id,
                "system_name": skill.name,
                "cycle_id": cycle_id_for(night),
                "mutations": {"mutation": mutation},
                "test_input": None,
                "normal_output": None,
                "dream_output": None,
                "outcome": {"decision": "skipped", "reason": reason},
                "dreamed_at": moment_of(night),
                "duration": 0,
                "hash": proposals.mutation_hash(mutation),
                "status": "skipped",
                "night": night,
                "evaluation_only": True,
            },
        )
        result.dreams_written += int(written)
    result.outcomes["skipped"] = len(planned.mutations)
    return result


# -- promotion --------------------------------------------------------------------------------------


def promote(conn: psycopg.Connection, skill: am.Skill, cycle_id: str, watch_days: int) -> tuple[str, dict | None]:
    """The night's promotable dream of this skill through a dream_promotion amendment (or a pending
    approval, or nothing for a frozen tenant), once: a dream already promoted stays as it is."""
    row = conn.execute(
        "SELECT id, mutations, outcome, test_input FROM dreams WHERE system_id = %s AND cycle_id = %s "
        "AND status = 'promotable' AND NOT evaluation_only ORDER BY (outcome->'entry'->'confirmation'->'primary'->>'gain')::float DESC NULLS LAST LIMIT 1",
        (skill.id, cycle_id),
    ).fetchone()
    if row is None:
        return "none", None
    dream_id, mutations, outcome, _ = row
    current = am.effective(conn, skill.id)
    evidence = {"dream_id": str(dream_id), "cycle_id": cycle_id, "decision_record": outcome}
    try:
        proposal = am.propose_automated(
            conn,
            skill.id,
            mutations["mutation"],
            actor=ACTOR,
            evidence=evidence,
            prepared_against=current.hash,
        )
    except (am.StaleConstitutionError, c.ConstitutionError) as error:
        conn.execute(
            "UPDATE dreams SET status = 'stale', outcome = outcome || %s WHERE id = %s",
            (Jsonb({"promotion": str(error)}), dream_id),
        )
        return "stale", mutations["mutation"]
    if proposal.status == "applied":
        assert proposal.amendment is not None
        _mark_promoted(conn, dream_id, ACTOR, proposal.amendment, watch_days)
    elif proposal.status == "pending":
        conn.execute(
            "UPDATE dreams SET status = 'pending_approval', pending_amendment_id = %s WHERE id = %s",
            (proposal.pending_id, dream_id),
        )
    else:  # frozen
        conn.execute(
            "UPDATE dreams SET outcome = outcome || %s WHERE id = %s",
            (Jsonb({"promotion": "automated changes are frozen for this tenant: nothing applied"}), dream_id),
        )
    return proposal.status, mutations["mutation"]


def _mark_promoted(conn: psycopg.Connection, dream_id: UUID, by: str, amendment: am.Amendment, watch_days: int) -> None:
    """The dream is in production through `amendment`, approved by `by`, and its keys are watched."""
    conn.execute(
        "UPDATE dreams SET status = 'promoted', promoted_to_production = true, promoted_at = now(), "
        "approved_by = %s, approved_at = now(), amendment_id = %s WHERE id = %s",
        (by, amendment.id, dream_id),
    )
    open_watch(conn, amendment, dream_id, watch_days)


def open_watch(conn: psycopg.Connection, amendment: am.Amendment, dream_id: UUID | None, watch_days: int) -> None:
    """The promoted keys are watched for `watch_days`; the baseline is the guardrail figures of the
    same length of time before the promotion."""
    keys = sorted(c.touched_paths(amendment.diff))
    baseline = guardrail_figures(conn, amendment.approved_at - timedelta(days=watch_days), amendment.approved_at)
    conn.execute(
        """
        INSERT INTO amendment_watches (amendment_id, system_id, dream_id, keys, closes_at, baseline)
        VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (amendment_id) DO NOTHING
        """,
        (
            amendment.id,
            amendment.system_id,
            dream_id,
            keys,
            amendment.approved_at + timedelta(days=watch_days),
            Jsonb(baseline),
        ),
    )


def guardrail_figures(conn: psycopg.Connection, since: datetime, until: datetime) -> dict[str, Any]:
    """Live figures of the tenant's executions started in [since, until): success rate (of evidence),
    cost per request, mean duration, fallback rate (routed off the rule path), governance-blocked rate."""
    row = conn.execute(
        """
        SELECT count(*),
               avg((status = 'success')::int) FILTER (WHERE completed_at IS NOT NULL AND status <> 'governance_blocked'),
               avg(coalesce(cost_usd, 0)) FILTER (WHERE completed_at IS NOT NULL OR status = 'governance_blocked'),
               avg(duration_ms) FILTER (WHERE completed_at IS NOT NULL),
               avg((coalesce(input_data->'routing'->>'path', 'rule') <> 'rule')::int),
               avg((status = 'governance_blocked')::int)
        FROM executions WHERE started_at >= %s AND started_at < %s
        """,
        (since, until),
    ).fetchone()
    names = (
        "executions",
        "success_rate",
        "cost_per_request",
        "mean_duration_ms",
        "fallback_rate",
        "governance_blocked_rate",
    )
    return {name: (None if value is None else float(value)) for name, value in zip(names, row, strict=True)}


# -- the night ----------------------------------------------------------------------------------------


def _skills_to_dream(conn: psycopg.Connection, moment: datetime) -> list[tuple[am.Skill, dict[str, Any]]]:
    """Skills whose constitution (as of the night) declares tunables, each with that constitution
    less the tunables under an open watch (not dreamed again until the watch closes)."""
    tenant_id = am.current_tenant(conn)
    watched: dict[UUID, set[str]] = {}
    for system_id, keys in conn.execute(
        "SELECT system_id, keys FROM amendment_watches WHERE status = 'watching'"
    ).fetchall():
        watched.setdefault(system_id, set()).update(keys)
    out = []
    for (system_id,) in conn.execute("SELECT id FROM systems ORDER BY name").fetchall():
        skill = am.skill(conn, system_id)
        constitution = am.replay(conn, skill, tenant_id, at=moment)
        tunables = dict(constitution.get("tunables") or {})
        for path in watched.get(system_id, ()):
            tunables.pop(path.rsplit("/", 1)[-1], None)
        if tunables:
            out.append((skill, {**constitution, "tunables": tunables}))
    return out


def dream_night(
    db: Database,
    tenant_id: UUID,
    night: date,
    embedder: Embedder,
    *,
    latest: bool,
    progress: Callable[[str], None] = lambda _: None,
) -> NightReport:
    """Dream one night for one tenant: every skill with tunables, its dreams written once (a re-run
    writes nothing new), and on the latest night the promotion the rule allows."""
    cycle_id, moment = cycle_id_for(night), moment_of(night)
    report = NightReport(tenant_id=tenant_id, night=night, cycle_id=cycle_id)
    with db.tenant_transaction(tenant_id) as conn:
        dreaming = _dreaming(conn, moment)
        skills = _skills_to_dream(conn, moment)
    for skill, constitution in skills:
        started = time.perf_counter()
        with db.tenant_transaction(tenant_id) as conn:
            data = _read_night(conn, dreaming, moment, embedder)
        evaluated = (
            data if isinstance(data, str) else _evaluate(data, constitution, dreaming, cycle_id, moment, tag(embedder))
        )
        seconds = time.perf_counter() - started
        with db.tenant_transaction(tenant_id) as conn:
            if isinstance(evaluated, str):
                result = _skip_all(conn, skill, constitution, dreaming, night, evaluated)
            else:
                result = _write_dreams(conn, skill, constitution, evaluated, night, latest, seconds)
            if latest and not isinstance(evaluated, str):
                result.promotion_status, result.promoted = promote(conn, skill, cycle_id, dreaming.watch_days)
        result.seconds = seconds
        progress(f"{skill.name}: {result.dreams_written} dreams written, {result.outcomes}")
        report.skills.append(result)
    return report


def approve_dream(
    conn: psycopg.Connection, dream_id: UUID, by: str, *, approve: bool, reason: str | None, watch_days: int = 7
) -> str:
    """A person's decision on a dream waiting for approval: its pending amendment applies (the dream
    is promoted and watched) or is declined; a constitution that moved on makes it stale."""
    row = conn.execute(
        "SELECT status, pending_amendment_id FROM dreams WHERE id = %s FOR UPDATE", (dream_id,)
    ).fetchone()
    if row is None:
        raise am.AmendmentError(f"no dream {dream_id} in this tenant")
    status, pending_id = row
    if status != "pending_approval" or pending_id is None:
        raise am.AmendmentError(f"dream {dream_id} is {status}, not waiting for approval")
    outcome = am.decide_pending(conn, pending_id, by, approve=approve, reason=reason)
    if outcome.status == "applied":
        assert outcome.amendment is not None
        _mark_promoted(conn, dream_id, by, outcome.amendment, watch_days)
        return "promoted"
    new_status = "declined" if outcome.status == "rejected" else "stale"
    conn.execute(
        "UPDATE dreams SET status = %s, approved_by = %s, approved_at = now() WHERE id = %s", (new_status, by, dream_id)
    )
    return new_status
