"""Signed receipts: one per completed execution, chained per tenant, checkpointed outside the database.

A receipt is Ed25519 over DOMAIN + the RFC 8785 canonical JSON of an envelope
{version, key_id, previous_hash, body}; its hash (SHA-256 of the same bytes) is the next receipt's
previous_hash. The body holds what the execution did, never its content (request, input, output,
feedback), so a lifecycle tombstone that clears content leaves every receipt verifiable. Appends
lock the tenant's receipt_chains row, so two signers never fork a chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import fsspec
import psycopg
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clay_pipelines.governance.keys import Signer, public_keys
from clay_pipelines.tars.constitution import canonical, constitution_hash

VERSION = 1
DOMAIN = b"clay.execution-receipt.v1\x00"  # a receipt signature can never pass for anything else
CHECKPOINT_DOMAIN = b"clay.receipt-checkpoint.v1\x00"
BATCH = 2000

BODY_SQL = """
    e.id, e.tenant_id, e.system_id, e.system_name, e.constitution_hash, e.routing_rule_id, e.cost_usd, e.status,
    e.governance_check, e.started_at, e.completed_at
"""


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decimal_text(value: Decimal | None) -> str | None:
    """The cost as a decimal string independent of the stored scale (0.0100 and 0.01 are one cost)."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _uuid(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def body(row: tuple[Any, ...], constitution: str | None) -> dict[str, Any]:
    """The receipt body of an executions row selected with BODY_SQL."""
    execution_id, tenant_id, system_id, system_name, _, rule_id, cost, status, governance, started, completed = row
    return {
        "execution_id": str(execution_id),
        "tenant_id": str(tenant_id),
        "system_id": _uuid(system_id),
        "system_name": system_name,
        "constitution_hash": constitution,
        "routing_rule_id": _uuid(rule_id),
        "cost_usd": decimal_text(cost),
        "status": status,
        "governance_check_hash": hashlib.sha256(canonical(governance)).hexdigest(),
        "started_at": timestamp(started),
        "completed_at": timestamp(completed),
    }


def message(key_id: str, previous_hash: str | None, receipt_body: dict[str, Any]) -> bytes:
    envelope = {"version": VERSION, "key_id": key_id, "previous_hash": previous_hash, "body": receipt_body}
    return DOMAIN + rfc8785.dumps(envelope)


def digest(signed: bytes) -> str:
    return hashlib.sha256(signed).hexdigest()


# ---------------------------------------------------------------------------------------------
# Signing


