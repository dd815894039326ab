"""ARCHIVED and PRUNED: a tenant's executions of a month as Parquet in an archive store, verified
before the database keeps a tombstone; restore on request; prune after the retention period.

The archive store is a local folder by default, any fsspec URL (s3://bucket/prefix) by configuration.
A file holds every column of the rows (content from cold storage included), typed; beside it a
manifest (row count, SHA-256, schema version). The order of a run makes it resumable:

1. a lifecycle_archives row in state 'writing' is committed before anything is written;
2. the file and its manifest are written, read back and verified (SHA-256, row count, and the
   canonical form of every row equal to the database's);
3. in one transaction: the rows are locked and checked again (still eligible, unchanged), their
   content cleared (the tombstone), and the archive marked 'archived'.

A run killed anywhere leaves either a 'writing' archive (its file, whole or half-written, is deleted
and the rows archived again by the next run) or a finished one. Nothing is tombstoned before its file
verifies; nothing is written twice.

Tombstone: the executions row stays (foreign keys from payroll_documents and routing memberships,
rollups of system, status, cost, completed_at and satisfaction, receipts and their hashes): only the
named content columns and the vector are cleared, user_request holding the marker '[archived]'.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import fsspec
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import rfc8785
from psycopg import sql
from psycopg.types.json import Jsonb

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import audit
from clay_pipelines.lifecycle.policy import (
    ARCHIVED_MARKER,
    COLD_COLUMNS,
    CONTENT_COLUMNS,
    VECTOR_COLUMNS,
    tenant_thresholds,
)

SCHEMA_VERSION = 1
MAX_ROWS_PER_FILE = 50_000
# What the lifecycle itself changes on a row: not part of the row's canonical form.
BOOKKEEPING = ("lifecycle_state", "last_accessed_at", "access_count", "archive_id")
RESTORED = (*CONTENT_COLUMNS, *VECTOR_COLUMNS)


class ArchiveError(RuntimeError):
    """An archive that does not verify, or a request the archive cannot serve."""


# ---------------------------------------------------------------------------------------------
# The store


@dataclass(frozen=True)
class ArchiveStore:
    url: str

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    def path(self, relative: str) -> str:
        return f"{self._fs()[1]}/{relative}"

    def write(self, relative: str, data: bytes) -> None:
        fs, root = self._fs()
        target = f"{root}/{relative}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(target, "wb") as out:
            out.write(data)

    def read(self, relative: str) -> bytes | None:
        fs, root = self._fs()
        try:
            return fs.cat_file(f"{root}/{relative}")
        except FileNotFoundError:
            return None

    def delete(self, relative: str) -> bool:
        fs, root = self._fs()
        target = f"{root}/{relative}"
        if not fs.exists(target):
            return False
        fs.rm(target)
        return True

    def exists(self, relative: str) -> bool:
        fs, root = self._fs()
        return fs.exists(f"{root}/{relative}")


def _relative(tenant_id: UUID, month: date, archive_id: UUID) -> tuple[str, str]:
    base = f"tenant={tenant_id}/month={month:%Y-%m}/{archive_id}"
    return f"{base}.parquet", f"{base}.manifest.json"


# ---------------------------------------------------------------------------------------------
# Rows as archived: every column of executions, typed, content from cold storage included


@dataclass(frozen=True)
class _Column:
    name: str
    pg_type: str
    generated: bool


def _columns(conn: psycopg.Connection) -> list[_Column]:
    """executions' columns as the database has them now (columns added by later migrations included)."""
    return [
        _Column(*row)
        for row in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '' FROM pg_attribute "
            "WHERE attrelid = 'public.executions'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    ]


def _expression(column: _Column) -> tuple[sql.Composable, pa.DataType]:
    value: sql.Composable = sql.Identifier("e", column.name)
    if column.name in COLD_COLUMNS:
        value = sql.SQL("coalesce({}, {})").format(value, sql.Identifier("c", column.name))
    kind = column.pg_type
    if kind in ("vector", "halfvec") or kind.startswith(("vector(", "halfvec(")):
        return sql.SQL("{}::real[]").format(value), pa.list_(pa.float32())
    if kind == "timestamp with time zone":
        return value, pa.timestamp("us", tz="UTC")
    if kind == "integer":
        return value, pa.int32()
    if kind == "bigint":
        return value, pa.int64()
    if kind == "boolean":
        return value, pa.bool_()
    if kind.endswith("[]"):
        return sql.SQL("{}::text[]").format(value), pa.list_(pa.string())
    # uuid, text, jsonb (PostgreSQL's normalised text), numeric (exact, as text), anything else.
    return sql.SQL("{}::text").format(value), pa.string()


def read_rows(conn: psycopg.Connection, ids: list[UUID]) -> pa.Table:
    """The rows with these ids, every column, as an Arrow table ordered by started_at, id."""
    columns = _columns(conn)
    expressions = [_expression(c) for c in columns]
    query = sql.SQL(
        "SELECT {} FROM executions e LEFT JOIN execution_cold_content c ON c.execution_id = e.id "
        "WHERE e.id = ANY(%s) ORDER BY e.started_at, e.id"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(e, sql.Identifier(c.name))
            for c, (e, _) in zip(columns, expressions, strict=True)
        )
    )
    rows = conn.execute(query, (ids,)).fetchall()
    schema = pa.schema([pa.field(c.name, t) for c, (_, t) in zip(columns, expressions, strict=True)])
    return pa.table([pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(schema)], schema=schema)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _canonical_value(value: Any) -> Any:
    """As _jsonable, but a vector (a list of floats) as the hex of its float32 bytes: the same
    identity, without serialising every float as JSON text (most of an archive's rows' bytes)."""
    if isinstance(value, list) and value and isinstance(value[0], float):
        return np.asarray(value, dtype="<f4").tobytes().hex()
    return _jsonable(value)


