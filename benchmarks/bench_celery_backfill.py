"""A backfill of 60 daily partitions of request embeddings through `clay deploy local`: one Celery
worker, then two, same world, same deployment layout, same benchmark run.

Each partition is its own run (queued, launched by the daemon through the code server, at most two at
a time) whose one step goes to a worker. The machine has two cores shared by PostgreSQL, Redis, the
daemon, the run workers and the Celery workers: they bound the ratio, and most of a run's time is
Dagster's own (a run worker process per run), which a second Celery worker does not shorten.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

from clay_pipelines.deploy.local import side_by_side_environment

DAYS = 60
ANCHOR = date(2026, 1, 15)
WAIT_SECONDS = 3600


def _clay(environment: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args], capture_output=True, text=True, env=environment
    )
    if done.returncode != 0:
        raise RuntimeError(f"clay {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _forget_vectors(environment: dict[str, str], first: date, last: date) -> int:
    url = f"postgresql://postgres@/clay?host={environment['CLAY_STATE_DIR']}/pgdata&port={environment['CLAY_PG_PORT']}"
    with psycopg.connect(url) as conn:
        return conn.execute(
            "UPDATE executions SET request_embedding = NULL, request_embedding_model = NULL"
            " WHERE started_at >= %s AND started_at < %s::date + 1",
            (first, last),
        ).rowcount


def _one_pass(environment: dict[str, str], workers: int, first: date, last: date) -> tuple[float, dict[str, int]]:
    _clay(environment, "deploy", "local", "--workers", str(workers), "--paused")
    try:
        rows = _forget_vectors(environment, first, last)
        started = time.perf_counter()
        out = _clay(
            environment, "deploy", "backfill", "request_embeddings", "--from", str(first), "--to", str(last),
            "--wait", str(WAIT_SECONDS),
        )  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        _clay(environment, "deploy", "stop")
    per_worker: dict[str, int] = {}
    for worker in re.findall(r"SUCCESS\s+run \w+\s+on (\S+)", out):
        per_worker[worker.split("@")[0]] = per_worker.get(worker.split("@")[0], 0) + 1
    print(f"  {workers} worker(s): {DAYS} runs, {rows:,} executions re-embedded in {seconds:.1f} s; steps {per_worker}")
    return seconds, per_worker


def run() -> None:
    state = Path(tempfile.mkdtemp(prefix="clay-bench-celery-"))
    environment = side_by_side_environment(state)
    last = ANCHOR - timedelta(days=1)
    first = last - timedelta(days=DAYS - 1)
    print(f"celery backfill: {DAYS} daily partitions of routing/request_embeddings ({first} .. {last})")
    try:
        _clay(environment, "db", "migrate")
        _clay(environment, "seed", "--anchor", str(ANCHOR))
        one, _ = _one_pass(environment, 1, first, last)
        two, _ = _one_pass(environment, 2, first, last)
        print(
            f"  ratio: two workers take {two / one:.2f}x the time of one ({one / two:.2f}x faster). Two cores "
            "run everything here (PostgreSQL, Redis, daemon, run workers, Celery workers): they bound it."
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "clay_pipelines.cli", "deploy", "stop"], env=environment, capture_output=True
        )
        subprocess.run([sys.executable, "-m", "clay_pipelines.cli", "db", "stop"], env=environment, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
