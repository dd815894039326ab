"""Erasure on request: a person's content (user_request, input and output data, feedback, suggested
improvements, and the vector computed from the request) erased from every state, archives included.

The row stays with its other columns (status, cost, times, satisfaction, receipts and hashes), so
counts, rollups and receipt chains still add up; content_erased_at says when. An archived row's file
is rewritten without its content (a new verified archive replaces the old, which is deleted). A row
under a legal hold is refused by the database. Every erasure is audited.
"""

from __future__ import annotations

from uuid import UUID

from psycopg import sql

from clay_pipelines.db import Database
from clay_pipelines.lifecycle import archive as ar
from clay_pipelines.lifecycle import audit
from clay_pipelines.lifecycle.policy import COLD_COLUMNS, ERASED_MARKER, VECTOR_COLUMNS


class ErasureError(ValueError):
    """An erasure that cannot be done as asked."""


_ERASE = sql.SQL(
    "UPDATE executions SET user_request = %s, {cleared}, content_erased_at = now() WHERE id = ANY(%s)"
).format(
    cleared=sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in (*COLD_COLUMNS, *VECTOR_COLUMNS))
)


def erase(
    db: Database, tenant_id: UUID, execution_ids: list[UUID], store: ar.ArchiveStore, *, by: str, reason: str
) -> dict[str, int]:
    """Erase these executions' content; returns how many per state they were in."""
    if not by.strip() or not reason.strip():
        raise ErasureError("an erasure needs who asks (--by) and why (--reason)")
    ids = list(dict.fromkeys(execution_ids))
    with db.tenant_transaction(tenant_id) as conn:
        rows = conn.execute(
            "SELECT e.id, e.lifecycle_state, e.archive_id, a.month, a.sha256, a.row_count FROM executions e "
            "LEFT JOIN lifecycle_archives a ON a.id = e.archive_id WHERE e.id = ANY(%s)",
            (ids,),
        ).fetchall()
        held = conn.execute(
            "SELECT id FROM executions e WHERE id = ANY(%s) "
            "AND clay_admin.execution_held(e.tenant_id, e.system_id, e.started_at, e.id)",
            (ids,),
        ).fetchall()
    if held:
        raise ErasureError(f"execution {held[0][0]} is under a legal hold: its content cannot be erased")
    found = {r[0]: r for r in rows}
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ErasureError(f"no execution {missing[0]} in this tenant")
    archived: dict[UUID, list[UUID]] = {}
    for r in rows:
        if r[1] == "ARCHIVED":
            archived.setdefault(r[2], []).append(r[0])
    for archive_id, in_archive in archived.items():
        month, sha256, row_count = found[in_archive[0]][3:]
        _rewrite_archive(db, tenant_id, store, archive_id, month, sha256, row_count, set(in_archive))
    with db.tenant_transaction(tenant_id) as conn:
        conn.execute(_ERASE, (ERASED_MARKER, ids))
        conn.execute("DELETE FROM execution_cold_content WHERE execution_id = ANY(%s)", (ids,))
        by_state: dict[str, int] = {}
        for r in rows:
            by_state[r[1]] = by_state.get(r[1], 0) + 1
        audit.record(
            conn,
            run_id="erase",
            action="erase",
            rows=len(ids),
            actor=by,
            detail={"reason": reason, "by_state": by_state, "executions": [str(i) for i in ids]},
        )
    # The old archives' files go once the new ones are in place.
    ar.delete_unused_files(db, tenant_id, store)
    return by_state


def _rewrite_archive(db, tenant_id, store, archive_id, month, sha256, row_count, erased: set[UUID]) -> None:  # noqa: ANN001
    """A new archive of the same rows with the erased rows' content blanked, verified, swapped in
    for the old one in one transaction (the old is then discarded)."""
    table = ar._archived_rows(store, tenant_id, month, archive_id, sha256, row_count)
    wanted = {str(i) for i in erased}
    columns = {name: table.column(name).to_pylist() for name in table.schema.names}
    for i, execution_id in enumerate(columns["id"]):
        if execution_id in wanted:
            columns["user_request"][i] = ERASED_MARKER
            for name in (*COLD_COLUMNS, *VECTOR_COLUMNS):
                columns[name][i] = None
    blanked = ar.pa.table({n: ar.pa.array(v, type=table.schema.field(n).type) for n, v in columns.items()})
    new_id, _ = ar.write_table(db, tenant_id, month, store, blanked)
    with db.tenant_transaction(tenant_id) as conn:
        conn.execute(
            "UPDATE executions SET archive_id = %s WHERE archive_id = %s AND lifecycle_state = 'ARCHIVED'",
            (new_id, archive_id),
        )
        data = store.read(ar._relative(tenant_id, month, new_id)[0]) or b""
        conn.execute(
            "UPDATE lifecycle_archives SET status = 'archived', archived_at = "
            "(SELECT archived_at FROM lifecycle_archives WHERE id = %s), sha256 = %s, bytes = %s WHERE id = %s",
            (archive_id, ar.hashlib.sha256(data).hexdigest(), len(data), new_id),
        )
        conn.execute("UPDATE lifecycle_archives SET status = 'discarded' WHERE id = %s", (archive_id,))
