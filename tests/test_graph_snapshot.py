"""The asset graph and every job's policies as text, compared with tests/snapshots/graph.txt: a change
to the graph or to a policy shows in review. After an intended change:
    CLAY_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_graph_snapshot.py
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.definitions.dependency import NodeHandle

from clay_pipelines.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.txt"


def _describe_policy(policy: dg.RetryPolicy | None) -> str:
    if policy is None:
        return "no retry policy"
    return f"retries {policy.max_retries}, delay {policy.delay}, backoff {policy.backoff}, jitter {policy.jitter}"


def _graph_lines() -> list[str]:
    graph = defs.resolve_asset_graph()
    lines = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = type(node.partitions_def).__name__ if node.partitions_def else "unpartitioned"
        condition = node.automation_condition
        automation = (condition.get_label() or type(condition).__name__) if condition else "-"
        deps = ", ".join(sorted(k.to_user_string() for k in node.parent_keys)) or "-"
        checks = ", ".join(sorted(k.name for k in node.check_keys)) or "-"
        kind = "materializable" if node.is_materializable else "external"
        lines.append(
            f"asset {key.to_user_string()} [{kind}, group {node.group_name}, {partitions}] <- {deps}; "
            f"automation {automation}; checks {checks}"
        )
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        policies = {_describe_policy(job.get_retry_policy_for_handle(handle)) for handle in _handles(job)}
        lines.append(f"job {job.name}: executor {job.executor_def.name}; {'; '.join(sorted(policies))}")
    for sensor in sorted(defs.get_repository_def().sensor_defs, key=lambda s: s.name):
        lines.append(f"sensor {sensor.name}: {sensor.default_status.value}")
    for schedule in sorted(defs.get_repository_def().schedule_defs, key=lambda s: s.name):
        lines.append(f"schedule {schedule.name}: {schedule.cron_schedule}, {schedule.default_status.value}")
    return lines


def _handles(job: dg.JobDefinition) -> list[NodeHandle]:
    return [NodeHandle(node.name, None) for node in job.nodes]


def test_the_graph_and_its_policies_match_the_snapshot() -> None:
    text = "\n".join(_graph_lines()) + "\n"
    if os.environ.get("CLAY_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), f"no snapshot yet: run with CLAY_UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    assert text == SNAPSHOT.read_text()
