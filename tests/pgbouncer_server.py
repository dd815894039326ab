"""A real PgBouncer in transaction-pooling mode in front of the tests' embedded PostgreSQL.

Its own configuration and auth file in a folder of its own; it listens on 127.0.0.1 at a free port
and reaches the server through the server's unix socket directory. Clients authenticate to it with
SCRAM-SHA-256 (each role's password in the auth file, in plain text, which PgBouncer needs to
verify SCRAM); PgBouncer logs in to the server as the same role over the socket, which the embedded
server trusts (initdb --auth-local=trust). PgBouncer refuses to run as root: as root it runs as the
user that owns the server's data.

Debian's package is pgbouncer 1.18, which keeps no prepared statements across transactions; a newer
PgBouncer is told the same (max_prepared_statements = 0) so that the tests mean the same thing.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from clay_pipelines.deploy.local import free_port

MISSING = "PgBouncer is not installed: install it to run these tests (`apt-get install pgbouncer`, Debian's 1.18)"
ADMIN_USER = "bouncer_admin"


def binary() -> str | None:
    """The pgbouncer program: on the PATH, or where Debian puts it (/usr/sbin is not on every PATH)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def version(program: str) -> tuple[int, int]:
    first_line = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", first_line)
    if not match:
        raise RuntimeError(f"cannot read PgBouncer's version from {first_line!r}")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Pool:
    """One entry of [databases]: clients ask for `alias`; PgBouncer keeps at most pool_size server
    connections per user to `database`."""

    alias: str
    database: str
    pool_size: int


@dataclass
class PgBouncer:
    folder: Path
    port: int
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]

    def url(self, user: str, alias: str) -> str:
        return f"postgresql://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/{alias}"

    def show(self, what: str) -> list[dict[str, object]]:
        """A SHOW command of PgBouncer's admin console (STATS, POOLS, SERVERS, ...), as dicts."""
        with psycopg.connect(self.url(ADMIN_USER, "pgbouncer"), autocommit=True, prepare_threshold=None) as conn:
            cursor = conn.execute(f"SHOW {what}")  # type: ignore[arg-type] - an admin console verb, not SQL
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def transactions(self, alias: str) -> int:
        """Transactions PgBouncer has passed to the server for `alias` since it started."""
        return sum(int(row["total_xact_count"]) for row in self.show("STATS") if row["database"] == alias)

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _configuration(socket_dir: str, pools: list[Pool], port: int, folder: Path, newer: bool) -> str:
    databases = "\n".join(f"{p.alias} = host={socket_dir} dbname={p.database} pool_size={p.pool_size}" for p in pools)
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",  # TCP only: no socket file of ours to collide with anyone's
        "auth_type": "scram-sha-256",
        "auth_file": str(folder / "userlist.txt"),
        "admin_users": ADMIN_USER,
        "pool_mode": "transaction",
        "max_client_conn": "100",
        "default_pool_size": "2",
        "logfile": str(folder / "pgbouncer.log"),
        "pidfile": str(folder / "pgbouncer.pid"),
    }
    if newer:
        settings["max_prepared_statements"] = "0"  # as 1.18: none kept across transactions
    lines = "\n".join(f"{name} = {value}" for name, value in settings.items())
    return f"[databases]\n{databases}\n\n[pgbouncer]\n{lines}\n"


def _run_as(pgdata: Path) -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(pgdata.stat().st_uid)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, folder: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = folder / "pgbouncer.log"
            said = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {said}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"pgbouncer did not listen on 127.0.0.1:{port} within 10 s")


@contextmanager
def running(socket_dir: str, pgdata: Path, pools: list[Pool], users: list[str]) -> Iterator[PgBouncer]:
    """PgBouncer for `pools`, letting in `users` (PostgreSQL roles) and the admin console's user."""
    program = binary()
    if program is None:
        raise RuntimeError(MISSING)
    folder = Path(tempfile.mkdtemp(prefix="clay-pgbouncer-"))
    passwords = {user: secrets.token_urlsafe(16) for user in [*users, ADMIN_USER]}
    (folder / "userlist.txt").write_text("".join(f'"{user}" "{pw}"\n' for user, pw in passwords.items()))
    (folder / "userlist.txt").chmod(0o600)
    port = free_port()
    (folder / "pgbouncer.ini").write_text(_configuration(socket_dir, pools, port, folder, version(program) >= (1, 21)))
    command = [program, "--quiet", str(folder / "pgbouncer.ini")]
    owner = _run_as(pgdata)
    if owner is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command[1:1] = ["-u", owner.pw_name]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_listening(process, port, folder)
        yield PgBouncer(folder, port, passwords, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
