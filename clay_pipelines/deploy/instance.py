"""The deployment's Dagster instance (dagster.yaml) and workspace (workspace.yaml), written into
its own DAGSTER_HOME under the state folder.

The project's dagster.yaml (storage, retries, run monitoring, pools) is the base; the deployment
adds the QueuedRunCoordinator with tag concurrency limits, and its workspace points at the code
location's gRPC server instead of loading the code in the webserver's and daemon's processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clay_pipelines import settings

# Run tags the concurrency limits key on (the jobs and sensors that set them: routing/defs.py,
# payroll/defs.py).
FULL_RECLUSTER_TAG = "clay/full_recluster"
PAYROLL_TENANT_TAG = "clay/payroll_tenant"
MAX_CONCURRENT_RUNS = 2  # two cores


def run_limits() -> dict[str, Any]:
    """`concurrency.runs`: how many runs the QueuedRunCoordinator lets go at once, and per tag."""
    return {
        "max_concurrent_runs": MAX_CONCURRENT_RUNS,
        "tag_concurrency_limits": [
            # A full re-cluster rewrites a tenant's rules: one at a time per tenant (the job
            # re-clusters every tenant, so its tag value is the same for all: one at a time).
            {"key": FULL_RECLUSTER_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
            # A tenant's payroll files run one at a time, in the order the queue received them:
            # a later file's corrections must not land before the earlier file's entries.
            {"key": PAYROLL_TENANT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        ],
    }


def instance_config() -> dict[str, Any]:
    """The project's dagster.yaml, runs queued by the QueuedRunCoordinator under the limits above
    (Dagster takes the limits from `concurrency.runs` when `concurrency.pools` is set too)."""
    config = yaml.safe_load((settings.PROJECT_ROOT / "dagster.yaml").read_text())
    config["concurrency"] = {**(config.get("concurrency") or {}), "runs": run_limits()}
    config["run_coordinator"] = {
        "module": "dagster",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
    config["run_launcher"] = {"module": "dagster", "class": "DefaultRunLauncher"}
    config.setdefault("run_monitoring", {})["enabled"] = True
    return config


def compute_log_dir(home: Path) -> Path:
    """Where Dagster's default (local) compute log manager keeps the steps' output."""
    return home / "storage"


def workspace_config(grpc_host: str, grpc_port: int) -> dict[str, Any]:
    return {"load_from": [{"grpc_server": {"host": grpc_host, "port": grpc_port, "location_name": "clay_pipelines"}}]}


def write(home: Path, grpc_host: str, grpc_port: int) -> tuple[Path, Path]:
    """Write dagster.yaml and workspace.yaml into `home`; returns their paths."""
    home.mkdir(parents=True, exist_ok=True)
    instance_path = home / "dagster.yaml"
    workspace_path = home / "workspace.yaml"
    header = "# Written by `clay deploy local` (clay_pipelines/deploy/instance.py); rewritten at every start.\n"
    instance_path.write_text(header + yaml.safe_dump(instance_config(), sort_keys=False))
    workspace_path.write_text(header + yaml.safe_dump(workspace_config(grpc_host, grpc_port), sort_keys=False))
    return instance_path, workspace_path
