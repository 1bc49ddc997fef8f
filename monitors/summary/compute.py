"""Weekly figures, computed purely from stored deployments, anomalies and suppressions."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from monitors.models import JSON, Anomaly, DeploymentStatus, Scope, Status, json_number, json_object
from monitors.rules.enrollment import EtgOutcome, false_alarm_at, opened_early
from monitors.rules.kinds import DEPLOYMENT_FAILED, severity_rank
from monitors.rules.result_codes import describe_failure, parse_code
from monitors.rules.suppression import Suppression
from monitors.store.scan_state import DeploymentRow

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
# The outcomes that count towards the compliance rate: the deployment's ETG was judged.
ETG_JUDGED = (EtgOutcome.ON_TIME, EtgOutcome.LATE, EtgOutcome.MISSING, EtgOutcome.NO_ETG)
TOP_FAILURE_CODES = 5


@dataclass(frozen=True, slots=True)
class IsoWeek:
    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """``2026-W47``, or ValueError with a short reason that never quotes the text given.

        A summary computes the week's end and reads the seven weeks before it for its trend;
        a week for which any of these falls outside what datetime can represent (years 1 to
        9999) is refused here rather than overflowing later.
        """
        stripped = text.strip()
        # \d also matches other scripts' digits, which int() would quietly accept.
        match = _WEEK.match(stripped) if stripped.isascii() else None
        if not match:
            raise ValueError("week must look like 2026-W47")
        year, week = int(match.group(1)), int(match.group(2))
        try:
            start = datetime.fromisocalendar(year, week, 1)
        except ValueError as exc:
            raise ValueError(f"{year} has no ISO week {week}") from exc
        if not datetime.min + timedelta(weeks=7) <= start <= datetime.max - timedelta(weeks=1):
            raise ValueError(f"week {year:04d}-W{week:02d} is out of range")
        return cls(year, week)

    @classmethod
    def of(cls, when: datetime) -> IsoWeek:
        year, week, _ = when.isocalendar()
        return cls(year, week)

    @classmethod
    def last_complete(cls, now: datetime) -> IsoWeek:
        return cls.of(now - timedelta(days=7))

    @property
    def start(self) -> datetime:
        return datetime.fromisocalendar(self.year, self.week, 1).replace(tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=7)

    def previous(self, n: int = 1) -> IsoWeek:
        return IsoWeek.of(self.start - timedelta(days=7 * n))

    def __str__(self) -> str:
        return f"{self.year}-W{self.week:02d}"


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 1)


def _subject(a: Anomaly) -> str:
    s = a.subject
    return s.device_name or s.policy_name or s.policy_id or "tenant"


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def summary_rate(summary: Mapping[str, JSON]) -> float | None:
    """The compliance rate of a computed (or kept) summary; None when nothing was judged."""
    return json_number(json_object(summary.get("compliance")).get("rate"))


def compliance_rate(counts: Mapping[str, int]) -> float | None:
    judged = sum(counts.get(k, 0) for k in ETG_JUDGED)
    return round(counts.get(EtgOutcome.ON_TIME, 0) / judged, 4) if judged else None


@dataclass
class _DeploymentTally:
    status: Counter[str] = field(default_factory=Counter)
    outcome: Counter[str] = field(default_factory=Counter)
    lead_minutes: list[float] = field(default_factory=list)  # join before completion, on time


def _tally_deployments(
    rows: Iterable[DeploymentRow], start: datetime, end: datetime
) -> _DeploymentTally:
    tally = _DeploymentTally()
    # Locals, not attribute look-ups: this loop runs once per deployment of the week.
    status, outcome, lead = tally.status, tally.outcome, tally.lead_minutes
    on_time = EtgOutcome.ON_TIME.value
    for row in rows:
        if not start <= row.enrolled_at < end:
            continue
        status[row.status] += 1
        outcome[row.outcome] += 1
        if row.outcome == on_time and row.joined_at and row.completed_at:
            lead.append((row.completed_at - row.joined_at).total_seconds() / 60)
    return tally


@dataclass
class _Changes:
    """The anomalies that opened, or those that resolved, in the week."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_policy: Counter[str] = field(default_factory=Counter)

    def count(self, kind: str, policy: str) -> None:
        self.by_kind[kind] += 1
        self.by_policy[policy] += 1

    def to_json(self) -> dict[str, JSON]:
        return {
            "total": sum(self.by_kind.values()),
            "by_kind": dict(self.by_kind),
            "by_policy": dict(self.by_policy),
        }


