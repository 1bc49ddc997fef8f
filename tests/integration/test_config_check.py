"""The configuration check end to end: msgraph-sdk over HTTP to the simulated tenant, state in
Azurite. Assertions are on what is stored, as an operator would see it."""

from __future__ import annotations

import pytest

from monitors.models import Status
from tests.helpers import config_check, stored_anomalies

pytestmark = pytest.mark.integration


def policy_named(scenario, fragment):
    return next(p for p in scenario.policies if fragment in p.name)


def by_policy(anomalies):
    return {(a.kind, a.subject.policy_name) for a in anomalies}


def test_demo_scenario_flags_exactly_the_broken_policies(settings, tenant, scenario):
    report = config_check(settings, tenant)
    finance = policy_named(scenario, "Finance").name
    kiosk = policy_named(scenario, "Kiosk").name
    engineering = policy_named(scenario, "Engineering").name
    standard = policy_named(scenario, "Standard").name
    assert by_policy(stored_anomalies(settings, Status.OPEN)) == {
        ("etg_owner_missing", finance),
        ("etg_not_configured", kiosk),
        ("etg_invalid_group", engineering),
        # Its ETG is fine, but its VPN client is not assigned to it.
        ("payload_not_ready", standard),
    }
    statuses = {p["name"]: p["status"] for p in report.to_json()["policies"]}
    assert statuses[standard] == "broken"
    assert statuses[policy_named(scenario, "Cloud PCs").name] == "healthy"
    # Frontline answers only through the older just-in-time action: the fallback must work.
    assert statuses[policy_named(scenario, "Frontline").name] == "healthy"
    assert report.outcome == "ok"


def test_each_anomaly_carries_evidence_explanation_and_fix(settings, tenant, scenario):
    config_check(settings, tenant)
    owner = next(a for a in stored_anomalies(settings) if a.kind == "etg_owner_missing")
    group_id = policy_named(scenario, "Finance").etg_group_id
    assert owner.subject.group_id == group_id
    assert owner.evidence["etg_group_ids"] == [group_id]
    assert owner.evidence["groups"][0]["owners"] is not None
    assert "not an owner" in owner.explanation
    assert "Owners" in owner.fix


def test_running_twice_records_each_anomaly_once(settings, tenant):
    config_check(settings, tenant)
    first = {a.key: a for a in stored_anomalies(settings)}
    tenant.clock.advance(3600)
    second_report = config_check(settings, tenant)
    second = {a.key: a for a in stored_anomalies(settings)}
    assert second.keys() == first.keys()
    for key, anomaly in second.items():
        assert anomaly.first_seen == first[key].first_seen
        assert anomaly.last_seen > first[key].last_seen
        assert anomaly.status is Status.OPEN
    assert {t.change.value for t in second_report.transitions} == {"updated"}


def test_fixing_the_cause_resolves_the_anomaly_and_keeps_its_history(settings, tenant, scenario):
    config_check(settings, tenant)
    finance = policy_named(scenario, "Finance")
    tenant.state.add_group_owner(finance.etg_group_id, scenario.provisioning_client.object_id)
    tenant.clock.advance(600)
    report = config_check(settings, tenant)
    resolved = stored_anomalies(settings, Status.RESOLVED)
    assert [(a.kind, a.subject.policy_name) for a in resolved] == [
        ("etg_owner_missing", finance.name)
    ]
    assert [h["status"] for h in resolved[0].history] == ["open", "resolved"]
    assert [c["change"] for c in report.to_json()["changes"]] == ["resolved"]


def test_missing_permission_is_unverified_never_an_anomaly(settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint=r"/groups/[^/]+/owners", kind="status", status=403))
    report = config_check(settings, tenant)
    kinds = {a.kind for a in stored_anomalies(settings)}
    assert "etg_owner_missing" not in kinds
    assert report.outcome == "unverified"
    assert report.to_json()["missing_permissions"] == ["GroupMember.Read.All"]


def test_a_graph_outage_does_not_resolve_what_was_already_open(settings, tenant):
    from devtools.simtenant.faults import FaultRule

    config_check(settings, tenant)
    open_before = {a.key for a in stored_anomalies(settings, Status.OPEN)}
    tenant.faults.add(FaultRule(endpoint=r"/groups/", kind="status", status=500))
    tenant.faults.add(FaultRule(endpoint=r"retrieve", kind="status", status=500))
    report = config_check(settings, tenant)
    assert {a.key for a in stored_anomalies(settings, Status.OPEN)} == open_before
    assert all(t.change.value == "updated" for t in report.transitions)
    assert report.outcome == "unverified"
    assert stored_anomalies(settings, Status.RESOLVED) == []


