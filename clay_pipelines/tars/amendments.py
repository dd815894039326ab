"""Amendments: the only way a constitution changes, recorded, approved where required, reversible.

Two layers. The base (systems.constitution) changes only through platform amendments (tenant_id
NULL, the maintenance role). A tenant's effective constitution is the base with that tenant's
amendments replayed in order (constitution.replay), stored in constitution_state; a tenant that
never amended a skill reads the base. Every change is one transaction holding the amendment row
and the new state, and is refused when it was prepared against a constitution that is no longer
current (optimistic concurrency on the hash). The database refuses a constitution change without
its amendment, any DELETE of an amendment, and any UPDATE but setting rolled_back_at once.

Functions take a connection in the caller's transaction: a tenant transaction for a tenant's
amendments, a maintenance transaction for platform ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from clay_pipelines.tars import constitution as c

TYPES = ("dream_promotion", "manual_update", "governance_tightening", "capability_expansion")


class AmendmentError(ValueError):
    """A change, rollback or approval that is refused, with the reason."""


class StaleConstitutionError(AmendmentError):
    """The change was prepared against a constitution that has changed since."""


@dataclass(frozen=True, kw_only=True)
class Skill:
    id: UUID
    name: str
    owner: UUID | None  # None: a platform-wide skill
    base: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Effective:
    skill: Skill
    tenant_id: UUID | None
    constitution: dict[str, Any]
    hash: str
    amendment_id: UUID | None  # the last amendment that shaped it; None: the base as created


@dataclass(frozen=True, kw_only=True)
class Amendment:
    id: UUID
    seq: int
    tenant_id: UUID | None
    system_id: UUID
    system_name: str
    amendment_type: str
    old_constitution: dict[str, Any]
    new_constitution: dict[str, Any]
    diff: list[dict[str, Any]]
    evidence: dict[str, Any]
    approved_by: str
    approved_at: datetime
    can_rollback: bool
    rolled_back_at: datetime | None
    old_hash: str | None
    new_hash: str | None
    proposed_by: str | None
    rollback_of: UUID | None


@dataclass(frozen=True, kw_only=True)
class Change:
    """A person's change: dotted keys to new values (None removes), who and why."""

    system: str | UUID
    changes: dict[str, Any]
    by: str
    reason: str
    amendment_type: str | None = None  # inferred when None
    evidence: dict[str, Any] = field(default_factory=dict)
    expected_hash: str | None = None  # refuse unless the constitution is still this one


_AMENDMENT_COLUMNS = (
    "id, seq, tenant_id, system_id, system_name, amendment_type, old_constitution, new_constitution, diff, "
    "evidence, approved_by, approved_at, can_rollback, rolled_back_at, old_hash, new_hash, proposed_by, rollback_of"
)


def _amendment(row: tuple[Any, ...]) -> Amendment:
    names = [n.strip() for n in _AMENDMENT_COLUMNS.split(",")]
    values = dict(zip(names, row, strict=True))
    values["diff"] = values["diff"] or []
    values["evidence"] = values["evidence"] or {}
    return Amendment(**values)


# -- reading ----------------------------------------------------------------------------------


def current_tenant(conn: psycopg.Connection) -> UUID | None:
    row = conn.execute("SELECT public.clay_current_tenant()").fetchone()
    return row[0] if row else None


def skill(conn: psycopg.Connection, reference: str | UUID) -> Skill:
    """A skill the transaction can see, by name or id."""
    column = "id" if isinstance(reference, UUID) else "name"
    row = conn.execute(
        f"SELECT id, name, tenant_id, constitution FROM systems WHERE {column} = %s",
        (reference,),
    ).fetchone()
    if row is None:
        raise AmendmentError(f"no skill {reference!s} in this tenant's registry")
    return Skill(id=row[0], name=row[1], owner=row[2], base=row[3])


