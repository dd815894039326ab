"""The Dagster project loads, validates, and applies its policies once."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest
from dagster._core.definitions.dependency import NodeHandle

from clay_pipelines import settings
from clay_pipelines.definitions import defs
from clay_pipelines.failures import is_transient
from clay_pipelines.policies import DEFAULT_RETRY_POLICY, with_failure_policy


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
    assert DEFAULT_RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL


def test_every_job_retries_with_the_same_policy() -> None:
    """Every job, the implicit one behind the UI's materialize, sensors and `clay run` included."""
    jobs = defs.resolve_all_job_defs()
    assert {"platform_monitoring", "payroll_files", "routing_full_recluster", "routing_rules_daily"} <= {
        j.name for j in jobs
    }
    for job in jobs:
        for node in job.nodes:
            assert job.get_retry_policy_for_handle(NodeHandle(node.name, None)) == DEFAULT_RETRY_POLICY, (
                f"{job.name}: {node.name}"
            )


attempts: list[str] = []
_failures = {
    "bad_input": lambda: ValueError("row 3: amount is not a number"),
    "failed_check": lambda: dg.Failure("march.pdf: total does not reconcile"),
    "final_failure": lambda: dg.Failure("already final", allow_retries=False),
    "dropped_connection": lambda: psycopg.OperationalError("server closed the connection unexpectedly"),
    "wrong_password": lambda: psycopg.errors.InvalidPassword("password authentication failed"),
}


def _fail_first(name: str) -> None:
    """Fail the first attempt with the named error; later attempts succeed."""
    attempts.append(name)
    if attempts.count(name) == 1:
        error = _failures[name]()
        if name == "dropped_connection":  # as a payroll step would report it
            raise dg.Failure(f"{name}: the database went away") from error
        raise error


def _asset(name: str, generator: bool = False) -> dg.AssetsDefinition:
    if generator:

        @dg.asset(name=name)
        def produce():  # a generator of events
            _fail_first(name)
            yield dg.MaterializeResult()

    else:

        @dg.asset(name=name)
        def produce() -> None:
            _fail_first(name)

    return with_failure_policy(produce)


@pytest.mark.parametrize("generator", [False, True], ids=["function", "generator"])
def test_only_transient_failures_are_retried(generator: bool) -> None:
    """Bad input and failed checks fail once, with the user's message; a dropped connection is
    retried (with the policy's backoff) and then succeeds."""
    attempts.clear()
    with dg.instance_for_test() as instance:
        outcomes = {}
        for name in _failures:
            result = dg.materialize([_asset(name, generator)], instance=instance, raise_on_error=False)
            failure = result.get_step_failure_events()[0].step_failure_data if not result.success else None
            outcomes[name] = (result.success, failure.user_failure_data.description if failure else None)
    assert {name: attempts.count(name) for name in _failures} == {
        "bad_input": 1,
        "failed_check": 1,
        "final_failure": 1,
        "dropped_connection": 2,
        "wrong_password": 1,
    }
    assert outcomes == {
        "bad_input": (False, "ValueError: row 3: amount is not a number"),
        "failed_check": (False, "march.pdf: total does not reconcile"),
        "final_failure": (False, "already final"),
        "dropped_connection": (True, None),
        "wrong_password": (False, "InvalidPassword: password authentication failed"),
    }


def test_transient_errors_are_told_apart() -> None:
    assert is_transient(psycopg.OperationalError("connection refused"))
    assert is_transient(psycopg.errors.SerializationFailure("could not serialize access"))
    assert is_transient(ConnectionResetError())
    assert is_transient(httpx.ConnectTimeout("timed out"))
    assert not is_transient(psycopg.errors.InvalidPassword("password authentication failed"))
    assert not is_transient(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_transient(ValueError("bad row"))
    assert not is_transient(FileNotFoundError("gone.pdf"))
    try:
        try:
            raise psycopg.OperationalError("server closed the connection")
        except psycopg.OperationalError as error:
            raise RuntimeError("storing march.pdf failed") from error
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


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
    assert environment["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
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


def test_the_readme_lists_exactly_the_variables_the_settings_declare() -> None:
    import re

    from clay_pipelines import settings

    readme = (settings.PROJECT_ROOT / "README.md").read_text()
    table = readme[readme.index("| variable | default | meaning |") :].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `([A-Z_]+)` \| ([^|]*) \|", table, re.MULTILINE)
    assert [(name, default.strip().strip("`") or None) for name, default in listed] == [
        (v.name, v.default) for v in settings.variables()
    ]


def test_no_module_reads_the_environment_but_settings() -> None:
    import re

    from clay_pipelines import settings

    readers = {
        str(path.relative_to(settings.PROJECT_ROOT))
        for path in settings.PACKAGE_DIR.rglob("*.py")
        if re.search(r"os\.environ\.get|os\.getenv|os\.environ\[\"[A-Z_]+\"\](?!\s*=)", path.read_text())
    }
    assert readers <= {"clay_pipelines/settings.py", "clay_pipelines/cli.py"}, readers


def test_plain_dagster_in_the_project_folder_says_what_to_run_when_unconfigured(tmp_path) -> None:
    from clay_pipelines.dagster_storage import NOT_CONFIGURED

    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DAGSTER_PG_URL")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=settings.PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert NOT_CONFIGURED in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
