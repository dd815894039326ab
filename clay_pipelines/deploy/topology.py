"""Start, stop and report the one-host deployment: every process with its own log and pid file.

    STATE/deploy/logs/<name>.log      what the process printed
    STATE/deploy/run/<name>.json      its pid and start time (a pid reused later is not taken for it)
    STATE/deploy/deployment.json      what the deployment set up: ports, the namespace, PostgreSQL
    STATE/deploy/dagster_home/        the deployment's dagster.yaml and workspace.yaml
    STATE/deploy/redis/               Redis's folder and password file (mode 0600)

Processes start in order (Redis, the code server, the webserver, the daemon, the workers), each
waited for until it answers; if one does not, those already started are stopped again and the
error names the process and its log. Stopping goes the other way: SIGTERM to each process group,
SIGKILL after a grace period, then the namespace and (if the deployment started it) PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from clay_pipelines import settings
from clay_pipelines.deploy import namespaces

Say = Callable[[str], None]
STOP_GRACE_SECONDS = 20.0
START_TIMEOUT_SECONDS = 180.0
# Stopping order: nothing new is launched (daemon), nothing new is asked (webserver), then the rest.
STOP_ORDER = ("daemon", "webserver", "worker", "code-server", "redis")


class DeployError(RuntimeError):
    """A deployment that cannot be started or stopped as asked; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def current(cls) -> Layout:
        return cls(settings.state_dir() / "deploy")

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def record_path(self) -> Path:
        return self.root / "deployment.json"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.json"

    def worker_state(self, name: str) -> Path:
        return self.root / "workers" / name


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    started: float  # the kernel's start time of pid: tells it from a later process reusing the pid
    log: str
    isolated: bool = False  # in its own network and mount namespace

    def process(self) -> psutil.Process | None:
        """The process, if it still runs."""
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE:
                return process
        return None


@dataclass(frozen=True)
class Deployment:
    """What `deploy local` set up, kept in deployment.json for stop and status."""

    host: str
    ports: dict[str, int]
    workers: int
    postgres_started: bool
    namespace: dict[str, str] | None  # WorkerNamespace fields, when one was made
    namespace_note: str  # why there is none, when there is none
    redis_password: str
    started_at: float = 0.0  # seconds since the epoch

    def broker_url(self, host: str) -> str:
        return f"redis://:{quote(self.redis_password)}@{host}:{self.ports['redis']}/0"


# ---------------------------------------------------------------------------------------------
# Records on disk


def records(layout: Layout) -> list[ProcessRecord]:
    folder = layout.root / "run"
    if not folder.exists():
        return []
    found = [ProcessRecord(**json.loads(path.read_text())) for path in sorted(folder.glob("*.json"))]
    return sorted(found, key=lambda r: next(i for i, kind in enumerate(STOP_ORDER) if r.name.startswith(kind)))


def read_deployment(layout: Layout) -> Deployment | None:
    if not layout.record_path.exists():
        return None
    return Deployment(**json.loads(layout.record_path.read_text()))


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------------------------
# Launching one process


def launch(
    layout: Layout, name: str, command: list[str], environment: dict[str, str], isolated: bool = False
) -> ProcessRecord:
    """Start `command` in a session of its own (so that stop can end its whole group), output to its log."""
    import subprocess

    log = layout.log(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        output.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} clay deploy: {' '.join(command)}\n".encode())
        output.flush()
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=settings.PROJECT_ROOT,
            start_new_session=True,
        )
    record = ProcessRecord(name, child.pid, psutil.Process(child.pid).create_time(), str(log), isolated)
    write_private(layout.pid_file(name), json.dumps(asdict(record)))
    return record


def _last_line(log: str) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return "(empty log)"