def effective(conn: psycopg.Connection, reference: str | UUID) -> Effective:
    """The skill's constitution for the transaction's tenant now (the base when no tenant is set)."""
    found = skill(conn, reference)
    tenant_id = current_tenant(conn)
    row = None
    if tenant_id is not None:
        row = conn.execute(
            "SELECT constitution, constitution_hash, amendment_id FROM constitution_state "
            "WHERE tenant_id = %s AND system_id = %s",
            (tenant_id, found.id),
        ).fetchone()
    if row is not None:
        return Effective(skill=found, tenant_id=tenant_id, constitution=row[0], hash=row[1], amendment_id=row[2])
    last = conn.execute(
        "SELECT id FROM constitutional_amendments WHERE system_id = %s AND tenant_id IS NOT DISTINCT FROM %s "
        "ORDER BY seq DESC LIMIT 1",
        (found.id, found.owner),
    ).fetchone()
    return Effective(
        skill=found,
        tenant_id=tenant_id,
        constitution=found.base,
        hash=c.constitution_hash(found.base),
        amendment_id=last[0] if last else None,
    )


def amendments(
    conn: psycopg.Connection, system_id: UUID | None = None, tenant_id: UUID | None = None, *, platform: bool = True
) -> list[Amendment]:
    """Amendments in order: the tenant's, and the platform's when `platform`; of one skill or all."""
    rows = conn.execute(
        f"""
        SELECT {_AMENDMENT_COLUMNS} FROM constitutional_amendments
        WHERE (%(system)s::uuid IS NULL OR system_id = %(system)s)
          AND (tenant_id = %(tenant)s OR (%(platform)s AND tenant_id IS NULL))
        ORDER BY seq
        """,
        {"system": system_id, "tenant": tenant_id, "platform": platform},
    ).fetchall()
    return [_amendment(r) for r in rows]


def get_amendment(conn: psycopg.Connection, amendment_id: UUID) -> Amendment:
    row = conn.execute(
        f"SELECT {_AMENDMENT_COLUMNS} FROM constitutional_amendments WHERE id = %s",
        (amendment_id,),
    ).fetchone()
    if row is None:
        raise AmendmentError(f"no amendment {amendment_id} in this tenant")
    return _amendment(row)


def _original_base(found: Skill, history: list[Amendment]) -> dict[str, Any]:
    base_changes = [a for a in history if a.tenant_id == found.owner]
    return base_changes[0].old_constitution if base_changes else found.base


def replay(
    conn: psycopg.Connection, found: Skill, tenant_id: UUID | None, at: datetime | None = None
) -> dict[str, Any]:
    """The effective constitution from the amendments alone: the base as first recorded, the base's
    amendments up to `at`, then the tenant's (for a skill the tenant owns, they are the same)."""
    history = amendments(conn, found.id, tenant_id)
    document = _original_base(found, history)
    base_layer = [a for a in history if a.tenant_id == found.owner]
    tenant_layer = [a for a in history if a.tenant_id != found.owner]
    for amendment in [*base_layer, *tenant_layer]:
        if at is None or amendment.approved_at <= at:
            document = c.replay(document, amendment.diff)
    return document


# -- writing ----------------------------------------------------------------------------------