def canonical_rows(table: pa.Table, exclude: Iterable[str] = BOOKKEEPING) -> dict[str, bytes]:
    """Each row's RFC 8785 canonical JSON by id, without the lifecycle's own bookkeeping columns."""
    skip = set(exclude)
    return {
        row["id"]: rfc8785.dumps({k: _canonical_value(v) for k, v in row.items() if k not in skip})
        for row in table.to_pylist()
    }


def _digest(rows: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(rows):
        h.update(rows[key])
        h.update(b"\n")
    return h.hexdigest()


def _parquet(table: pa.Table, metadata: dict[str, str]) -> bytes:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _load(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# Archiving a month


@dataclass
class ArchiveReport:
    tenant_id: UUID
    month: date
    dry_run: bool
    eligible: int = 0
    held: int = 0
    archived: int = 0
    files: list[str] = field(default_factory=list)
    redone: int = 0  # half-written archives of an earlier run, deleted and redone
    changed: int = 0  # files discarded because their rows changed while they were written


_ELIGIBLE = """
SELECT e.id, clay_admin.execution_held(e.tenant_id, e.system_id, e.started_at, e.id) FROM executions e
WHERE e.lifecycle_state IN ('HOT', 'WARM', 'COLD')
  AND e.started_at >= %(start)s AND e.started_at < %(end)s
  AND e.last_accessed_at <= coalesce(%(as_of)s::timestamptz, now()) - make_interval(hours => 24 * %(days)s)
ORDER BY e.started_at, e.id
"""


def _month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _eligible(conn: psycopg.Connection, month: date, as_of: datetime | None) -> tuple[list[UUID], int]:
    start, end = _month_bounds(month)
    days = tenant_thresholds(conn).archive_after_days
    rows = conn.execute(_ELIGIBLE, {"start": start, "end": end, "as_of": as_of, "days": days}).fetchall()
    return [r[0] for r in rows if not r[1]], sum(1 for r in rows if r[1])


def archive_month(
    db: Database,
    tenant_id: UUID,
    month: date,
    store: ArchiveStore,
    *,
    enabled: bool,
    as_of: datetime | None = None,
    run_id: str = "archive",
    actor: str = "lifecycle",
    max_rows: int = MAX_ROWS_PER_FILE,
    after_write: Callable[[UUID], None] = lambda _: None,
) -> ArchiveReport:
    """Archive the tenant's executions that started in `month` (UTC) and are past the archive
    threshold; with `enabled` False, only count them (a dry run, audited as such).
    `after_write` runs between the verified file and the tombstone (tests kill the run there)."""
    month = month.replace(day=1)
    report = ArchiveReport(tenant_id=tenant_id, month=month, dry_run=not enabled)
    with db.tenant_transaction(tenant_id) as conn:
        ids, report.held = _eligible(conn, month, as_of)
        report.eligible = len(ids)
        if not enabled:
            audit.record(
                conn,
                run_id=run_id,
                action="archive",
                rows=len(ids),
                actor=actor,
                to_state="ARCHIVED",
                dry_run=True,
                detail={"month": f"{month:%Y-%m}", "held": report.held},
            )
            return report
    if enabled:
        report.redone = _discard_unfinished(db, tenant_id, store, month)
    while True:
        with db.tenant_transaction(tenant_id) as conn:
            ids, report.held = _eligible(conn, month, as_of)
        if not ids:
            return report
        batch = ids[:max_rows]
        archive_id, written = _write_and_verify(db, tenant_id, month, store, batch)
        after_write(archive_id)
        if _tombstone(db, tenant_id, month, archive_id, batch, written, as_of, run_id, actor, store):
            report.archived += len(batch)
            report.files.append(store.path(_relative(tenant_id, month, archive_id)[0]))
        else:
            report.changed += 1
            return report  # rows changed under us: the next run tries again


def _discard_unfinished(db: Database, tenant_id: UUID, store: ArchiveStore, month: date | None = None) -> int:
    """Archives left 'writing' by a run that did not finish: their files (whole or half-written)
    are deleted and the archives marked discarded; their rows were never tombstoned."""
    with db.tenant_transaction(tenant_id) as conn:
        rows = conn.execute(
            "SELECT id, month FROM lifecycle_archives WHERE status = 'writing' AND (%s::date IS NULL OR month = %s) "
            "FOR UPDATE",
            (month, month),
        ).fetchall()
        for archive_id, archive_month_ in rows:
            for relative in _relative(tenant_id, archive_month_, archive_id):
                store.delete(relative)
            conn.execute("UPDATE lifecycle_archives SET status = 'discarded' WHERE id = %s", (archive_id,))
    return len(rows)


def _write_and_verify(
    db: Database, tenant_id: UUID, month: date, store: ArchiveStore, ids: list[UUID]
) -> tuple[UUID, dict[str, bytes]]:
    with db.tenant_transaction(tenant_id) as conn:
        table = read_rows(conn, ids)
    return write_table(db, tenant_id, month, store, table)


def write_table(
    db: Database, tenant_id: UUID, month: date, store: ArchiveStore, table: pa.Table
) -> tuple[UUID, dict[str, bytes]]:
    """A new archive (state 'writing', committed first) holding `table`, written and read back verified."""
    archive_id = uuid4()
    data_path, manifest_path = _relative(tenant_id, month, archive_id)
    with db.tenant_transaction(tenant_id) as conn:
        conn.execute(
            "INSERT INTO lifecycle_archives (id, month, uri, manifest_uri, schema_version, row_count) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (archive_id, month, store.path(data_path), store.path(manifest_path), SCHEMA_VERSION, table.num_rows),
        )
    rows = canonical_rows(table)
    data = _parquet(table, {"clay.archive_id": str(archive_id), "clay.schema_version": str(SCHEMA_VERSION)})
    manifest = {
        "archive_id": str(archive_id),
        "tenant_id": str(tenant_id),
        "month": f"{month:%Y-%m}",
        "schema_version": SCHEMA_VERSION,
        "row_count": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows_sha256": _digest(rows),
        "columns": table.schema.names,
        "written_at": datetime.now(UTC).isoformat(),
    }
    store.write(data_path, data)
    store.write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())
    # Read back from the store, not from memory.
    problems = _verify_files(store, tenant_id, month, archive_id, manifest["sha256"], table.num_rows)
    back = _load(store.read(data_path) or b"")
    if problems or canonical_rows(back) != rows:
        raise ArchiveError(f"archive {data_path} did not verify after writing: {'; '.join(problems) or 'rows differ'}")
    return archive_id, rows


def _verify_files(
    store: ArchiveStore, tenant_id: UUID, month: date, archive_id: UUID, sha256: str | None, row_count: int
) -> list[str]:
    """What is wrong with an archive's file and manifest (nothing: an empty list)."""
    data_path, manifest_path = _relative(tenant_id, month, archive_id)
    data, raw_manifest = store.read(data_path), store.read(manifest_path)
    if data is None:
        return [f"{data_path}: missing"]
    if raw_manifest is None:
        return [f"{manifest_path}: missing"]
    try:
        manifest = json.loads(raw_manifest)
    except json.JSONDecodeError as error:
        return [f"{manifest_path}: not JSON ({error.msg})"]
    problems = []
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.get("sha256"):
        problems.append(f"{data_path}: SHA-256 {actual[:12]} is not the manifest's {str(manifest.get('sha256'))[:12]}")
    if sha256 is not None and manifest.get("sha256") != sha256:
        problems.append(f"{manifest_path}: SHA-256 is not the database's")
    if manifest.get("row_count") != row_count or manifest.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"{manifest_path}: row count or schema version is not the database's")
    if not problems:
        try:
            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as error:
            return [f"{data_path}: not a Parquet file ({error})"]
        if rows != row_count:
            problems.append(f"{data_path}: {rows} rows, the manifest says {row_count}")
    return problems