def wait_until(
    record: ProcessRecord, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_SECONDS
) -> None:
    """Poll `ready` until it holds; DeployError if the process dies or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.process() is None:
            raise DeployError(f"{record.name} exited while starting: {_last_line(record.log)} (log {record.log})")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.5)
    raise DeployError(
        f"{record.name} did not {what} within {timeout:.0f} s: {_last_line(record.log)} (log {record.log})"
    )


def log_contains(record: ProcessRecord, text: str) -> Callable[[], bool]:
    return lambda: text in Path(record.log).read_text(errors="replace")


# ---------------------------------------------------------------------------------------------
# Stopping


def stop_record(
    record: ProcessRecord, layout: Layout, grace_seconds: float = STOP_GRACE_SECONDS
) -> tuple[str, list[int]]:
    """SIGTERM the process's group and its descendants, SIGKILL what remains after the grace period.
    Returns what happened and the pids of the tree that was stopped."""
    from clay_pipelines.processes import stop_tree

    process = record.process()
    outcome, pids = "was not running", []
    if process is not None:
        pids, killed = stop_tree(record.pid, grace_seconds)
        outcome = f"killed after {grace_seconds:.0f} s" if killed else "stopped"
    layout.pid_file(record.name).unlink(missing_ok=True)
    return outcome, pids


def _settle_runs(layout: Layout, deployment: Deployment, pids: list[int], say: Say) -> None:
    """Runs whose run worker (a child of the code server) was stopped with it would stay STARTED
    and hold their pool slots: fail them and free the slots, as `clay dev` does when it stops."""
    import dagster as dg

    from clay_pipelines.deploy.local import environment_for_commands
    from clay_pipelines.runner import settle_runs_of_workers

    os.environ["DAGSTER_PG_URL"] = environment_for_commands()["DAGSTER_PG_URL"]
    with dg.DagsterInstance.from_config(str(layout.home)) as dagster_instance:
        ended = settle_runs_of_workers(
            dagster_instance, pids, deployment.started_at, "Its run worker was stopped by `clay deploy stop`."
        )
    if ended:
        say(f"marked failed (their run worker was stopped): run {', '.join(ended)}")


def stop(layout: Layout, say: Say) -> bool:
    """Stop everything the deployment started; returns whether there was anything. Idempotent."""
    found = records(layout)
    deployment = read_deployment(layout)
    run_workers: list[int] = []
    for record in found:
        outcome, pids = stop_record(record, layout)
        say(f"{record.name} (pid {record.pid}): {outcome}")
        if record.name == "code-server":
            run_workers = [pid for pid in pids if pid != record.pid]
    if run_workers and deployment is not None:
        with contextlib.suppress(Exception):  # the daemon's run monitoring fails them at the next start
            _settle_runs(layout, deployment, run_workers, say)
    if deployment is not None and deployment.namespace:
        namespace = namespaces.WorkerNamespace(**deployment.namespace)
        if namespace.delete():
            say(f"network namespace {namespace.name} and veth {namespace.host_veth}: removed")
    if deployment is not None and deployment.postgres_started and not settings.current().database_url:
        from clay_pipelines.db import embedded

        if embedded.stop(settings.pgdata_dir()):
            say(f"embedded PostgreSQL at {settings.pgdata_dir()}: stopped")
    layout.record_path.unlink(missing_ok=True)
    return bool(found) or deployment is not None


# ---------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True)
class ProcessStatus:
    record: ProcessRecord
    running: bool

    def line(self) -> str:
        where = " (own network and mount namespace)" if self.record.isolated else ""
        state = "running" if self.running else "NOT RUNNING"
        return f"{self.record.name:<12} {state:<12} pid {self.record.pid:<8} log {self.record.log}{where}"


def status(layout: Layout) -> list[ProcessStatus]:
    return [ProcessStatus(r, r.process() is not None) for r in records(layout)]


# ---------------------------------------------------------------------------------------------
# Ports


def refuse_taken_ports(host: str, ports: dict[str, int]) -> None:
    for owner, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                variable = {"webserver": "CLAY_DEPLOY_WEBSERVER_PORT", "code server": "CLAY_DEPLOY_GRPC_PORT"}.get(
                    owner, "CLAY_DEPLOY_REDIS_PORT"
                )
                raise DeployError(
                    f"port {port} on {host} (the {owner}) is taken ({error.strerror}): free it or set {variable}"
                ) from error


@contextlib.contextmanager
def stopped_on_failure(layout: Layout) -> Iterator[None]:
    """Whatever fails while starting leaves nothing half-running behind."""
    try:
        yield
    except BaseException:
        stop(layout, lambda line: None)
        raise


def new_password() -> str:
    return secrets.token_urlsafe(24)
