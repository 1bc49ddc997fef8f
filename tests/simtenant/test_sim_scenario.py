from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.simtenant import Scenario, ScenarioError, SimClock, load_scenario
from devtools.simtenant.scenario import demo_scenario_path


def test_demo_scenario_round_trips_through_dict(demo: Scenario) -> None:
    again = Scenario.from_dict(json.loads(json.dumps(demo.to_dict())))
    assert again == demo
    assert again.to_dict() == demo.to_dict()


def test_demo_scenario_covers_every_documented_failure_mode(demo: Scenario) -> None:
    names = {p.name for p in demo.policies}
    assert {
        "Contoso - Standard Laptops",
        "Contoso - Finance",
        "Contoso - Kiosk",
        "Contoso - Engineering",
        "Contoso - Frontline",
    } <= names
    assert 30 <= len(demo.devices) <= 40
    assert all(d.note for d in demo.devices)
    assert {p.etg_api for p in demo.policies} >= {"documented", "targets", "jit_only"}
    outcomes = {d.deployment.outcome for d in demo.devices}
    assert outcomes == {"success", "failed", "in_progress"}
    assert any(not d.profile_name_stamped for d in demo.devices)
    assert any(m.actor == "admin" for d in demo.devices for m in d.membership)
    assert {m.audit_actor_fields for d in demo.devices for m in d.membership} == {
        "both",
        "appId",
        "displayName",
    }
    assert any(m.audit_delay_s >= 3000 for d in demo.devices for m in d.membership)
    window = [d.enrolled_at for d in demo.devices]
    assert min(window) >= demo.start - timedelta(days=2)
    assert max(window) < demo.start


def test_unknown_group_in_policy_is_reported_with_its_path(demo: Scenario) -> None:
    data = demo.to_dict()
    data["policies"][0]["etg_group_id"] = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(
        ScenarioError,
        match=r"policies\[0\].*unknown group id '00000000-0000-0000-0000-000000000001'",
    ):
        Scenario.from_dict(data)


def test_duplicate_ids_are_rejected(demo: Scenario) -> None:
    data = demo.to_dict()
    data["devices"][1]["managed_device_id"] = data["devices"][0]["managed_device_id"]
    with pytest.raises(ScenarioError, match="duplicate managed_device_id"):
        Scenario.from_dict(data)


def test_unknown_field_names_are_rejected_to_catch_typos(demo: Scenario) -> None:
    data = demo.to_dict()
    data["groups"][0]["securityEnabled"] = True
    with pytest.raises(ScenarioError, match=r"groups\[0\]: unknown field\(s\) securityEnabled"):
        Scenario.from_dict(data)


def test_times_without_zone_are_rejected(demo: Scenario) -> None:
    data = demo.to_dict()
    data["start"] = "2026-11-20T08:00:00"
    with pytest.raises(ScenarioError, match=r"scenario\.start: time has no zone"):
        Scenario.from_dict(data)


def test_load_scenario_names_the_file_in_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"bad\.json: not valid JSON"):
        load_scenario(bad)


def test_membership_event_without_group_needs_a_policy_etg(demo: Scenario) -> None:
    data = demo.to_dict()
    kiosk = next(p["id"] for p in data["policies"] if p["etg_group_id"] is None)
    device = next(d for d in data["devices"] if d["policy_id"] == kiosk)
    device["membership"] = [{"op": "add", "offset_s": 30}]
    with pytest.raises(ScenarioError, match="no group_id and the device's policy has no ETG"):
        Scenario.from_dict(data)


def test_bundled_demo_file_is_the_one_loaded() -> None:
    assert demo_scenario_path().name == "demo.json"
    assert load_scenario(demo_scenario_path()).tenant_id


def test_clock_moves_only_when_told() -> None:
    clock = SimClock(datetime(2026, 11, 20, 8, tzinfo=UTC))
    assert clock.now() == datetime(2026, 11, 20, 8, tzinfo=UTC)
    clock.advance(90)
    assert clock.now() == datetime(2026, 11, 20, 8, 1, 30, tzinfo=UTC)
    clock.set(datetime(2026, 11, 21, 9, tzinfo=UTC))
    assert clock.now().tzinfo is not None and clock.now().hour == 9
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2026, 11, 21, 9))