@dataclass
class _AnomalyTally:
    opened: _Changes = field(default_factory=_Changes)
    resolved: _Changes = field(default_factory=_Changes)
    still_open: list[Anomaly] = field(default_factory=list)
    policy_issues: dict[str, list[str]] = field(default_factory=dict)  # policy -> open kinds
    # deployment_failed anomalies opened in the week, by result code (None: none reported)
    failure_codes: Counter[int | None] = field(default_factory=Counter)
    early_alerts: int = 0  # etg_missing opened before the audit log settled
    false_alarms: int = 0  # of those, resolved in the week as members at completion after all


def _failure_code(evidence: Mapping[str, JSON]) -> int | None:
    code = evidence.get("result_code")
    return parse_code(code) if isinstance(code, int | str) else None


def _failures_json(codes: Counter[int | None]) -> list[JSON]:
    """The week's most frequent failure codes in words. Decoded once per distinct code, never
    per deployment, so a week of 100,000 deployments costs a handful of look-ups."""
    top = sorted(codes.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or 0))
    out: list[JSON] = []
    for code, count in top[:TOP_FAILURE_CODES]:
        failure = describe_failure(code, None)
        out.append(
            {
                "result_code": code,
                "hex": failure.hex,
                "name": failure.name,
                "meaning": failure.meaning,
                "label": failure.result,
                "count": count,
            }
        )
    return out


def _tally_anomalies(anomalies: Iterable[Anomaly], start: datetime, end: datetime) -> _AnomalyTally:
    tally = _AnomalyTally()
    for a in anomalies:
        policy = a.subject.policy_name or a.subject.policy_id or "(tenant)"
        if start <= a.first_seen < end:
            tally.opened.count(a.kind, policy)
            if a.kind == DEPLOYMENT_FAILED.name:
                tally.failure_codes[_failure_code(a.evidence)] += 1
        if a.resolved_at and start <= a.resolved_at < end:
            tally.resolved.count(a.kind, policy)
        if opened_early(a) and start <= a.first_seen < end:
            tally.early_alerts += 1
        false_alarm = false_alarm_at(a)
        if false_alarm is not None and start <= false_alarm < end:
            tally.false_alarms += 1
        if a.status is Status.OPEN and a.first_seen < end:
            tally.still_open.append(a)
            if a.subject.scope is not Scope.DEVICE:
                tally.policy_issues.setdefault(policy, []).append(a.kind)
    return tally


def _deployments_json(status: Counter[str]) -> dict[str, JSON]:
    return {
        "total": sum(status.values()),
        "success": status[DeploymentStatus.SUCCESS],
        "failed": status[DeploymentStatus.FAILED],
        "in_progress": status[DeploymentStatus.IN_PROGRESS],
        "unknown": status[DeploymentStatus.UNKNOWN],
    }


def _compliance_json(outcome: Counter[str]) -> dict[str, JSON]:
    return {
        "rate": compliance_rate(outcome),
        "on_time": outcome[EtgOutcome.ON_TIME],
        "late": outcome[EtgOutcome.LATE],
        "missing": outcome[EtgOutcome.MISSING],
        "no_etg": outcome[EtgOutcome.NO_ETG],
        "judged": sum(outcome[k] for k in ETG_JUDGED),
        "pending": outcome[EtgOutcome.PENDING] + outcome[EtgOutcome.IN_PROGRESS],
        "unverified": outcome[EtgOutcome.UNVERIFIED],
    }


