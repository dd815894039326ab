"""Dream proposals: which changes to a skill's tunables TARS tries in one cycle.

Deterministic for a cycle: the random picks are seeded by the SHA-256 of the cycle id, so a cycle
that runs again proposes the same mutations. A mutation maps dotted keys ("parameters.X") to new
values; every value is on its tunable's grid, inside its bounds, and differs from today's value.

What is proposed, up to `limit`:
  1. neighbours: today's value of each parameter one step down and up, then two steps;
  2. a few joint proposals: two parameters moved one step each;
  3. points drawn across the bounds, beyond the neighbours: two per parameter, drawn as a systematic
     sample of every parameter's grid points beyond two steps (in order: parameter, then value), so
     that each stretch of that list, as long as the points are spaced, holds exactly one. A night
     replaying one day can confirm only a large gain, which only a large move makes; independent
     draws would leave whole stretches of a range untried on a night, a systematic sample never does.
When the limit cannot hold them all, the one-step neighbours come first, then the points across the
bounds (as many as fit, still spread the same way), then the joint proposals, then the two-step
neighbours; where only part of a group fits, the cycle draws which. Without that order a limit no
larger than the neighbours would never propose a point beyond them, and a setting far from today's
could only be reached one night's step at a time.
Only parameters whose effect a replay of logged requests can show are dreamed: the router's
thresholds, which decide() reads. Every other tunable (e.g. min_rule_executions, which changes the
rules the learner writes, or a skill's own timeout) is returned as skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clay_pipelines.tars import constitution as c
from clay_pipelines.tars.replay import ROUTER_SETTINGS

JOINT_PROPOSALS = 2
ACROSS_PER_PARAMETER = 2
_REASONS = {
    "min_rule_executions": "it changes which rules the learner writes; replaying today's rules cannot show its effect",
}
_NOT_READ = "the router's decision does not read it, so replaying logged requests cannot show its effect"
_NOT_ROUTER = "the router reads its thresholds from the catch-all's constitution only, not from this skill's"


@dataclass(frozen=True, kw_only=True)
class Proposals:
    mutations: list[dict[str, Any]]
    skipped: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per mutation, how it was proposed (KINDS)


def mutation_hash(mutation: dict[str, Any]) -> str:
    """SHA-256 of the mutation's RFC 8785 canonical JSON: its identity across cycles and tables."""
    return hashlib.sha256(c.canonical(mutation)).hexdigest()


