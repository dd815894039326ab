"""The Dagster project loads, validates, and applies its policies once."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg

from clay_pipelines import settings
from clay_pipelines.definitions import DEFAULT_RETRY_POLICY, defs


def test_definitions_load_with_the_expected_assets() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "platform/executions",
        "platform/mcp_telemetry_log",
        "platform/resources",
        "platform/systems",
        "monitoring/tool_health",
        "monitoring/budget_usage",
    } <= keys
    # What other programs write is external: visible in lineage, never materialized here.
    for key in ("platform/executions", "platform/mcp_telemetry_log"):
        assert not graph.get(dg.AssetKey.from_user_string(key)).is_materializable
    assert graph.get(dg.AssetKey.from_user_string("monitoring/tool_health")).parent_keys == {
        dg.AssetKey(["platform", "mcp_telemetry_log"])
    }


def test_policies_are_applied_once_at_the_root() -> None:
    sensor = defs.resolve_sensor_def("default_automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    new_executions = defs.resolve_sensor_def("new_executions_sensor")
    assert new_executions.default_status == dg.DefaultSensorStatus.RUNNING
    assert new_executions.asset_selection.resolve(defs.resolve_asset_graph()) == {
        dg.AssetKey(["routing", "request_embeddings"])
    }
    assert defs.resolve_job_def("platform_monitoring").executor_def.name == "multiprocess"
    assert defs.resolve_job_def("platform_monitoring")._op_retry_policy == DEFAULT_RETRY_POLICY
    assert DEFAULT_RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL


def test_dagster_cli_validates_the_workspace(fresh_db) -> None:
    """As a user runs it: `eval "$(clay env)"`, then the plain dagster command."""
    dagster = Path(sys.executable).parent / "dagster"
    exports = subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", "env"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CLAY_DATABASE_NAME": fresh_db.name},
    ).stdout
    environment = dict(os.environ)
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        environment[name] = shlex.split(value)[0]
    assert environment["CLAY_DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(settings.PROJECT_ROOT / "workspace.yaml")],
        cwd=settings.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stdout + result.stderr
