"""Runs that die, and commands that are told to stop: nothing is left STARTED, no pool slot stays
taken, no server or child process outlives the command.

`clay run` executes its runs in its own process; these tests kill real processes (SIGKILL, SIGTERM,
SIGINT) in the middle of real runs, against a Dagster instance of their own in PostgreSQL. The last
test is what `clay run` prints when steps fail.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest
from dagster_graphql import DagsterGraphQLClient
from psycopg import sql

from clay_pipelines import settings
from clay_pipelines.db import embedded
from clay_pipelines.deploy.local import free_port
from clay_pipelines.processes import ProcessIdentity
from clay_pipelines.runner import RUN_PID_TAG, end_stale_runs

POOL = "postgres"
GUARD_SECONDS = 300  # a guard against hanging forever, not a measurement
_counter = itertools.count()


def wait_until(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting: {what}")


@pytest.fixture
def dagster_url(pg_server: embedded.EmbeddedServer) -> Iterator[str]:
    """An empty database for a Dagster instance of this test's own."""
    name = f"dagster_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url(name, driver="psycopg2")
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    home = tmp_path / "state" / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(settings.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return tmp_path / "state"


@pytest.fixture
def env(fresh_db, dagster_url: str, state: Path) -> dict[str, str]:
    """What `clay` and the helper processes run with: this test's databases and state folder."""
    return {
        **os.environ,
        "DATABASE_URL": fresh_db.admin_url,
        "DAGSTER_PG_URL": dagster_url,
        "CLAY_STATE_DIR": str(state),
        "DAGSTER_HOME": str(state / "dagster_home"),
    }


@pytest.fixture
def instance(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The instance as the project's dagster.yaml configures it."""
    monkeypatch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        yield instance


@pytest.fixture
def helpers(env: dict[str, str]) -> Iterator[Callable[[str], subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(mode: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.run_lifecycle_helpers", mode],
            cwd=settings.PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def clay(*args: str, env: dict[str, str], **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clay_pipelines.cli", *args],
        cwd=settings.PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


def runs_of(instance: dg.DagsterInstance, pid: int) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={RUN_PID_TAG: str(pid)})))


def claimed_by(instance: dg.DagsterInstance) -> set[str]:
    """Runs holding a slot of the pool, or a place in its queue."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}


def holding_a_slot(instance: dg.DagsterInstance, process: subprocess.Popen) -> str:
    """Wait until `process`'s run holds a slot; its run id."""

    def held() -> str | bool | None:
        if process.poll() is not None:
            return True
        runs = runs_of(instance, process.pid)
        claimed = {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}
        return next((r.run_id for r in runs if r.run_id in claimed), None)

    run_id = wait_until(held, f"process {process.pid} to hold a {POOL} slot")
    assert process.poll() is None, process.communicate()
    return run_id  # type: ignore[return-value]


def killed_holding_a_slot(instance: dg.DagsterInstance, helpers: Callable[[str], subprocess.Popen]) -> str:
    process = helpers("die")
    assert process.wait(timeout=GUARD_SECONDS) == -signal.SIGKILL, process.stderr.read()
    (run,) = runs_of(instance, process.pid)
    assert run.status == dg.DagsterRunStatus.STARTED
    assert run.run_id in claimed_by(instance)
    return run.run_id


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_a_process_is_told_apart_from_a_later_one_with_its_pid() -> None:
    me = ProcessIdentity.current()
    assert me.is_alive()
    assert not replace(me, started=me.started - 3600).is_alive()  # the pid now belongs to another process
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = ProcessIdentity(me.host, finished.pid, psutil.Process(finished.pid).create_time())
    finished.wait()
    assert not gone.is_alive()
    assert replace(gone, host="another-host").is_alive()  # cannot be checked from here: assume it runs


def test_dagster_yaml_retries_only_crashed_runs_and_monitors_runs(instance: dg.DagsterInstance) -> None:
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_runs_of_a_dead_process_are_failed_and_their_slots_freed(instance, helpers) -> None:
    holder = helpers("hold")
    live_run = holding_a_slot(instance, holder)
    dead_run = killed_holding_a_slot(instance, helpers)
    assert claimed_by(instance) == {live_run, dead_run}

    # Another host's processes cannot be checked from here: their runs are left alone.
    assert end_stale_runs(instance, host="another-host") == []
    assert status(instance, dead_run) == dg.DagsterRunStatus.STARTED
    assert claimed_by(instance) == {live_run, dead_run}

    assert end_stale_runs(instance) == [dead_run]
    assert status(instance, dead_run) == dg.DagsterRunStatus.FAILURE
    assert status(instance, live_run) == dg.DagsterRunStatus.STARTED  # its process still runs
    assert claimed_by(instance) == {live_run}
    failure = instance.all_logs(dead_run, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
    assert "which ran this run in process, is gone" in failure.message

    holder.communicate(b"done\n", timeout=GUARD_SECONDS)
    assert holder.returncode == 0
    assert status(instance, live_run) == dg.DagsterRunStatus.SUCCESS
    assert claimed_by(instance) == set()
    assert end_stale_runs(instance) == []  # nothing twice


def test_clay_run_after_two_kill_9s_frees_the_slots_and_completes(instance, helpers, env) -> None:
    """Two processes killed in their steps took both slots of the pool: before, the next run waited
    for them forever."""
    dead = {killed_holding_a_slot(instance, helpers) for _ in range(2)}
    assert claimed_by(instance) == dead

    run = clay("run", "--select", "monitoring/tool_health", env=env)
    stdout, stderr = run.communicate(timeout=GUARD_SECONDS)
    assert run.returncode == 0, stderr
    assert "ended 2 run(s) left unfinished by `clay run` processes that are gone" in stdout
    assert all(status(instance, run_id) == dg.DagsterRunStatus.FAILURE for run_id in dead)
    (own,) = runs_of(instance, run.pid)
    assert own.status == dg.DagsterRunStatus.SUCCESS
    assert claimed_by(instance) == set()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_clay_run_stopped_while_it_waits_for_a_slot(instance, helpers, env, stop: signal.Signals) -> None:
    """SIGTERM and SIGINT end the run and the process; after SIGKILL the next `clay run` ends it."""
    holders = []
    for _ in range(2):
        holders.append(helpers("hold"))
        holding_a_slot(instance, holders[-1])
    run = clay("run", "--select", "monitoring/tool_health", env=env)
    run_id = wait_until(
        lambda: (
            run.poll() is not None
            or next((r.run_id for r in runs_of(instance, run.pid) if r.run_id in claimed_by(instance)), None)
        ),
        "clay run to queue for a slot",
    )
    assert run.poll() is None, run.communicate()
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=GUARD_SECONDS)

    if stop == signal.SIGKILL:
        assert run.returncode == -signal.SIGKILL
        assert status(instance, run_id) == dg.DagsterRunStatus.STARTED
        for holder in holders:
            holder.communicate(b"done\n", timeout=GUARD_SECONDS)
        again = clay("run", "--select", "monitoring/tool_health", env=env)
        stdout, stderr = again.communicate(timeout=GUARD_SECONDS)
        assert again.returncode == 0, stderr
        assert (
            f"ended 1 run(s) left unfinished by `clay run` processes that are gone (their pool slots are free again): {run_id}"
            in stdout
        )
    else:
        assert run.returncode == 128 + stop
        assert stderr.strip().splitlines()[-1] == f"clay: stopped by {stop.name}; marked failed: run {run_id}"
        assert "Traceback" not in stderr
        assert run_id not in claimed_by(instance)
    assert status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
    assert str(run.pid) in failure.message


def _eval_csv(path: Path, rows: int) -> Path:
    labels = [f"intent_{i}" for i in range(30)]
    lines = ["text,label"] + [f"request number {i} about {labels[i % 30]} please,{labels[i % 30]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _processes_using(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_eval_routing_stops_its_server_on_sigterm(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    train, test = _eval_csv(tmp_path / "train.csv", 3000), _eval_csv(tmp_path / "test.csv", 60)
    run = clay(
        "eval",
        "routing",
        "--train",
        str(train),
        "--test",
        str(test),
        "--json",
        env={**os.environ, "TMPDIR": str(temporary)},
    )
    try:
        pid_file = wait_until(lambda: next(temporary.glob("clay-eval-*/pgdata/postmaster.pid"), None), "the server")
        assert run.poll() is None, "the evaluation ended before it could be stopped"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=GUARD_SECONDS)
        assert run.returncode == 128 + signal.SIGTERM, stderr
        assert _processes_using(temporary) == []
        assert not pid_file.parent.exists()  # the throwaway folder went with it
    finally:
        if run.poll() is None:
            run.kill()
        for pgdata in temporary.glob("clay-eval-*/pgdata"):
            embedded.stop(pgdata)


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_clay_dev_shuts_its_processes_down_on_sigterm_with_a_run_in_flight(instance, env, fresh_db) -> None:
    """Before, `dagster dev`'s code server waited for the run to finish: the command outlived SIGTERM
    by minutes, and a run whose worker was then killed stayed STARTED with its pool slot taken."""
    port = free_port()
    blocker = psycopg.connect(fresh_db.admin_url)  # the run's query waits for this lock: it stays in flight
    blocker.execute("LOCK TABLE mcp_telemetry_log IN ACCESS EXCLUSIVE MODE")
    dev = clay("dev", "--port", str(port), env=env)
    processes: list[psutil.Process] = []
    try:
        wait_until(lambda: _serving(port) or dev.poll() is not None, "the Dagster UI")
        assert dev.poll() is None, dev.communicate()[1][-2000:]
        run_id = DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
            "platform_monitoring", repository_location_name="clay_pipelines", repository_name="__repository__"
        )
        wait_until(lambda: run_id in claimed_by(instance), "the run to hold a slot")
        assert status(instance, run_id) == dg.DagsterRunStatus.STARTED
        processes = psutil.Process(dev.pid).children(recursive=True)

        dev.send_signal(signal.SIGTERM)
        dev.communicate(timeout=90)
        assert dev.returncode == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert alive == []
        assert not _serving(port)
        assert instance.get_run_by_id(run_id).is_finished
        assert run_id not in claimed_by(instance)
    finally:
        blocker.close()
        for process in [psutil.Process(dev.pid), *processes] if dev.poll() is None else processes:
            if process.is_running():
                process.kill()


def _drop_unreadable_pdfs(state: Path, names: list[str]) -> None:
    inbox = state / "world" / "payroll" / "inbox" / "oms.com"
    inbox.mkdir(parents=True, exist_ok=True)
    for name in names:
        (inbox / name).write_bytes(b"this is not a PDF\n")


def test_failed_partitions_are_one_line_each_and_tracebacks_only_when_asked(fresh_db, env, state) -> None:
    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS Consulting', 'oms.com')")
    _drop_unreadable_pdfs(state, ["a.pdf", "b.pdf"])
    run = clay("run", "--select", "payroll/payroll_entries", env=env)
    stdout, stderr = run.communicate(timeout=GUARD_SECONDS)
    assert run.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 3, stderr
    for line, name in zip(lines, ["a.pdf", "b.pdf"], strict=False):
        assert line.startswith(f"clay: failed: payroll/payroll_entries [oms.com/{name}]: "), line
        assert name in line.split("]: ", 1)[1]
    assert lines[2] == (
        "clay: error: materialization failed: 2 step(s) failed (2 of payroll/payroll_entries); "
        "tracebacks with CLAY_DEBUG=1, or in the runs in the Dagster UI"
    )
    assert "Traceback" not in stdout + stderr and "Stack Trace" not in stdout + stderr
    assert "payroll/payroll_entries           0" in stdout  # the summary table still comes

    _drop_unreadable_pdfs(state, ["c.pdf"])
    debug = clay("run", "--select", "payroll/payroll_entries", env={**env, "CLAY_DEBUG": "1"})
    stdout, stderr = debug.communicate(timeout=GUARD_SECONDS)
    assert debug.returncode == 1
    assert "clay: failed: payroll/payroll_entries [oms.com/c.pdf]: " in stderr
    assert "Stack Trace:" in stderr and 'File "' in stderr
