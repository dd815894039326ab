"""Replaying logged requests through the router's own decide() under other settings.

A request's nearest rules do not depend on the thresholds, so they are found once (in bulk, with
numpy, from the rules' prototype matrix: no SQL per request) and every arm re-decides the same
requests. decide() is called as it is (imported, never copied); the capability neighbours it asks
for lazily are precomputed per request and handed to it through the context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np

from clay_pipelines.routing.router import CANDIDATE_RULES, RoutingContext, RuleCandidate, decide

# Constitution parameter -> the RoutingContext field decide() reads it from. Only these can be
# replayed: everything else a skill reads is outside decide().
ROUTER_SETTINGS = {
    "routing_confidence_threshold": "threshold",
    "capability_match_threshold": "capability_threshold",
}
Capabilities = list[tuple[UUID, str, float]]


@dataclass(frozen=True, kw_only=True)
class ReplayRequests:
    """What decide() reads per request besides the settings: its nearest rules (as nearest_rules()
    returns them) and its nearest systems by capability (as nearest_capabilities() returns them)."""

    candidates: list[list[RuleCandidate]]
    capabilities: list[Capabilities]

    def __post_init__(self) -> None:
        if len(self.candidates) != len(self.capabilities):
            raise ValueError(
                f"{len(self.candidates)} requests have rule candidates but {len(self.capabilities)} have capabilities"
            )

    def __len__(self) -> int:
        return len(self.candidates)


@dataclass(frozen=True, kw_only=True)
class ArmChoices:
    """One arm's decisions, one entry per request."""

    settings: dict[str, float]  # constitution parameter -> value
    system: np.ndarray  # object: system name, None when nothing could be chosen
    path: np.ndarray  # object: rule | capability | catch_all | none
    fallback: np.ndarray  # bool: the rule path was not taken

    def codes(self, systems: Sequence[str]) -> np.ndarray:
        """The chosen systems as indexes into `systems`; -1 for none or a system not listed."""
        index = {name: i for i, name in enumerate(systems)}
        return np.array([index.get(s, -1) if s is not None else -1 for s in self.system], dtype=np.int64)


def settings_of(mutation: Mapping[str, Any]) -> dict[str, float]:
    """A mutation's router settings ({"parameters.X": v} -> {"X": v}); ValueError for a key the
    replay cannot apply."""
    out: dict[str, float] = {}
    for key, value in mutation.items():
        name = key.removeprefix("parameters.")
        if name not in ROUTER_SETTINGS or key == name:
            raise ValueError(f"{key} is not a router setting a replay can apply ({', '.join(ROUTER_SETTINGS)})")
        out[name] = float(value)
    return out


def replay(requests: ReplayRequests, base: RoutingContext, arms: Sequence[Mapping[str, float]]) -> list[ArmChoices]:
    """Every request re-decided under each arm's settings (parameters not named keep the base's)."""
    return [_replay_arm(requests, base, dict(settings)) for settings in arms]


def _replay_arm(requests: ReplayRequests, base: RoutingContext, settings: dict[str, float]) -> ArmChoices:
    unknown = sorted(set(settings) - set(ROUTER_SETTINGS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a router setting a replay can apply")
    current: list[Capabilities] = [[]]
    context = dataclasses.replace(
        base,
        nearest_capabilities=lambda: current[0],
        **{ROUTER_SETTINGS[name]: value for name, value in settings.items()},
    )
    n = len(requests)
    system = np.empty(n, dtype=object)
    path = np.empty(n, dtype=object)
    for i, (candidates, capabilities) in enumerate(zip(requests.candidates, requests.capabilities, strict=True)):
        current[0] = capabilities
        decision = decide(context, candidates)
        system[i] = decision.system_name
        path[i] = decision.path
    applied = {name: float(getattr(context, field)) for name, field in ROUTER_SETTINGS.items()}
    return ArmChoices(settings=applied, system=system, path=path, fallback=path != "rule")


# -- finding every request's neighbours in bulk --------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RuleIndex:
    """The tenant's active rules and their prototypes as nearest_rules() scores them: a rule's
    similarity to a request is that of its best prototype (a rule without prototypes is scored by
    its request_embedding: give that as its one prototype)."""

    rules: list[RuleCandidate]  # similarity unused; the rule's other fields as stored
    prototypes: np.ndarray  # (P, d)
    prototype_rule: np.ndarray  # (P,) index into rules

    def __post_init__(self) -> None:
        if len(self.prototypes) != len(self.prototype_rule):
            raise ValueError(f"{len(self.prototypes)} prototypes but {len(self.prototype_rule)} rule indexes")
        if len(self.prototype_rule) and (self.prototype_rule.min() < 0 or self.prototype_rule.max() >= len(self.rules)):
            raise ValueError("a prototype names a rule index outside the rules")


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def best_rule_similarity(vectors: np.ndarray, index: RuleIndex, chunk: int = 2048) -> np.ndarray:
    """(n, rules) exact cosine of every request to every rule's best prototype."""
    order = np.argsort(index.prototype_rule, kind="stable")
    prototypes = _unit(index.prototypes)[order]
    owners = index.prototype_rule[order]
    starts = np.flatnonzero(np.concatenate([[True], owners[1:] != owners[:-1]])) if len(owners) else np.array([])
    queries = _unit(vectors)
    out = np.full((len(queries), len(index.rules)), -np.inf, dtype=np.float32)
    for offset in range(0, len(queries), chunk):
        sims = queries[offset : offset + chunk] @ prototypes.T
        if len(starts):
            out[offset : offset + chunk, owners[starts]] = np.maximum.reduceat(sims, starts, axis=1)
    return out


def nearest_rule_candidates(
    vectors: np.ndarray, index: RuleIndex, k: int = CANDIDATE_RULES, chunk: int = 2048
) -> list[list[RuleCandidate]]:
    """Each request's k nearest rules, best prototype first, ties by rule id as nearest_rules()
    breaks them."""
    id_rank = np.argsort(np.argsort([str(r.rule_id) for r in index.rules], kind="stable"))
    out: list[list[RuleCandidate]] = []
    for offset in range(0, len(vectors), chunk):
        sims = best_rule_similarity(vectors[offset : offset + chunk], index, chunk)
        take = min(k, sims.shape[1])
        if take == 0:
            out.extend([] for _ in range(len(sims)))
            continue
        if take < sims.shape[1]:
            top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        else:
            top = np.tile(np.arange(sims.shape[1]), (len(sims), 1))
        for row, rules in zip(sims, top, strict=True):
            ranked = rules[np.lexsort((id_rank[rules], -row[rules]))]
            out.append(
                [dataclasses.replace(index.rules[j], similarity=float(row[j])) for j in ranked if np.isfinite(row[j])]
            )
    return out


def nearest_capability_lists(
    vectors: np.ndarray, capabilities: np.ndarray, systems: Sequence[tuple[UUID, str]], k: int = 3
) -> list[Capabilities]:
    """Each request's k active systems nearest by capability, as nearest_capabilities() lists them
    (give only active systems with a capability embedding)."""
    if len(systems) != len(capabilities):
        raise ValueError(f"{len(systems)} systems but {len(capabilities)} capability embeddings")
    if not len(systems):
        return [[] for _ in range(len(vectors))]
    sims = _unit(vectors) @ _unit(capabilities).T
    take = min(k, len(systems))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :take]
    return [
        [(systems[j][0], systems[j][1], float(row[j])) for j in order] for row, order in zip(sims, top, strict=True)
    ]
