"""The enrollment scan end to end: simulated tenant over HTTP, state in Azurite."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from monitors.graph import policies
from monitors.jobs.context import open_context
from monitors.models import Status
from monitors.scan.pipeline import run_scan
from monitors.store.scan_state import ScanState
from monitors.store.tables import AnomalyRepository
from tests.helpers import (
    GROUND_TRUTH,
    checkpoints,
    etg_of,
    in_store,
    pairs,
    scan,
    scenario_device,
    stored_anomalies,
)

pytestmark = pytest.mark.integration


def test_first_scan_finds_exactly_the_ground_truth(scan_settings, tenant):
    report = scan(scan_settings, tenant)
    assert pairs(stored_anomalies(scan_settings, Status.OPEN)) == GROUND_TRUTH
    data = report.to_json()
    assert data["deployments"]["evaluated"] == 36
    assert data["unverified"] == {}
    verdicts = {d["device_name"]: d["verdict"] for d in data["devices"]}
    assert verdicts["CTSO-FWN1RZE"] == "pending"  # its audit event is 50 min late
    assert verdicts["CTSO-K50RMTC"] == "pending"  # still provisioning, within timeout
    assert verdicts["CTSO-1716692"] == "ok"  # policy inferred from ETG membership
    assert verdicts["KIOSK-5853GYS"] == "no ETG"


def test_late_anomaly_carries_both_times_and_the_gap(scan_settings, tenant):
    scan(scan_settings, tenant)
    late = next(a for a in stored_anomalies(scan_settings) if a.kind == "etg_late")
    ev = late.evidence
    assert ev["provisioning_completed_at"] and ev["late_join"]["at"]
    assert ev["gap_seconds"] == 25 * 60
    assert late.subject.serial_number and late.subject.user_principal_name
    assert "after provisioning completed" in late.explanation


def test_scanning_again_updates_never_duplicates_and_skips_settled_work(scan_settings, tenant):
    scan(scan_settings, tenant)
    first = {a.key: a for a in stored_anomalies(scan_settings)}
    report = scan(scan_settings, tenant)
    second = {a.key: a for a in stored_anomalies(scan_settings)}
    assert second.keys() == first.keys()
    assert all(len(a.history) == 1 for a in second.values())
    assert [t for t in report.transitions if t.change.value != "updated"] == []
    # Only the deployments that were not conclusive are judged again.
    assert report.to_json()["deployments"]["evaluated"] == 3


def test_late_audit_event_settles_to_on_time_without_any_anomaly(scan_settings, tenant):
    scan(scan_settings, tenant)
    tenant.clock.advance(2 * 3600)
    report = scan(scan_settings, tenant)
    verdicts = {d["device_name"]: d["verdict"] for d in report.to_json()["devices"]}
    assert verdicts["CTSO-FWN1RZE"] == "ok"
    assert verdicts["CTSO-K50RMTC"] == "ok"
    assert pairs(stored_anomalies(scan_settings)) == GROUND_TRUTH


def test_missing_device_added_later_resolves_without_a_second_alert(
    scan_settings, tenant, scenario
):
    scan(scan_settings, tenant)
    spec = scenario_device(scenario, "CTSO-J5NB1GX")
    tenant.state.add_member_now(etg_of(scenario, spec), spec.object_id, actor="admin")
    tenant.clock.advance(2 * 3600)
    report = scan(scan_settings, tenant)
    mine = [a for a in stored_anomalies(scan_settings) if a.subject.device_name == "CTSO-J5NB1GX"]
    assert [(a.kind, a.status) for a in mine] == [("etg_missing", Status.RESOLVED)]
    assert "after provisioning completed" in mine[0].history[-1]["why"]
    assert [
        (t.anomaly.kind, t.change.value)
        for t in report.transitions
        if t.anomaly.subject.device_name == "CTSO-J5NB1GX"
    ] == [("etg_missing", "resolved")]


def test_removal_after_a_conclusive_verdict_opens_etg_removed(scan_settings, tenant, scenario):
    scan(scan_settings, tenant)
    spec = scenario_device(scenario, "CTSO-FYBK4XE")
    tenant.state.remove_member_now(etg_of(scenario, spec), spec.object_id)
    tenant.clock.advance(600)
    scan(scan_settings, tenant)
    removed = [a for a in stored_anomalies(scan_settings, Status.OPEN) if a.kind == "etg_removed"]
    assert {a.subject.device_name for a in removed} == {"CTSO-2046MYB", "CTSO-FYBK4XE"}


def test_new_enrollments_are_picked_up_by_the_next_scan(scan_settings, tenant, scenario):
    from devtools.simtenant.generate import add_deployments

    scan(scan_settings, tenant)
    new = add_deployments(scenario, 5, at=tenant.clock.now())
    tenant.state.add_devices(new)
    tenant.clock.advance(3 * 3600)
    report = scan(scan_settings, tenant)
    names = {d["device_name"]: d["verdict"] for d in report.to_json()["devices"]}
    assert {d.device_name for d in new} <= names.keys()
    assert all(names[d.device_name] == "ok" for d in new)


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["anomaly_save", "records", "pending", "checkpoint"])
def test_scan_killed_midway_then_rerun_matches_a_clean_run(
    scan_settings, tenant, monkeypatch, where
):
    calls = {"n": 0}
    targets = {
        "anomaly_save": (AnomalyRepository, "_save_chunk"),
        "records": (ScanState, "save_records"),
        "pending": (ScanState, "set_pending"),
        "checkpoint": (ScanState, "advance"),
    }
    cls, name = targets[where]
    original = getattr(cls, name)

    async def crashing(self, *args, **kwargs):
        calls["n"] += 1
        # the third group of anomalies: some are stored, the rest are not
        if calls["n"] == (3 if where == "anomaly_save" else 1):
            raise Crash(where)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, crashing)
    with pytest.raises(Crash):
        scan(scan_settings, tenant)
    monkeypatch.setattr(cls, name, original)
    scan(scan_settings, tenant)

    everything = stored_anomalies(scan_settings)
    rows = [a for a in everything if a.kind != "monitor_job_failing"]
    assert pairs(rows) == GROUND_TRUTH
    assert len(rows) == len({a.key for a in rows})  # nothing duplicated
    assert all(len(a.history) == 1 for a in rows)  # nothing opened twice
    # The crash itself was reported, and cleared by the successful rerun.
    [monitor] = [a for a in everything if a.kind == "monitor_job_failing"]
    assert monitor.status is Status.RESOLVED
    assert "deployments" in checkpoints(scan_settings)


def test_a_third_of_requests_throttled_gives_the_same_result(scan_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(
        FaultRule(endpoint=r".", kind="status", status=429, retry_after=1, probability=0.33, seed=3)
    )
    report = scan(scan_settings, tenant)
    assert pairs(stored_anomalies(scan_settings, Status.OPEN)) == GROUND_TRUTH
    assert report.outcome == "ok"


def test_missing_audit_permission_is_unverified_and_raises_no_etg_anomaly(scan_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint=r"/auditLogs/", kind="status", status=403))
    report = scan(scan_settings, tenant)
    kinds = {a.kind for a in stored_anomalies(scan_settings)}
    assert not kinds & {"etg_missing", "etg_late", "etg_removed"}
    assert {"deployment_failed", "deployment_stuck"} <= kinds  # the rest still works
    data = report.to_json()
    assert data["outcome"] == "unverified"
    assert "AuditLog.Read.All" in data["missing_permissions"]
    assert "audit" not in checkpoints(scan_settings)


def test_report_export_failure_is_unverified_and_holds_the_checkpoint(scan_settings, tenant):
    tenant.state.set_export_jobs_fail(True)
    report = scan(scan_settings, tenant)
    assert report.outcome == "unverified"
    assert stored_anomalies(scan_settings) == []
    assert checkpoints(scan_settings) == {}
    tenant.state.set_export_jobs_fail(False)
    scan(scan_settings, tenant)
    assert pairs(stored_anomalies(scan_settings, Status.OPEN)) == GROUND_TRUTH


def test_suppressed_anomalies_stay_recorded_and_return_to_open_on_expiry(scan_settings, tenant):
    from monitors.jobs.suppressions import new_suppression, settle_suppressions
    from monitors.rules.suppression import SuppressionScope

    now = tenant.clock.now()
    suppression = new_suppression(
        SuppressionScope.KIND, "deployment_failed", "driver rollout, tracked in CHG-1234", now, "1h"
    )

    in_store(scan_settings, lambda store: store.suppressions.add(suppression))
    report = scan(scan_settings, tenant)
    failed = [a for a in stored_anomalies(scan_settings) if a.kind == "deployment_failed"]
    assert {a.status for a in failed} == {Status.SUPPRESSED}
    assert all("CHG-1234" in a.history[-1]["why"] for a in failed)
    assert not any(t.alerts for t in report.transitions if t.anomaly.kind == "deployment_failed")

    tenant.clock.advance(2 * 3600)
    scan(scan_settings, tenant)
    failed = [a for a in stored_anomalies(scan_settings) if a.kind == "deployment_failed"]
    assert {a.status for a in failed} == {Status.OPEN}

    settled = in_store(
        scan_settings,
        lambda store: settle_suppressions(store, tenant.clock.now(), scan_settings.alert_routes),
    )
    assert settled == []


def test_two_scans_started_at_once_give_one_set_of_results(scan_settings, tenant):
    from monitors.store.tables import LeaseHeld

    async def one():
        async with open_context(scan_settings, clock=tenant.clock) as ctx:
            return await run_scan(ctx)

    async def both():
        return await asyncio.gather(one(), one(), return_exceptions=True)

    results = asyncio.run(both())
    held = [r for r in results if isinstance(r, LeaseHeld)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(held) == 1 and len(done) == 1
    rows = stored_anomalies(scan_settings)
    assert pairs(rows) == GROUND_TRUTH
    assert len(rows) == len({a.key for a in rows})
    # The lease is released: the next scan runs.
    assert scan(scan_settings, tenant).checkpoint_advanced


def test_all_policy_etgs_are_asked_in_one_batch(scan_settings, tenant, scenario):
    tenant.reset_stats()
    report = scan(scan_settings, tenant)
    inner = tenant.stats()
    # Every policy's ETG action travels in one beta $batch; the user assignments (for devices
    # without a profile name) in the other.
    assert report.graph_requests.get("POST /beta/$batch") == 2
    asked = inner.get("configurationPolicies.retrieveEnrollmentTimeDeviceMembershipTarget", 0)
    assert asked == len(scenario.policies)
    # only a policy that answers through the older action is asked again, on its own
    singles = [v for k, v in report.graph_requests.items() if k.endswith(policies.ETG_ACTION)]
    assert singles == []


def test_a_refused_device_read_is_reported_under_its_endpoint_and_permission(scan_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint="managedDevices.get", kind="status", status=403))
    report = scan(scan_settings, tenant)
    data = report.to_json()
    label = "GET /v1.0/deviceManagement/managedDevices/{id}"
    assert data["unverified"][f"{label}: forbidden (needs DeviceManagementManagedDevices.Read.All)"]
    assert "DeviceManagementManagedDevices.Read.All" in data["missing_permissions"]
    # Without the devices nothing about ETG membership is decided; the rest still is.
    kinds = {a.kind for a in stored_anomalies(scan_settings)}
    assert not kinds & {"etg_missing", "etg_late", "etg_removed"}
    assert "deployment_failed" in kinds


# --- coverage: how far back the scan reads (pure) --------------------------------------------

T0 = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)


def _record(enrolled_at, audit_from=None, object_id="obj-1", policy=None):
    from monitors.models import Deployment, DeploymentStatus
    from monitors.store.scan_state import DeploymentRecord

    deployment = Deployment("md-1", enrolled_at, DeploymentStatus.SUCCESS, "Success")
    return DeploymentRecord(
        deployment, policy=policy, object_id=object_id, audit_from=dict(audit_from or {})
    )


def _window(checkpoints, now=T0, lookback_hours=168):
    from monitors.scan.coverage import Window
    from monitors.settings import Settings

    settings = Settings(
        graph_endpoint="http://127.0.0.1:1",
        graph_credential="none",
        storage_connection=None,
        storage_table_url=None,
        table_prefix="t",
        scan_lookback_hours=lookback_hours,
    )
    return Window.of(now, settings, checkpoints)


def test_the_window_starts_an_overlap_before_the_checkpoint_but_not_before_the_lookback():
    assert _window({}).start == T0 - timedelta(hours=168)
    assert _window({"deployments": T0 - timedelta(minutes=10)}).start == T0 - timedelta(
        hours=2, minutes=10
    )
    assert _window({"deployments": T0}, lookback_hours=1).start == T0 - timedelta(hours=1)


def test_coverage_is_kept_per_etg_and_the_earliest_read_wins():
    from monitors.scan.coverage import covered, marked_read

    floor = T0 - timedelta(days=7)
    record = _record(T0, {"g1": T0 - timedelta(hours=1)})
    assert covered(record, ("g1",), floor) and not covered(record, ("g1", "g2"), floor)
    read = marked_read(record.audit_from, {"g1": T0, "g2": T0 - timedelta(minutes=5)})
    assert read == {"g1": T0 - timedelta(hours=1), "g2": T0 - timedelta(minutes=5)}
    # Read from five minutes before enrollment: short of the ten the scan wants.
    assert not covered(dataclasses.replace(record, audit_from=read), ("g2",), floor)
    assert record.audit_from == {"g1": T0 - timedelta(hours=1)}  # the record is not changed


def test_events_seen_again_are_kept_once_and_oldest_first():
    from monitors.models import MembershipEvent, MembershipOp
    from monitors.scan.coverage import merged_events

    def event(event_id, minutes):
        at = T0 + timedelta(minutes=minutes)
        return MembershipEvent(MembershipOp.ADD, "g1", "obj-1", at, True, "audit", event_id)

    known = [event("b", 5)]
    merged = merged_events(known, [event("a", 9), event("b", 5), event("c", 1)])
    assert [e.event_id for e in merged] == ["c", "b", "a"]
    assert [e.event_id for e in known] == ["b"]


def test_each_etg_is_read_from_its_own_checkpoint_widened_only_for_its_uncovered_devices():
    from monitors.models import EtgLookup, Policy, PolicyMatch
    from monitors.scan.coverage import audit_since

    p1, p2 = Policy("p1", "P1", "t"), Policy("p2", "P2", "t")
    policy_list = [(p1, EtgLookup(("g1",), "x")), (p2, EtgLookup(("g2",), "x"))]
    checkpoints = {
        "deployments": T0,
        "audit:g1": T0 - timedelta(hours=1),
        "audit:g2": T0 - timedelta(hours=3),
    }
    window = _window(checkpoints)
    old = T0 - timedelta(hours=30)
    records = {
        # policy p1, never covered: g1 is read from before its enrollment, g2 is not widened
        "a": _record(old, policy=PolicyMatch(p1, ("g1",), "x")),
        # covered already: widens nothing
        "b": _record(old - timedelta(hours=5), {"g1": old - timedelta(hours=6)}),
        # no Entra object yet: nothing to look for
        "c": _record(old - timedelta(days=1), object_id=None),
    }
    since = audit_since(records, policy_list, window, checkpoints)
    assert since["g1"] == old - timedelta(minutes=10)
    # b's policy is unknown, so every ETG may hold its events: g2 was widened for it (g1 covers it)
    assert since["g2"] == old - timedelta(hours=5, minutes=10)
    never = audit_since({}, policy_list, _window({}), {"audit": T0})
    assert never == {"g1": T0 - timedelta(hours=2), "g2": T0 - timedelta(hours=2)}
