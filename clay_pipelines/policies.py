"""The policies the root applies once to every domain's definitions: retries (transient failures
only, with backoff), the automation sensor, and the executor (CLAY_EXECUTOR: the multiprocess
executor by default, Dagster's Celery executor where `clay deploy local` or an operator sets it)."""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import dagster as dg

# The op's compute function, as Dagster wraps it; rebuilt around the failure policy below.
from dagster._core.definitions.decorators.op_decorator import DecoratedOpFunction

from clay_pipelines import settings
from clay_pipelines.failures import is_transient, one_line

# Transient failures (a dropped connection, a busy database) get three more tries with growing,
# jittered waits; every other failure is final at once (see `_permanent_unless_transient`). Runs
# whose worker crashed are retried by the daemon (dagster.yaml, run_retries).
DEFAULT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def _non_retryable(error: Exception) -> Exception | None:
    """The failure to raise instead of `error` so that the retry policy leaves it alone; None when
    `error` goes through as it is (transient, already final, or Dagster's own control flow)."""
    if isinstance(error, dg.RetryRequested | dg.DagsterError):
        return None
    if isinstance(error, dg.Failure):
        if not error.allow_retries or is_transient(error):
            return None
        return dg.Failure(description=error.description, metadata=error.metadata, allow_retries=False)
    if is_transient(error):
        return None
    return dg.Failure(description=one_line(error), allow_retries=False)


def _permanent_unless_transient(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, raising dg.Failure(allow_retries=False) for every failure that is not transient.

    Dagster's RetryPolicy retries any exception but such a Failure; this is how the policy comes to
    retry only what another try can fix. functools.wraps keeps the signature Dagster reads the
    context, inputs and resources from.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as error:
                final = _non_retryable(error)
                if final is None:
                    raise
                raise final from error

        return generator

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            final = _non_retryable(error)
            if final is None:
                raise
            raise final from error

    return function


def with_failure_policy(assets_def: dg.AssetsDefinition | dg.AssetSpec) -> dg.AssetsDefinition | dg.AssetSpec:
    """The same asset, its op carrying DEFAULT_RETRY_POLICY and the permanent-failure rule.

    On the op itself rather than on each job, so that every way of running it (the jobs, the UI's
    materialize, sensors, schedules, the automation sensor, `clay run`) retries the same way.
    """
    if isinstance(assets_def, dg.AssetSpec) or not assets_def.is_executable:
        return assets_def  # external: nothing runs here
    op = assets_def.node_def
    if not isinstance(op, dg.OpDefinition) or not isinstance(op.compute_fn, DecoratedOpFunction):
        raise TypeError(f"{assets_def.key.to_user_string()}: the failure policy knows only op-backed assets")
    wrapped = dg.OpDefinition.dagster_internal_init(
        name=op.name,
        ins={d.name: dg.In.from_definition(d) for d in op.input_defs},
        outs={d.name: dg.Out.from_definition(d) for d in op.output_defs},
        compute_fn=DecoratedOpFunction(_permanent_unless_transient(op.compute_fn.decorated_fn)),
        config_schema=op.config_schema,
        description=op.description,
        tags=op.tags,
        required_resource_keys=op.required_resource_keys,
        code_version=op._version,  # the public `version` is deprecated
        retry_policy=DEFAULT_RETRY_POLICY,
        version=None,
        pool=op.pool,
    )
    return dg.AssetsDefinition.dagster_internal_init(**{**assets_def.get_attributes_dict(), "node_def": wrapped})


# Assets declare *when* they should run (AutomationCondition); this sensor, on by default, acts on it.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Materializes every asset when its AutomationCondition says so (eager after upstream changes, "
    "on cron for schedules declared on the asset).",
)

# Two cores: two processes at most.
MULTIPROCESS_EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": 2})

# What the run's side of the Celery app is told besides broker and backend; the workers' app
# (clay_pipelines/deploy/celery_app.py) reads the same dict, so both sides agree.
CELERY_SETTINGS: dict[str, Any] = {
    # One task at a time per worker process: a step is long, and a prefetched one would wait behind it.
    "worker_prefetch_multiplier": 1,
    # Acknowledged when done, not when taken: a busy worker holds no second step that an idle one
    # could run, and a step whose worker died is handed out again.
    "task_acks_late": True,
    "broker_connection_retry_on_startup": True,
}


def celery_executor_definition() -> dg.ExecutorDefinition:
    """dagster-celery's executor, its broker and backend read from the environment where the run
    executes (the URLs hold Redis's password: they stay out of the run's config and the definitions)."""
    from dagster_celery import celery_executor

    settings.celery_broker_url()  # raises, naming the variable, when it is missing
    backend_variable = (
        "CLAY_CELERY_BACKEND_URL" if settings.env("CLAY_CELERY_BACKEND_URL") else "CLAY_CELERY_BROKER_URL"
    )
    return celery_executor.configured(
        {
            "broker": {"env": "CLAY_CELERY_BROKER_URL"},
            "backend": {"env": backend_variable},
            "config_source": CELERY_SETTINGS,
        },
        name="clay_celery",
    )


def executor_definition() -> dg.ExecutorDefinition:
    """The executor CLAY_EXECUTOR names: multiprocess (make run, tests, clay dev) or celery (deployed)."""
    return celery_executor_definition() if settings.executor_name() == "celery" else MULTIPROCESS_EXECUTOR


def apply_policies(merged: dg.Definitions) -> dg.Definitions:
    """The domains' definitions with the failure policy on every asset, the automation sensor and the
    executor: the one place these are set."""
    return dg.Definitions(
        assets=[with_failure_policy(a) for a in merged.assets or []],
        asset_checks=list(merged.asset_checks or []),
        jobs=list(merged.jobs or []),
        schedules=list(merged.schedules or []),
        sensors=[automation_sensor, *(merged.sensors or [])],
        resources=dict(merged.resources or {}),
        executor=executor_definition(),
    )
