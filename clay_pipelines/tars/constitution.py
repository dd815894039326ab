"""Constitutions as values: identity, what may change and how, diffs and their replay.

A constitution is a JSON object (systems.constitution). Its identity is the SHA-256 of its RFC 8785
canonical JSON; numbers that JSON cannot carry exactly (Decimal money, integers beyond 2^53) are
canonicalised as strings. Changes are RFC 6902 JSON Patches (jsonpatch), so a tenant's change can be
replayed over a base that has moved on: it touches only the keys the tenant changed.

`tunables` declares the parameters automated changes (dreams) may touch, each with its bounds:
    "tunables": {"routing_confidence_threshold": {"type": "number", "min": 0.05, "max": 0.95, "step": 0.05},
                 "min_rule_executions": {"type": "integer", "min": 20, "max": 200, "step": 10},
                 "mode": {"type": "choice", "values": ["fast", "careful"]}}
prime_directives, requires_approval and covenant change only by people's amendments.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import jsonpatch
import rfc8785

PROTECTED_KEYS = ("prime_directives", "requires_approval", "covenant")
APPROVAL_ACTION = "amend_constitution"  # listed in requires_approval: automated changes wait for a person
_SAFE_INTEGER = 2**53 - 1


class ConstitutionError(ValueError):
    """A change a constitution does not allow (unknown key, out of bounds, protected key...)."""


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) > _SAFE_INTEGER:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConstitutionError(f"{value} has no JSON form")
    return value


def canonical(constitution: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of the constitution."""
    return rfc8785.dumps(_json_safe(constitution))


def constitution_hash(constitution: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(constitution)).hexdigest()


# -- tunables ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Tunable:
    name: str
    type: str  # number | integer | choice
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    values: tuple[Any, ...] = ()

    def check(self, value: Any, on_grid: bool = True) -> Any:
        """The value if it is allowed, else ConstitutionError naming the bound it breaks. The grid
        (min + k x step) binds automated changes; a person's value need only lie within the bounds."""
        if self.type == "choice":
            if value not in self.values:
                raise ConstitutionError(f"{self.name}={value!r} is not one of {list(self.values)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConstitutionError(f"{self.name}={value!r} is not a number")
        if self.type == "integer" and int(value) != value:
            raise ConstitutionError(f"{self.name}={value!r} is not an integer")
        if self.minimum is not None and value < self.minimum - 1e-9:
            raise ConstitutionError(f"{self.name}={value} is below its minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum + 1e-9:
            raise ConstitutionError(f"{self.name}={value} is above its maximum {self.maximum}")
        if on_grid and self.step and self.minimum is not None:
            steps = (value - self.minimum) / self.step
            if abs(steps - round(steps)) > 1e-6:
                raise ConstitutionError(f"{self.name}={value} is not on its grid ({self.minimum} + k x {self.step})")
        return int(value) if self.type == "integer" else value

    def grid(self) -> list[Any]:
        """Every allowed value (choices, or min..max by step)."""
        if self.type == "choice":
            return list(self.values)
        if self.minimum is None or self.maximum is None or not self.step:
            raise ConstitutionError(f"{self.name} has no finite grid (min, max and step are needed)")
        count = round((self.maximum - self.minimum) / self.step)
        points = [self.minimum + i * self.step for i in range(count + 1)]
        return [round(p) if self.type == "integer" else round(p, 10) for p in points]


def tunables(constitution: dict[str, Any]) -> dict[str, Tunable]:
    """The declared tunables; ConstitutionError when a declaration is malformed or names a parameter
    the constitution does not have."""
    declared = constitution.get("tunables") or {}
    parameters = constitution.get("parameters") or {}
    out: dict[str, Tunable] = {}
    for name, spec in declared.items():
        if name not in parameters:
            raise ConstitutionError(f"tunable {name} is not among the constitution's parameters")
        kind = spec.get("type")
        if kind not in ("number", "integer", "choice"):
            raise ConstitutionError(f"tunable {name}: type must be number, integer or choice, not {kind!r}")
        out[name] = Tunable(
            name=name,
            type=kind,
            minimum=spec.get("min"),
            maximum=spec.get("max"),
            step=spec.get("step"),
            values=tuple(spec.get("values") or ()),
        )
    return out


# -- changes ----------------------------------------------------------------------------------


def path_of(key: str) -> list[str]:
    """'parameters.routing_confidence_threshold' -> ['parameters', 'routing_confidence_threshold']."""
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise ConstitutionError(f"{key!r} names no key")
    return parts


def with_changes(constitution: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy with each dotted key set to its value (None removes the key)."""
    out = copy.deepcopy(constitution)
    for key, value in changes.items():
        *parents, leaf = path_of(key)
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConstitutionError(f"{key}: {part} is not an object")
            node = child
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


def check_automated(constitution: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """What an automated actor may change: declared tunables only, within bounds. Returns the
    changes with values normalised (integers as int)."""
    declared = tunables(constitution)
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        parts = path_of(key)
        if len(parts) != 2 or parts[0] != "parameters" or parts[1] not in declared:
            raise ConstitutionError(f"{key} is not a declared tunable; automated changes touch tunables only")
        checked[key] = declared[parts[1]].check(value)
    return checked


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 patch from old to new."""
    return jsonpatch.make_patch(old, new).patch


def touched_paths(patch: list[dict[str, Any]]) -> set[str]:
    """JSON Pointers a patch changes; a list's elements count as the list."""
    out: set[str] = set()
    for op in patch:
        parts = op["path"].split("/")
        while len(parts) > 2 and (parts[-1].isdigit() or parts[-1] == "-"):
            parts = parts[:-1]
        out.add("/".join(parts))
    return out


def overlapping(first: set[str], second: set[str]) -> set[str]:
    """Paths of one set equal to, inside or containing a path of the other."""
    return {a for a in first for b in second if a == b or a.startswith(b + "/") or b.startswith(a + "/")}


def replay(base: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a tenant's patch over a base that may have moved on since it was written: a replace
    of a key the base no longer has adds it, a remove of a missing key is a no-op."""
    doc = copy.deepcopy(base)
    for op in patch:
        op = dict(op)
        try:
            doc = jsonpatch.apply_patch(doc, [op])
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException):
            if op["op"] == "replace":
                doc = jsonpatch.apply_patch(doc, [{**op, "op": "add"}])
            elif op["op"] != "remove":
                raise
    return doc


def governance_only_tightens(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when the change only adds to requires_approval or prime_directives."""
    if {k: v for k, v in old.items() if k not in ("requires_approval", "prime_directives")} != {
        k: v for k, v in new.items() if k not in ("requires_approval", "prime_directives")
    }:
        return False
    grew = False
    for key in ("requires_approval", "prime_directives"):
        before, after = list(old.get(key) or []), list(new.get(key) or [])
        if after[: len(before)] != before:
            return False
        grew = grew or len(after) > len(before)
    return grew