def test_throttling_with_retry_after_is_ridden_out(settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(
        FaultRule(endpoint=r".", kind="status", status=429, retry_after=1, probability=0.33, seed=7)
    )
    report = config_check(settings, tenant)
    assert report.outcome == "ok", report.to_json()["unverified"]
    assert len(stored_anomalies(settings, Status.OPEN)) == 4


def test_missing_provisioning_client_is_one_tenant_anomaly(settings, tenant):
    tenant.state.set_provisioning_client_present(False)
    config_check(settings, tenant)
    tenant_level = [
        a for a in stored_anomalies(settings) if a.kind == "provisioning_client_missing"
    ]
    assert len(tenant_level) == 1
    assert tenant_level[0].subject.policy_id is None
    assert len(tenant_level[0].evidence["affected_policies"]) >= 4
    # Ownership is not judged while the service principal itself is gone.
    assert "etg_owner_missing" not in {a.kind for a in stored_anomalies(settings)}


def test_deleted_etg_group_is_an_invalid_group(settings, tenant, scenario):
    standard = policy_named(scenario, "Standard")
    tenant.state.update_group(standard.etg_group_id, deleted=True)
    config_check(settings, tenant)
    invalid = {
        a.subject.policy_name: a
        for a in stored_anomalies(settings)
        if a.kind == "etg_invalid_group"
    }
    assert "does not exist" in invalid[standard.name].explanation


@pytest.mark.parametrize(
    "endpoint",
    [
        "groups.get",
        "groups.owners",
        "servicePrincipals.list",
        "configurationPolicies.list",
        r"/retrieve(EnrollmentTimeDeviceMembershipTarget|JustInTimeConfiguration)$",
    ],
)
def test_malformed_answers_are_unverified_and_never_open_an_anomaly(
    settings, tenant, scenario, endpoint
):
    from devtools.simtenant.faults import FaultRule

    clean = {
        ("etg_owner_missing", policy_named(scenario, "Finance").name),
        ("etg_not_configured", policy_named(scenario, "Kiosk").name),
        ("etg_invalid_group", policy_named(scenario, "Engineering").name),
        ("payload_not_ready", policy_named(scenario, "Standard").name),
    }
    rule = tenant.faults.add(FaultRule(endpoint=endpoint, kind="corrupt"))
    report = config_check(settings, tenant)
    assert rule.fired >= 1
    assert report.outcome == "unverified"  # reported as a gap in what is known
    assert by_policy(stored_anomalies(settings, Status.OPEN)) <= clean  # nothing invented
    tenant.faults.remove(rule)
    config_check(settings, tenant)
    assert by_policy(stored_anomalies(settings, Status.OPEN)) == clean


# --- ownership: v1.0 owners may omit service principals (group-list-owners.md, staged rollout)


def owner_checks(report, policy_name):
    entry = next(p for p in report.to_json()["policies"] if p["name"] == policy_name)
    return entry["etg_owners"]


def test_staged_rollout_omission_from_v1_owners_raises_no_false_alarm(settings, tenant, scenario):
    from monitors.render import config_report_text

    tenant.state.set_v1_owners_omit_service_principals(True)
    report = config_check(settings, tenant)
    finance = policy_named(scenario, "Finance").name
    assert by_policy(stored_anomalies(settings, Status.OPEN)) == {
        ("etg_owner_missing", finance),  # its ETG really lacks the owner
        ("etg_not_configured", policy_named(scenario, "Kiosk").name),
        ("etg_invalid_group", policy_named(scenario, "Engineering").name),
        ("payload_not_ready", policy_named(scenario, "Standard").name),
    }
    assert report.outcome == "ok"
    standard = policy_named(scenario, "Standard").name
    [check] = owner_checks(report, standard)
    assert check["status"] == "owner"
    assert check["confirmed_by"] == ["Intune validation", "ownedObjects"]
    answers = {s["source"]: s["answer"] for s in check["sources"]}
    assert answers["v1.0 owners"] == "not_owner"
    assert answers["beta owners"] == "not_asked"  # ownedObjects settled it
    # One ownedObjects read serves every ETG; beta owners is asked only where it did not settle.
    stats = tenant.stats()
    assert stats["servicePrincipals.ownedObjects"] == 1
    etgs = {p.etg_group_id for p in scenario.policies if p.etg_group_id}
    assert stats["groups.owners"] == len(etgs) + 1
    text = config_report_text(report.to_json())
    confirmed = "owner of APv2-ETG-Standard-Laptops: confirmed by Intune validation, ownedObjects"
    assert confirmed in text
    assert "owner of APv2-ETG-Finance: MISSING" in text


def test_owners_present_in_v1_cost_no_second_source(settings, tenant, scenario):
    finance = policy_named(scenario, "Finance")
    tenant.state.add_group_owner(finance.etg_group_id, scenario.provisioning_client.object_id)
    report = config_check(settings, tenant)
    assert "servicePrincipals.ownedObjects" not in tenant.stats()
    assert owner_checks(report, finance.name)[0]["confirmed_by"] == ["v1.0 owners"]


def test_owner_removed_everywhere_still_raises_etg_owner_missing(settings, tenant, scenario):
    tenant.state.set_v1_owners_omit_service_principals(True)
    standard = policy_named(scenario, "Standard")
    tenant.state.remove_group_owner(standard.etg_group_id, scenario.provisioning_client.object_id)
    config_check(settings, tenant)
    owner = {
        a.subject.policy_name: a
        for a in stored_anomalies(settings)
        if a.kind == "etg_owner_missing"
    }
    anomaly = owner[standard.name]
    assert anomaly.status is Status.OPEN
    sources = anomaly.evidence["groups"][0]["owner_sources"]
    assert {s["source"]: s["answer"] for s in sources} == {
        "v1.0 owners": "not_owner",
        "Intune validation": "not_owner",  # firstPartyAppNotAnOwner
        "ownedObjects": "not_owner",
        "beta owners": "not_owner",
    }
    assert "firstPartyAppNotAnOwner" in anomaly.explanation


def test_sources_that_disagree_leave_ownership_unverified(settings, tenant, scenario):
    """Intune validated while the owner was missing; an administrator restored it before the
    directory was read. Neither side can be believed alone."""
    import threading

    from devtools.simtenant.faults import FaultRule

    tenant.state.set_v1_owners_omit_service_principals(True)
    standard = policy_named(scenario, "Standard")
    sp = scenario.provisioning_client.object_id
    tenant.state.remove_group_owner(standard.etg_group_id, sp)
    # The first ownedObjects request is throttled; the owner comes back before the retry.
    rule = tenant.faults.add(
        FaultRule(endpoint=r"/ownedObjects", kind="status", status=429, retry_after=1, first_n=1)
    )
    restored = threading.Event()

    def restore_when_throttled():
        for _ in range(500):
            if rule.fired:
                tenant.state.add_group_owner(standard.etg_group_id, sp)
                restored.set()
                return
            threading.Event().wait(0.01)

    helper = threading.Thread(target=restore_when_throttled)
    helper.start()
    report = config_check(settings, tenant)
    helper.join()
    assert restored.is_set()
    assert "etg_owner_missing" not in {
        a.kind for a in stored_anomalies(settings) if a.subject.policy_name == standard.name
    }
    [check] = owner_checks(report, standard.name)
    assert check["status"] == "unverified"
    assert "sources disagree" in check["detail"]
    assert "ownedObjects" in check["detail"] and "firstPartyAppNotAnOwner" in check["detail"]
    assert report.outcome == "unverified"
    assert any("sources disagree" in u["detail"] for u in report.to_json()["unverified"])


@pytest.mark.parametrize(
    ("endpoint", "permission"),
    [
        (r"/ownedObjects", "Application.Read.All"),
        (r"^/beta/groups/[^/]+/owners", "GroupMember.Read.All"),
    ],
)
def test_unreadable_second_source_is_unverified_naming_its_permission(
    settings, tenant, scenario, endpoint, permission
):
    from devtools.simtenant.faults import FaultRule

    tenant.state.set_v1_owners_omit_service_principals(True)
    rule = tenant.faults.add(FaultRule(endpoint=endpoint, kind="status", status=403))
    report = config_check(settings, tenant)
    assert rule.fired >= 1
    finance = policy_named(scenario, "Finance").name
    assert ("etg_owner_missing", finance) not in by_policy(stored_anomalies(settings))
    assert report.outcome == "unverified"
    assert report.to_json()["missing_permissions"] == [permission]
    [check] = owner_checks(report, finance)
    assert check["status"] == "unverified"
    assert "could not be read" in check["detail"]
    # The other source still confirms the ETGs it can see.
    [standard] = owner_checks(report, policy_named(scenario, "Standard").name)
    assert standard["status"] == "owner"


def test_check_config_json_names_the_sources_per_etg(app_env, tenant, scenario, capsys):
    import json

    from monitors import cli

    tenant.state.set_v1_owners_omit_service_principals(True)
    assert cli.main(["check-config", "--json"]) == cli.EXIT_FINDINGS
    report = json.loads(capsys.readouterr().out)
    owners = {
        o["group_name"]: o for p in report["policies"] for o in p["etg_owners"] if o["group_name"]
    }
    standard = owners["APv2-ETG-Standard-Laptops"]
    assert standard["confirmed_by"] == ["Intune validation", "ownedObjects"]
    finance = owners["APv2-ETG-Finance"]
    assert finance["status"] == "missing"
    assert {s["source"]: s["answer"] for s in finance["sources"]} == {
        "v1.0 owners": "not_owner",
        "Intune validation": "silent",  # its policy answers in a shape without validation
        "ownedObjects": "not_owner",
        "beta owners": "not_owner",
    }
    assert all(s["call"].startswith(("GET ", "POST ")) for s in finance["sources"])
