"""The BambooHR client and the outbox delivery, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clay_pipelines.payroll import store
from clay_pipelines.payroll.approval import decide_document
from clay_pipelines.payroll.bamboohr import BambooHRClient, BambooHRConfig, DeliveryFailed
from clay_pipelines.payroll.delivery import deliver_pending, reconcile
from clay_pipelines.payroll.model import Entry, Extraction
from clay_pipelines.sample_world.payroll_docs import generate_directory

from . import bamboohr_server

ROW = {"date": "2026-01-30", "amount": "1000.00", "currency": "USD", "comment": "salary [clay:1]"}


@pytest.fixture
def server() -> Iterator[bamboohr_server.FakeBambooHR]:
    employees = {e.id: {"id": e.id, "displayName": e.display_name} for e in generate_directory(7)}
    with bamboohr_server.running(employees) as state:
        yield state


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _client(server, sleeps, api_key: str = bamboohr_server.API_KEY, **config) -> BambooHRClient:
    settings = BambooHRConfig(
        company_domain="oms", api_key=api_key, base_url=server.base_url, timeout_seconds=5, **config
    )
    return BambooHRClient(settings, sleep=sleeps.append)


def test_row_is_posted_with_basic_auth(server, sleeps) -> None:
    with _client(server, sleeps) as client:
        delivered = client.add_row("10001", ROW)
        assert (delivered.remote_row_id, delivered.attempts, delivered.adopted) == ("1", 1, False)
        assert [e["displayName"] for e in client.directory()][:2] == ["Kevin McCoy", "Kevin McCue"]
    assert server.posted_rows("10001") == [ROW]
    assert sleeps == []


def test_wrong_api_key_is_final(server, sleeps) -> None:
    with _client(server, sleeps, api_key="wrong") as client, pytest.raises(DeliveryFailed, match="HTTP 401") as error:
        client.add_row("10001", ROW)
    assert error.value.final and server.posted_rows("10001") == []


def test_429_waits_as_long_as_retry_after_says(server, sleeps) -> None:
    server.faults = ["429:7", "503:2"]
    with _client(server, sleeps) as client:
        assert client.add_row("10001", ROW).attempts == 3
    assert sleeps == [7.0, 2.0]
    assert server.posted_rows("10001") == [ROW]


def test_503_without_retry_after_backs_off_exponentially_with_jitter(server, sleeps) -> None:
    server.faults = ["503", "503", "503"]
    with _client(server, sleeps, backoff_seconds=1.0, backoff_cap_seconds=3.0) as client:
        client.add_row("10001", ROW)
    ceilings = [1.0, 2.0, 3.0]  # 1, 2, then capped at 3
    assert len(sleeps) == 3 and all(c / 2 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))
    assert server.posted_rows("10001") == [ROW]


def test_non_retryable_4xx_goes_straight_to_dead_letter(server, sleeps) -> None:
    server.faults = ["400"]
    with _client(server, sleeps) as client, pytest.raises(DeliveryFailed, match="HTTP 400") as error:
        client.add_row("10001", ROW)
    assert error.value.final
    assert [r[0] for r in server.requests] == ["POST"]  # tried once, never again


def test_dropped_connection_after_the_row_landed_adopts_it(server, sleeps) -> None:
    server.faults = ["drop_after_store"]
    with _client(server, sleeps) as client:
        delivered = client.add_row("10001", ROW)
    assert delivered.adopted is True and delivered.remote_row_id == "1"
    assert server.posted_rows("10001") == [ROW]  # exactly one row, not two
    assert [r[0] for r in server.requests] == ["POST", "GET"]


def test_dropped_connection_before_the_row_landed_posts_again(server, sleeps) -> None:
    server.faults = ["drop_before_store"]
    with _client(server, sleeps) as client:
        delivered = client.add_row("10001", ROW)
    assert delivered.adopted is False
    assert server.posted_rows("10001") == [ROW]
    assert [r[0] for r in server.requests] == ["POST", "GET", "POST"]


def test_attempts_are_bounded(server, sleeps) -> None:
    server.faults = ["503"] * 10
    with _client(server, sleeps, max_attempts=3) as client, pytest.raises(DeliveryFailed, match="gave up after 3") as e:
        client.add_row("10001", ROW)
    assert not e.value.final and len(server.requests) == 3


# ---------------------------------------------------------------------------------------------
# The outbox, end to end


@pytest.fixture
def approved_payroll(fresh_db):
    """40 approved entries for real employees, plus one for an employee BambooHR does not know."""
    with fresh_db.admin() as conn:
        tenant = conn.execute("INSERT INTO tenants (name, domain) VALUES ('OMS', 'oms.com') RETURNING id").fetchone()[0]
    directory = generate_directory(7)
    people = [asdict(e) for e in directory] + [
        {"id": "99999", "first_name": "Gone", "middle_name": "", "last_name": "Away", "preferred_name": None}
    ]
    entries = [
        Entry(
            employee_name=f"{e.last_name.upper()}, {e.first_name.upper()}",
            amount=Decimal(100 + k),
            page=1,
            employee_id=e.id,
            date=date(2026, 1, 30),
            currency="USD",
            reference="salary",
        )
        for k, e in enumerate(directory[10:50])
    ]
    entries.append(
        Entry(employee_name="AWAY, GONE", amount=Decimal("5.00"), page=1, employee_id="99999", date=date(2026, 1, 30))
    )
    with fresh_db.database() as db:
        with db.tenant_transaction(tenant) as conn:
            store.sync_directory(conn, people, {})
            extraction = Extraction(source_file="jan.pdf", pages=1, template=None, entries=entries)
            stored = store.store_extraction(conn, "jan.pdf", "h", extraction, store.load_resolver(conn))
            assert stored.unresolved == 0
            decide_document(conn, "jan.pdf", "preston@oms.com", approve=True)
        yield db, tenant


def _outbox(db, tenant) -> dict[str, int]:
    with db.tenant_transaction(tenant) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM bamboohr_outbox GROUP BY 1").fetchall())


def test_delivery_through_every_fault_loses_and_duplicates_nothing(approved_payroll, server, sleeps) -> None:
    db, tenant = approved_payroll
    server.faults = ["429:1", "503", "drop_after_store", "drop_before_store", "503:1", "drop_after_store", "500"]
    with _client(server, sleeps) as client:
        report = deliver_pending(db, tenant, client)
        assert (report.delivered, report.adopted, report.dead_letters, report.retry_later) == (40, 2, 1, 0)
        assert _outbox(db, tenant) == {"delivered": 40, "dead_letter": 1}
        # Every entry exactly once in BambooHR.
        posted = [row for rows in server.rows.values() for row in rows]
        assert len(posted) == 40
        assert len({row["comment"] for row in posted}) == 40
        # A second run has nothing to send.
        again = deliver_pending(db, tenant, client)
        assert again.delivered == 0 and len([r for rows in server.rows.values() for r in rows]) == 40
        assert reconcile(db, tenant, client).clean

        # Someone edits a row in BambooHR, another disappears: reconciliation says which.
        first_employee = sorted(server.rows)[0]
        server.rows[first_employee][0]["amount"] = "1.00"
        second_employee = sorted(server.rows)[1]
        server.rows[second_employee].clear()
        drift = reconcile(db, tenant, client)
    assert drift.checked_entries == 40
    assert [d.split("/")[0] for d in drift.differing] == [first_employee]
    assert [m.split("/")[0] for m in drift.missing_in_bamboohr] == [second_employee]
    with db.tenant_transaction(tenant) as conn:
        dead = conn.execute(
            "SELECT payload->>'employee_id', last_error FROM bamboohr_outbox WHERE status = 'dead_letter'"
        ).fetchone()
        telemetry = conn.execute(
            "SELECT tool_name, success, input_data->>'entries' FROM mcp_telemetry_log ORDER BY timestamp"
        ).fetchall()
    assert dead[0] == "99999" and "HTTP 404" in dead[1]
    assert telemetry == [("upload_payroll_entries", False, "40"), ("upload_payroll_entries", True, "0")]


def test_unreachable_bamboohr_leaves_deliveries_pending_for_later(approved_payroll, sleeps, tmp_path: Path) -> None:
    db, tenant = approved_payroll
    config = BambooHRConfig(
        company_domain="oms", api_key="k", base_url="http://127.0.0.1:9/api", max_attempts=2, timeout_seconds=1
    )
    with BambooHRClient(config, sleep=sleeps.append) as client:
        report = deliver_pending(db, tenant, client, limit=3)
    assert (report.delivered, report.retry_later) == (0, 3)
    assert _outbox(db, tenant) == {"pending": 41}
    with db.tenant_transaction(tenant) as conn:
        later = conn.execute("SELECT count(*) FROM bamboohr_outbox WHERE next_attempt_at > now()").fetchone()[0]
    assert later == 3


# ---------------------------------------------------------------------------------------------
# In Dagster


def _resources(fresh_db):
    from clay_pipelines.payroll.defs import BambooHRSettings
    from clay_pipelines.resources import PostgresResource

    return {
        "postgres": PostgresResource(app_dsn=fresh_db.app_url, maintenance_dsn=fresh_db.maintenance_url),
        "bamboohr": BambooHRSettings(),
    }


def _configure(monkeypatch, server) -> None:
    monkeypatch.setenv("BAMBOOHR_COMPANY_DOMAIN", "oms")
    monkeypatch.setenv("BAMBOOHR_API_KEY", bamboohr_server.API_KEY)
    monkeypatch.setenv("BAMBOOHR_BASE_URL", server.base_url)
    monkeypatch.setenv("BAMBOOHR_TENANT", "oms.com")


def test_delivery_sensor_says_why_nothing_moves(fresh_db, approved_payroll, server, monkeypatch) -> None:
    import dagster as dg

    from clay_pipelines.payroll.defs import payroll_delivery_sensor

    for name in ("BAMBOOHR_COMPANY_DOMAIN", "BAMBOOHR_API_KEY", "BAMBOOHR_BASE_URL", "BAMBOOHR_TENANT"):
        monkeypatch.delenv(name, raising=False)
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=_resources(fresh_db)) as context:
            skipped = payroll_delivery_sensor(context)
        assert isinstance(skipped, dg.SkipReason)
        assert skipped.skip_message == (
            "BambooHR is not configured (set BAMBOOHR_COMPANY_DOMAIN, BAMBOOHR_API_KEY and BAMBOOHR_TENANT): "
            "41 approved deliveries wait in the outbox"
        )
        _configure(monkeypatch, server)
        with dg.build_sensor_context(instance=instance, resources=_resources(fresh_db)) as context:
            result = payroll_delivery_sensor(context)
        assert len(result.run_requests) == 1 and result.run_requests[0].run_key.startswith("deliver:41:")


def test_delivery_and_reconciliation_assets_serve_only_their_tenant(
    fresh_db, approved_payroll, server, monkeypatch
) -> None:
    import dagster as dg

    from clay_pipelines.payroll.defs import bamboohr_deliveries, bamboohr_reconciliation, payroll_delivery_sensor

    _configure(monkeypatch, server)
    # Another tenant's approved entry must never reach OMS's BambooHR.
    with fresh_db.admin() as conn:
        other = conn.execute("INSERT INTO tenants (name, domain) VALUES ('Other', 'other.io') RETURNING id").fetchone()[
            0
        ]
    with fresh_db.database() as db, db.tenant_transaction(other) as conn:
        store.sync_directory(conn, [{"id": "10001", "first_name": "Kevin", "last_name": "McCoy"}], {})
        extraction = Extraction(
            source_file="feb.pdf",
            pages=1,
            template=None,
            entries=[Entry(employee_name="Kevin McCoy", amount=Decimal("9.99"), page=1, date=date(2026, 2, 27))],
        )
        store.store_extraction(conn, "feb.pdf", "o", extraction, store.load_resolver(conn))
        decide_document(conn, "feb.pdf", "boss@other.io", approve=True)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [bamboohr_deliveries, bamboohr_reconciliation], instance=instance, resources=_resources(fresh_db)
        )
        assert result.success
        delivered = result.asset_materializations_for_node("payroll__bamboohr_deliveries")[0].metadata
        assert (delivered["delivered"].value, delivered["dead_letters"].value) == (40, 1)
        check = result.get_asset_check_evaluations()[0]
        assert (check.check_name, check.passed) == ("bamboohr_matches_payroll_entries", True)
        with dg.build_sensor_context(instance=instance, resources=_resources(fresh_db)) as context:
            after = payroll_delivery_sensor(context)
        assert isinstance(after, dg.SkipReason) and after.skip_message == "no approved deliveries wait in the outbox"
    assert sum(len(rows) for rows in server.rows.values()) == 40
    assert all(row["amount"] != "9.99" for rows in server.rows.values() for row in rows)
    with fresh_db.database() as db, db.tenant_transaction(other) as conn:
        assert conn.execute("SELECT status FROM bamboohr_outbox").fetchall() == [("pending",)]


def test_directory_comes_from_bamboohr_for_its_tenant(
    fresh_db, approved_payroll, server, monkeypatch, tmp_path
) -> None:
    import dagster as dg

    from clay_pipelines.payroll.defs import PayrollSettings, employee_directory

    _configure(monkeypatch, server)
    server.employees = {"20001": {"id": 20001, "firstName": "Nora", "lastName": "Quist", "preferredName": "Noni"}}
    resources = {**_resources(fresh_db), "payroll": PayrollSettings(directory_dir=str(tmp_path))}
    with dg.instance_for_test() as instance:
        assert dg.materialize([employee_directory], instance=instance, resources=resources).success
    db, tenant = approved_payroll
    with db.tenant_transaction(tenant) as conn:
        assert conn.execute(
            "SELECT employee_id, first_name, last_name, preferred_name FROM employee_directory"
        ).fetchall() == [("20001", "Nora", "Quist", "Noni")]
