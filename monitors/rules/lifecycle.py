"""Anomaly lifecycle as data: stored anomalies + this run's verdicts -> transitions to store.

Keyed by kind and subject, so running the same check twice updates one record. Only a
conclusive Clear resolves; NotEvaluated leaves the record untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from monitors.models import Anomaly, Clear, Finding, NotEvaluated, Status, Verdict
from monitors.models import anomaly_key as anomaly_key

HISTORY_LIMIT = 40


class Change(StrEnum):
    OPENED = "opened"
    REOPENED = "reopened"
    UPDATED = "updated"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"


@dataclass(frozen=True, slots=True)
class Transition:
    anomaly: Anomaly
    change: Change
    previous: Status | None

    @property
    def alerts(self) -> bool:
        """Whether on-call hears about it: an anomaly becoming open, or an open one resolving."""
        if self.change in (Change.OPENED, Change.REOPENED, Change.UNSUPPRESSED):
            return self.anomaly.status is Status.OPEN
        return self.change is Change.RESOLVED and self.previous is Status.OPEN


# Returns the reason an anomaly is suppressed at this moment, or None.
SuppressionCheck = Callable[[Anomaly], str | None]


def _never(_a: Anomaly) -> str | None:
    return None


def note(anomaly: Anomaly, at: datetime, status: Status, why: str) -> None:
    anomaly.history.append({"at": at.isoformat(), "status": status.value, "why": why})
    del anomaly.history[:-HISTORY_LIMIT]


def suppression_change(
    anomaly: Anomaly, previous: Status, now: datetime, reason: str | None
) -> Transition:
    """Moves ``anomaly`` into suppression for ``reason``, or out of it when there is none."""
    anomaly.status = Status.SUPPRESSED if reason else Status.OPEN
    note(anomaly, now, anomaly.status, f"suppressed: {reason}" if reason else "suppression ended")
    return Transition(anomaly, Change.SUPPRESSED if reason else Change.UNSUPPRESSED, previous)


def reconcile(
    existing: Mapping[str, Anomaly],
    verdicts: Iterable[Verdict],
    now: datetime,
    suppressed: SuppressionCheck = _never,
    *,
    refresh_after: timedelta = timedelta(0),
) -> list[Transition]:
    """``refresh_after``: an unchanged finding only refreshes ``last_seen`` once that much time
    has passed, so a long-open anomaly is not rewritten on every run."""
    transitions: list[Transition] = []
    for verdict in verdicts:
        if isinstance(verdict, NotEvaluated):
            continue
        key = anomaly_key(verdict.kind, verdict.subject.key)
        current = existing.get(key)
        if isinstance(verdict, Finding):
            transition = _on_finding(current, verdict, now, suppressed)
            if (
                transition.change is Change.UPDATED
                and current is not None
                and (
                    now - current.last_seen < refresh_after
                    and transition.anomaly.evidence == current.evidence
                    and transition.anomaly.explanation == current.explanation
                    and transition.anomaly.subject == current.subject
                )
            ):
                continue
            transitions.append(transition)
        elif isinstance(verdict, Clear) and current and current.status is not Status.RESOLVED:
            updated = dataclasses.replace(current, history=list(current.history))
            updated.status = Status.RESOLVED
            updated.resolved_at = now
            note(updated, now, Status.RESOLVED, _resolution(updated, verdict.reason))
            if verdict.false_alarm:
                # Durable: health and the summary count resolutions marked so.
                updated.history[-1]["false_alarm"] = True
            transitions.append(Transition(updated, Change.RESOLVED, current.status))
    return transitions


def _resolution(anomaly: Anomaly, reason: str) -> str:
    """A Clear's reason, led by "remediated" when the monitor's own write put the change in
    place; the record then says the anomaly resolved as remediated."""
    done = anomaly.remediation
    if not done or done.get("written") is not True:
        return reason
    anomaly.remediation = {**done, "resolved_as": "remediated"}
    what = (
        "restored the Intune Provisioning Client as owner of its ETG"
        if done.get("action") == "add_owner"
        else "added to its ETG"
    )
    return f"remediated: {what} by etg-monitor at {done.get('at')}; {reason}"


def _on_finding(
    current: Anomaly | None, finding: Finding, now: datetime, suppressed: SuppressionCheck
) -> Transition:
    if current is None:
        anomaly = Anomaly(
            kind=finding.kind,
            subject=finding.subject,
            status=Status.OPEN,
            first_seen=now,
            last_seen=now,
            explanation=finding.explanation,
            fix=finding.fix,
            evidence=finding.evidence,
        )
        reason = suppressed(anomaly)
        if reason:
            anomaly.status = Status.SUPPRESSED
            note(anomaly, now, Status.SUPPRESSED, f"detected while suppressed: {reason}")
        else:
            note(anomaly, now, Status.OPEN, "detected")
        return Transition(anomaly, Change.OPENED, None)

    anomaly = dataclasses.replace(
        current,
        subject=finding.subject,
        last_seen=now,
        explanation=finding.explanation,
        fix=finding.fix,
        evidence=finding.evidence,
        history=list(current.history),
    )
    reason = suppressed(anomaly)
    target = Status.SUPPRESSED if reason else Status.OPEN
    if current.status is Status.RESOLVED:
        anomaly.status = target
        anomaly.resolved_at = None
        note(anomaly, now, target, "detected again")
        return Transition(anomaly, Change.REOPENED, current.status)
    if current.status is not target:
        return suppression_change(anomaly, current.status, now, reason)
    if finding.note and all(h.get("why") != finding.note for h in current.history):
        # A refinement of what is already open: recorded in its history, announced by nothing.
        note(anomaly, now, anomaly.status, finding.note)
    return Transition(anomaly, Change.UPDATED, current.status)
