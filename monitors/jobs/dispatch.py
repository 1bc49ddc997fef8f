"""The alerts job: outbox -> Teams, run under its lease like every other job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from monitors.alerts.dispatch import DispatchResult, dispatch
from monitors.jobs.context import JobContext, recorded_run
from monitors.models import Unverified

JOB = "alerts"


def _summarize(result: DispatchResult) -> tuple[str, dict[str, Any], list[Unverified]]:
    return result.outcome, result.to_json(), []


async def dispatch_alerts(ctx: JobContext) -> DispatchResult:
    settings = ctx.settings

    async def body() -> DispatchResult:
        return await dispatch(
            ctx.store,
            settings.teams_webhook_url,
            ctx.clock.now(),
            owner=ctx.run_id,
            graph_endpoint=settings.graph_endpoint,
            threshold=settings.alert_digest_threshold,
            max_age=timedelta(hours=settings.alert_max_age_hours),
        )

    return await recorded_run(ctx, JOB, body, _summarize)
