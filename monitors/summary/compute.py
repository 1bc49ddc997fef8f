"""Weekly figures, computed purely from stored deployments, anomalies and suppressions."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from monitors.models import JSON, Anomaly, Scope, Status
from monitors.rules.suppression import Suppression

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
ETG_JUDGED = ("on_time", "late", "missing", "no_etg")


@dataclass(frozen=True, slots=True)
class IsoWeek:
    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        match = _WEEK.match(text.strip())
        if not match:
            raise ValueError("week must look like 2026-W47")
        year, week = int(match.group(1)), int(match.group(2))
        try:
            datetime.fromisocalendar(year, week, 1)
        except ValueError as exc:
            raise ValueError(f"{year} has no ISO week {week}") from exc
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


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    key: str
    enrolled_at: datetime
    status: str  # success | failed | in_progress | unknown
    outcome: str  # see rules.enrollment.etg_outcome
    policy_name: str
    joined_at: datetime | None = None
    completed_at: datetime | None = None


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


def compliance_rate(counts: Mapping[str, int]) -> float | None:
    judged = sum(counts.get(k, 0) for k in ETG_JUDGED)
    return round(counts.get("on_time", 0) / judged, 4) if judged else None


def compute_summary(
    week: IsoWeek,
    rows: Iterable[DeploymentRow],
    anomalies: Iterable[Anomaly],
    suppressions: Iterable[Suppression],
    trend: Mapping[str, float | None],
    now: datetime,
) -> dict[str, JSON]:
    start, end = week.start, week.end
    status: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    lead: list[float] = []
    for row in rows:
        if not start <= row.enrolled_at < end:
            continue
        status[row.status] += 1
        outcome[row.outcome] += 1
        if row.outcome == "on_time" and row.joined_at and row.completed_at:
            lead.append((row.completed_at - row.joined_at).total_seconds() / 60)

    opened_kind: Counter[str] = Counter()
    opened_policy: Counter[str] = Counter()
    resolved_kind: Counter[str] = Counter()
    resolved_policy: Counter[str] = Counter()
    still_open: list[Anomaly] = []
    policy_issues: dict[str, list[str]] = {}
    for a in anomalies:
        policy = a.subject.policy_name or a.subject.policy_id or "(tenant)"
        if start <= a.first_seen < end:
            opened_kind[a.kind] += 1
            opened_policy[policy] += 1
        if a.resolved_at and start <= a.resolved_at < end:
            resolved_kind[a.kind] += 1
            resolved_policy[policy] += 1
        if a.status is Status.OPEN and a.first_seen < end:
            still_open.append(a)
            if a.subject.scope is not Scope.DEVICE:
                policy_issues.setdefault(policy, []).append(a.kind)
    ages = [(now - a.first_seen).total_seconds() / 3600 for a in still_open]
    oldest = sorted(still_open, key=lambda a: a.first_seen)[:10]
    rate = compliance_rate(outcome)
    trend_points = [
        {"week": str(w), "rate": trend.get(str(w))}
        for w in (week.previous(n) for n in range(7, 0, -1))
    ] + [{"week": str(week), "rate": rate}]
    active = [s for s in suppressions if s.active(min(now, end))]
    return {
        "week": str(week),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "generated_at": now.isoformat(),
        "deployments": {
            "total": sum(status.values()),
            "success": status["success"],
            "failed": status["failed"],
            "in_progress": status["in_progress"],
            "unknown": status["unknown"],
        },
        "compliance": {
            "rate": rate,
            "on_time": outcome["on_time"],
            "late": outcome["late"],
            "missing": outcome["missing"],
            "no_etg": outcome["no_etg"],
            "judged": sum(outcome[k] for k in ETG_JUDGED),
            "pending": outcome["pending"] + outcome["in_progress"],
            "unverified": outcome["unverified"],
        },
        "lead_time_minutes": {
            "median": _percentile(lead, 0.5),
            "p95": _percentile(lead, 0.95),
            "count": len(lead),
        },
        "anomalies_opened": {
            "total": sum(opened_kind.values()),
            "by_kind": dict(opened_kind),
            "by_policy": dict(opened_policy),
        },
        "anomalies_resolved": {
            "total": sum(resolved_kind.values()),
            "by_kind": dict(resolved_kind),
            "by_policy": dict(resolved_policy),
        },
        "open_anomalies": {
            "total": len(still_open),
            "by_kind": dict(Counter(a.kind for a in still_open)),
            "median_age_hours": round(statistics.median(ages), 1) if ages else None,
            "max_age_hours": round(max(ages), 1) if ages else None,
            "oldest": [
                {
                    "kind": a.kind,
                    "subject": _subject(a),
                    "first_seen": a.first_seen.isoformat(),
                    "age_hours": round((now - a.first_seen).total_seconds() / 3600, 1),
                }
                for a in oldest
            ],
        },
        "suppressions": [s.to_json() for s in active],
        "policy_health": [
            {"policy": p, "issues": sorted(set(k))} for p, k in sorted(policy_issues.items())
        ],
        "trend": trend_points,
    }


def headline(summary: Mapping[str, Any]) -> str:
    rate = summary["compliance"]["rate"]
    pct = "n/a" if rate is None else f"{rate * 100:.1f}%"
    return (
        f"ETG compliance {summary['week']}: {pct} of "
        f"{summary['compliance']['judged']} judged deployments joined their ETG in time"
    )
