"""`clay deploy local`: the production topology as real processes on loopback, a backfill whose steps
run on two Celery workers (one in its own network and mount namespace), and what an operator tries:
start twice, a port taken, a worker that dies, stop twice.

One deployment for the module (starting it takes a minute on two cores); the tests run in order and
the last one stops it. Its own state folder, database and ports: nothing is shared with the other
tests' server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from clay_pipelines.deploy import namespaces
from clay_pipelines.deploy.local import side_by_side_environment

DAYS = ("2026-01-11", "2026-01-12", "2026-01-13", "2026-01-14")
STEP = "routing__request_embeddings"


@dataclass
class Site:
    state: Path
    environment: dict[str, str]

    def clay(self, *args: str, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clay_pipelines.cli", *args],
            capture_output=True,
            text=True,
            env={**self.environment, **extra},
            timeout=timeout,
        )

    def log(self, name: str) -> str:
        return (self.state / "deploy" / "logs" / f"{name}.log").read_text(errors="replace")

    def pid(self, name: str) -> int:
        import json

        return json.loads((self.state / "deploy" / "run" / f"{name}.json").read_text())["pid"]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    state = Path(tempfile.mkdtemp(prefix="clay-deploy-"))
    deployed = Site(state, side_by_side_environment(state))
    try:
        for command in (["db", "migrate"], ["seed", "--anchor", "2026-01-15"]):
            done = deployed.clay(*command)
            assert done.returncode == 0, done.stderr
        yield deployed
    finally:
        deployed.clay("deploy", "stop")
        deployed.clay("db", "stop")
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def started(site: Site) -> subprocess.CompletedProcess[str]:
    done = site.clay("deploy", "local", "--workers", "2", "--paused")
    assert done.returncode == 0, done.stderr
    return done


def test_deploy_local_starts_every_process_with_its_own_log(site: Site, started) -> None:
    names = ["redis", "code-server", "webserver", "daemon", "worker-1", "worker-2"]
    for name in names:
        assert re.search(
            rf"^{name}\s+pid \d+\s+log {re.escape(str(site.state))}/deploy/logs/{name}.log", started.stdout, re.M
        )
    status = site.clay("deploy", "status")
    assert status.returncode == 0, status.stdout
    assert sorted(re.findall(r"^(\S+)\s+running ", status.stdout, re.M)) == sorted(names)
    instance = (site.state / "deploy" / "dagster_home" / "dagster.yaml").read_text()
    assert "QueuedRunCoordinator" in instance and "clay/payroll_tenant" in instance
    workspace = (site.state / "deploy" / "dagster_home" / "workspace.yaml").read_text()
    assert "grpc_server" in workspace and site.environment["CLAY_DEPLOY_GRPC_PORT"] in workspace
    # The daemon and the webserver load the code from the gRPC server, not in their own processes.
    assert "clay_pipelines.definitions" not in " ".join(psutil_cmdline(site.pid("webserver")))
    assert "clay_pipelines.definitions" not in " ".join(psutil_cmdline(site.pid("daemon")))


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    return psutil.Process(pid).cmdline()


def _admin_url(site: Site) -> str:
    return f"postgresql://postgres@/clay?host={site.state / 'pgdata'}&port={site.environment['CLAY_PG_PORT']}"


def _embedding_counts(site: Site) -> tuple[int, int]:
    """Executions of DAYS without a request vector, and with one."""
    with psycopg.connect(_admin_url(site)) as conn:
        return conn.execute(
            "SELECT count(*) FILTER (WHERE request_embedding IS NULL), count(*) FILTER (WHERE request_embedding IS NOT NULL)"
            " FROM executions WHERE started_at >= %s AND started_at < %s::date + 1",
            (DAYS[0], DAYS[-1]),
        ).fetchone()


def test_backfill_steps_ran_on_both_workers_one_in_its_own_namespaces(site: Site, started) -> None:
    with psycopg.connect(_admin_url(site)) as conn:  # the backfill has these days' vectors to write
        conn.execute(
            "UPDATE executions SET request_embedding = NULL, request_embedding_model = NULL"
            " WHERE started_at >= %s AND started_at < %s::date + 1",
            (DAYS[0], DAYS[-1]),
        )
    missing, _ = _embedding_counts(site)
    assert missing > 20
    done = site.clay("deploy", "backfill", "request_embeddings", "--from", DAYS[0], "--to", DAYS[-1], "--wait", "900")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\s+(\d{4}-\d\d-\d\d)\s+(\w+)\s+run (\w+)\s+on (\S+)$", done.stdout, re.M)
    assert [(day, status) for day, status, _, _ in rows] == [(day, "SUCCESS") for day in DAYS]

    # The event log (Dagster's record) says which worker ran each run's step ...
    assert _embedding_counts(site)[0] == 0  # the backfill did its work: every execution of those days has a vector
    by_event_log = {run: worker.split("@")[0] for _, _, run, worker in rows}
    assert set(by_event_log.values()) == {"worker-1", "worker-2"}, done.stdout
    # ... and each worker's own log names the steps it ran, the same ones.
    for worker in ("worker-1", "worker-2"):
        named = set(re.findall(rf"clay step {STEP} of run (\w{{8}})[\w-]* on worker {worker}@", site.log(worker)))
        assert named == {run for run, name in by_event_log.items() if name == worker}

    isolation = namespaces.probe()
    if isolation is not None:
        assert "namespaces are not available here" in started.stdout
        print(f"worker-2 ran without namespaces: {isolation}")
        return
    # worker-2: another network namespace, reaching PostgreSQL and Redis through the veth only ...
    worker_pid = site.pid("worker-2")
    assert os.readlink(f"/proc/{worker_pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{worker_pid}/ns/net") in site.log("worker-2")
    assert re.search(r"database server 10\.200\.\d+\.\d+/32 from client 10\.200\.\d+\.\d+/32", site.log("worker-2"))
    # ... and another mount namespace, in which the database's files and socket are not there.
    pgdata = site.state / "pgdata"
    assert (pgdata / "PG_VERSION").exists()
    assert not Path(f"/proc/{worker_pid}/root{pgdata}/PG_VERSION").exists()
    assert not list(Path(f"/proc/{worker_pid}/root{pgdata}").glob(".s.PGSQL.*"))
    assert not Path(f"/proc/{worker_pid}/root{site.state}/deploy/env").exists()  # Redis's password
    # What it must share it sees: the payroll inbox, the same files as on the host.
    inbox = site.state / "world" / "payroll" / "inbox"
    seen = sorted(p.name for p in Path(f"/proc/{worker_pid}/root{inbox}").rglob("*.pdf"))
    assert seen and seen == sorted(p.name for p in inbox.rglob("*.pdf"))
    assert "database server 127.0.0.1/32" in site.log("worker-1")


def test_start_when_running_is_refused_in_one_line(site: Site, started) -> None:
    again = site.clay("deploy", "local", "--workers", "2")
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0
    assert "is already there (running: daemon, webserver, worker-1, worker-2, code-server, redis)" in again.stderr
    assert "`clay deploy stop` first" in again.stderr


def test_a_port_taken_is_refused_before_anything_starts(site: Site, started) -> None:
    other_state = Path(tempfile.mkdtemp(prefix="clay-deploy-other-"))
    try:
        other = Site(other_state, side_by_side_environment(other_state))
        taken = site.environment["CLAY_DEPLOY_WEBSERVER_PORT"]
        done = other.clay("deploy", "local", CLAY_DEPLOY_WEBSERVER_PORT=taken)
        assert done.returncode == 1
        assert f"port {taken} on 127.0.0.1 (the webserver) is taken" in done.stderr
        assert "set CLAY_DEPLOY_WEBSERVER_PORT" in done.stderr
        assert not (other_state / "deploy" / "run").exists()
        assert not (other_state / "pgdata").exists()
    finally:
        shutil.rmtree(other_state, ignore_errors=True)


def test_a_dead_worker_is_reported_and_stop_ends_everything_twice(site: Site, started) -> None:
    import psutil

    pids = {name: site.pid(name) for name in ("redis", "code-server", "webserver", "daemon", "worker-1", "worker-2")}
    os.kill(pids["worker-1"], signal.SIGKILL)
    time.sleep(1)
    status = site.clay("deploy", "status")
    assert status.returncode == 1
    assert re.search(r"^worker-1\s+NOT RUNNING", status.stdout, re.M)
    assert "not running: worker-1" in status.stdout

    stopped = site.clay("deploy", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert re.search(r"^worker-1 \(pid \d+\): was not running$", stopped.stdout, re.M)
    for name in ("redis", "code-server", "webserver", "daemon", "worker-2"):
        # A process that outlives its grace period on a loaded machine is killed: ended either way.
        ended = rf"^{name} \(pid {pids[name]}\): (stopped|killed after \d+ s)$"
        assert re.search(ended, stopped.stdout, re.M), stopped.stdout
    assert not [pid for pid in pids.values() if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert "embedded PostgreSQL" in stopped.stdout and "stopped" in stopped.stdout
    if namespaces.probe() is None:
        namespace = namespaces.WorkerNamespace.for_state_dir(site.state)
        assert f"network namespace {namespace.name}" in stopped.stdout
        assert not namespace.exists()
        assert subprocess.run(["ip", "link", "show", namespace.host_veth], capture_output=True).returncode != 0

    again = site.clay("deploy", "stop")
    assert again.returncode == 0
    assert again.stdout.strip() == f"no deployment runs from {site.state / 'deploy'}: nothing to stop"
    assert site.clay("deploy", "status").stdout.strip() == f"no deployment runs from {site.state / 'deploy'}"
