"""The monitor on a tenant that behaves as Graph is documented to (simtenant.strict).

Every anomaly of the ground truth is found, nothing else is raised, and the only unverified
deployments are those whose facts the tenant makes unreadable, each naming what is missing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import pytest

from devtools.simtenant.strict import JIT_ONLY, OUT_OF_SCOPE, UNROUTED, policy_name, strict_scenario
from monitors.models import ETG_SOURCE_OPERATOR, ETG_SOURCE_SETTINGS, Status
from monitors.render import config_report_text
from monitors.settings import Settings
from tests.helpers import (
    checkpoints,
    config_check,
    etg_of,
    pairs,
    scan,
    scenario_device,
    settings_for,
    stored_anomalies,
)

pytestmark = pytest.mark.integration


def _settings(tenant: Any, azurite: Any, **extra: str) -> Settings:
    """Settings on a tenant the test starts itself, so on tables of their own."""
    prefix = "s" + uuid.uuid4().hex[:12]
    return settings_for(
        tenant.base_url, azurite.connection_string, prefix, ETG_DETAILED_REPORTS="true", **extra
    )


def _run(settings: Settings, tenant: Any) -> dict[str, Any]:
    config = config_check(settings, tenant)
    tenant.reset_stats()
    report = scan(settings, tenant)
    anomalies = stored_anomalies(settings)
    return {"config": config, "scan": report, "anomalies": anomalies, "sim": tenant.stats()}


@pytest.fixture(scope="module")
def strict(azurite):
    from devtools.simtenant.server import SimulatedTenant

    scenario, truth = strict_scenario()
    with SimulatedTenant(scenario) as tenant:
        result = _run(_settings(tenant, azurite), tenant)
    return scenario, truth, result


def _open(result: dict[str, Any]) -> list[Any]:
    return [a for a in result["anomalies"] if a.status is Status.OPEN]


def _open_on_devices(result: dict[str, Any]) -> set[tuple[str, str]]:
    return pairs([a for a in _open(result) if a.subject.device_name])


def test_the_strict_scenario_has_more_etg_policies_than_one_membership_check_takes(strict):
    scenario, truth, _ = strict
    assert len([p for p in scenario.policies if p.etg_group_id]) >= 25 > 20
    assert len(truth.device_anomalies) >= 16
    assert any(not d.profile_name_stamped for d in scenario.devices)


def test_every_anomaly_of_the_ground_truth_is_found_and_nothing_else(strict):
    _, truth, result = strict
    devices = _open_on_devices(result)
    policies = {(a.kind, a.subject.policy_name) for a in _open(result) if not a.subject.device_name}
    assert devices == truth.device_anomalies
    assert policies == truth.policy_anomalies


def test_only_the_unreadable_deployments_are_unverified_each_saying_why(strict):
    _, truth, result = strict
    rows = result["scan"].to_json()["devices"]
    judged = {j.deployment.device_name: j for j in result["scan"].judgements}
    unverified = {name for name, j in judged.items() if j.state == "unverified"}
    assert unverified == set(truth.unverified)
    for name, reason in truth.unverified.items():
        reasons = {u.reason.value for u in judged[name].unverified}
        assert reasons == {reason}, name
    assert "securityGroupNotInCallerScope" in next(
        r["why"] for r in rows if r["device_name"] == "SCOPE-01"
    )
    assert "no.assignment@contoso.com is in no group" in next(
        r["why"] for r in rows if r["device_name"] == "NOUSER-01"
    )
    assert {name for name, j in judged.items() if j.state == "pending"} >= truth.pending


def test_one_unreadable_policy_leaves_only_its_own_deployments_unverified(strict):
    scenario, truth, result = strict
    out_of_scope = policy_name(OUT_OF_SCOPE)
    by_policy = {
        d.device_name
        for d in scenario.devices
        if d.policy_id == next(p.id for p in scenario.policies if p.name == out_of_scope)
    }
    judged = {j.deployment.device_name: j for j in result["scan"].judgements}
    scope_unverified = {
        name
        for name, j in judged.items()
        if any(u.reason.value == "out_of_scope" for u in j.unverified)
    }
    assert scope_unverified == by_policy
    # The policy's neighbours are judged in full: no deployment waits on its ETG.
    assert all(
        j.state != "unverified" for name, j in judged.items() if name not in truth.unverified
    )


def test_deployments_without_a_profile_name_get_the_policy_intune_applied(strict):
    scenario, _, result = strict
    judged = {j.deployment.device_name: j for j in result["scan"].judgements}
    policy_of = {p.id: p.name for p in scenario.policies}
    for device in scenario.devices:
        j = judged[device.device_name]
        if device.device_name in ("NOUSER-01",) or j.subject.policy_name is None:
            continue
        assert j.subject.policy_name == policy_of[device.policy_id], device.device_name
    # Assigned two policies: the lower priority number is the one that applied.
    multi = judged["MISS-05"]
    assert multi.subject.policy_name == policy_name(6)
    resolved_by = next(v.evidence for v in multi.verdicts if hasattr(v, "evidence"))["policy"]
    assert resolved_by["resolved_by"] == "assignment to multi.policy@contoso.com (priority 6)"


def test_profile_names_are_read_by_id_twenty_to_a_batch(strict):
    scenario, _, result = strict
    sim = result["sim"]
    assert sim.get("managedDevices.list", 0) == 0  # list answers carry no profile name
    assert sim["managedDevices.get"] == len(scenario.devices)
    # Every by-id read travelled in a $batch of 20 (the v1.0 batches also carry other reads).
    assert result["scan"].graph_requests.get("GET /v1.0/deviceManagement/managedDevices", 0) == 0


def test_membership_checks_ask_each_device_only_about_its_own_etg(strict):
    _, truth, result = strict
    missing = [n for k, n in truth.device_anomalies if k == "etg_missing"]
    # SLOW-01 completed past the membership grace and its join is not in the audit log yet:
    # early conclusion asks whether it is a member now (it is, so it stays pending).
    early = ["SLOW-01"]
    # One checkMemberGroups per never-joined device whose policy is known, and per device asked
    # early: one ETG each.
    assert result["sim"]["devices.checkMemberGroups"] == len(missing) + len(early)
    assert "SLOW-01" in truth.pending


def test_etg_sources_are_recorded_in_the_evidence_and_the_configuration_check(strict):
    _, _, result = strict
    missing = {a.subject.device_name: a for a in _open(result) if a.kind == "etg_missing"}
    assert missing["MISS-02"].evidence["policy"]["etg_source"] == ETG_SOURCE_SETTINGS
    assert missing["MISS-03"].evidence["policy"]["etg_source"] == "retrieveJustInTimeConfiguration"
    assert (
        missing["MISS-01"].evidence["policy"]["etg_source"]
        == "retrieveEnrollmentTimeDeviceMembershipTarget"
    )
    config = {p["name"]: p for p in result["config"].to_json()["policies"]}
    assert config[policy_name(UNROUTED)]["etg_source"] == ETG_SOURCE_SETTINGS
    assert config[policy_name(UNROUTED)]["status"] == "healthy"  # validated like any ETG
    assert config[policy_name(JIT_ONLY)]["etg_source"] == "retrieveJustInTimeConfiguration"
    assert config[policy_name(OUT_OF_SCOPE)]["status"] == "unverified"
    text = config_report_text(result["config"].to_json())
    assert f"ETG: APv2-ETG-{UNROUTED:02d}  ({ETG_SOURCE_SETTINGS})" in text


def test_v1_owner_lists_without_the_provisioning_client_raise_no_owner_alarm(strict):
    scenario, truth, result = strict
    assert scenario.v1_owners_omit_service_principals
    owner_alarms = {a.subject.policy_name for a in _open(result) if a.kind == "etg_owner_missing"}
    # Only the ETG whose owner really is gone; 24 others hide the owner from v1.0 alone.
    assert owner_alarms == {name for kind, name in truth.policy_anomalies}


def test_the_operator_map_wins_over_graph(azurite):
    from devtools.simtenant.server import SimulatedTenant

    scenario, truth = strict_scenario()
    unrouted = next(p for p in scenario.policies if p.name == policy_name(UNROUTED))
    with SimulatedTenant(scenario) as tenant:
        settings = _settings(
            tenant,
            azurite,
            ETG_POLICY_GROUPS=json.dumps({policy_name(UNROUTED): unrouted.etg_group_id}),
        )
        result = _run(settings, tenant)
    missing = {a.subject.device_name: a for a in _open(result) if a.kind == "etg_missing"}
    assert missing["MISS-02"].evidence["policy"]["etg_source"] == ETG_SOURCE_OPERATOR
    devices = _open_on_devices(result)
    assert devices == truth.device_anomalies
    # The operator's word needs no retrieve action for that policy.
    assert result["sim"].get("configurationPolicies.retrieveJustInTimeConfiguration", 0) == 1


def test_unverified_reasons_are_counted_for_the_closing_figures(strict):
    _, truth, result = strict
    judged = [j for j in result["scan"].judgements if j.state == "unverified"]
    by_reason = Counter(
        sorted({u.reason.value for u in j.unverified})[0] for j in judged if j.unverified
    )
    assert by_reason == Counter(truth.unverified.values())


def test_an_etg_whose_audit_read_failed_holds_back_only_its_own_policy(azurite):
    from devtools.simtenant.faults import FaultRule
    from devtools.simtenant.server import SimulatedTenant
    from monitors.store.scan_state import AUDIT_CHECKPOINT

    scenario, truth = strict_scenario()
    policy = next(p for p in scenario.policies if p.name == policy_name(10))
    own = {d.device_name for d in scenario.devices if d.policy_id == policy.id}
    with SimulatedTenant(scenario) as tenant:
        settings = _settings(tenant, azurite)
        rule = FaultRule(endpoint="directoryAudits.list", status=403, query=policy.etg_group_id)
        tenant.faults.add(rule)
        first = _run(settings, tenant)
        assert rule.fired >= 1
        judged = {j.deployment.device_name: j for j in first["scan"].judgements}
        forbidden = {
            n for n, j in judged.items() if any(u.reason.value == "forbidden" for u in j.unverified)
        }
        assert forbidden == own
        found = _open_on_devices(first)
        assert found == {t for t in truth.device_anomalies if t[1] not in own}

        held = checkpoints(settings)
        assert AUDIT_CHECKPOINT + policy.etg_group_id not in held
        others = {p.etg_group_id for p in scenario.policies if p.name != policy_name(OUT_OF_SCOPE)}
        assert {AUDIT_CHECKPOINT + g for g in others - {policy.etg_group_id}} <= set(held)

        # The next scan, with the audit log readable again, reads that ETG from far enough back.
        tenant.faults.remove(rule)
        tenant.clock.advance(600)
        second = _run(settings, tenant)
        found = _open_on_devices(second)
        assert found == truth.device_anomalies


def test_a_device_asked_about_more_than_twenty_groups_is_asked_in_chunks(strict, azurite):
    from devtools.simtenant.server import SimulatedTenant
    from monitors.graph import devices
    from monitors.graph.client import GraphClient

    scenario, _, _ = strict
    device = scenario_device(scenario, "OK-07-0")
    groups = [p.etg_group_id for p in scenario.policies]
    with SimulatedTenant(scenario) as tenant:
        settings = _settings(tenant, azurite)

        async def ask() -> dict[str, set[str]]:
            async with GraphClient(settings) as graph:
                return await devices.member_groups(graph, {device.object_id: groups})

        found = asyncio.run(ask())
        assert len(groups) > 20
        assert found == {device.object_id: {etg_of(scenario, device)}}
        assert tenant.stats()["devices.checkMemberGroups"] == 2