_TOMBSTONE = sql.SQL(
    "UPDATE executions SET user_request = %s, {cleared}, lifecycle_state = 'ARCHIVED', archive_id = %s "
    "WHERE id = ANY(%s)"
).format(
    cleared=sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in (*COLD_COLUMNS, *VECTOR_COLUMNS))
)


def _tombstone(
    db: Database,
    tenant_id: UUID,
    month: date,
    archive_id: UUID,
    ids: list[UUID],
    written: dict[str, bytes],
    as_of: datetime | None,
    run_id: str,
    actor: str,
    store: ArchiveStore,
) -> bool:
    """Clear the archived rows' content and mark the archive done, in one transaction; False (and the
    file discarded) when a row changed or stopped being eligible since it was written."""
    with db.tenant_transaction(tenant_id) as conn:
        conn.execute("SELECT 1 FROM executions WHERE id = ANY(%s) FOR UPDATE", (ids,))
        still, _ = _eligible(conn, month, as_of)
        unchanged = set(ids) <= set(still) and canonical_rows(read_rows(conn, ids)) == written
        if unchanged:
            conn.execute(_TOMBSTONE, (ARCHIVED_MARKER, archive_id, ids))
            conn.execute("DELETE FROM execution_cold_content WHERE execution_id = ANY(%s)", (ids,))
            data = store.read(_relative(tenant_id, month, archive_id)[0]) or b""
            conn.execute(
                "UPDATE lifecycle_archives SET status = 'archived', archived_at = now(), sha256 = %s, bytes = %s "
                "WHERE id = %s AND status = 'writing'",
                (hashlib.sha256(data).hexdigest(), len(data), archive_id),
            )
            audit.record(
                conn,
                run_id=run_id,
                action="archive",
                rows=len(ids),
                actor=actor,
                to_state="ARCHIVED",
                detail={"month": f"{month:%Y-%m}", "archive_id": str(archive_id)},
            )
            return True
    _discard_unfinished(db, tenant_id, store, month)
    return False


