"""The monitor's own health: /api/health's verdict, and alerts when a job fails and recovers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from monitors.clock import FixedClock
from monitors.jobs.health import health_report, interval
from monitors.models import Status
from monitors.store.scan_state import ScanState
from tests.helpers import in_store, outbox, scan, settings_for, stored_anomalies

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "schedule,gap",
    [
        ("0 */10 * * * *", timedelta(minutes=10)),
        ("0 0 * * * *", timedelta(hours=1)),
        ("0 15 * * * *", timedelta(hours=1)),
        ("0 * * * * *", timedelta(minutes=1)),
        ("0 0 7 * * 1", timedelta(days=7)),
        ("0 0 7 * * Mon", timedelta(days=7)),
        ("0 0 */6 * * *", timedelta(hours=6)),
        # The longest gap, not the most common one.
        ("0 0 9-17 * * *", timedelta(hours=16)),
        ("0 0 12 * * 1-5", timedelta(days=3)),
        ("0 */10 * * * 1-5", timedelta(days=2, minutes=10)),
        ("0 0 0 1 * *", timedelta(days=31)),
        # NCrontab reads a reversed range as the same range, not one that wraps the weekend.
        ("0 0 12 * * 5-1", timedelta(days=3)),
        # Both day and day-of-week must match: the first Monday of each month.
        ("0 0 7 1-7 * 1", timedelta(days=35)),
    ],
)
def test_interval_is_the_longest_gap_between_firings(schedule, gap):
    assert interval(schedule) == gap


@pytest.mark.parametrize("schedule", ["nonsense", "0 */10 * * *", "0 0 25 * * *", "0 0 7 * * L"])
def test_interval_refuses_what_the_functions_host_would_refuse(schedule):
    with pytest.raises(ValueError):
        interval(schedule)


def report(settings, now):
    return in_store(settings, lambda store: health_report(store, now, settings.schedules))


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


def with_env(settings, **env):
    """The test's settings read again from the environment, with `env` set as well."""
    return settings_for(
        settings.graph_endpoint, settings.storage_connection, settings.table_prefix, **env
    )


def test_the_configured_scan_schedule_decides_when_the_scan_is_overdue(settings, tenant):
    hourly = with_env(settings, SCAN_SCHEDULE="0 0 * * * *")
    scan(settings, tenant)
    now = tenant.clock.now()

    healthy, body = report(hourly, now + timedelta(minutes=30))
    assert healthy and body["status"] != "unhealthy"
    assert body["jobs"]["scan"]["overdue"] is False
    assert body["jobs"]["scan"]["interval_minutes"] == 60

    # The same store, the same moment: only the schedule differs.
    later = now + timedelta(minutes=45)
    assert report(hourly, later)[0] is True
    healthy, body = report(settings, later)
    assert not healthy and body["jobs"]["scan"]["interval_minutes"] == 10

    assert report(hourly, now + timedelta(hours=2, minutes=59))[0] is True
    healthy, body = report(hourly, now + timedelta(hours=3, minutes=1))
    assert not healthy and body["jobs"]["scan"]["overdue"] is True
    assert body["problems"][0].startswith("no successful scan for 3 intervals")


def test_health_endpoint_reads_the_scan_schedule_from_the_app_settings(
    app_env, tenant, monkeypatch
):
    from monitors import entry

    monkeypatch.setenv("SCAN_SCHEDULE", "0 0 * * * *")
    scan(app_env, tenant)
    status, body = asyncio.run(
        entry.health(clock=FixedClock(tenant.clock.now() + timedelta(minutes=45)))
    )
    assert status == 200, body["problems"]
    assert body["jobs"]["scan"]["interval_minutes"] == 60


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

    def state():
        anomalies = [a for a in stored_anomalies(settings) if a.kind == "monitor_job_failing"]
        alerts = [i for i in outbox(settings) if i.payload.get("kind") == "monitor_job_failing"]
        return anomalies, alerts

    [failing], alerts = state()
    assert failing.status is Status.OPEN and failing.subject.job == "scan"
    assert "tables unreachable" in failing.explanation
    assert [a.change for a in alerts] == ["opened"]
    monkeypatch.setattr(ScanState, "checkpoints", original)
    scan(settings, tenant)
    [recovered], alerts = state()
    assert recovered.status is Status.RESOLVED
    assert sorted(a.change for a in alerts) == ["opened", "resolved"]