def _lock(conn: psycopg.Connection, tenant_id: UUID | None, system_id: UUID) -> None:
    """One change at a time per (tenant, skill); a platform change takes the skill's platform lock."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"constitution:{tenant_id or 'platform'}:{system_id}",),
    )


def _infer_type(old: dict[str, Any], new: dict[str, Any]) -> str:
    if c.governance_only_tightens(old, new):
        return "governance_tightening"
    if (old.get("capabilities") or []) != (new.get("capabilities") or []):
        return "capability_expansion"
    return "manual_update"


def _validate(new: dict[str, Any]) -> None:
    """A constitution stays consistent: its tunables parse and today's values are within bounds (a
    person may set a value between grid points; automated changes stay on the grid)."""
    for name, tunable in c.tunables(new).items():
        tunable.check(new["parameters"][name], on_grid=False)


def _record(
    conn: psycopg.Connection,
    *,
    tenant_id: UUID | None,
    found: Skill,
    old: dict[str, Any],
    new: dict[str, Any],
    amendment_type: str,
    approved_by: str,
    evidence: dict[str, Any],
    proposed_by: str | None = None,
    rollback_of: UUID | None = None,
) -> Amendment:
    if amendment_type not in TYPES:
        raise AmendmentError(f"amendment type {amendment_type!r} is not one of {', '.join(TYPES)}")
    patch = c.diff(old, new)
    row = conn.execute(
        f"""
        INSERT INTO constitutional_amendments (tenant_id, system_id, system_name, amendment_type, old_constitution,
          new_constitution, diff, evidence, approved_by, can_rollback, old_hash, new_hash, proposed_by, rollback_of)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING {_AMENDMENT_COLUMNS}
        """,
        (
            tenant_id,
            found.id,
            found.name,
            amendment_type,
            Jsonb(old),
            Jsonb(new),
            Jsonb(patch),
            Jsonb(evidence),
            approved_by,
            amendment_type != "governance_tightening",
            c.constitution_hash(old),
            c.constitution_hash(new),
            proposed_by,
            rollback_of,
        ),
    ).fetchone()
    assert row is not None
    return _amendment(row)


def _store_tenant_state(conn: psycopg.Connection, amendment: Amendment) -> None:
    conn.execute(
        """
        INSERT INTO constitution_state (tenant_id, system_id, constitution, constitution_hash, amendment_id)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (tenant_id, system_id) DO UPDATE SET constitution = EXCLUDED.constitution,
          constitution_hash = EXCLUDED.constitution_hash, amendment_id = EXCLUDED.amendment_id, updated_at = now()
        """,
        (
            amendment.tenant_id,
            amendment.system_id,
            Jsonb(amendment.new_constitution),
            amendment.new_hash,
            amendment.id,
        ),
    )


def _store_base(conn: psycopg.Connection, amendment: Amendment, found: Skill) -> None:
    """A new base, mirrored into systems.capabilities when it declares them, and every tenant that
    amended the skill re-derived from it (their own changes replayed over the new base)."""
    new = amendment.new_constitution
    capabilities_changed = (amendment.old_constitution.get("capabilities") or None) != (new.get("capabilities") or None)
    conn.execute("UPDATE systems SET constitution = %s, updated_at = now() WHERE id = %s", (Jsonb(new), found.id))
    if capabilities_changed and "capabilities" in new:
        # The capability embedding is refreshed by system_capability_embeddings (or at once by the CLI).
        conn.execute(
            "UPDATE systems SET capabilities = %s, capabilities_embedding = NULL, capabilities_embedding_model = NULL "
            "WHERE id = %s",
            (list(new["capabilities"]), found.id),
        )
    tenants = conn.execute(
        "SELECT tenant_id FROM constitution_state WHERE system_id = %s ORDER BY tenant_id", (found.id,)
    ).fetchall()
    for (tenant_id,) in tenants:
        derived = replay(conn, found, tenant_id)
        conn.execute(
            "UPDATE constitution_state SET constitution = %s, constitution_hash = %s, updated_at = now() "
            "WHERE tenant_id = %s AND system_id = %s",
            (Jsonb(derived), c.constitution_hash(derived), tenant_id, found.id),
        )


def _apply(
    conn: psycopg.Connection,
    current: Effective,
    new: dict[str, Any],
    *,
    amendment_type: str,
    approved_by: str,
    evidence: dict[str, Any],
    proposed_by: str | None = None,
    rollback_of: UUID | None = None,
) -> Amendment:
    """Record the amendment and the new state in the caller's transaction."""
    if c.constitution_hash(new) == current.hash:
        raise AmendmentError(f"{current.skill.name}: the change leaves the constitution as it is")
    _validate(new)
    base_layer = current.tenant_id is None or current.tenant_id == current.skill.owner
    amendment = _record(
        conn,
        tenant_id=current.tenant_id if not base_layer else current.skill.owner,
        found=current.skill,
        old=current.constitution,
        new=new,
        amendment_type=amendment_type,
        approved_by=approved_by,
        evidence=evidence,
        proposed_by=proposed_by,
        rollback_of=rollback_of,
    )
    if base_layer:
        _store_base(conn, amendment, current.skill)
    else:
        _store_tenant_state(conn, amendment)
    return amendment