# ---------------------------------------------------------------------------------------------
# Verification, restore, prune


def verify_archives(db: Database, tenant_id: UUID, store: ArchiveStore) -> list[str]:
    """Every archived (not pruned) archive of the tenant checked against its file and manifest."""
    with db.tenant_transaction(tenant_id) as conn:
        archives = conn.execute(
            "SELECT id, month, sha256, row_count FROM lifecycle_archives WHERE status = 'archived' ORDER BY month, id"
        ).fetchall()
    problems = []
    for archive_id, month, sha256, row_count in archives:
        problems += _verify_files(store, tenant_id, month, archive_id, sha256, row_count)
    return problems


def _archived_rows(
    store: ArchiveStore, tenant_id: UUID, month: date, archive_id: UUID, sha256: str, row_count: int
) -> pa.Table:
    problems = _verify_files(store, tenant_id, month, archive_id, sha256, row_count)
    if problems:
        raise ArchiveError("; ".join(problems))
    return _load(store.read(_relative(tenant_id, month, archive_id)[0]) or b"")


def _restore_expression(column: str, pg_type: str) -> sql.Composable:
    key = sql.Literal(column)
    if pg_type in ("vector", "halfvec"):
        return sql.SQL("CASE WHEN jsonb_typeof(r.v -> {k}) = 'array' THEN (r.v -> {k})::text::{t} END").format(
            k=key, t=sql.SQL(pg_type)
        )
    return sql.SQL("(r.v ->> {k})::{t}").format(k=key, t=sql.SQL(pg_type))


