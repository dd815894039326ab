"""The Kubernetes deployment, checked as far as this machine allows (no image is built, no cluster runs):
the Dockerfile installs only the project; the Helm values use keys Dagster's chart defines; the
instance the chart renders from them loads with dagster-k8s, and the Job a run would get carries the
secrets, limits and user the values ask for; the README's secrets are the ones the values name."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from clay_pipelines import cli, settings
from clay_pipelines.db import embedded
from tests.conftest import TestDatabase as Databases

ROOT = settings.PROJECT_ROOT
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
MIGRATE_JOB = ROOT / "deploy" / "k8s" / "migrate-job.yaml"
RELEASE = "dagster"  # the release name values.yaml asks for: the chart's objects are then dagster-*
NAMESPACE = "clay"


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def _args(instruction: str, text: str) -> list[str]:
    return yaml.safe_load(text) if text.startswith("[") else shlex.split(text)


def test_dockerfile_builds_on_python_311_slim_and_copies_only_project_files() -> None:
    instructions = dockerfile_instructions()
    assert [a for i, a in instructions if i == "FROM"] == ["python:3.11-slim"]
    assert not [i for i, _ in instructions if i == "ADD"], "ADD can fetch URLs; COPY only copies"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for _, text in (x for x in instructions if x[0] == "COPY"):
        *sources, _destination = _args("COPY", text)
        for source in sources:
            assert not source.startswith("--"), f"COPY {text}: no --from or other stages"
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the project"
            assert source not in ignored, f"COPY {source}: excluded by .dockerignore"
    assert {".git", ".venv", ".clay", "tests"} <= ignored


def test_dockerfile_installs_only_the_project_with_its_declared_extras() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installs = []
    for instruction, text in dockerfile_instructions():
        if instruction != "RUN":
            continue
        assert not re.search(r"\b(curl|wget|apt-get|git clone)\b", text), f"RUN {text}: fetches outside pip"
        for command in re.split(r"&&|;", text):
            words = shlex.split(command)
            if words[:2] in (["pip", "install"], ["python", "-m"]) and "install" in words:
                targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
                flags = [w for w in words[words.index("install") + 1 :] if w.startswith("-")]
                assert set(flags) <= {"--no-cache-dir", "-e", "--no-deps"}, f"RUN {command}: flags {flags}"
                installs.extend(targets)
    assert installs == [".[k8s]"]
    for target in installs:
        match = re.fullmatch(r"\.(?:\[(?P<extras>[a-z0-9,_-]+)\])?", target)
        assert match, f"pip install {target}: only the project itself"
        assert set((match["extras"] or "").split(",")) - {""} <= extras


def test_dockerfile_runs_as_a_non_root_user_the_code_server_on_port_4000() -> None:
    instructions = dockerfile_instructions()
    users = [text for instruction, text in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    run_text = " ".join(text for instruction, text in instructions if instruction == "RUN")
    assert f"--uid {users[-1]}" in run_text, "the USER is created in the image"
    # The chart passes the command as container args: an ENTRYPOINT would be prepended to them.
    assert "ENTRYPOINT" not in [i for i, _ in instructions]
    assert [a for i, a in instructions if i == "EXPOSE"] == ["4000"]
    command = next(_args(i, a) for i, a in instructions if i == "CMD")
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert command == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", module]


def test_the_k8s_extra_pins_dagster_k8s_to_the_dagster_release_and_dev_has_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dagster_postgres = next(d for d in project["dependencies"] if d.startswith("dagster-postgres=="))
    version = dagster_postgres.split("==")[1]
    assert project["optional-dependencies"]["k8s"] == [f"dagster-k8s=={version}"]
    assert f"dagster-k8s=={version}" in project["optional-dependencies"]["dev"]


# ---------------------------------------------------------------------------------------------
# Helm values: keys of the chart's values schema (helm/dagster/schema/schema/charts in Dagster's
# repository; the models below forbid keys they do not define, so a misspelt key fails the install).

CHART_TOP_LEVEL = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
    "telemetry", "serviceAccount", "global", "retention", "additionalInstanceConfig",
}  # fmt: skip
CHART_GLOBAL = {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"}
CHART_POSTGRESQL = {
    "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
    "postgresqlParams", "postgresqlScheme", "service",
}  # fmt: skip
CHART_USER_DEPLOYMENTS = {"enabled", "enableSubchart", "imagePullSecrets", "deployments"}
CHART_USER_DEPLOYMENT = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port", "env",
    "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
    "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
    "labels", "volumeMounts", "volumes", "schedulerName",
}  # fmt: skip
CHART_K8S_RUN_LAUNCHER = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
CHART_RUN_K8S_CONFIG = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"}
CHART_DAEMON = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
    "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
    "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes",
}  # fmt: skip
CHART_QUEUED_RUN_COORDINATOR = {
    "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers", "dequeueUseThreads",
}  # fmt: skip


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def test_values_use_only_keys_the_chart_defines() -> None:
    v = values()
    assert set(v) <= CHART_TOP_LEVEL
    assert set(v["global"]) <= CHART_GLOBAL
    assert set(v["postgresql"]) <= CHART_POSTGRESQL
    assert set(v["dagster-user-deployments"]) <= CHART_USER_DEPLOYMENTS
    for deployment in v["dagster-user-deployments"]["deployments"]:
        assert set(deployment) <= CHART_USER_DEPLOYMENT
        assert set(deployment["image"]) <= {"repository", "tag", "pullPolicy"}
    assert set(v["runLauncher"]) == {"type", "config"} and set(v["runLauncher"]["config"]) == {"k8sRunLauncher"}
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher) <= CHART_K8S_RUN_LAUNCHER
    assert set(launcher.get("runK8sConfig", {})) <= CHART_RUN_K8S_CONFIG
    assert set(v["dagsterDaemon"]) <= CHART_DAEMON
    coordinator = v["dagsterDaemon"]["runCoordinator"]
    assert set(coordinator) == {"enabled", "type", "config"} and set(coordinator["config"]) == {"queuedRunCoordinator"}
    assert set(coordinator["config"]["queuedRunCoordinator"]) <= CHART_QUEUED_RUN_COORDINATOR


def test_values_describe_our_image_the_k8s_run_launcher_and_an_external_database() -> None:
    v = values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    assert v["dagster-user-deployments"]["enabled"] is True
    assert deployment["port"] == 4000 and deployment["codeServerArgs"] == ["-m", "clay_pipelines.definitions"]
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["postgresql"]["enabled"] is False and v["postgresql"]["postgresqlHost"]
    # The password comes from a secret the operator creates, never from the values file.
    assert "postgresqlPassword" not in v["postgresql"]
    assert v["generatePostgresqlPasswordSecret"] is False and v["global"]["postgresqlSecretName"]
    assert v["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def secrets_in_readme() -> dict[str, set[str]]:
    """`kubectl create secret generic NAME --from-literal=KEY=...` commands in README: {NAME: {KEY}}."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    secrets: dict[str, set[str]] = {}
    for match in re.finditer(r"kubectl (?:-n \S+ )?create secret generic (\S+)([^\n]*)", text):
        secrets[match.group(1)] = set(re.findall(r"--from-literal=([A-Za-z_-]+)=", match.group(2)))
    return secrets


