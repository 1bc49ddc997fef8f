"""Faults: whatever breaks, the stored anomalies end equal to a fault-free run, with nothing
invented while broken and nothing lost or doubled after recovery."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tests.helpers import (
    DEMO_FIRST_SCAN_WRITES,
    GROUND_TRUTH,
    assert_matches_a_clean_run,
    device_anomalies,
    on_storage_writes,
    pairs,
    scan,
    scan_broken_at_write_then_rerun,
)

pytestmark = pytest.mark.integration


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the code catches it."""


def test_a_first_scan_of_the_demo_makes_the_pinned_number_of_storage_writes(
    scan_settings, tenant, monkeypatch
):
    writes: list[str] = []
    count = on_storage_writes(monkeypatch, lambda _n, name: writes.append(name))
    scan(scan_settings, tenant)
    # A change here changes which writes the cases below (and test_storage_outage) break:
    # update DEMO_FIRST_SCAN_WRITES so every position is faulted again, and check
    # test_storage_outage's RETRIED_WRITES still name the retried ones.
    assert count() == len(writes) == DEMO_FIRST_SCAN_WRITES, Counter(writes)
    assert_matches_a_clean_run(scan_settings)  # counting changed nothing


@pytest.mark.parametrize("kill_at", range(1, DEMO_FIRST_SCAN_WRITES + 1))
def test_scan_killed_at_any_storage_write_then_rerun_matches_a_clean_run(
    scan_settings, tenant, monkeypatch, kill_at
):
    def kill(name):
        raise Killed(f"killed at write {kill_at} ({name})")

    scan_broken_at_write_then_rerun(scan_settings, tenant, monkeypatch, kill_at, kill, Killed)
    assert_matches_a_clean_run(scan_settings)


def fault_then_recovery(settings, tenant, rule):
    """One scan under the fault, which may leave gaps but must invent nothing; then the fault
    ends and the next scan must reach exactly what a fault-free run reaches."""
    tenant.faults.add(rule)
    first = scan(settings, tenant)
    assert pairs(device_anomalies(settings)) <= GROUND_TRUTH  # nothing invented
    tenant.faults.remove(rule)
    tenant.clock.advance(600)
    scan(settings, tenant)
    assert_matches_a_clean_run(settings)
    return first


@pytest.mark.parametrize(
    "kind,endpoint",
    [
        ("reset", "managedDevices.get"),
        ("reset", "directoryAudits.list"),
        ("hang", "exportJobs.get"),
        ("reset", "$batch"),
    ],
)
def test_connection_resets_and_hangs_invent_nothing_and_recover(
    scan_settings, tenant, kind, endpoint
):
    from devtools.simtenant.faults import FaultRule

    settings = dataclasses.replace(scan_settings, graph_timeout_seconds=2.0)
    fault_then_recovery(settings, tenant, FaultRule(endpoint=endpoint, kind=kind, first_n=1))


def test_small_server_pages_give_the_same_result(scan_settings, tenant):
    tenant.faults.page_cap = 3
    scan(scan_settings, tenant)
    assert_matches_a_clean_run(scan_settings)
    assert tenant.stats()["directoryAudits.list"] > 1  # it did page


@pytest.mark.parametrize("endpoint", ["directoryAudits.list", "configurationPolicies.list"])
def test_a_page_failing_midway_after_retries_invents_nothing_and_recovers(
    scan_settings, tenant, endpoint
):
    from devtools.simtenant.faults import FaultRule

    settings = dataclasses.replace(scan_settings, graph_max_retries=2)
    tenant.faults.page_cap = 3
    rule = FaultRule(endpoint=endpoint, status=503, retry_after=0, continuation_only=True)
    first = fault_then_recovery(settings, tenant, rule)
    assert rule.fired >= 3  # the first try and both retries of a later page failed
    assert first.all_unverified()  # the gap was reported, not guessed


