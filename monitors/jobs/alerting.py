"""Storing anomaly transitions together with the alerts they cause: one outbox row per channel
the kind is routed to (ETG_ALERT_ROUTES), all in the anomaly's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from monitors.alerts.routing import DEFAULT_ROUTES, Channel, Routes
from monitors.models import Anomaly
from monitors.rules.lifecycle import Transition
from monitors.store.outbox import OutboxItem
from monitors.store.tables import TableStore

REMINDER = "reminder"


def alerts_for(
    transition: Transition, run_id: str, now: datetime, routes: Routes = DEFAULT_ROUTES
) -> list[OutboxItem]:
    """The rows announcing one transition, one per channel it is routed to."""
    if not transition.alerts:
        return []
    anomaly = transition.anomaly
    return [
        OutboxItem(
            partition=anomaly.kind,
            change=transition.change.value,
            run_id=run_id,
            created_at=now,
            payload=anomaly.to_json(),
            channel=channel.value,
        )
        for channel in routes.channels(anomaly.kind)
    ]


def reminders_for(
    anomaly: Anomaly, run_id: str, now: datetime, routes: Routes = DEFAULT_ROUTES
) -> list[OutboxItem]:
    """One reminder row per channel routed, except PagerDuty: the incident its trigger opened
    is still open there and keeps paging by its own escalation policy."""
    return [
        OutboxItem(
            partition=anomaly.kind,
            change=REMINDER,
            run_id=run_id,
            created_at=now,
            payload=anomaly.to_json(),
            channel=channel.value,
        )
        for channel in routes.channels(anomaly.kind)
        if channel is not Channel.PAGERDUTY
    ]


async def save_transitions(
    store: TableStore,
    transitions: Iterable[Transition],
    run_id: str,
    now: datetime,
    routes: Routes,
) -> None:
    """``routes``: where each kind's alerts go (Settings.alert_routes, ETG_ALERT_ROUTES)."""
    await store.anomalies.save_many(
        [(t.anomaly, alerts_for(t, run_id, now, routes)) for t in transitions]
    )
