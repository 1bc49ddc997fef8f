"""The monitor's own health, for `GET /api/health` (an availability test alerts on its 503) and
`etg-monitor health`."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from monitors.models import JSON, Status
from monitors.settings import SCHEDULE_SETTINGS
from monitors.store.notifications import NotificationStore
from monitors.store.outbox import OutboxRepository
from monitors.store.scan_state import ScanState
from monitors.store.tables import TableStore, loads_json

# job -> the app setting holding its schedule
JOBS = {
    "scan": "SCAN_SCHEDULE",
    "config_check": "CONFIG_CHECK_SCHEDULE",
    "alerts": "ALERTS_SCHEDULE",
    "notifications": "NOTIFICATIONS_SCHEDULE",
    "subscriptions": "SUBSCRIPTIONS_SCHEDULE",
    "weekly_summary": "SUMMARY_SCHEDULE",
}
# Jobs whose silence makes the monitor unhealthy: without them nothing is being checked.
ESSENTIAL = ("scan", "config_check")
MISSED_INTERVALS = 3


def interval(schedule: str) -> timedelta:
    """The period of the NCRONTAB forms this app uses ("0 */10 * * * *", "0 0 * * * *",
    "0 0 7 * * 1", ...); a day when the form is not recognised."""
    fields = schedule.split()
    if len(fields) != 6:
        return timedelta(days=1)
    _sec, minute, hour, day, month, weekday = fields
    if weekday != "*":
        return timedelta(days=7)
    if day != "*" or month != "*":
        return timedelta(days=28)
    if (m := re.fullmatch(r"\*/(\d+)", hour)) and minute.isdigit():
        return timedelta(hours=int(m.group(1)))
    if hour != "*":
        return timedelta(days=1)
    if m := re.fullmatch(r"\*/(\d+)", minute):
        return timedelta(minutes=int(m.group(1)))
    if minute == "*":
        return timedelta(minutes=1)
    return timedelta(hours=1)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (value or None)


def _age_minutes(now: datetime, then: Any) -> float | None:
    return round((now - then).total_seconds() / 60, 1) if isinstance(then, datetime) else None


async def health_report(
    store: TableStore, now: datetime, schedules: dict[str, str] | None = None
) -> tuple[bool, dict[str, JSON]]:
    schedules = {**SCHEDULE_SETTINGS, **(schedules or {})}
    runs = await store.runs.all()
    jobs: dict[str, JSON] = {}
    problems: list[str] = []
    unverified_total = 0
    missing: set[str] = set()
    for job, setting in JOBS.items():
        every = interval(schedules.get(setting, ""))
        run = runs.get(job)
        if run is None:
            jobs[job] = {"state": "never run", "interval_minutes": every.total_seconds() / 60}
            continue
        success, started = run.get("LastSuccess"), run.get("LastStarted")
        reference = success if isinstance(success, datetime) else started
        overdue = isinstance(reference, datetime) and now - reference > MISSED_INTERVALS * every
        if overdue and job in ESSENTIAL:
            problems.append(
                f"no successful {job} for {MISSED_INTERVALS} intervals "
                f"({_iso(success) or 'never succeeded'})"
            )
        unverified = loads_json(run.get("LastUnverified"), [])
        unverified_total += len(unverified)
        missing.update(loads_json(run.get("MissingPermissions"), []))
        jobs[job] = {
            "last_started": _iso(started),
            "last_finished": _iso(run.get("LastFinished")),
            "last_success": _iso(success),
            "last_outcome": run.get("LastOutcome") or "running",
            "last_error": run.get("LastError") or None,
            "last_run_id": run.get("LastRunId"),
            "interval_minutes": every.total_seconds() / 60,
            "overdue": overdue,
            "summary": loads_json(run.get("LastSummary"), {}),
            "unverified": unverified,
            "missing_permissions": loads_json(run.get("MissingPermissions"), []),
        }

    open_by_kind: Counter[str] = Counter()
    suppressed = 0
    async for anomaly in store.anomalies.iter():
        if anomaly.status is Status.OPEN:
            open_by_kind[anomaly.kind] += 1
        elif anomaly.status is Status.SUPPRESSED:
            suppressed += 1

    checkpoints = await ScanState(store).checkpoints()
    pending = await OutboxRepository(store).items("pending")
    failed = await OutboxRepository(store).items("failed")
    subscriptions = await NotificationStore(store).subscriptions()
    expiring = sorted(g for g, s in subscriptions.items() if s.expires_at - now < timedelta(days=1))
    oldest_pending = min((i.created_at for i in pending), default=None)

    degraded = bool(
        unverified_total or missing or failed or expiring or open_by_kind.get("monitor_job_failing")
    )
    status = "unhealthy" if problems else "degraded" if degraded else "healthy"
    return not problems, {
        "status": status,
        "problems": problems,
        "checked_at": now.isoformat(),
        "jobs": jobs,
        "checkpoint_age_minutes": {k: _age_minutes(now, v) for k, v in checkpoints.items()},
        "open_anomalies": dict(sorted(open_by_kind.items())),
        "suppressed_anomalies": suppressed,
        "unverified_facts": unverified_total,
        "missing_permissions": sorted(missing),
        "subscriptions": {"count": len(subscriptions), "expiring_within_a_day": expiring},
        "outbox": {
            "pending": len(pending),
            "oldest_pending_minutes": _age_minutes(now, oldest_pending),
            "failed": len(failed),
        },
    }
