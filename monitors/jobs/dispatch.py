"""The alert dispatch job: outbox -> Teams, with the monitor's own run record."""

from __future__ import annotations

from datetime import datetime, timedelta

from monitors.alerts.dispatch import DispatchResult, dispatch
from monitors.settings import Settings
from monitors.store.tables import TableStore

JOB = "alerts"


async def dispatch_alerts(store: TableStore, settings: Settings, now: datetime) -> DispatchResult:
    result = await dispatch(
        store,
        settings.teams_webhook_url,
        now,
        graph_endpoint=settings.graph_endpoint,
        threshold=settings.alert_digest_threshold,
        max_age=timedelta(hours=settings.alert_max_age_hours),
    )
    outcome = "ok" if not result.errors and not result.gave_up else "degraded"
    if not settings.teams_webhook_url:
        outcome = "not configured"
    record = {"LastFinished": now, "LastOutcome": outcome, "LastSummary": result.to_json()}
    if outcome == "ok":
        record["LastSuccess"] = now
    await store.runs.record(JOB, record)
    return result
