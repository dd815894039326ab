"""The Celery app the workers run (`celery -A clay_pipelines.deploy.celery_app worker`).

dagster-celery's own app module reads its broker from a generated config module; this one reads
the project's settings (CLAY_CELERY_BROKER_URL, CLAY_CELERY_BACKEND_URL) and the same Celery settings
the executor sends with (policies.CELERY_SETTINGS), and registers dagster-celery's execute_plan task.
It also writes, per task, which step of which run this worker executes: the worker's log names its
steps, and says at start which network namespace it is in and where it reaches the database.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from celery import signals
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import unpack_value
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from clay_pipelines import settings
from clay_pipelines.policies import CELERY_SETTINGS

_log = logging.getLogger("clay.worker")

app = make_app(
    CeleryExecutor.for_cli(
        broker=settings.celery_broker_url(), backend=settings.celery_backend_url(), config_source=CELERY_SETTINGS
    ).app_args()
)
execute_plan = create_task(app)


def network_namespace() -> str:
    """This process's network namespace, as the kernel names it (net:[inode])."""
    return os.readlink("/proc/self/ns/net")


def _where() -> str:
    return f"pid {os.getpid()}, host {socket.gethostname()}, network namespace {network_namespace()}"


@signals.worker_ready.connect
def _say_where(sender: Any = None, **_: Any) -> None:
    """One line at start: the namespace, and the database's address as the server sees it."""
    import psycopg

    url = settings.env("CLAY_APP_DATABASE_URL") or ""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute("SELECT inet_server_addr()::text, inet_client_addr()::text").fetchone()
        reached = f"server {row[0]} from client {row[1]}" if row and row[0] else "over its unix socket"
    except Exception as error:  # the worker still takes tasks; the step will say what fails
        reached = f"NOT reachable ({type(error).__name__}: {' '.join(str(error).split())})"
    broker = urlsplit(settings.celery_broker_url())
    _log.info(
        "clay worker %s ready: %s; state folder %s; database %s; broker %s:%s",
        getattr(sender, "hostname", "?"),
        _where(),
        settings.state_dir(),
        reached,
        broker.hostname,
        broker.port,
    )


@signals.task_prerun.connect
def _say_step(task_id: str = "", task: Any = None, kwargs: dict | None = None, **_: Any) -> None:
    """Names the step a task executes, and the run, before it starts."""
    packed = (kwargs or {}).get("execute_step_args_packed")
    if packed is None:
        return
    args = unpack_value(packed, as_type=ExecuteStepArgs)
    steps = ",".join(args.step_keys_to_execute or [])
    hostname = getattr(getattr(task, "request", None), "hostname", "?")
    _log.info("clay step %s of run %s on worker %s (%s)", steps, args.run_id, hostname, _where())
