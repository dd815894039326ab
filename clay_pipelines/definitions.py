"""The one root: every asset, check, job, schedule, sensor and resource, and the policies applied
to all of them (executor, retries, the automation sensor)."""

import os

import dagster as dg

from clay_pipelines.payroll.assets import PAYROLL_ASSETS, PAYROLL_SENSORS, BambooHRSettings, PayrollSettings
from clay_pipelines.platform.assets import EXTERNAL_ASSETS, MONITORING_ASSETS
from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.assets import (
    ROUTING_ASSETS,
    ROUTING_JOBS,
    ROUTING_SCHEDULES,
    ROUTING_SENSORS,
    EmbedderResource,
)

# Transient failures (a dropped connection, a busy database) get three more tries with growing,
# jittered waits; run-level retries for everything launched from the UI are set in dagster.yaml.
DEFAULT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

ALL_ASSETS = [*EXTERNAL_ASSETS, *MONITORING_ASSETS, *PAYROLL_ASSETS, *ROUTING_ASSETS]

monitoring_job = dg.define_asset_job(
    "platform_monitoring",
    selection=dg.AssetSelection.groups("monitoring"),
    description="Tool health and budget usage, on demand.",
    op_retry_policy=DEFAULT_RETRY_POLICY,
)

# Assets declare *when* they should run (AutomationCondition); this sensor, on by default, acts on it.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
)

payroll_job = dg.define_asset_job(
    "payroll_files",
    selection=dg.AssetSelection.assets(["payroll", "payroll_entries"]),
    description="Extract, check and store one payroll file (one partition per file).",
    op_retry_policy=DEFAULT_RETRY_POLICY,
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[monitoring_job, payroll_job, *ROUTING_JOBS],
    schedules=ROUTING_SCHEDULES,
    sensors=[automation_sensor, *PAYROLL_SENSORS, *ROUTING_SENSORS],
    resources={
        "postgres": PostgresResource(
            app_dsn=dg.EnvVar("CLAY_APP_DSN"),
            maintenance_dsn=dg.EnvVar("CLAY_MAINTENANCE_DSN"),
        ),
        "payroll": PayrollSettings(),
        "bamboohr": BambooHRSettings(),
        "embedder": EmbedderResource(name=os.environ.get("CLAY_EMBEDDER", "hashing")),
    },
    # Two cores: two processes at most.
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)
