"""Test fixtures: a real embedded PostgreSQL in a throwaway folder, and cheap fresh databases.

One server per test session. Migrations are applied once to a template database; each test that
writes gets its own database cloned from the template (CREATE DATABASE ... TEMPLATE), which takes
milliseconds, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

# Before anything reads the settings: never touch the developer's .clay or an external database.
_STATE = Path(tempfile.mkdtemp(prefix="clay-tests-"))
os.environ["CLAY_STATE_DIR"] = str(_STATE)
os.environ["DAGSTER_HOME"] = str(_STATE / "dagster_home")
for _variable in (
    "DATABASE_URL",
    "CLAY_APP_DATABASE_URL",
    "CLAY_MAINTENANCE_DATABASE_URL",
    "CLAY_POOLED_DATABASE_URL",
    "DAGSTER_PG_URL",
    "CLAY_DATABASE_NAME",
):
    os.environ.pop(_variable, None)

from clay_pipelines import settings  # noqa: E402
from clay_pipelines.db import Database, embedded  # noqa: E402
from clay_pipelines.db.migrations import apply_migrations  # noqa: E402
from clay_pipelines.sample_world import WorldParameters, load_world  # noqa: E402

TEMPLATE = "clay_template"
WORLD_ANCHOR = date(2026, 1, 15)
_counter = itertools.count()


@dataclass(frozen=True)
class TestDatabase:
    name: str
    server: embedded.EmbeddedServer

    @property
    def admin_url(self) -> str:
        return self.server.url(self.name)

    @property
    def app_url(self) -> str:
        return self.server.url(self.name, user=settings.APP_ROLE)

    @property
    def maintenance_url(self) -> str:
        return self.server.url(self.name, user=settings.MAINTENANCE_ROLE)

    def database(self, **kwargs: object) -> Database:
        return Database(self.app_url, self.maintenance_url, **kwargs)  # type: ignore[arg-type]

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[embedded.EmbeddedServer]:
    server = embedded.start(settings.pgdata_dir())
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    apply_migrations(server.url(TEMPLATE))
    yield server
    embedded.stop(settings.pgdata_dir())
    shutil.rmtree(_STATE, ignore_errors=True)


def create_database(server: embedded.EmbeddedServer, template: str | None = TEMPLATE) -> TestDatabase:
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if template:
        # A database's own privileges are not copied from its template: apply the migrations' again.
        with psycopg.connect(server.url(name), autocommit=True) as conn:
            conn.execute("SELECT public.clay_revoke_temporary_from_app()")
    return TestDatabase(name, server)


def drop_database(db: TestDatabase) -> None:
    with psycopg.connect(db.server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


@pytest.fixture
def fresh_db(pg_server: embedded.EmbeddedServer) -> Iterator[TestDatabase]:
    """A migrated, empty database of this test's own."""
    db = create_database(pg_server)
    yield db
    drop_database(db)


@pytest.fixture
def empty_db(pg_server: embedded.EmbeddedServer) -> Iterator[TestDatabase]:
    """A database with no migrations applied."""
    db = create_database(pg_server, template=None)
    yield db
    drop_database(db)


@pytest.fixture
def database(fresh_db: TestDatabase) -> Iterator[Database]:
    with fresh_db.database() as db:
        yield db


@pytest.fixture(scope="session")
def world_template(pg_server: embedded.EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> TestDatabase:
    """A database holding the sample world (seed 7, scale 1, ending 2026-01-15), used as a template."""
    db = create_database(pg_server)
    with db.database() as client:
        load_world(
            client,
            WorldParameters(seed=7, scale=1, anchor=WORLD_ANCHOR),
            tmp_path_factory.mktemp("world"),
            progress=lambda _: None,
        )
    return db


@pytest.fixture
def world_db(world_template: TestDatabase) -> Iterator[TestDatabase]:
    """A private copy of the sample world."""
    db = create_database(world_template.server, template=world_template.name)
    yield db
    drop_database(db)


@pytest.fixture
def dagster_env(fresh_db: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> TestDatabase:
    """Environment variables the Dagster resources read, pointing at this test's database."""
    monkeypatch.setenv("CLAY_APP_DATABASE_URL", fresh_db.app_url)
    monkeypatch.setenv("CLAY_MAINTENANCE_DATABASE_URL", fresh_db.maintenance_url)
    monkeypatch.setenv("CLAY_EMBEDDER", "hashing")
    return fresh_db
