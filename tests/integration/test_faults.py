"""Faults: whatever breaks, the stored anomalies end equal to a fault-free run, with nothing
invented while broken and nothing lost or doubled after recovery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import Counter

import pytest
from azure.data.tables.aio import TableClient

from monitors.jobs.context import open_context, open_store
from monitors.jobs.scan import run_scan
from monitors.store.outbox import OutboxRepository
from tests.integration.test_scan import GROUND_TRUTH

pytestmark = pytest.mark.integration
WRITES = ("create_entity", "update_entity", "upsert_entity", "submit_transaction", "delete_entity")


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the code catches it."""


@pytest.fixture
def scan_settings(settings):
    return dataclasses.replace(settings, detailed_reports=True)


def scan(settings, tenant):
    async def go():
        async with open_context(settings, clock=tenant.clock) as ctx:
            return await run_scan(ctx)

    return asyncio.run(go())


def device_anomalies(settings):
    async def go():
        async with open_store(settings) as store:
            return [a async for a in store.anomalies.iter() if a.kind != "monitor_job_failing"]

    return asyncio.run(go())


def pairs(rows):
    return {(a.kind, a.subject.device_name) for a in rows}


def alerts_queued(settings):
    async def go():
        async with open_store(settings) as store:
            return await OutboxRepository(store).items()

    return Counter(
        (i.change, i.payload.get("kind"), i.payload.get("device_name"))
        for i in asyncio.run(go())
        if i.payload.get("kind") != "monitor_job_failing"
    )


def assert_matches_a_clean_run(settings):
    """What a fault-free run ends with: exactly the ground-truth anomalies, each stored once and
    opened once, and exactly one queued alert for each."""
    rows = device_anomalies(settings)
    assert pairs(rows) == GROUND_TRUTH  # nothing lost, nothing invented
    assert len(rows) == len({a.key for a in rows})
    assert all(len(a.history) == 1 for a in rows)  # never reopened or doubled
    assert alerts_queued(settings) == Counter(("opened", k, d) for k, d in GROUND_TRUTH)


# A first scan of the scenario makes 16 storage writes (a transaction counts once).
FIRST_SCAN_WRITES = 16


def at_storage_write(monkeypatch, write_no, action):
    """Call ``action(name)`` just before the run's ``write_no``-th storage write (a
    transaction counts once). Returns a function that removes the hook and checks that the
    write was reached, so a case can never pass without its fault."""
    calls = {"n": 0}
    originals = {name: getattr(TableClient, name) for name in WRITES}

    def wrap(name):
        async def write(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == write_no:
                action(name)
            return await originals[name](self, *args, **kwargs)

        return write

    for name in WRITES:
        monkeypatch.setattr(TableClient, name, wrap(name))

    def restore():
        for name, original in originals.items():
            monkeypatch.setattr(TableClient, name, original)
        assert calls["n"] >= write_no, "the fault never happened"

    return restore


@pytest.mark.parametrize("seed", [1, 2, 3, 5, 6, 7, 9])
def test_scan_killed_at_a_random_storage_write_then_rerun(scan_settings, tenant, monkeypatch, seed):
    kill_at = random.Random(seed).randint(1, FIRST_SCAN_WRITES)

    def kill(name):
        raise Killed(f"killed at write {kill_at} ({name})")

    broken_at_write_then_rerun(scan_settings, tenant, monkeypatch, kill_at, kill, Killed)


def broken_at_write_then_rerun(
    settings, tenant, monkeypatch, write_no, action, errors, before_rerun=None
):
    """A scan broken by ``action`` at one storage write, then a later complete scan, must end
    exactly where a fault-free run ends."""
    restore = at_storage_write(monkeypatch, write_no, action)
    with contextlib.suppress(errors):
        scan(settings, tenant)
    restore()
    if before_rerun is not None:
        before_rerun()
    # A run that died keeps its lease: the next run may start once it expires.
    tenant.clock.advance(16 * 60)
    scan(settings, tenant)
    assert_matches_a_clean_run(settings)


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


def test_a_device_that_never_joins_is_still_caught_once_the_audit_window_passes(
    scan_settings, tenant, scenario
):
    from devtools.simtenant.generate import add_deployments

    scan(scan_settings, tenant)
    (device,) = add_deployments(scenario, 1, at=tenant.clock.now())
    device.membership = []  # the provisioning client never added it
    tenant.state.add_devices([device])
    opened_after = None
    for step in range(1, 13):
        tenant.clock.advance(600)
        scan(scan_settings, tenant)
        found = {
            a.kind
            for a in device_anomalies(scan_settings)
            if a.subject.device_name == device.device_name
        }
        if found:
            assert found == {"etg_missing"}
            opened_after = opened_after or step * 10
    # not before provisioning plus the configured audit latency, but within the next scans
    assert opened_after is not None and 60 <= opened_after <= 100


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