def restore(
    db: Database,
    tenant_id: UUID,
    store: ArchiveStore,
    *,
    execution_ids: list[UUID] | None = None,
    archive_id: UUID | None = None,
    run_id: str = "restore",
    actor: str = "lifecycle",
) -> int:
    """Bring archived executions back (the given ids, or every row of one archive) exactly as they
    were archived; they come back WARM when archived with a compact vector, else HOT, as an access."""
    if not execution_ids and not archive_id:
        raise ArchiveError("name the executions or the archive to restore")
    with db.tenant_transaction(tenant_id) as conn:
        rows = conn.execute(
            "SELECT e.id, e.lifecycle_state, a.id, a.month, a.sha256, a.row_count FROM executions e "
            "LEFT JOIN lifecycle_archives a ON a.id = e.archive_id "
            "WHERE (e.id = ANY(%s) OR e.archive_id = %s) AND (%s::uuid IS NULL OR e.archive_id = %s)",
            (execution_ids or [], archive_id, archive_id, archive_id),
        ).fetchall()
        found = {r[0]: r for r in rows}
        missing = [str(i) for i in execution_ids or [] if i not in found]
        if missing:
            raise ArchiveError(f"no execution {missing[0]} in this tenant")
        if archive_id and not rows:
            raise ArchiveError(f"no archive {archive_id} with rows in this tenant")
        not_archived = [f"{r[0]} is {r[1]}" for r in rows if r[1] != "ARCHIVED"]
        if not_archived:
            raise ArchiveError(f"only ARCHIVED executions can be restored: {not_archived[0]}")
        types = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'public.executions'::regclass AND attname = ANY(%s)",
                (list(RESTORED),),
            ).fetchall()
        )
        restored = 0
        by_archive: dict[UUID, list[UUID]] = {}
        for r in rows:
            by_archive.setdefault(r[2], []).append(r[0])
        for archive, ids in by_archive.items():
            _, _, _, month, sha256, row_count = found[ids[0]]
            table = _archived_rows(store, tenant_id, month, archive, sha256, row_count)
            wanted = {str(i) for i in ids}
            values = [
                {c: _jsonable(row[c]) for c in RESTORED} | {"id": row["id"]}
                for row in table.to_pylist()
                if row["id"] in wanted
            ]
            if len(values) != len(wanted):
                raise ArchiveError(f"archive {archive} does not hold every execution asked for")
            statement = sql.SQL(
                "UPDATE executions e SET {sets}, lifecycle_state = CASE WHEN (r.v -> 'request_embedding_compact') "
                "IS NOT NULL AND jsonb_typeof(r.v -> 'request_embedding_compact') = 'array' THEN 'WARM' ELSE 'HOT' END, "
                "archive_id = NULL, last_accessed_at = now(), access_count = coalesce(e.access_count, 0) + 1 "
                "FROM jsonb_array_elements(%s) AS r(v) WHERE e.id = (r.v ->> 'id')::uuid AND e.archive_id = %s"
            ).format(
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c), _restore_expression(c, types[c])) for c in RESTORED
                )
            )
            restored += conn.execute(statement, (Jsonb(values), archive)).rowcount
            audit.record(
                conn,
                run_id=run_id,
                action="restore",
                rows=len(values),
                actor=actor,
                from_state="ARCHIVED",
                detail={"archive_id": str(archive)},
            )
    return restored