def _current_for_change(conn: psycopg.Connection, reference: str | UUID, expected_hash: str | None) -> Effective:
    found = skill(conn, reference)
    _lock(conn, current_tenant(conn), found.id)
    current = effective(conn, found.id)
    if expected_hash is not None and expected_hash != current.hash:
        raise StaleConstitutionError(
            f"{found.name}: the change was prepared against constitution {expected_hash[:12]}, "
            f"but the current one is {current.hash[:12]}; prepare it again"
        )
    return current


def amend(conn: psycopg.Connection, change: Change) -> Amendment:
    """A person's amendment: of the tenant's effective constitution in a tenant transaction, of the
    base in a maintenance transaction (a platform amendment)."""
    if "@" not in change.by:
        raise AmendmentError(f"an amendment is made by a person, named by an email address, got {change.by!r}")
    if not change.reason.strip():
        raise AmendmentError("say why: a reason is required")
    current = _current_for_change(conn, change.system, change.expected_hash)
    new = c.with_changes(current.constitution, change.changes)
    amendment_type = change.amendment_type or _infer_type(current.constitution, new)
    tenant_layer = current.tenant_id is not None and current.tenant_id != current.skill.owner
    if tenant_layer and amendment_type == "capability_expansion":
        raise AmendmentError(
            f"{current.skill.name} is a platform-wide skill: its capabilities change by a platform amendment"
        )
    if amendment_type == "governance_tightening" and not c.governance_only_tightens(current.constitution, new):
        raise AmendmentError("governance_tightening only adds to requires_approval or prime_directives")
    return _apply(
        conn,
        current,
        new,
        amendment_type=amendment_type,
        approved_by=change.by,
        evidence={"reason": change.reason, **change.evidence},
    )


def rollback(
    conn: psycopg.Connection, amendment_id: UUID, by: str, reason: str, evidence: dict[str, Any] | None = None
) -> Amendment:
    """A new amendment that undoes `amendment_id` (the previous constitution byte for byte when
    nothing else changed since); refused when it cannot be rolled back or a later amendment changed
    the same keys."""
    original = get_amendment(conn, amendment_id)
    if not original.can_rollback:
        raise AmendmentError(f"amendment {amendment_id} ({original.amendment_type}) cannot be rolled back")
    if original.rolled_back_at is not None:
        raise AmendmentError(f"amendment {amendment_id} was already rolled back at {original.rolled_back_at}")
    current = _current_for_change(conn, original.system_id, None)
    touched = c.touched_paths(original.diff)
    later = [
        a
        for a in amendments(conn, original.system_id, original.tenant_id, platform=original.tenant_id is None)
        if a.seq > original.seq
        and a.tenant_id == original.tenant_id
        and c.overlapping(c.touched_paths(a.diff), touched)
    ]
    if later:
        listed = ", ".join(f"{a.id} ({a.approved_at:%Y-%m-%d %H:%M})" for a in later)
        raise AmendmentError(f"later amendments changed the same keys; roll them back first: {listed}")
    restored = c.replay(current.constitution, c.diff(original.new_constitution, original.old_constitution))
    amendment = _apply(
        conn,
        current,
        restored,
        amendment_type="manual_update",
        approved_by=by,
        evidence={
            **(evidence or {}),
            "reason": reason,
            "rollback_of": str(original.id),
            "rolled_back_hash": original.new_hash,
        },
        rollback_of=original.id,
    )
    conn.execute("UPDATE constitutional_amendments SET rolled_back_at = now() WHERE id = %s", (original.id,))
    return amendment


