"""The deployment's configuration, without starting it: the instance Dagster loads from the generated
dagster.yaml, the executor CLAY_EXECUTOR selects, the worker namespace's addresses, pg_hba's block."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from clay_pipelines.db import embedded
from clay_pipelines.deploy import instance
from clay_pipelines.deploy.namespaces import WorkerNamespace

EXECUTOR_OF_JOB = (
    "import clay_pipelines.definitions as d; "
    "print(d.defs.resolve_job_def('request_embeddings').executor_def.name, "
    "d.defs.resolve_job_def('payroll_files').executor_def.name)"
)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLAY_CELERY")}
    environment.pop("CLAY_EXECUTOR", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**environment, **env}, timeout=300
    )


def test_the_executor_is_multiprocess_unless_configured_celery() -> None:
    default = _python(EXECUTOR_OF_JOB)
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["multiprocess", "multiprocess"]
    celery = _python(EXECUTOR_OF_JOB, CLAY_EXECUTOR="celery", CLAY_CELERY_BROKER_URL="redis://:pw@127.0.0.1:1/0")
    assert celery.returncode == 0, celery.stderr
    assert celery.stdout.split() == ["clay_celery", "clay_celery"]


def test_a_celery_executor_without_a_broker_or_an_unknown_executor_is_named() -> None:
    missing = _python(EXECUTOR_OF_JOB, CLAY_EXECUTOR="celery")
    assert missing.returncode != 0
    assert "CLAY_EXECUTOR=celery needs CLAY_CELERY_BROKER_URL" in missing.stderr
    unknown = _python(EXECUTOR_OF_JOB, CLAY_EXECUTOR="dask")
    assert "CLAY_EXECUTOR must be one of multiprocess, celery, got 'dask'" in unknown.stderr


def test_the_deployment_instance_queues_runs_under_tag_limits(tmp_path, monkeypatch, pg_server) -> None:
    from clay_pipelines.db.targets import ensure_database

    instance.write(tmp_path, "127.0.0.1", 4266)
    ensure_database(pg_server.url("postgres"), "deploy_instance")
    monkeypatch.setenv("DAGSTER_PG_URL", pg_server.url("deploy_instance", driver="psycopg2"))
    config = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(config.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(config.run_launcher).__name__ == "DefaultRunLauncher"
        queue = config.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 2
        limits = {limit["key"]: (limit["limit"], limit["value"]) for limit in queue.tag_concurrency_limits}
        assert limits == {
            "clay/full_recluster": (1, {"applyLimitPerUniqueValue": True}),
            "clay/payroll_tenant": (1, {"applyLimitPerUniqueValue": True}),
        }
        assert config.run_monitoring_enabled
    finally:
        config.dispose()
    workspace = yaml.safe_load((tmp_path / "workspace.yaml").read_text())
    assert workspace == {
        "load_from": [{"grpc_server": {"host": "127.0.0.1", "port": 4266, "location_name": "clay_pipelines"}}]
    }


def test_the_jobs_carry_the_tags_the_limits_key_on() -> None:
    from clay_pipelines.payroll.defs import _run_request
    from clay_pipelines.routing.defs import routing_full_recluster_job

    assert routing_full_recluster_job.tags[instance.FULL_RECLUSTER_TAG] == "all-tenants"
    assert _run_request("oms.com/march.pdf", "ab12", "3").tags[instance.PAYROLL_TENANT_TAG] == "oms.com"


def test_worker_namespaces_of_two_state_folders_get_disjoint_private_subnets() -> None:
    one = WorkerNamespace.for_state_dir(Path("/srv/a"))
    two = WorkerNamespace.for_state_dir(Path("/srv/b"))
    assert one == WorkerNamespace.for_state_dir(Path("/srv/a"))
    for namespace in (one, two):
        network = ipaddress.ip_network(f"{namespace.host_address}/30", strict=False)
        assert network.subnet_of(ipaddress.ip_network("10.200.0.0/16"))
        assert ipaddress.ip_address(namespace.worker_address) in network
        assert max(len(namespace.host_veth), len(namespace.worker_veth)) <= 15
    assert {one.name, one.host_address} & {two.name, two.host_address} == set()


def test_pg_hba_trusts_exactly_the_clients_named_and_is_rewritten_whole(tmp_path) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    embedded.trust_tcp_clients(tmp_path, ["10.200.1.2"])
    embedded.trust_tcp_clients(tmp_path, ["10.200.1.2"])
    assert hba.read_text().count("host all all 10.200.1.2/32 trust") == 1
    embedded.trust_tcp_clients(tmp_path, ["10.200.7.6"])
    text = hba.read_text()
    assert "10.200.1.2" not in text and "host all all 10.200.7.6/32 trust" in text
    embedded.trust_tcp_clients(tmp_path, [])
    assert hba.read_text() == "local all all trust\nhost all all 127.0.0.1/32 trust\n"


def test_a_server_asked_for_tcp_on_a_taken_port_says_so(tmp_path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(embedded.EmbeddedServerError, match=rf"port {port} on 127.0.0.1 is taken .*CLAY_PG_PORT"):
            embedded.start(tmp_path / "pgdata", listen=["127.0.0.1"], port=port)
    assert not (tmp_path / "pgdata" / "PG_VERSION").exists()


def test_stop_never_signals_a_process_that_only_reuses_a_recorded_pid(tmp_path) -> None:
    import json

    from clay_pipelines.deploy.topology import Layout, stop

    layout = Layout(tmp_path / "deploy")
    pid_file = layout.pid_file("daemon")
    pid_file.parent.mkdir(parents=True)
    # This very process, recorded with another start time: a pid the kernel handed out again.
    pid_file.write_text(json.dumps({"name": "daemon", "pid": os.getpid(), "started": 1.0, "log": "daemon.log"}))
    said: list[str] = []
    assert stop(layout, said.append) is True
    assert said == [f"daemon (pid {os.getpid()}): was not running"]
    assert not pid_file.exists()
    assert stop(layout, said.append) is False
