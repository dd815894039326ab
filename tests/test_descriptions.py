"""Every asset check, schedule and sensor says what it does, in the UI and in `dagster` listings."""

from __future__ import annotations

from clay_pipelines.definitions import defs


def test_every_check_schedule_and_sensor_has_a_description() -> None:
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()
    described = {
        **{f"check {key.to_user_string()}": graph.get_check_spec(key).description for key in graph.asset_check_keys},
        **{f"schedule {s.name}": s.description for s in repository.schedule_defs},
        **{f"sensor {s.name}": s.description for s in repository.sensor_defs},
    }
    assert len([name for name in described if name.startswith("check ")]) >= 13
    assert {"schedule routing_rules_daily_schedule", "sensor payroll_inbox_sensor"} <= set(described)
    missing = {name for name, text in described.items() if not (text or "").strip()}
    assert missing == set()