# -- automated changes ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """What became of an automated change: applied (an amendment), pending (a person decides),
    frozen (the tenant froze automated changes), rejected or stale (its constitution moved on):
    nothing applied but for "applied"."""

    status: str
    amendment: Amendment | None = None
    pending_id: UUID | None = None


def automated_changes_frozen(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT automated_changes_frozen FROM constitution_controls").fetchone()
    return bool(row and row[0])


def set_frozen(conn: psycopg.Connection, frozen: bool, by: str, reason: str | None) -> None:
    conn.execute(
        """
        INSERT INTO constitution_controls (automated_changes_frozen, changed_by, reason) VALUES (%s, %s, %s)
        ON CONFLICT (tenant_id) DO UPDATE SET automated_changes_frozen = EXCLUDED.automated_changes_frozen,
          changed_by = EXCLUDED.changed_by, reason = EXCLUDED.reason, changed_at = now()
        """,
        (frozen, by, reason),
    )


def propose_automated(
    conn: psycopg.Connection,
    reference: str | UUID,
    changes: dict[str, Any],
    *,
    actor: str,
    evidence: dict[str, Any],
    prepared_against: str,
    amendment_type: str = "dream_promotion",
) -> Proposal:
    """An automated actor's change to declared tunables, within bounds, in a tenant transaction.
    Applies at once unless the tenant froze automated changes or the constitution requires approval
    for amend_constitution (then it waits in pending_amendments)."""
    current = _current_for_change(conn, reference, prepared_against)
    checked = c.check_automated(current.constitution, changes)
    if automated_changes_frozen(conn):
        return Proposal(status="frozen")
    if c.APPROVAL_ACTION in (current.constitution.get("requires_approval") or []):
        row = conn.execute(
            """
            INSERT INTO pending_amendments (system_id, amendment_type, prepared_against_hash, changes, evidence, proposed_by)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (current.skill.id, amendment_type, current.hash, Jsonb(checked), Jsonb(evidence), actor),
        ).fetchone()
        assert row is not None
        return Proposal(status="pending", pending_id=row[0])
    new = c.with_changes(current.constitution, checked)
    amendment = _apply(conn, current, new, amendment_type=amendment_type, approved_by=actor, evidence=evidence)
    return Proposal(status="applied", amendment=amendment)


def decide_pending(
    conn: psycopg.Connection, pending_id: UUID, by: str, *, approve: bool, reason: str | None = None
) -> Proposal:
    """A person approves (the change applies, approved_by is the person) or rejects a waiting change.
    A change whose constitution moved on since it was prepared is marked stale (status "stale"),
    not applied."""
    row = conn.execute(
        "SELECT system_id, amendment_type, prepared_against_hash, changes, evidence, proposed_by, status "
        "FROM pending_amendments WHERE id = %s FOR UPDATE",
        (pending_id,),
    ).fetchone()
    if row is None:
        raise AmendmentError(f"no pending amendment {pending_id} in this tenant")
    system_id, amendment_type, prepared, changes, evidence, proposed_by, status = row
    if status != "pending":
        raise AmendmentError(f"pending amendment {pending_id} was already decided: {status}")
    if "@" not in by:
        raise AmendmentError(f"an approval is a person's, named by an email address, got {by!r}")
    decision = {"decided_by": by, "reason": reason}
    if not approve:
        _close_pending(conn, pending_id, "rejected", by, reason, None)
        return Proposal(status="rejected", pending_id=pending_id)
    try:
        current = _current_for_change(conn, system_id, prepared)
    except StaleConstitutionError as error:
        # Recorded (the transaction commits), not applied: the change must be prepared again.
        _close_pending(conn, pending_id, "stale", by, str(error), None)
        return Proposal(status="stale", pending_id=pending_id)
    new = c.with_changes(current.constitution, c.check_automated(current.constitution, changes))
    amendment = _apply(
        conn,
        current,
        new,
        amendment_type=amendment_type,
        approved_by=by,
        evidence={**evidence, "approval": decision, "pending_amendment": str(pending_id)},
        proposed_by=proposed_by,
    )
    _close_pending(conn, pending_id, "approved", by, reason, amendment.id)
    return Proposal(status="applied", amendment=amendment, pending_id=pending_id)


