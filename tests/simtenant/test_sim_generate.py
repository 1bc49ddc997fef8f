from __future__ import annotations

import time
from datetime import timedelta

import httpx

from devtools.simtenant import (
    SimulatedTenant,
    TenantState,
    add_deployments,
    generate_scale_scenario,
)


def test_scale_generator_builds_twenty_thousand_deployments_quickly() -> None:
    started = time.monotonic()
    scenario = generate_scale_scenario(deployments=20000, etg_members=100000, audit_events=200000)
    state = TenantState(scenario)
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"generation and indexing took {elapsed:.1f} s"
    assert len(scenario.devices) == 20000
    now = state.now_ts()
    total_members = sum(state.member_count(p.etg_group_id or "", now) for p in scenario.policies)
    assert 95000 <= total_members <= 100000
    assert 195000 <= state.audit_event_count() <= 205000
    healthy = sum(1 for d in scenario.devices if d.note == "healthy")
    assert 0.85 < healthy / len(scenario.devices) < 0.95
    assert {d.note for d in scenario.devices} >= {
        "missing",
        "late",
        "removed",
        "failed",
        "stuck",
        "unstamped",
        "slow_audit",
    }
    assert min(d.enrolled_at for d in scenario.devices) >= scenario.start - timedelta(days=7)


def test_scale_generator_is_deterministic_and_valid() -> None:
    one = generate_scale_scenario(deployments=500, etg_members=1500, audit_events=3000, seed=9)
    two = generate_scale_scenario(deployments=500, etg_members=1500, audit_events=3000, seed=9)
    other = generate_scale_scenario(deployments=500, etg_members=1500, audit_events=3000, seed=10)
    assert one.to_dict() == two.to_dict()
    assert one.devices[0].managed_device_id != other.devices[0].managed_device_id
    one.validate()


def test_add_deployments_feeds_a_running_tenant() -> None:
    scenario = generate_scale_scenario(deployments=200, etg_members=400, audit_events=500, seed=4)
    with SimulatedTenant(scenario) as tenant:
        before = httpx.get(
            f"{tenant.base_url}/v1.0/deviceManagement/managedDevices?$top=1000"
        ).json()["value"]
        at = tenant.clock.now() + timedelta(minutes=5)
        new = add_deployments(scenario, 25, at=at)
        tenant.state.add_devices(new)
        assert len(scenario.devices) == 225
        tenant.clock.advance(3600)
        fresh = httpx.get(
            f"{tenant.base_url}/v1.0/deviceManagement/managedDevices",
            params={"$filter": f"enrolledDateTime ge {at:%Y-%m-%dT%H:%M:%SZ}"},
        ).json()["value"]
        assert {d["id"] for d in fresh} == {d.managed_device_id for d in new}
        assert len(before) == 200
        group_id = new[0].policy_id and scenario.policy(new[0].policy_id).etg_group_id
        assert group_id and tenant.state.is_member(
            group_id, new[0].object_id, tenant.state.now_ts()
        )
