"""Reminders: an open anomaly nobody acknowledged is announced again, at most daily."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from monitors.models import Anomaly, Status

# On-call is reminded at most once a day, however short ETG_REMIND_AFTER_HOURS is.
REMIND_AT_MOST_EVERY = timedelta(hours=24)


def open_for(anomaly: Anomaly, now: datetime) -> timedelta:
    """How long the anomaly has been open, for the reminder's text."""
    return max(now - anomaly.first_seen, timedelta(0))


def due_reminders(
    anomalies: Iterable[Anomaly], now: datetime, remind_after: timedelta
) -> list[Anomaly]:
    """The anomalies on-call should be reminded of now, oldest first.

    Open (neither suppressed nor resolved), not acknowledged, open at least ``remind_after``,
    and not reminded in the last 24 hours.
    """
    due = [
        a
        for a in anomalies
        if a.status is Status.OPEN
        and a.acknowledged_at is None
        and a.acknowledged_by is None
        and open_for(a, now) >= remind_after
        and (a.reminded_at is None or now - a.reminded_at >= REMIND_AT_MOST_EVERY)
    ]
    return sorted(due, key=lambda a: (a.first_seen, a.key))