def _chain_head(conn: psycopg.Connection, tenant_id: UUID) -> tuple[int, str | None]:
    """The tenant's chain head, locked until the transaction ends: appends are serialised here."""
    conn.execute("INSERT INTO receipt_chains (tenant_id) VALUES (%s) ON CONFLICT (tenant_id) DO NOTHING", (tenant_id,))
    row = conn.execute(
        "SELECT length, head_hash FROM receipt_chains WHERE tenant_id = %s FOR UPDATE", (tenant_id,)
    ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def sign_pending(
    conn: psycopg.Connection,
    tenant_id: UUID,
    signer: Signer,
    *,
    execution_ids: Iterable[UUID] | None = None,
    limit: int = BATCH,
) -> int:
    """Sign the tenant's completed, unsigned executions (those still awaiting an ARM decision wait),
    oldest completion first, appending them to its chain; returns how many were signed."""
    length, head = _chain_head(conn, tenant_id)
    ids = None if execution_ids is None else list(execution_ids)
    rows = conn.execute(
        f"""
        SELECT {BODY_SQL} FROM executions e
        WHERE e.completed_at IS NOT NULL AND e.receipt_signature IS NULL
          AND NOT public.clay_awaits_approval(e.status, e.governance_check)
          AND (%(ids)s::uuid[] IS NULL OR e.id = ANY(%(ids)s::uuid[]))
        ORDER BY e.completed_at, e.id LIMIT %(limit)s FOR UPDATE
        """,
        {"ids": ids, "limit": limit},
    ).fetchall()
    if not rows:
        return 0
    constitutions: dict[UUID | None, str | None] = {}
    updates: dict[str, list[Any]] = {k: [] for k in ("id", "constitution", "signature", "hash", "previous", "seq")}
    for row in rows:
        constitution = row[4] or _constitution_hash(conn, row[2], constitutions)
        signed = message(signer.key_id, head, body(row, constitution))
        receipt_hash = digest(signed)
        length += 1
        for key, value in (
            ("id", row[0]),
            ("constitution", constitution),
            ("signature", base64.b64encode(signer.sign(signed)).decode()),
            ("hash", receipt_hash),
            ("previous", head),
            ("seq", length),
        ):
            updates[key].append(value)
        head = receipt_hash
    conn.execute(
        """
        UPDATE executions e SET constitution_hash = v.constitution, receipt_signature = v.signature,
          receipt_hash = v.hash, receipt_previous_hash = v.previous, receipt_key_id = %s, receipt_seq = v.seq,
          receipt_signed_at = now()
        FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[])
          AS v(id, constitution, signature, hash, previous, seq)
        WHERE e.id = v.id
        """,
        (
            signer.key_id,
            updates["id"],
            updates["constitution"],
            updates["signature"],
            updates["hash"],
            updates["previous"],
            updates["seq"],
        ),
    )
    conn.execute(
        "UPDATE receipt_chains SET length = %s, head_hash = %s, updated_at = now() WHERE tenant_id = %s",
        (length, head, tenant_id),
    )
    return len(rows)


def _constitution_hash(
    conn: psycopg.Connection, system_id: UUID | None, cache: dict[UUID | None, str | None]
) -> str | None:
    """The effective constitution of the system for the tenant now (for executions whose writer did
    not record the one they ran under)."""
    if system_id not in cache:
        row = conn.execute("SELECT public.clay_effective_constitution(%s)", (system_id,)).fetchone()
        cache[system_id] = constitution_hash(row[0]) if row and row[0] is not None else None
    return cache[system_id]


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    tenant_id: UUID
    length: int
    head_hash: str | None
    created_at: datetime
    key_id: str
    signature: str
    source: str = "database"

    def payload(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "tenant_id": str(self.tenant_id),
            "length": self.length,
            "head_hash": self.head_hash,
            "created_at": timestamp(self.created_at),
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return CHECKPOINT_DOMAIN + rfc8785.dumps(self.payload())

    def verifies(self, keys: dict[str, Ed25519PublicKey]) -> bool:
        return _verifies(keys.get(self.key_id), self.signature, self.signed_bytes())


def _verifies(key: Ed25519PublicKey | None, signature: str | None, signed: bytes) -> bool:
    if key is None or not signature:
        return False
    try:
        key.verify(base64.b64decode(signature), signed)
    except (InvalidSignature, ValueError):
        return False
    return True


def write_checkpoint(
    conn: psycopg.Connection, tenant_id: UUID, signer: Signer, folder: str | Path
) -> Checkpoint | None:
    """A signed checkpoint of the tenant's chain, stored and exported to folder/<tenant>/; None when
    the chain has not grown since the last one."""
    row = conn.execute(
        "SELECT length, head_hash, now() FROM receipt_chains WHERE tenant_id = %s FOR SHARE", (tenant_id,)
    ).fetchone()
    if row is None or row[0] == 0:
        return None
    if conn.execute(
        "SELECT 1 FROM receipt_checkpoints WHERE tenant_id = %s AND length = %s", (tenant_id, row[0])
    ).fetchone():
        return None
    unsigned = Checkpoint(
        tenant_id=tenant_id, length=int(row[0]), head_hash=row[1], created_at=row[2], key_id=signer.key_id, signature=""
    )
    signature = base64.b64encode(signer.sign(unsigned.signed_bytes())).decode()
    checkpoint = Checkpoint(**{**unsigned.__dict__, "signature": signature})
    conn.execute(
        "INSERT INTO receipt_checkpoints (tenant_id, length, head_hash, key_id, signature, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (tenant_id, checkpoint.length, checkpoint.head_hash, checkpoint.key_id, signature, checkpoint.created_at),
    )
    export_checkpoint(checkpoint, folder)
    return checkpoint


def _checkpoint_folder(location: str | Path, tenant_id: UUID) -> tuple[fsspec.AbstractFileSystem, str]:
    """The tenant's folder of exported checkpoints: a local folder or any fsspec URL (the archive
    store, s3://... for one)."""
    fs, root = fsspec.core.url_to_fs(str(location))
    return fs, f"{root.rstrip('/')}/{tenant_id}"


def export_checkpoint(checkpoint: Checkpoint, location: str | Path) -> str:
    """Written under a temporary name and moved into place, so a reader never sees half a file."""
    fs, folder = _checkpoint_folder(location, checkpoint.tenant_id)
    fs.makedirs(folder, exist_ok=True)
    path = f"{folder}/{checkpoint.length:012d}.json"
    with fs.open(f"{path}.tmp", "w") as handle:
        handle.write(json.dumps({**checkpoint.payload(), "signature": checkpoint.signature}, indent=2) + "\n")
    fs.mv(f"{path}.tmp", path)
    return path


def exported_checkpoints(location: str | Path, tenant_id: UUID) -> list[Checkpoint]:
    fs, folder = _checkpoint_folder(location, tenant_id)
    out = []
    for path in sorted(fs.glob(f"{folder}/*.json")):
        with fs.open(path, "r") as handle:
            data = json.loads(handle.read())
        out.append(
            Checkpoint(
                tenant_id=UUID(data["tenant_id"]),
                length=int(data["length"]),
                head_hash=data["head_hash"],
                created_at=datetime.strptime(data["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
                key_id=data["key_id"],
                signature=data["signature"],
                source=str(path),
            )
        )
    return out


def stored_checkpoints(conn: psycopg.Connection, tenant_id: UUID) -> list[Checkpoint]:
    return [
        Checkpoint(tenant_id=t, length=int(n), head_hash=h, created_at=c, key_id=k, signature=s)
        for t, n, h, c, k, s in conn.execute(
            "SELECT tenant_id, length, head_hash, created_at, key_id, signature FROM receipt_checkpoints "
            "WHERE tenant_id = %s ORDER BY length",
            (tenant_id,),
        )
    ]


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(kw_only=True)
class Verification:
    tenant_id: UUID
    receipts: int = 0
    breaks: list[str] = field(default_factory=list)
    pending: int = 0
    oldest_pending: timedelta | None = None
    overdue: int = 0
    awaiting_approval: int = 0
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.breaks and not self.overdue


def verify_chain(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    checkpoint_folder: str | Path | None = None,
    since: date | None = None,
    pending_limit: timedelta = timedelta(hours=1),
) -> Verification:
    """Every receipt of the tenant (from the first completed on `since`, with its link to the one
    before) recomputed from the row as it is now: an edited field, a deleted or reordered receipt, a
    signature by another key, a chain shorter than its latest checkpoint; plus unsigned completions."""
    report = Verification(tenant_id=tenant_id)
    keys = public_keys(conn)
    start = 1
    if since is not None:
        row = conn.execute(
            "SELECT min(receipt_seq) FROM executions WHERE receipt_seq IS NOT NULL AND completed_at >= %s", (since,)
        ).fetchone()
        start = max(1, int(row[0]) - 1) if row and row[0] is not None else 1
    rows = conn.execute(
        f"""
        SELECT {BODY_SQL}, e.receipt_seq, e.receipt_hash, e.receipt_previous_hash, e.receipt_key_id,
               e.receipt_signature
        FROM executions e WHERE e.receipt_signature IS NOT NULL OR e.receipt_seq IS NOT NULL
        ORDER BY e.receipt_seq NULLS LAST, e.id
        """
    ).fetchall()
    expected, previous_hash, last_seq = 1, None, 0
    for row in rows:
        seq, stored_hash, previous, key_id, signature = row[11:]
        name = f"receipt #{seq} (execution {row[0]})"
        if seq is None:
            report.breaks.append(f"execution {row[0]}: a signature outside the chain (no position)")
            continue
        if seq < start:
            previous_hash, expected, last_seq = stored_hash, seq + 1, seq
            continue
        report.receipts += 1
        if seq != expected:
            missing = f"#{expected}" if seq == expected + 1 else f"#{expected}..#{seq - 1}"
            report.breaks.append(f"receipt {missing} is missing (deleted) before {name}")
        elif previous != previous_hash:
            report.breaks.append(f"{name}: does not follow the receipt before it (reordered or relinked)")
        signed = message(key_id or "", previous, body(row[:11], row[4]))
        if digest(signed) != stored_hash:
            report.breaks.append(f"{name}: its fields differ from what was signed (edited)")
        elif key_id not in keys:
            report.breaks.append(f"{name}: signed by unknown key {key_id}")
        elif not _verifies(keys[key_id], signature, signed):
            report.breaks.append(f"{name}: the signature does not verify with key {key_id} (wrong key)")
        previous_hash, expected, last_seq = stored_hash, seq + 1, seq
    _check_head(conn, tenant_id, last_seq, previous_hash, report)
    _check_checkpoint(conn, tenant_id, rows, last_seq, keys, checkpoint_folder, report)
    _pending(conn, pending_limit, report)
    return report


def _check_head(
    conn: psycopg.Connection, tenant_id: UUID, last_seq: int, last_hash: str | None, report: Verification
) -> None:
    head = conn.execute("SELECT length, head_hash FROM receipt_chains WHERE tenant_id = %s", (tenant_id,)).fetchone()
    length, head_hash = (int(head[0]), head[1]) if head else (0, None)
    if (length, head_hash) != (last_seq, last_hash):
        report.breaks.append(
            f"the chain head says {length} receipts ending {str(head_hash)[:12]}, the receipts end at "
            f"#{last_seq} {str(last_hash)[:12]} (truncated or appended outside the chain)"
        )


def _check_checkpoint(
    conn: psycopg.Connection,
    tenant_id: UUID,
    rows: list[tuple[Any, ...]],
    last_seq: int,
    keys: dict[str, Ed25519PublicKey],
    folder: str | Path | None,
    report: Verification,
) -> None:
    candidates = stored_checkpoints(conn, tenant_id) + (exported_checkpoints(folder, tenant_id) if folder else [])
    valid = []
    for checkpoint in candidates:
        if checkpoint.verifies(keys):
            valid.append(checkpoint)
        else:
            report.breaks.append(f"checkpoint of {checkpoint.length} receipts ({checkpoint.source}): bad signature")
    if not valid:
        return
    latest = max(valid, key=lambda c: (c.length, c.created_at))
    report.checkpoint = latest
    if latest.length > last_seq:
        report.breaks.append(
            f"truncated: the checkpoint of {timestamp(latest.created_at)} counts {latest.length} receipts, "
            f"the chain has {last_seq}"
        )
        return
    at = {row[11]: row[12] for row in rows if row[11] is not None}
    if at.get(latest.length) != latest.head_hash:
        report.breaks.append(
            f"receipt #{latest.length} is not the one the checkpoint of {timestamp(latest.created_at)} signed"
        )


def _pending(conn: psycopg.Connection, limit: timedelta, report: Verification) -> None:
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE NOT public.clay_awaits_approval(status, governance_check)),
               max(now() - completed_at) FILTER (WHERE NOT public.clay_awaits_approval(status, governance_check)),
               count(*) FILTER (WHERE NOT public.clay_awaits_approval(status, governance_check)
                                  AND completed_at < now() - %s),
               count(*) FILTER (WHERE public.clay_awaits_approval(status, governance_check))
        FROM executions WHERE completed_at IS NOT NULL AND receipt_signature IS NULL
        """,
        (limit,),
    ).fetchone()
    assert row is not None
    report.pending, report.oldest_pending, report.overdue, report.awaiting_approval = (
        int(row[0]),
        row[1],
        int(row[2]),
        int(row[3]),
    )