def cycle_rng(cycle_id: str, purpose: str) -> np.random.Generator:
    """A generator seeded by the cycle id (and what it is for, so that uses do not share draws)."""
    digest = hashlib.sha256(f"{cycle_id}\x1f{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def propose(constitution: dict[str, Any], cycle_id: str, limit: int) -> list[dict[str, Any]]:
    """At most `limit` mutations of the constitution's replayable tunables (see plan())."""
    return plan(constitution, cycle_id, limit).mutations


def plan(constitution: dict[str, Any], cycle_id: str, limit: int) -> Proposals:
    """The cycle's mutations and the skipped ones with their reasons."""
    if limit < 0:
        raise ValueError(f"limit must be at least 0, not {limit}")
    declared = c.tunables(constitution)
    parameters = constitution.get("parameters") or {}
    is_router = bool(parameters.get("catch_all"))
    replayable = [name for name in declared if is_router and name in ROUTER_SETTINGS]
    skipped = [
        (mutation, _skip_reason(name, is_router))
        for name in declared
        if name not in replayable
        for mutation in _steps(declared[name], parameters[name], (-1, 1))
    ]
    rng = cycle_rng(cycle_id, "proposals")
    one_step = [m for name in replayable for m in _steps(declared[name], parameters[name], (-1, 1))]
    # The far points come right after the one-step moves (_PRIORITY): drawn for the room those leave,
    # so that the limit never cuts them unevenly.
    across_room = min(ACROSS_PER_PARAMETER * len(replayable), max(limit - len(one_step), 0))
    groups = {
        "one_step": one_step,
        "two_steps": [m for name in replayable for m in _steps(declared[name], parameters[name], (-2, 2))],
        "joint": _joint(declared, parameters, replayable, rng),
        "across": _across(declared, parameters, replayable, across_room, cycle_rng(cycle_id, "proposals/across")),
    }
    kept = _fit({name: _distinct(constitution, group) for name, group in groups.items()}, limit, rng)
    return Proposals(
        mutations=[m for name in groups for m in kept[name]],
        skipped=skipped,
        kinds=[KINDS[name] for name in groups for _ in kept[name]],
    )


# Which groups the limit keeps first.
_PRIORITY = ("one_step", "across", "joint", "two_steps")
# How each group's proposals are described to a person (dreams.mutations.proposed_as).
KINDS = {
    "one_step": "one step from today's value",
    "two_steps": "two steps from today's value",
    "joint": "two parameters one step each",
    "across": "a point drawn across the bounds",
}


def _distinct(constitution: dict[str, Any], mutations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mutation in mutations:
        checked = c.check_automated(constitution, mutation)
        out.setdefault(mutation_hash(checked), checked)
    return list(out.values())


def _fit(
    groups: dict[str, list[dict[str, Any]]], limit: int, rng: np.random.Generator
) -> dict[str, list[dict[str, Any]]]:
    """Each group cut to what the limit leaves, filled in _PRIORITY order; a group only partly kept
    keeps a draw of its members, in their order. A mutation kept in an earlier group is not kept twice."""
    kept: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for name in _PRIORITY:
        fresh = [m for m in groups[name] if mutation_hash(m) not in seen]
        room = max(limit - len(seen), 0)
        if len(fresh) > room:
            fresh = [fresh[i] for i in sorted(rng.permutation(len(fresh))[:room])]
        kept[name] = fresh
        seen.update(mutation_hash(m) for m in fresh)
    return kept


def _skip_reason(name: str, is_router: bool) -> str:
    if name in ROUTER_SETTINGS and not is_router:
        return _NOT_ROUTER
    return _REASONS.get(name, _NOT_READ)


def _key(name: str) -> str:
    return f"parameters.{name}"


def _same(a: Any, b: Any) -> bool:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return abs(float(a) - float(b)) < 1e-9 if numeric else a == b


def _neighbour(tunable: c.Tunable, value: Any, offset: int) -> Any | None:
    """The grid point `offset` steps from today's value, or None past the bounds. A value set by
    hand between two grid points has those two points as its first steps down and up."""
    grid = tunable.grid()
    exact = [i for i, point in enumerate(grid) if _same(point, value)]
    if exact:
        index = exact[0] + offset
    elif tunable.type == "choice" or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    else:
        below = sum(1 for point in grid if float(point) < float(value))  # points under today's value
        index = below + offset if offset < 0 else below + offset - 1
    return grid[index] if 0 <= index < len(grid) else None


def _steps(tunable: c.Tunable, value: Any, offsets: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    for offset in offsets:
        moved = _neighbour(tunable, value, offset)
        if moved is not None:
            out.append({_key(tunable.name): moved})
    return out


def _joint(
    declared: dict[str, c.Tunable], parameters: dict[str, Any], names: list[str], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Two parameters moved one step each; a few of every such combination, drawn by the cycle."""
    options = []
    for first, second in itertools.combinations(names, 2):
        for a, b in itertools.product((-1, 1), repeat=2):
            x = _neighbour(declared[first], parameters[first], a)
            y = _neighbour(declared[second], parameters[second], b)
            if x is not None and y is not None:
                options.append({_key(first): x, _key(second): y})
    if not options:
        return []
    picks = rng.permutation(len(options))[:JOINT_PROPOSALS]
    return [options[int(i)] for i in picks]


def _across(
    declared: dict[str, c.Tunable], parameters: dict[str, Any], names: list[str], count: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """`count` points across the bounds: a systematic sample (a random start, then evenly spaced) of
    every parameter's grid points beyond two steps from today's value, listed parameter by parameter
    in grid order; all of them when there are no more than `count`."""
    far: list[dict[str, Any]] = []
    for name in names:
        tunable, today = declared[name], parameters[name]
        near = {_neighbour(tunable, today, offset) for offset in (-2, -1, 1, 2)}
        far += [{_key(name): v} for v in tunable.grid() if not _same(v, today) and v not in near]
    if count <= 0 or not far:
        return []
    if len(far) <= count:
        return far
    spacing = len(far) / count
    start = rng.random() * spacing
    return [far[int(start + i * spacing)] for i in range(count)]
