"""Storing anomaly transitions together with the alerts they cause."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from monitors.rules.lifecycle import Transition
from monitors.store.outbox import OutboxItem
from monitors.store.tables import TableStore


def alert_for(transition: Transition, run_id: str, now: datetime) -> OutboxItem | None:
    if not transition.alerts:
        return None
    return OutboxItem(
        partition=transition.anomaly.kind,
        change=transition.change.value,
        run_id=run_id,
        created_at=now,
        payload=transition.anomaly.to_json(),
    )


async def save_transitions(
    store: TableStore, transitions: Iterable[Transition], run_id: str, now: datetime
) -> None:
    await store.anomalies.save_many([(t.anomaly, alert_for(t, run_id, now)) for t in transitions])