def _close_pending(
    conn: psycopg.Connection, pending_id: UUID, status: str, by: str, reason: str | None, amendment_id: UUID | None
) -> None:
    conn.execute(
        "UPDATE pending_amendments SET status = %s, decided_by = %s, decided_at = now(), decision_reason = %s, "
        "amendment_id = %s WHERE id = %s",
        (status, by, reason, amendment_id, pending_id),
    )


def pending(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT p.id, s.name, p.amendment_type, p.changes, p.proposed_by, p.proposed_at
        FROM pending_amendments p JOIN systems s ON s.id = p.system_id
        WHERE p.status = 'pending' ORDER BY p.proposed_at, p.id
        """
    ).fetchall()
    return [
        {"id": r[0], "system": r[1], "amendment_type": r[2], "changes": r[3], "proposed_by": r[4], "proposed_at": r[5]}
        for r in rows
    ]


# -- deployments and the replay check --------------------------------------------------------------


def deploy(conn: psycopg.Connection, reference: str | UUID, shipped: dict[str, Any], by: str) -> Amendment | None:
    """A skill deployment that ships a new base constitution, recorded as a platform amendment (in a
    maintenance transaction). None when it ships what the base already is."""
    current = _current_for_change(conn, reference, None)
    if c.constitution_hash(shipped) == current.hash:
        return None
    return _apply(
        conn,
        current,
        shipped,
        amendment_type=_infer_type(current.constitution, shipped),
        approved_by=by,
        evidence={"reason": "skill deployment shipped a new constitution"},
    )


@dataclass(frozen=True, kw_only=True)
class ReplayMismatch:
    tenant_id: UUID | None
    system_name: str
    stored_hash: str
    replayed_hash: str


def replay_mismatches(conn: psycopg.Connection) -> list[ReplayMismatch]:
    """Skills whose stored constitution (the base, and each tenant's state) differs from the replay of
    their amendments. Needs a connection that sees every tenant (the maintenance role)."""
    out: list[ReplayMismatch] = []
    rows = conn.execute("SELECT id, name, tenant_id, constitution FROM systems ORDER BY name").fetchall()
    for system_id, name, owner, base in rows:
        found = Skill(id=system_id, name=name, owner=owner, base=base)
        stored = [(owner, base)] + [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT tenant_id, constitution FROM constitution_state WHERE system_id = %s ORDER BY tenant_id",
                (system_id,),
            )
        ]
        for tenant_id, document in stored:
            replayed = replay(conn, found, tenant_id)
            if c.constitution_hash(replayed) != c.constitution_hash(document):
                out.append(
                    ReplayMismatch(
                        tenant_id=tenant_id,
                        system_name=name,
                        stored_hash=c.constitution_hash(document),
                        replayed_hash=c.constitution_hash(replayed),
                    )
                )
    return out


@dataclass(frozen=True, kw_only=True)
class ConstitutionRow:
    """One skill's constitution as a tenant sees it, for people to read."""

    system_name: str
    hash: str
    amended: bool  # the tenant has amendments of its own for this skill
    last_amendment: Amendment | None
    pending_approvals: int


def overview(conn: psycopg.Connection) -> list[ConstitutionRow]:
    """Every skill the transaction's tenant sees: its effective constitution's hash, the last
    amendment that shaped it (the tenant's or the platform's) and the changes awaiting approval."""
    tenant_id = current_tenant(conn)
    pending_counts = dict(
        conn.execute("SELECT system_id, count(*) FROM pending_amendments WHERE status = 'pending' GROUP BY 1")
    )
    rows: list[ConstitutionRow] = []
    for (system_id,) in conn.execute("SELECT id FROM systems ORDER BY name").fetchall():
        current = effective(conn, system_id)
        history = amendments(conn, system_id, tenant_id)
        rows.append(
            ConstitutionRow(
                system_name=current.skill.name,
                hash=current.hash,
                amended=any(a.tenant_id == tenant_id and tenant_id is not None for a in history),
                last_amendment=history[-1] if history else None,
                pending_approvals=int(pending_counts.get(system_id, 0)),
            )
        )
    return rows
