"""The alerts job: reminders due are queued, then the outbox goes to every configured channel,
under the job's lease like every other job."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog

from monitors.alerts.cards import tenant_label
from monitors.alerts.dispatch import DispatchResult, dispatch
from monitors.alerts.pagerduty import PagerDutyTarget
from monitors.alerts.routing import Routes
from monitors.alerts.webhook import WebhookTarget
from monitors.jobs.alerting import reminders_for
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import Status, Unverified
from monitors.rules.reminders import due_reminders
from monitors.settings import Settings
from monitors.store.tables import ConcurrentUpdate, TableStore

JOB = "alerts"
log = structlog.get_logger("etg_monitor.alerts")


def _summarize(result: DispatchResult) -> tuple[str, dict[str, Any], list[Unverified]]:
    return result.outcome, result.to_json(), []


def targets(settings: Settings) -> tuple[PagerDutyTarget | None, WebhookTarget | None]:
    """The PagerDuty and webhook channels the settings configure."""
    key, url, secret = (
        settings.pagerduty_routing_key,
        settings.alert_webhook_url,
        settings.alert_webhook_secret,
    )
    pagerduty = PagerDutyTarget(key, settings.pagerduty_events_url) if key else None
    webhook = WebhookTarget(url, secret) if url and secret else None
    return pagerduty, webhook


async def enqueue_reminders(
    store: TableStore, now: datetime, remind_after: timedelta, routes: Routes, run_id: str
) -> int:
    """Queue the reminders due now. Each anomaly's ``reminded_at`` is written in the same
    transaction as its reminder rows (ETag-conditional), so a crash neither loses a reminder nor
    sends it twice, and a scan changing the anomaly meanwhile only defers it to the next run."""
    open_anomalies = [a async for a in store.anomalies.iter(status=Status.OPEN)]
    queued = 0
    for anomaly in due_reminders(open_anomalies, now, remind_after):
        rows = reminders_for(anomaly, run_id, now, routes)
        if not rows:
            continue  # routed to PagerDuty alone: its open incident is the reminder
        anomaly.reminded_at = now
        try:
            await store.anomalies.save(anomaly, rows)
        except ConcurrentUpdate:
            log.info("alert.reminder_deferred", kind=anomaly.kind)
            continue
        queued += 1
    return queued


async def dispatch_alerts(ctx: JobContext) -> DispatchResult:
    settings = ctx.settings
    pagerduty, webhook = targets(settings)

    async def body() -> DispatchResult:
        now = ctx.clock.now()
        reminded = await enqueue_reminders(
            ctx.store,
            now,
            timedelta(hours=settings.remind_after_hours),
            settings.alert_routes,
            ctx.run_id,
        )
        if reminded:
            ctx.log.info("alert.reminders_queued", count=reminded)
        return await dispatch(
            ctx.store,
            settings.teams_webhook_url,
            now,
            owner=ctx.run_id,
            graph_endpoint=settings.graph_endpoint,
            threshold=settings.alert_digest_threshold,
            max_age=timedelta(hours=settings.alert_max_age_hours),
            pagerduty=pagerduty,
            webhook=webhook,
            public_base_url=settings.public_base_url,
            tenant=tenant_label(settings.tenant_name, settings.tenant_id),
        )

    return await recorded_run(ctx, JOB, body, _summarize)