def test_the_readme_creates_the_secrets_the_values_name_with_the_variables_settings_declares() -> None:
    v = values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    secrets = secrets_in_readme()
    named = {s["name"] for s in deployment["envSecrets"]} | {s["name"] for s in launcher["envSecrets"]}
    assert set(secrets) == named | {v["global"]["postgresqlSecretName"]}
    assert secrets[v["global"]["postgresqlSecretName"]] == {"postgresql-password"}
    declared = {variable.name for variable in settings.variables()}
    for name in named:
        assert secrets[name] <= declared, f"{name}: {secrets[name] - declared} are not in settings.py"
    carried = set().union(*(secrets[name] for name in named))
    assert {"DATABASE_URL", "CLAY_APP_DATABASE_URL", "CLAY_MAINTENANCE_DATABASE_URL", "BAMBOOHR_API_KEY"} <= carried
    assert set(deployment["env"]) <= declared


def test_the_migration_job_runs_clay_db_migrate_from_the_image_with_the_database_secret() -> None:
    job = yaml.safe_load(MIGRATE_JOB.read_text())
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["clay", "db", "migrate"]
    assert container["envFrom"] == [{"secretRef": {"name": "clay-database"}}]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert cli.build_parser().parse_args(container["command"][1:]).handler is cli.cmd_db_migrate


def test_migrate_creates_the_schema_dagsters_storage_uses_in_an_external_database(
    fresh_db: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db.admin_url)
    assert cli.main(["db", "migrate"]) == 0
    with psycopg.connect(fresh_db.admin_url) as conn:
        assert conn.execute("SELECT to_regnamespace('dagster') IS NOT NULL").fetchone() == (True,)
    assert "-csearch_path=dagster" in values()["postgresql"]["postgresqlParams"]["options"]


# ---------------------------------------------------------------------------------------------
# The instance the chart renders (helm/dagster/templates/configmap-instance.yaml and
# helpers/instance/_*.tpl), for the keys these values set, loaded with dagster-k8s.