@dataclass
class PruneReport:
    tenant_id: UUID
    dry_run: bool
    archives: int = 0
    rows: int = 0
    held_archives: int = 0
    files_deleted: int = 0


_DUE = """
SELECT a.id, a.month, (SELECT count(*) FROM executions e WHERE e.archive_id = a.id AND e.lifecycle_state = 'ARCHIVED'),
       EXISTS (SELECT 1 FROM executions e WHERE e.archive_id = a.id AND e.lifecycle_state = 'ARCHIVED'
               AND clay_admin.execution_held(e.tenant_id, e.system_id, e.started_at, e.id))
FROM lifecycle_archives a
WHERE a.status = 'archived' AND clay_admin.archive_retained_until(a.id) <= now()
ORDER BY a.month, a.id
"""


def prune(
    db: Database,
    tenant_id: UUID,
    store: ArchiveStore,
    *,
    enabled: bool,
    run_id: str = "prune",
    actor: str = "lifecycle",
) -> PruneReport:
    """Archives whose retention period has passed: their rows become PRUNED tombstones (the database
    refuses it inside the period or under a hold), then the files go. An archive holding a row under
    a hold is kept whole. Files of archives pruned or discarded by a run that died are deleted too."""
    report = PruneReport(tenant_id=tenant_id, dry_run=not enabled)
    with db.tenant_transaction(tenant_id) as conn:
        due = conn.execute(_DUE).fetchall()
    for archive_id, month, rows, held in due:
        if held:
            report.held_archives += 1
            continue
        report.archives += 1
        report.rows += rows
        if not enabled:
            continue
        with db.tenant_transaction(tenant_id) as conn:
            conn.execute(
                "UPDATE executions SET lifecycle_state = 'PRUNED' WHERE archive_id = %s AND lifecycle_state = 'ARCHIVED'",
                (archive_id,),
            )
            conn.execute(
                "UPDATE lifecycle_archives SET status = 'pruned', pruned_at = now() WHERE id = %s", (archive_id,)
            )
            audit.record(
                conn,
                run_id=run_id,
                action="prune",
                rows=rows,
                actor=actor,
                from_state="ARCHIVED",
                to_state="PRUNED",
                detail={"archive_id": str(archive_id), "month": f"{month:%Y-%m}"},
            )
    with db.tenant_transaction(tenant_id) as conn:
        if not enabled:
            audit.record(
                conn,
                run_id=run_id,
                action="prune",
                rows=report.rows,
                actor=actor,
                from_state="ARCHIVED",
                to_state="PRUNED",
                dry_run=True,
                detail={"archives": report.archives, "held": report.held_archives},
            )
            return report
    report.files_deleted = delete_unused_files(db, tenant_id, store)
    return report


def delete_unused_files(db: Database, tenant_id: UUID, store: ArchiveStore) -> int:
    """Delete the files of the tenant's pruned and discarded archives still in the store (a run that
    died after its commit); returns how many files went."""
    with db.tenant_transaction(tenant_id) as conn:
        gone = conn.execute(
            "SELECT id, month FROM lifecycle_archives WHERE status IN ('pruned', 'discarded')"
        ).fetchall()
    return sum(
        store.delete(relative) for archive_id, month in gone for relative in _relative(tenant_id, month, archive_id)
    )