def _lead_json(lead: Sequence[float]) -> dict[str, JSON]:
    return {"median": _percentile(lead, 0.5), "p95": _percentile(lead, 0.95), "count": len(lead)}


def _open_json(still_open: Sequence[Anomaly], now: datetime) -> dict[str, JSON]:
    ages = [_hours(now - a.first_seen) for a in still_open]
    oldest = sorted(still_open, key=lambda a: a.first_seen)[:10]
    return {
        "total": len(still_open),
        "by_kind": dict(Counter(a.kind for a in still_open)),
        "median_age_hours": round(statistics.median(ages), 1) if ages else None,
        "max_age_hours": round(max(ages), 1) if ages else None,
        "oldest": [
            {
                "kind": a.kind,
                "subject": _subject(a),
                "first_seen": a.first_seen.isoformat(),
                "age_hours": round(_hours(now - a.first_seen), 1),
            }
            for a in oldest
        ],
    }


def _trend_json(week: IsoWeek, trend: Mapping[str, float | None], rate: float | None) -> list[JSON]:
    earlier = [
        {"week": str(w), "rate": trend.get(str(w))}
        for w in (week.previous(n) for n in range(7, 0, -1))
    ]
    return [*earlier, {"week": str(week), "rate": rate}]


def compute_summary(
    week: IsoWeek,
    rows: Iterable[DeploymentRow],
    anomalies: Iterable[Anomaly],
    suppressions: Iterable[Suppression],
    trend: Mapping[str, float | None],
    now: datetime,
) -> dict[str, JSON]:
    start, end = week.start, week.end
    deployments = _tally_deployments(rows, start, end)
    changes = _tally_anomalies(anomalies, start, end)
    compliance = _compliance_json(deployments.outcome)
    active = [s for s in suppressions if s.active(min(now, end))]
    return {
        "week": str(week),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "generated_at": now.isoformat(),
        "deployments": _deployments_json(deployments.status),
        "compliance": compliance,
        "lead_time_minutes": _lead_json(deployments.lead_minutes),
        "anomalies_opened": changes.opened.to_json(),
        "anomalies_resolved": changes.resolved.to_json(),
        "open_anomalies": _open_json(changes.still_open, now),
        "suppressions": [s.to_json() for s in active],
        "failure_codes": _failures_json(changes.failure_codes),
        "early_conclusion": {
            "early_alerts": changes.early_alerts,
            "false_alarms": changes.false_alarms,
        },
        "policy_health": [
            {"policy": p, "issues": sorted(set(k))}
            for p, k in sorted(changes.policy_issues.items())
        ],
        "trend": _trend_json(week, trend, compliance_rate(deployments.outcome)),
    }


def early_line(summary: Mapping[str, Any]) -> str | None:
    """The early conclusion's week in one line; None for summaries stored before it existed."""
    early = summary.get("early_conclusion")
    if not isinstance(early, Mapping):
        return None
    alerts, false = early.get("early_alerts", 0), early.get("false_alarms", 0)
    return f"early alerts: {alerts}, false alarms: {false}"


def policies_by_severity(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's policy_health for reading: the policy with the most severe problem first,
    and each policy's problems most severe first."""
    policies = [
        {"policy": p["policy"], "issues": sorted(p["issues"], key=severity_rank)}
        for p in summary["policy_health"]
    ]
    return sorted(policies, key=lambda p: min(map(severity_rank, p["issues"]), default=0))


def headline(summary: Mapping[str, Any]) -> str:
    rate = summary["compliance"]["rate"]
    pct = "n/a" if rate is None else f"{rate * 100:.1f}%"
    return (
        f"ETG compliance {summary['week']}: {pct} of "
        f"{summary['compliance']['judged']} judged deployments joined their ETG in time"
    )