def test_an_export_job_that_never_completes_is_unverified_then_recovers(scan_settings, tenant):
    settings = dataclasses.replace(scan_settings, export_timeout_seconds=1.5)
    tenant.state.set_export_polls_before_ready(10**9)
    first = scan(settings, tenant)
    assert "report export" in " ".join(u.detail for u in first.all_unverified())
    assert not first.checkpoint_advanced
    assert device_anomalies(settings) == []
    tenant.state.set_export_polls_before_ready(0)
    tenant.clock.advance(600)
    scan(settings, tenant)
    assert_matches_a_clean_run(settings)


def test_audit_events_an_hour_late_never_raise_a_false_alarm(scan_settings, tenant, scenario):
    from devtools.simtenant.generate import add_deployments

    scan(scan_settings, tenant)
    new = add_deployments(scenario, 6, at=tenant.clock.now())
    for device in new:
        assert [e.op for e in device.membership] == ["add"]  # healthy: joined once, on time
        device.membership[0].audit_delay_s = 3540.0  # the audit log shows it 59 minutes later
    tenant.state.add_devices(new)
    names = {d.device_name for d in new}
    verdicts: dict[str, str] = {}
    for _ in range(13):  # a scan every 10 minutes for two hours
        tenant.clock.advance(600)
        report = scan(scan_settings, tenant)
        assert not {a.subject.device_name for a in device_anomalies(scan_settings)} & names
        verdicts.update(
            (d["device_name"], d["verdict"])
            for d in report.to_json()["devices"]
            if d["device_name"] in names
        )
    assert verdicts == dict.fromkeys(names, "ok")
    assert pairs(device_anomalies(scan_settings)) == GROUND_TRUTH


@pytest.mark.parametrize("early", [True, False])
def test_a_device_that_never_joins_is_caught_after_the_grace_or_once_the_audit_window_passes(
    scan_settings, tenant, scenario, early
):
    from devtools.simtenant.generate import add_deployments

    settings = dataclasses.replace(scan_settings, early_conclusion=early)
    scan(settings, tenant)
    (device,) = add_deployments(scenario, 1, at=tenant.clock.now())
    device.membership = []  # the provisioning client never added it
    tenant.state.add_devices([device])
    completed_min = device.deployment.duration_s / 60
    opened_after = None
    for step in range(1, 13):
        tenant.clock.advance(600)
        scan(settings, tenant)
        found = {
            a.kind
            for a in device_anomalies(settings)
            if a.subject.device_name == device.device_name
        }
        if found:
            assert found == {"etg_missing"}
            opened_after = opened_after or step * 10
    assert opened_after is not None
    if early:
        # not before provisioning completed plus the membership grace, and before the audit
        # log has settled
        grace = settings.membership_grace_minutes
        assert completed_min + grace <= opened_after < completed_min + grace + 10 + 1
        assert opened_after < settings.audit_latency_minutes
    else:
        # not before provisioning plus the configured audit latency, but within the next scans
        assert 60 <= opened_after <= 100


@pytest.mark.parametrize(
    "endpoint",
    [
        "directoryAudits.list",
        "managedDevices.get",
        "devices.list",
        "devices.checkMemberGroups",
        "users.checkMemberGroups",
        "configurationPolicies.assignments",
        "exportJobs.download",
        # both ETG actions, or the fallback would (rightly) recover from the first
        r"/retrieve(EnrollmentTimeDeviceMembershipTarget|JustInTimeConfiguration)$",
    ],
)
def test_malformed_graph_answers_are_unverified_never_anomalies(scan_settings, tenant, endpoint):
    from devtools.simtenant.faults import FaultRule

    rule = FaultRule(endpoint=endpoint, kind="corrupt")
    first = fault_then_recovery(scan_settings, tenant, rule)
    assert rule.fired >= 1
    assert first.all_unverified()  # the bad data was reported as a gap in what is known
