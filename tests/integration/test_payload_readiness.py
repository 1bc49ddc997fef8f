"""Payload readiness end to end: check-config reads the selected apps and scripts from the
simulated tenant over HTTP, judges them, and stores payload_not_ready in Azurite."""

from __future__ import annotations

import json

import pytest

from devtools.simtenant.faults import FaultRule
from devtools.simtenant.scenario import PayloadAssignment
from monitors.jobs.config_check import check_config
from monitors.models import Status
from monitors.render import config_report_text
from tests.helpers import config_check, run_job, send_alerts, stored_anomalies

pytestmark = pytest.mark.integration

KIND = "payload_not_ready"
VPN = "f201da49-cac8-48bb-8cca-838c6e2d3c61"


def policy_named(scenario, fragment):
    return next(p for p in scenario.policies if fragment in p.name)


def not_ready(settings, status=None):
    return {a.subject.policy_name: a for a in stored_anomalies(settings, status) if a.kind == KIND}


def test_the_demo_policy_whose_app_is_not_assigned_to_its_etg_is_caught_before_any_scan(
    settings, tenant, scenario
):
    report = config_check(settings, tenant)
    standard = policy_named(scenario, "Standard")
    [anomaly] = not_ready(settings, Status.OPEN).values()
    assert anomaly.subject.policy_name == standard.name
    assert anomaly.subject.group_id == standard.etg_group_id
    [item] = anomaly.evidence["items"]
    assert (item["id"], item["display_name"], item["kind"]) == (VPN, "Contoso VPN Client", "app")
    assert item["problems"] == ["not assigned to the ETG or all devices with required intent"]
    assert "Contoso VPN Client" in anomaly.explanation
    assert "APv2-ETG-Standard-Laptops" in anomaly.fix and standard.etg_group_id in anomaly.fix
    entry = next(p for p in report.to_json()["policies"] if p["name"] == standard.name)
    assert entry["status"] == "broken" and entry["payload"]["status"] == "not_ready"
    assert [i["ready"] for i in entry["payload"]["items"]].count(False) == 1
    text = config_report_text(report.to_json())
    assert "payload: not ready (3 apps, 2 scripts)" in text
    assert "app Contoso VPN Client: not assigned to the ETG" in text
    # Every app and script is read inside one $batch per Graph version, never one by one.
    wire = report.to_json()["graph_requests"]
    assert not [name for name in wire if "mobileApps" in name or "deviceManagementScripts" in name]
    assert {"POST /v1.0/$batch", "POST /beta/$batch"} <= set(wire)


def test_every_other_demo_policy_is_ready_or_left_to_its_etg_rule(settings, tenant, scenario):
    report = config_check(settings, tenant)
    payload = {p["name"]: p["payload"]["status"] for p in report.to_json()["policies"]}
    assert payload.pop(policy_named(scenario, "Standard").name) == "not_ready"
    # Kiosk has no ETG to assign anything to: etg_not_configured reports it.
    assert payload.pop(policy_named(scenario, "Kiosk").name) == "not_checked"
    assert set(payload.values()) == {"ready"}


def test_assigning_the_app_to_the_etg_resolves_it_with_its_history(settings, tenant, scenario):
    config_check(settings, tenant)
    etg = policy_named(scenario, "Standard").etg_group_id
    tenant.state.payload.set_assignments(VPN, [PayloadAssignment("group", etg, "required")])
    tenant.clock.advance(600)
    report = config_check(settings, tenant)
    [resolved] = not_ready(settings, Status.RESOLVED).values()
    assert [h["status"] for h in resolved.history] == ["open", "resolved"]
    assert {"kind": KIND, "change": "resolved"}.items() <= next(
        c for c in report.to_json()["changes"] if c["kind"] == KIND
    ).items()


def test_a_script_in_the_user_context_opens_one_anomaly_per_policy_selecting_it(
    settings, tenant, scenario
):
    script_id = "2b1522b8-a15f-49c8-98b8-413f8ef5b163"
    tenant.state.payload.update_script(script_id, "user")
    config_check(settings, tenant)
    selecting = {p.name for p in scenario.policies if script_id in p.allowed_script_ids}
    opened = not_ready(settings, Status.OPEN)
    assert selecting <= set(opened)
    cloud = opened[policy_named(scenario, "Cloud PCs").name]
    [item] = cloud.evidence["items"]
    assert item["run_as_account"] == "user" and item["problems"] == ["runs as user, not system"]


def test_a_deleted_app_is_reported_as_gone(settings, tenant, scenario):
    engineering_app = "3ce468a1-2d9c-4439-a99f-e62ad42a4daf"
    tenant.state.payload.delete(engineering_app)
    config_check(settings, tenant)
    anomaly = not_ready(settings)[policy_named(scenario, "Engineering").name]
    assert [i["problems"] for i in anomaly.evidence["items"]] == [["the app no longer exists"]]


def test_a_missing_apps_permission_is_unverified_and_leaves_the_etg_rules_deciding(
    settings, tenant
):
    tenant.faults.add(FaultRule(endpoint=r"/deviceAppManagement/mobileApps/", status=403))
    report = config_check(settings, tenant)
    assert not_ready(settings) == {}
    assert report.outcome == "unverified"
    assert "DeviceManagementApps.Read.All" in report.to_json()["missing_permissions"]
    kinds = {a.kind for a in stored_anomalies(settings, Status.OPEN)}
    assert kinds == {"etg_owner_missing", "etg_not_configured", "etg_invalid_group"}


def test_a_failing_read_does_not_resolve_what_is_open(settings, tenant):
    config_check(settings, tenant)
    tenant.faults.add(FaultRule(endpoint=r"/mobileApps/[^/]+/assignments", status=503))
    tenant.clock.advance(600)
    config_check(settings, tenant)
    assert set(not_ready(settings, Status.OPEN)) == {"Contoso - Standard Laptops"}
    assert not_ready(settings, Status.RESOLVED) == {}


def test_a_malformed_answer_is_unverified_not_an_anomaly(settings, tenant):
    tenant.faults.add(FaultRule(endpoint=r"/deviceManagementScripts/", kind="corrupt"))
    report = config_check(settings, tenant)
    sources = {u["source"] for u in report.to_json()["unverified"]}
    assert any("deviceManagementScripts" in s for s in sources)
    # The VPN client's problem does not depend on the scripts: it is still found.
    assert set(not_ready(settings)) == {"Contoso - Standard Laptops"}


def test_the_card_lists_each_item_that_is_not_ready(alert_settings, tenant):
    run_job(alert_settings, tenant, check_config)
    send_alerts(alert_settings, tenant)
    cards = [m.card for m in tenant.teams_messages()]
    [card] = [c for c in cards if "not ready: Contoso - Standard Laptops" in json.dumps(c)]
    text = json.dumps(card)
    assert "Not ready to install" in text and "Contoso VPN Client" in text
    assert "not assigned to the ETG" in text


def test_when_batch_fails_each_item_is_read_on_its_own(settings, tenant):
    batch = tenant.faults.add(FaultRule(endpoint="$batch", status=500))
    config_check(settings, tenant)
    assert batch.fired >= 1  # no batched request got through: the reads below were direct
    assert set(not_ready(settings, Status.OPEN)) == {"Contoso - Standard Laptops"}
    stats = tenant.stats()
    assert stats["mobileApps.get"] >= 1 and stats["deviceManagementScripts.assignments"] >= 1