def rendered_instance(v: dict[str, Any]) -> dict[str, Any]:
    pg = v["postgresql"]
    postgres = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams", {}),
        }
    }
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": RELEASE,
        "dagster_home": v.get("global", {}).get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": v["global"]["postgresqlSecretName"],
    }
    optional = {
        "kubeconfigFile": "kubeconfig_file",
        "envConfigMaps": "env_config_maps",
        "envSecrets": "env_secrets",
        "envVars": "env_vars",
        "volumeMounts": "volume_mounts",
        "volumes": "volumes",
        "labels": "labels",
        "resources": "resources",
        "securityContext": "security_context",
    }
    for key, name in optional.items():
        if launcher.get(key):
            value = launcher[key]
            launcher_config[name] = [e["name"] for e in value] if key in ("envConfigMaps", "envSecrets") else value
    if launcher.get("runK8sConfig"):
        launcher_config["run_k8s_config"] = {
            re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in launcher["runK8sConfig"].items()
        }
    daemon = v["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    # The chart renders the coordinator's config only when one of its values is set.
    queued_config = {
        name: queued[key]
        for key, name in (
            ("maxConcurrentRuns", "max_concurrent_runs"),
            ("tagConcurrencyLimits", "tag_concurrency_limits"),
        )
        if queued.get(key) is not None
    }
    monitoring = daemon["runMonitoring"]
    instance = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": postgres,
        },
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": postgres},
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": postgres,
        },
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            **({"config": queued_config} if queued_config else {}),
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "telemetry": {"enabled": v["telemetry"]["enabled"]},
    }
    assert not daemon["runRetries"]["enabled"], "run_retries comes from additionalInstanceConfig only"
    instance.update(v.get("additionalInstanceConfig") or {})
    return instance


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: unused}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: clay}}]
current-context: offline
"""


@pytest.fixture
def chart_instance(
    fresh_db: Databases, pg_server: embedded.EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dg.DagsterInstance:
    """The rendered instance, pointed at this test's database, and at a kubeconfig file: outside a
    cluster there is no in-cluster configuration to load (the chart's kubeconfigFile setting)."""
    instance = rendered_instance(values())
    with psycopg.connect(fresh_db.admin_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS dagster")
    for storage in ("schedule_storage", "run_storage", "event_log_storage"):
        instance[storage]["config"]["postgres_db"].update(
            hostname="localhost",
            username="postgres",
            db_name=fresh_db.name,
            params={"host": pg_server.socket_dir, "options": "-csearch_path=dagster"},
        )
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    launcher = instance["run_launcher"]["config"]
    launcher.update(load_incluster_config=False, kubeconfig_file=str(tmp_path / "kubeconfig"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused-on-a-socket")
    return dg.DagsterInstance.from_config(str(home))


def test_the_rendered_instance_loads_with_dagster_k8s(chart_instance: dg.DagsterInstance, fresh_db: Databases) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher

    with chart_instance as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == NAMESPACE and launcher.instance_config_map == "dagster-instance"
        assert launcher.postgres_password_secret == "clay-dagster-postgresql"
        assert launcher.env_secrets == ["clay-database", "clay-bamboohr"]
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [
            {"key": "clay/full_recluster", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
            {"key": "clay/payroll_tenant", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        ]
        assert instance.run_monitoring_enabled and instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
        # Dagster's storage is in the database's `dagster` schema, as the values' search_path says.
        assert instance.get_runs() == []
        with psycopg.connect(fresh_db.admin_url) as conn:
            assert conn.execute("SELECT to_regclass('dagster.runs') IS NOT NULL").fetchone() == (True,)


def test_a_runs_job_gets_the_image_secrets_limits_and_user_the_values_ask_for(
    chart_instance: dg.DagsterInstance,
) -> None:
    from dagster_k8s.job import construct_dagster_k8s_job

    with chart_instance as instance:
        launcher = instance.run_launcher
        run = dg.DagsterRun(job_name="every_asset", run_id="0" * 36)
        context = launcher.get_container_context_for_run(run)
        job = construct_dagster_k8s_job(
            job_config=context.get_k8s_job_config(
                job_image="registry.example.com/clay/clay-pipelines:abc", run_launcher=launcher
            ),
            args=["dagster", "api", "execute_run"],
            job_name="dagster-run-0",
            user_defined_k8s_config=context.run_k8s_config,
        ).to_dict()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/clay/clay-pipelines:abc"
    assert container["args"] == ["dagster", "api", "execute_run"] and not container.get("command")
    assert [source["secret_ref"]["name"] for source in container["env_from"] if source.get("secret_ref")] == [
        "clay-database",
        "clay-bamboohr",
    ]
    assert container["resources"]["limits"] == {"memory": "2Gi"}
    assert container["security_context"]["run_as_non_root"] is True
    assert container["security_context"]["run_as_user"] == 10001
    assert job["spec"]["ttl_seconds_after_finished"] == 86400
    assert pod["service_account_name"] == RELEASE
