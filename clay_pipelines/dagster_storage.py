"""Dagster's instance storage as dagster.yaml names it: dagster-postgres at DAGSTER_PG_URL.

A class of our own rather than `postgres_url: {env: DAGSTER_PG_URL}` so that a plain `dagster dev`
or `dagster definitions validate` in the project folder, which reads dagster.yaml from there without
the project's environment, stops with one line saying what to run instead of a configuration
traceback. Everything else is dagster-postgres's own storage; the storages it hands to run workers
read the same variable.
"""

from __future__ import annotations

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from clay_pipelines import settings

NOT_CONFIGURED = (
    "clay: Dagster's storage is the project's PostgreSQL and DAGSTER_PG_URL is not set: run `make dev` "
    '(or `eval "$(.venv/bin/clay env)"` before plain dagster commands)'
)
# How the storages handed to run workers find the database: the same variable, read where they run.
_FROM_ENVIRONMENT = "postgres_url:\n  env: DAGSTER_PG_URL\n"


class ClayPostgresStorage(DagsterPostgresStorage):
    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> ClayPostgresStorage:
        url = settings.env("DAGSTER_PG_URL")
        if not url:
            raise SystemExit(NOT_CONFIGURED)
        return cls(postgres_url=url, inst_data=inst_data)

    def _part(self, name: str) -> ConfigurableClassData:
        return ConfigurableClassData("dagster_postgres", name, _FROM_ENVIRONMENT)

    @property
    def event_storage_data(self) -> ConfigurableClassData:
        return self._part("PostgresEventLogStorage")

    @property
    def run_storage_data(self) -> ConfigurableClassData:
        return self._part("PostgresRunStorage")

    @property
    def schedule_storage_data(self) -> ConfigurableClassData:
        return self._part("PostgresScheduleStorage")
