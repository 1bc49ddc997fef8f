"""Targeted re-checks in the notifications run (monitors.scan.recheck), against Azurite and the
simulated tenant: what they judge, how they are bounded, and what they never touch."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from monitors.jobs.notifications import process_inbox
from monitors.jobs.subscriptions import sync_subscriptions
from monitors.models import Status
from monitors.scan import recheck as recheck_module
from monitors.store.scan_state import ScanState
from tests.helpers import (
    alerts_queued,
    checkpoints,
    device_anomalies,
    etg_of,
    in_store,
    notification_inbox,
    outbox,
    run_job,
    scan,
    with_webhook,
)

pytestmark = pytest.mark.integration
CLIENT_STATE = "Rq4mV8zT2wLp6nXc9bHs3kYd"
DURATION_S = 600
GRACE_S = 10 * 60


@pytest.fixture
def notif_settings(settings, function_host, monkeypatch):
    return with_webhook(monkeypatch, settings, function_host, CLIENT_STATE)


def enroll_missing(tenant, scenario, n, seed=7):
    """``n`` deployments enrolled now that succeed after DURATION_S and never join their ETG."""
    from devtools.simtenant.generate import add_deployments

    devices = add_deployments(scenario, n, at=tenant.clock.now(), seed=seed)
    for device in devices:
        device.membership = []
        device.deployment.duration_s = float(DURATION_S)
    tenant.state.add_devices(devices)
    return devices


def records_of(settings, devices):
    ids = {d.managed_device_id for d in devices}

    async def read(store):
        state = ScanState(store)
        keys = [k for k in await state.pending() if k.split("_")[0] in ids]
        found = await state.records_by_keys(keys)
        return {r.deployment.managed_device_id: r for r in found.values()}

    return in_store(settings, read)


def outbox_items(settings, device_name, *statuses):
    return [i for i in outbox(settings, *statuses) if i.payload.get("device_name") == device_name]


def missing_of(settings, devices):
    names = {d.device_name for d in devices}
    return [
        a
        for a in device_anomalies(settings)
        if a.kind == "etg_missing" and a.subject.device_name in names
    ]


def scanned_before_grace(settings, tenant, scenario, n, seed=7):
    """New missing deployments, completed, scanned while their grace runs, then past it."""
    devices = enroll_missing(tenant, scenario, n, seed)
    tenant.clock.advance(DURATION_S + 5 * 60)
    scan(settings, tenant)
    tenant.clock.advance(6 * 60)
    return devices


def test_a_deployment_whose_grace_passed_is_rechecked_without_any_notification(
    settings, tenant, scenario
):
    [device] = scanned_before_grace(settings, tenant, scenario, 1)
    assert missing_of(settings, [device]) == []  # the scan ran inside the grace
    marks = checkpoints(settings)
    tenant.reset_stats()
    report = run_job(settings, tenant, process_inbox)
    assert (report.processed, report.rechecked, report.recheck_waiting) == (0, 1, 0)
    assert report.recheck_skipped is None and report.recheck_alerts == 1
    assert tenant.stats().get("devices.checkMemberGroups") == 1
    [anomaly] = missing_of(settings, [device])
    assert anomaly.status is Status.OPEN and anomaly.evidence.get("early") is True
    assert alerts_queued(settings)[("opened", "etg_missing", device.device_name)] == 1
    assert checkpoints(settings) == marks  # a re-check read no report and no audit log
    again = run_job(settings, tenant, process_inbox)  # judged since its grace: not again
    assert again.rechecked == 0


def test_a_change_notification_rechecks_only_the_deployments_it_changed(
    notif_settings, tenant, scenario
):
    run_job(notif_settings, tenant, sync_subscriptions)
    devices = enroll_missing(tenant, scenario, 6)
    tenant.clock.advance(DURATION_S + GRACE_S + 60)
    scan(notif_settings, tenant)  # past the grace: the scan asked and opened them itself
    assert len(missing_of(notif_settings, devices)) == len(devices)
    before = records_of(notif_settings, devices)
    joined = devices[0]
    tenant.clock.advance(60)
    tenant.state.add_member_now(etg_of(scenario, joined), joined.object_id)
    tenant.wait_for_deliveries()
    tenant.reset_stats()
    report = run_job(notif_settings, tenant, process_inbox)
    assert report.groups == [etg_of(scenario, joined)] and report.rechecked == 1
    assert "devices.checkMemberGroups" not in tenant.stats()  # the observed join decides
    after = records_of(notif_settings, devices)
    assert [e.source for e in after[joined.managed_device_id].events] == ["delta"]
    unchanged = {k: r.updated_at for k, r in after.items() if k != joined.managed_device_id}
    assert unchanged == {
        k: r.updated_at for k, r in before.items() if k != joined.managed_device_id
    }


def test_a_notification_storm_gives_one_bounded_batched_recheck(
    notif_settings, tenant, scenario, monkeypatch
):
    monkeypatch.setattr(recheck_module, "RECHECK_LIMIT", 30)
    run_job(notif_settings, tenant, sync_subscriptions)
    devices = scanned_before_grace(notif_settings, tenant, scenario, 45)
    groups = sorted({p.etg_group_id for p in scenario.policies if p.etg_group_id})
    with tenant.deliveries_held():
        for n in range(240):  # other members of every ETG, all within the minute
            member = f"5d0c9e2a-1b7f-4a3e-8c6d-{n:012x}"
            tenant.state.add_member_now(groups[n % len(groups)], member)
    tenant.wait_for_deliveries(timeout=30)
    tenant.reset_stats()
    first = run_job(notif_settings, tenant, process_inbox)
    assert first.processed >= 240 and sorted(first.groups) == groups
    assert (first.rechecked, first.recheck_waiting, first.recheck_limit) == (30, 15, 30)
    stats = tenant.stats()
    assert stats["devices.checkMemberGroups"] == 30
    assert stats["$batch"] == math.ceil(30 / 20)
    assert stats["groups.delta"] == len(groups)  # one catch-up per group, not per notification
    tenant.clock.advance(60)
    tenant.reset_stats()
    second = run_job(notif_settings, tenant, process_inbox)
    assert (second.rechecked, second.recheck_waiting) == (15, 0)
    assert tenant.stats()["$batch"] == 1
    assert len(missing_of(notif_settings, devices)) == 45


def test_the_recheck_is_skipped_while_the_scan_holds_its_lease(settings, tenant, scenario):
    [device] = scanned_before_grace(settings, tenant, scenario, 1)
    now = tenant.clock.now()
    etag = in_store(settings, lambda s: s.leases.acquire("scan", "a-scan-run", now, 900))
    report = run_job(settings, tenant, process_inbox)
    assert report.rechecked == 0 and report.recheck_skipped
    assert "scan" in report.recheck_skipped and missing_of(settings, [device]) == []
    # Released by its holder with the etag it got: the re-check left the lease untouched.
    in_store(settings, lambda s: s.leases.release("scan", "a-scan-run", etag))
    assert run_job(settings, tenant, process_inbox).rechecked == 1
    assert len(missing_of(settings, [device])) == 1


def test_the_recheck_holds_the_scan_lease_only_while_it_runs(settings, tenant, scenario):
    scanned_before_grace(settings, tenant, scenario, 1)
    assert run_job(settings, tenant, process_inbox).rechecked == 1
    now = tenant.clock.now()
    # Free again at once: taking it now succeeds.
    assert in_store(settings, lambda s: s.leases.acquire("scan", "next-scan", now, 900))


def test_a_crash_in_the_middle_of_a_recheck_loses_and_doubles_nothing(
    settings, tenant, scenario, monkeypatch
):
    from azure.core.exceptions import ServiceRequestError

    from monitors.store import transactions

    devices = scanned_before_grace(settings, tenant, scenario, 3)
    submit, failed = transactions.submit, []

    async def refuse_records(table, operations):
        # The anomalies and their alerts are stored first, then the records: fail there.
        if table.table_name.endswith("deployments") and not failed:
            failed.append(table.table_name)
            raise ServiceRequestError("connection reset by the storage account")
        return await submit(table, operations)

    monkeypatch.setattr(transactions, "submit", refuse_records)
    with pytest.raises(ServiceRequestError):
        run_job(settings, tenant, process_inbox)
    monkeypatch.setattr(transactions, "submit", submit)
    assert failed, "the fault never happened"
    assert len(missing_of(settings, devices)) == 3  # the anomalies were stored
    stale = records_of(settings, devices)
    assert all(r.updated_at < tenant.clock.now() for r in stale.values())
    tenant.clock.advance(60)
    report = run_job(settings, tenant, process_inbox)
    assert report.rechecked == 3 and report.recheck_alerts == 0
    rows = missing_of(settings, devices)
    assert len(rows) == 3 and all(len(a.history) == 1 for a in rows)
    opened = alerts_queued(settings)
    assert all(opened[("opened", "etg_missing", d.device_name)] == 1 for d in devices)
    assert all(r.updated_at == tenant.clock.now() for r in records_of(settings, devices).values())
    assert run_job(settings, tenant, process_inbox).rechecked == 0


def test_a_recheck_never_moves_the_scan_checkpoints(settings, tenant, scenario):
    scanned_before_grace(settings, tenant, scenario, 2)
    marks = checkpoints(settings)
    assert marks  # the scan did set them
    tenant.clock.advance(timedelta(minutes=1).total_seconds())
    assert run_job(settings, tenant, process_inbox).rechecked == 2
    assert checkpoints(settings) == marks


def test_change_rows_stay_queued_while_the_scan_holds_its_lease_and_are_rechecked_next_run(
    notif_settings, tenant, scenario
):
    run_job(notif_settings, tenant, sync_subscriptions)
    devices = enroll_missing(tenant, scenario, 2)
    tenant.clock.advance(DURATION_S + GRACE_S + 60)
    scan(notif_settings, tenant)
    joined = devices[0]
    tenant.clock.advance(60)
    tenant.state.add_member_now(etg_of(scenario, joined), joined.object_id)
    tenant.wait_for_deliveries()
    now = tenant.clock.now()
    etag = in_store(notif_settings, lambda s: s.leases.acquire("scan", "a-scan-run", now, 900))
    held = run_job(notif_settings, tenant, process_inbox)
    assert held.recheck_skipped and held.observations >= 1 and held.processed == 0
    assert notification_inbox(notif_settings)  # the trigger is kept, not lost
    in_store(notif_settings, lambda s: s.leases.release("scan", "a-scan-run", etag))
    tenant.clock.advance(60)
    report = run_job(notif_settings, tenant, process_inbox)
    assert report.observations == 0 and report.rechecked == 1 and report.processed >= 1
    assert notification_inbox(notif_settings) == []
    events = records_of(notif_settings, [joined])[joined.managed_device_id].events
    assert [e.source for e in events] == ["delta"]


def test_alerts_a_recheck_queued_leave_with_the_notifications_run(alert_settings, tenant, scenario):
    import asyncio

    from monitors import service

    [device] = scanned_before_grace(alert_settings, tenant, scenario, 1)
    ran = asyncio.run(service.process_notifications(alert_settings, clock=tenant.clock))
    assert ran.report is not None and ran.report.recheck_alerts == 1
    assert ran.dispatched is not None and ran.dispatched.report is not None
    cards = [json.dumps(m.card) for m in tenant.teams_messages()]
    assert any(device.device_name in c and "etg_missing" in c for c in cards)
    assert outbox_items(alert_settings, device.device_name, "pending") == []
    quiet = asyncio.run(service.process_notifications(alert_settings, clock=tenant.clock))
    assert quiet.report is not None and quiet.dispatched is None  # nothing queued, no dispatch


def test_with_detailed_reports_a_recheck_opens_early_and_leaves_the_deployment_pending(
    alert_settings, tenant, scenario
):
    [device] = scanned_before_grace(alert_settings, tenant, scenario, 1)
    assert run_job(alert_settings, tenant, process_inbox).rechecked == 1
    [anomaly] = missing_of(alert_settings, [device])
    assert anomaly.status is Status.OPEN
    # Its install reports are the scan's to judge: the re-check never settles it.
    [record] = records_of(alert_settings, [device]).values()
    assert record.state == "pending"


def test_a_scan_that_finishes_while_the_recheck_chooses_makes_it_give_way(
    settings, tenant, scenario, monkeypatch
):
    import threading

    from azure.data.tables.aio import TableClient

    [device] = scanned_before_grace(settings, tenant, scenario, 1)
    get_entity, interleaved = TableClient.get_entity, []

    async def reading(self, partition_key, row_key, *args, **kwargs):
        if (partition_key, row_key) == ("lease", "scan") and not interleaved:
            interleaved.append(row_key)
            # A whole scan runs between the re-check's choice and its taking the lease.
            other = threading.Thread(target=scan, args=(settings, tenant))
            other.start()
            other.join()
        return await get_entity(self, partition_key, row_key, *args, **kwargs)

    monkeypatch.setattr(TableClient, "get_entity", reading)
    report = run_job(settings, tenant, process_inbox)
    monkeypatch.setattr(TableClient, "get_entity", get_entity)
    assert interleaved, "the scan never ran in between"
    assert report.rechecked == 0 and report.recheck_skipped
    assert "scan finished" in report.recheck_skipped
    # The scan that ran past the grace asked and opened it itself, once.
    [anomaly] = missing_of(settings, [device])
    assert len(anomaly.history) == 1
