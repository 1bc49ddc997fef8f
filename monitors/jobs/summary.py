"""The weekly summary: computed from stored state and kept; the job also queues its card."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitors.jobs.context import JobContext, recorded_run
from monitors.models import Unverified
from monitors.store.outbox import SUMMARY_PARTITION, OutboxItem, OutboxRepository
from monitors.store.scan_state import ScanState
from monitors.store.summaries import SummaryRepository
from monitors.store.tables import TableStore
from monitors.summary.card import summary_card
from monitors.summary.compute import IsoWeek, compute_summary, summary_rate

JOB = "weekly_summary"


async def stored_summary(store: TableStore, week: IsoWeek) -> dict[str, Any] | None:
    return await SummaryRepository(store).get(str(week))


async def keep_summary(store: TableStore, week: IsoWeek, now: datetime) -> dict[str, Any]:
    """Compute the week's summary from stored state and keep it (for the report and the trend
    of later weeks)."""
    summaries = SummaryRepository(store)
    rows = await ScanState(store).summary_rows(week.start, week.end)
    anomalies = [a async for a in store.anomalies.iter()]
    suppressions = await store.suppressions.all()
    trend = await summaries.rates(str(week.previous(7)), str(week))
    summary = compute_summary(week, rows, anomalies, suppressions, trend, now)
    await summaries.put(str(week), summary, summary_rate(summary), now)
    return summary


async def weekly_summary_job(ctx: JobContext) -> dict[str, Any]:
    """The timer's job: last complete week's summary, its card queued once per week however
    often this runs."""
    now = ctx.clock.now()
    week = IsoWeek.last_complete(now)

    async def body() -> dict[str, Any]:
        summary = await keep_summary(ctx.store, week, now)
        item = OutboxItem(
            SUMMARY_PARTITION,
            "summary",
            ctx.run_id,
            now,
            {"title": f"weekly summary {week}", "card": summary_card(summary)},
            row_key=f"outbox|summary|{week}",
        )
        await OutboxRepository(ctx.store).add(item)
        return summary

    def summarize(summary: dict[str, Any]) -> tuple[str, dict[str, Any], list[Unverified]]:
        return "ok", {"week": str(week), "rate": summary_rate(summary)}, []

    return await recorded_run(ctx, JOB, body, summarize)
