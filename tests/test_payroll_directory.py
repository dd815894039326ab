"""The employee directory cache from directory files: each tenant's people and LLC mapping, reported
by tenant name."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from clay_pipelines.payroll import store
from clay_pipelines.payroll.defs import BambooHRSettings, PayrollSettings, employee_directory
from clay_pipelines.resources import PostgresResource

ANN = {"id": "7", "first_name": "Ann", "last_name": "Li"}
BOB = {"id": "8", "first_name": "Bob", "last_name": "Scott", "preferred_name": "Bobby"}


def _folder(tmp_path: Path) -> Path:
    """oms.com's directory named by its domain, with an LLC mapping; Blue Harbor's by its name, without."""
    folder = tmp_path / "directory"
    folder.mkdir()
    (folder / "oms.com.json").write_text(json.dumps([ANN, BOB]))
    (folder / "oms.com.llc.json").write_text(json.dumps({"Li Consulting LLC": "7"}))
    (folder / "Blue Harbor.json").write_text(json.dumps([BOB]))
    return folder


def test_directory_files_are_read_with_their_llc_mapping(tmp_path: Path) -> None:
    assert store.directory_files(_folder(tmp_path)) == [
        store.DirectoryFile(tenant_ref="Blue Harbor", people=[BOB], llc_mapping={}),
        store.DirectoryFile(tenant_ref="oms.com", people=[ANN, BOB], llc_mapping={"Li Consulting LLC": "7"}),
    ]
    assert store.directory_files(tmp_path / "nowhere") == []


def test_the_directory_asset_caches_each_tenants_people_and_names_the_tenants(
    dagster_env, tmp_path: Path, monkeypatch
) -> None:
    for name in ("BAMBOOHR_COMPANY_DOMAIN", "BAMBOOHR_API_KEY", "BAMBOOHR_TENANT"):
        monkeypatch.delenv(name, raising=False)
    with dagster_env.admin() as conn:
        oms = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
        blue = conn.execute("INSERT INTO tenants (name) VALUES ('Blue Harbor') RETURNING id").fetchone()[0]
    resources = {
        "postgres": PostgresResource(app_dsn=dagster_env.app_url, maintenance_dsn=dagster_env.maintenance_url),
        "payroll": PayrollSettings(directory_dir=str(_folder(tmp_path))),
        "bamboohr": BambooHRSettings(),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([employee_directory], instance=instance, resources=resources)
    metadata = {
        k: v.value for k, v in result.asset_materializations_for_node("payroll__employee_directory")[0].metadata.items()
    }
    assert metadata == {"tenants": 2, "employees": 3, "rows_written": 3, "by_tenant": {"Blue Harbor": 1, "OMS": 2}}
    with dagster_env.database() as db:
        with db.tenant_transaction(oms) as conn:
            assert conn.execute("SELECT employee_id, preferred_name FROM employee_directory ORDER BY 1").fetchall() == [
                ("7", None),
                ("8", "Bobby"),
            ]
            assert store.cached_llc_mapping(conn) == {"Li Consulting LLC": "7"}
        with db.tenant_transaction(blue) as conn:
            assert conn.execute("SELECT employee_id FROM employee_directory").fetchall() == [("8",)]
            assert store.cached_llc_mapping(conn) == {}
