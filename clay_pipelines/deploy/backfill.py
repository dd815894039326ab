"""A backfill launched through the deployment's own machinery (`dagster job backfill` against its
workspace: one run per partition, queued by the QueuedRunCoordinator, launched by the daemon), and
what became of it: each run's partition, status and the Celery worker that executed its steps."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from clay_pipelines.deploy.topology import DeployError, Layout

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    partition: str
    status: str
    workers: tuple[str, ...]  # the Celery workers (name@host) that executed its steps


def launch(job: str, start: str, end: str, environment: dict[str, str]) -> str:
    """Submit the backfill; returns its id."""
    workspace = Layout.current().home / "workspace.yaml"
    command = [str(Path(sys.executable).parent / "dagster"), "job", "backfill", "-w", str(workspace), "-j", job,
               "--from", start, "--to", end, "--noprompt"]  # fmt: skip
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    found = re.search(r"Launched backfill job `([^`]+)`", done.stdout)
    if done.returncode != 0 or not found:
        detail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:]) or f"exit {done.returncode}"
        raise DeployError(f"`dagster job backfill -j {job}` failed: {detail}")
    return found.group(1)


def outcomes(instance: dg.DagsterInstance, backfill_id: str) -> list[RunOutcome]:
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    return sorted((_outcome(instance, run) for run in runs), key=lambda o: o.partition)


def _outcome(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunOutcome:
    workers = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        worker = data.metadata.get("Celery worker") if data else None
        if worker is not None:
            workers.append(str(worker.value))
    return RunOutcome(run.run_id, run.tags.get("dagster/partition", ""), run.status.value, tuple(sorted(set(workers))))


def wait(instance: dg.DagsterInstance, backfill_id: str, runs: int, timeout: float) -> list[RunOutcome]:
    """Until the backfill's `runs` runs have all finished; DeployError when the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        found = outcomes(instance, backfill_id)
        if len(found) >= runs and all(dg.DagsterRunStatus(o.status) in FINISHED for o in found):
            return found
        if time.monotonic() > deadline:
            waiting = [f"{o.partition}: {o.status}" for o in found if dg.DagsterRunStatus(o.status) not in FINISHED]
            raise DeployError(
                f"backfill {backfill_id}: {len(found)} of {runs} runs created, unfinished after {timeout:.0f} s: "
                + ", ".join(waiting[:5])
            )
        time.sleep(1.0)
