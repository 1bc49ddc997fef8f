"""Faults: whatever breaks, the stored anomalies end equal to a fault-free run, with nothing
invented while broken and nothing lost or doubled after recovery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random

import pytest
from azure.data.tables.aio import TableClient

from monitors.jobs.context import open_context, open_store
from monitors.jobs.scan import run_scan
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


# A first scan of the scenario makes 22 storage writes (transactions count once).
FIRST_SCAN_WRITES = 22


@pytest.mark.parametrize("seed", [1, 2, 3, 5, 6, 7])
def test_scan_killed_at_a_random_storage_write_then_rerun(scan_settings, tenant, monkeypatch, seed):
    kill_at = random.Random(seed).randint(1, FIRST_SCAN_WRITES)
    calls = {"n": 0}
    originals = {name: getattr(TableClient, name) for name in WRITES}

    def wrap(name):
        async def write(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise Killed(f"killed at write {kill_at} ({name})")
            return await originals[name](self, *args, **kwargs)

        return write

    for name in WRITES:
        monkeypatch.setattr(TableClient, name, wrap(name))
    with contextlib.suppress(Killed):
        scan(scan_settings, tenant)
    assert calls["n"] >= kill_at  # the kill happened within the run
    for name, original in originals.items():
        monkeypatch.setattr(TableClient, name, original)
    # A killed run leaves its lease behind: the next run may start once it expires.
    tenant.clock.advance(16 * 60)
    scan(scan_settings, tenant)
    rows = device_anomalies(scan_settings)
    assert pairs(rows) == GROUND_TRUTH
    assert len(rows) == len({a.key for a in rows})
    assert all(len(a.history) == 1 for a in rows)


@pytest.mark.parametrize(
    "kind,endpoint",
    [
        ("reset", "managedDevices.list"),
        ("reset", "directoryAudits.list"),
        ("hang", "exportJobs.get"),
        ("reset", "$batch"),
    ],
)
def test_connection_resets_and_hangs_invent_nothing_and_recover(
    scan_settings, tenant, kind, endpoint
):
    from simtenant.faults import FaultRule

    settings = dataclasses.replace(scan_settings, graph_timeout_seconds=2.0)
    rule = tenant.faults.add(FaultRule(endpoint=endpoint, kind=kind, first_n=1))
    scan(settings, tenant)
    assert pairs(device_anomalies(settings)) <= GROUND_TRUTH  # nothing invented
    tenant.faults.remove(rule)
    tenant.clock.advance(600)
    scan(settings, tenant)
    rows = device_anomalies(settings)
    assert pairs(rows) == GROUND_TRUTH  # nothing lost
    assert len(rows) == len({a.key for a in rows})


def test_small_server_pages_give_the_same_result(scan_settings, tenant):
    tenant.faults.page_cap = 3
    scan(scan_settings, tenant)
    assert pairs(device_anomalies(scan_settings)) == GROUND_TRUTH
    assert tenant.stats()["directoryAudits.list"] > 1  # it did page


@pytest.mark.parametrize("endpoint", ["directoryAudits.list", "managedDevices.list"])
def test_a_page_failing_midway_after_retries_invents_nothing_and_recovers(
    scan_settings, tenant, endpoint
):
    from simtenant.faults import FaultRule

    settings = dataclasses.replace(scan_settings, graph_max_retries=2)
    tenant.faults.page_cap = 3
    rule = tenant.faults.add(
        FaultRule(endpoint=endpoint, status=503, retry_after=0, continuation_only=True)
    )
    first = scan(settings, tenant)
    assert rule.fired >= 3  # the first try and both retries of a later page failed
    assert first.all_unverified()  # the gap is reported, not guessed
    assert pairs(device_anomalies(settings)) <= GROUND_TRUTH  # nothing invented
    tenant.faults.remove(rule)
    tenant.clock.advance(600)
    scan(settings, tenant)
    rows = device_anomalies(settings)
    assert pairs(rows) == GROUND_TRUTH  # nothing lost
    assert len(rows) == len({a.key for a in rows})


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
    assert pairs(device_anomalies(settings)) == GROUND_TRUTH
