"""The monitor's own health: /api/health's verdict, and alerts when a job fails and recovers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from monitors.clock import FixedClock
from monitors.jobs.context import open_context, open_store
from monitors.jobs.health import health_report, interval
from monitors.jobs.scan import run_scan
from monitors.models import Status
from monitors.store.outbox import OutboxRepository
from monitors.store.scan_state import ScanState

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "schedule,minutes",
    [
        ("0 */10 * * * *", 10),
        ("0 0 * * * *", 60),
        ("0 15 * * * *", 60),
        ("0 * * * * *", 1),
        ("0 0 7 * * 1", 7 * 24 * 60),
        ("0 0 */6 * * *", 360),
        ("nonsense", 24 * 60),
    ],
)
def test_schedule_intervals(schedule, minutes):
    assert interval(schedule) == timedelta(minutes=minutes)


def report(settings, now):
    async def go():
        async with open_store(settings) as store:
            return await health_report(store, now)

    return asyncio.run(go())


def scan(settings, tenant):
    async def go():
        async with open_context(settings, clock=tenant.clock) as ctx:
            return await run_scan(ctx)

    return asyncio.run(go())


def test_healthy_after_a_scan_and_unhealthy_after_three_missed_intervals(settings, tenant):
    scan(settings, tenant)
    now = tenant.clock.now()
    healthy, body = report(settings, now + timedelta(minutes=29))
    assert healthy and body["jobs"]["scan"]["overdue"] is False
    assert body["checkpoint_age_minutes"]["deployments"] == 29.0
    assert body["open_anomalies"]["etg_missing"] == 5
    healthy, body = report(settings, now + timedelta(minutes=31))
    assert not healthy and body["status"] == "unhealthy"
    assert body["problems"][0].startswith("no successful scan for 3 intervals")


def test_health_endpoint_answers_503_when_unhealthy(app_env, tenant):
    from monitors import entry

    settings = app_env
    scan(settings, tenant)
    later = FixedClock(tenant.clock.now() + timedelta(hours=2))
    status, body = asyncio.run(entry.health(clock=later))
    assert status == 503 and body["status"] == "unhealthy"
    json.dumps(body)


def test_failing_job_alerts_once_and_again_on_recovery(settings, tenant, monkeypatch):
    original = ScanState.checkpoints

    async def broken(self):
        raise RuntimeError("tables unreachable")

    monkeypatch.setattr(ScanState, "checkpoints", broken)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            scan(settings, tenant)
        tenant.clock.advance(600)

    async def state():
        async with open_store(settings) as store:
            anomalies = [a async for a in store.anomalies.iter(["monitor_job_failing"])]
            alerts = [
                i
                for i in await OutboxRepository(store).items()
                if i.payload.get("kind") == "monitor_job_failing"
            ]
            return anomalies, alerts

    [failing], alerts = asyncio.run(state())
    assert failing.status is Status.OPEN and failing.subject.job == "scan"
    assert "tables unreachable" in failing.explanation
    assert [a.change for a in alerts] == ["opened"]
    monkeypatch.setattr(ScanState, "checkpoints", original)
    scan(settings, tenant)
    [recovered], alerts = asyncio.run(state())
    assert recovered.status is Status.RESOLVED
    assert sorted(a.change for a in alerts) == ["opened", "resolved"]
