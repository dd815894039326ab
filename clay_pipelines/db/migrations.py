"""Ordered SQL migrations (sql/NNN_name.sql), each applied in its own transaction and recorded.

Applying twice is a no-op; a migration that fails is rolled back whole and nothing after it runs;
a migration edited after it was applied is refused (its checksum no longer matches); a migration
that controls transactions itself (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...) is refused before
anything runs, since a COMMIT inside it would make "rolled back whole" untrue.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from clay_pipelines import settings

_log = logging.getLogger(__name__)

_FILENAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")
# Serialises concurrent `clay db migrate` calls (and the test suite's parallel fixtures).
_ADVISORY_LOCK_KEY = 0x434C4159  # "CLAY"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


# Statements that begin, end or split a transaction (the server's own words for them).
_TRANSACTION_CONTROL = re.compile(
    r"(BEGIN|COMMIT|ROLLBACK|END|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(
    r"--[^\n]*"  # line comment
    r"|/\*.*?\*/"  # block comment (not nested: PostgreSQL allows it, migrations here do not need it)
    r"|(?P<dollar>\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$).*?(?P=dollar)"  # dollar-quoted body (DO, functions)
    r"|[EeUu]?&?'(?:[^'\\]|''|\\.)*'"  # string constant
    r'|"(?:[^"]|"")*"',  # quoted identifier
    re.DOTALL,
)


def _blank_quoted(text: str) -> str:
    """The SQL with comments, strings, quoted identifiers and dollar-quoted bodies blanked out (newlines
    kept, so positions and line numbers stay), leaving only what the server parses as statements."""
    return _QUOTED.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _statements(text: str) -> list[tuple[int, str]]:
    """(line number, text) of each top-level statement. A SQL-standard function body (BEGIN ATOMIC ...
    END) holds semicolons of its own: it stays inside its CREATE statement."""
    blanked = _blank_quoted(text)
    statements: list[tuple[int, str]] = []
    start, open_bodies = 0, 0
    for match in re.finditer(r";|\bBEGIN\s+ATOMIC\b|\bCASE\b|\bEND\b", blanked, re.IGNORECASE):
        token = match.group(0).upper()
        if token.startswith("BEGIN") or (token == "CASE" and open_bodies):
            open_bodies += 1
        elif token == "END" and open_bodies:
            open_bodies -= 1
        elif token == ";" and not open_bodies:
            statements.append((start, blanked[start : match.start()]))
            start = match.end()
    statements.append((start, blanked[start:]))
    return [
        (blanked.count("\n", 0, offset + len(body) - len(body.lstrip())) + 1, body.strip())
        for offset, body in statements
        if body.strip()
    ]


def _refuse_transaction_control(path: Path, text: str) -> None:
    for line, statement in _statements(text):
        if match := _TRANSACTION_CONTROL.match(statement):
            raise MigrationError(
                f"{path.name}:{line}: {match.group(1).upper()} - a migration is applied as one transaction and "
                "must not begin, end or split it (put what must commit first into a migration of its own)"
            )


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def discover(sql_dir: Path = settings.SQL_DIR) -> list[Migration]:
    migrations: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNN_lowercase_name.sql")
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(f"{path}: version {version:03d} is also used by {migrations[version].path.name}")
        text = path.read_text()
        _refuse_transaction_control(path, text)
        migrations[version] = Migration(version, match["name"], path, text)
    return [migrations[v] for v in sorted(migrations)]


def _ensure_ledger(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS public.schema_migrations (
          version integer PRIMARY KEY,
          name text NOT NULL,
          checksum text NOT NULL,
          applied_at timestamp with time zone NOT NULL DEFAULT now()
        )
        """
    )


def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, str, datetime]]:
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM public.schema_migrations").fetchall()
    return {version: (name, checksum, applied_at) for version, name, checksum, applied_at in rows}


def apply_migrations(admin_url: str, sql_dir: Path = settings.SQL_DIR) -> list[Migration]:
    """Apply every pending migration in order; returns those applied by this call."""
    migrations = discover(sql_dir)
    newly_applied: list[Migration] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            _ensure_ledger(conn)
            applied = _applied(conn)
            for migration in migrations:
                if migration.version in applied:
                    _, checksum, _ = applied[migration.version]
                    if checksum != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} was edited after it was applied; "
                            "add a new migration instead of changing an applied one"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)  # type: ignore[arg-type] - several statements, no parameters
                        # Migrations switch to the owner role; the ledger belongs to the migrating user.
                        conn.execute("RESET ROLE")
                        conn.execute(
                            "INSERT INTO public.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as error:
                    detail = error.diag.message_primary or str(error)
                    raise MigrationError(
                        f"{migration.path.name} failed and was rolled back, nothing of it applied: {detail}"
                    ) from error
                _log.info("applied %s", migration.path.name)
                newly_applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return newly_applied


def migration_status(admin_url: str, sql_dir: Path = settings.SQL_DIR) -> list[MigrationStatus]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()
        applied = _applied(conn) if exists and exists[0] else {}
    return [
        MigrationStatus(m.version, m.name, applied[m.version][2] if m.version in applied else None)
        for m in discover(sql_dir)
    ]
