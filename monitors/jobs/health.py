"""The monitor's own health, for `GET /api/health` (an availability test alerts on its 503) and
`etg-monitor health`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from monitors.models import JSON, Anomaly, Status
from monitors.rules.enrollment import false_alarm_at, opened_early
from monitors.settings import JOB_SCHEDULES, parse_schedule, schedule_firings
from monitors.store.notifications import NotificationStore
from monitors.store.outbox import OutboxRepository, OutboxStatus
from monitors.store.runs import JobRun, RunRepository
from monitors.store.scan_state import ScanState
from monitors.store.tables import TableStore

JOBS = JOB_SCHEDULES  # job -> the app setting holding its schedule
# Jobs that run only when another does (remediation follows the scan and the check), and only
# when enabled: listed once they have run.
UNSCHEDULED = ("remediation",)
# Jobs whose silence makes the monitor unhealthy: without them nothing is being checked.
ESSENTIAL = ("scan", "config_check")
MISSED_INTERVALS = 3


# Gaps are measured from a fixed Monday of a leap year, so the answer never depends on today.
_MEASURED_FROM = datetime(2024, 1, 1, tzinfo=UTC)
# A bound on the work for schedules that fire every few seconds on restricted days.
_MAX_FIRINGS = 20_000


@cache
def interval(schedule: str) -> timedelta:
    """The longest gap between consecutive firings of an NCRONTAB schedule: "0 */10 * * * *" is
    10 minutes, "0 0 7 * * 1" a week, "0 0 9-17 * * *" its 16 hours overnight.

    A schedule whose day, month and day-of-week are all `*` repeats every day, one restricted only
    by day-of-week every week; any other is measured over four years (every month length and a
    leap day), or over its first _MAX_FIRINGS firings if it fires every few seconds. Raises
    ValueError for an expression the Functions host would refuse (Settings refuses those).
    """
    _second, _minute, _hour, day, month, weekday = parse_schedule(schedule).split(" ")
    if (day, month, weekday) == ("*", "*", "*"):
        window = timedelta(days=1)
    elif (day, month) == ("*", "*"):
        window = timedelta(weeks=1)
    else:
        window = timedelta(days=4 * 365 + 1)
    end = _MEASURED_FROM + window
    longest = timedelta(0)
    previous: datetime | None = None
    # From just before the start, so a firing at the start itself counts; the first firing past
    # the end closes the gap that straddles it.
    firings = schedule_firings(schedule, _MEASURED_FROM - timedelta(seconds=1))
    for count, firing in enumerate(firings):
        if previous is not None:
            longest = max(longest, firing - previous)
        if firing > end or count >= _MAX_FIRINGS:
            break
        previous = firing
    return longest or window


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (value or None)


def _age_minutes(now: datetime, then: Any) -> float | None:
    return round((now - then).total_seconds() / 60, 1) if isinstance(then, datetime) else None


def _run_json(run: JobRun) -> dict[str, JSON]:
    return {
        "last_started": _iso(run.last_started),
        "last_finished": _iso(run.last_finished),
        "last_success": _iso(run.last_success),
        "last_outcome": run.last_outcome,
        "last_error": run.last_error or None,
        "last_run_id": run.last_run_id or None,
        "summary": run.summary,
        "unverified": run.unverified,
        "missing_permissions": run.missing_permissions,
    }


@dataclass(slots=True)
class _EarlyConclusion:
    """etg_missing alerts opened before the audit log settled in the last 7 days, and how many
    the audit log then showed to be false alarms (ETG_EARLY_CONCLUSION): the second should
    stay at zero; if it does not, replication is slower than ETG_MEMBERSHIP_GRACE_MINUTES."""

    since: datetime
    early_alerts: int = 0
    false_alarms: int = 0

    def add(self, anomaly: Anomaly) -> None:
        if opened_early(anomaly) and anomaly.first_seen >= self.since:
            self.early_alerts += 1
        false_alarm = false_alarm_at(anomaly)
        if false_alarm is not None and false_alarm >= self.since:
            self.false_alarms += 1

    def to_json(self) -> dict[str, JSON]:
        return {"early_alerts_7d": self.early_alerts, "false_alarms_7d": self.false_alarms}


async def health_report(
    store: TableStore, now: datetime, schedules: Mapping[str, str]
) -> tuple[bool, dict[str, JSON]]:
    """`schedules` is `Settings.schedules`: each job is overdue after MISSED_INTERVALS of the
    longest gaps of the schedule it actually runs on."""
    runs = await RunRepository(store).all()
    jobs: dict[str, JSON] = {}
    problems: list[str] = []
    unverified_total = 0
    missing: set[str] = set()
    for job, setting in JOBS.items():
        every = interval(schedules[setting])
        run = runs.get(job)
        if run is None:
            jobs[job] = {"state": "never run", "interval_minutes": every.total_seconds() / 60}
            continue
        reference = run.last_success or run.last_started
        overdue = reference is not None and now - reference > MISSED_INTERVALS * every
        if overdue and job in ESSENTIAL:
            problems.append(
                f"no successful {job} for {MISSED_INTERVALS} intervals "
                f"({_iso(run.last_success) or 'never succeeded'})"
            )
        unverified_total += len(run.unverified)
        missing.update(run.missing_permissions)
        jobs[job] = {
            **_run_json(run),
            "interval_minutes": every.total_seconds() / 60,
            "overdue": overdue,
        }
    # Runs after the scan and the configuration check rather than on a schedule of its own, so
    # it cannot be overdue; a write permission it lacks still shows here.
    for job in UNSCHEDULED:
        run = runs.get(job)
        if run is not None:
            unverified_total += len(run.unverified)
            missing.update(run.missing_permissions)
            jobs[job] = _run_json(run)

    open_by_kind: Counter[str] = Counter()
    suppressed = 0
    early = _EarlyConclusion(now - timedelta(days=7))
    async for anomaly in store.anomalies.iter():
        if anomaly.status is Status.OPEN:
            open_by_kind[anomaly.kind] += 1
        elif anomaly.status is Status.SUPPRESSED:
            suppressed += 1
        early.add(anomaly)

    checkpoints = await ScanState(store).checkpoints()
    pending = await OutboxRepository(store).waiting()
    failed = await OutboxRepository(store).items(OutboxStatus.FAILED)
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
        "early_conclusion": early.to_json(),
        "unverified_facts": unverified_total,
        "missing_permissions": sorted(missing),
        "subscriptions": {"count": len(subscriptions), "expiring_within_a_day": expiring},
        "outbox": {
            "pending": len(pending),
            "oldest_pending_minutes": _age_minutes(now, oldest_pending),
            "failed": len(failed),
        },
    }
