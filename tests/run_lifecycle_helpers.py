"""Processes that hold a `postgres` pool slot the way `clay run` does, for tests/test_run_lifecycle.py.

    python -m tests.run_lifecycle_helpers die    a run that takes a slot and is killed (SIGKILL) in its step
    python -m tests.run_lifecycle_helpers hold   a run that takes a slot and keeps it until a line on stdin

Their runs carry the tags `clay run` gives its runs (host, process), in the instance of DAGSTER_HOME.
They materialize without `materialize_everything`, which would first end the runs of dead processes:
a test needs those left behind.
"""

from __future__ import annotations

import os
import signal
import sys

import dagster as dg

from clay_pipelines.processes import ProcessIdentity
from clay_pipelines.runner import run_tags


@dg.asset(pool="postgres")
def dies_holding_a_slot() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dg.asset(pool="postgres")
def holds_a_slot() -> None:
    sys.stdin.readline()


def main(mode: str) -> int:
    asset = {"die": dies_holding_a_slot, "hold": holds_a_slot}[mode]
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([asset], instance=instance, tags=run_tags(ProcessIdentity.current()))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
