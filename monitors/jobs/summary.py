"""The weekly summary: computed from stored state and kept; the job also queues its card.

With registry tenants (docs/msp.md) each tenant's summary is that tenant's own job, run with
its settings and fanned out like every job; the deployment itself, under its own settings,
sends the provider the roll-up instead: every tenant's week, worst first.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from monitors.alerts.cards import tenant_label, with_tenant
from monitors.jobs.context import JobContext, open_store, recorded_run
from monitors.models import Unverified
from monitors.store.outbox import SUMMARY_PARTITION, OutboxItem, OutboxRepository
from monitors.store.scan_state import ScanState
from monitors.store.summaries import SummaryRepository
from monitors.store.tables import TableStore
from monitors.summary.card import summary_card
from monitors.summary.compute import IsoWeek, compute_summary, summary_rate
from monitors.summary.rollup import TenantWeek, rollup, rollup_card
from monitors.tenants.registry import Tenant, TenantRegistry
from monitors.tenants.scope import storage_settings

if TYPE_CHECKING:
    from monitors.settings import Settings

JOB = "weekly_summary"
# Tenants read at once by the roll-up: each is a handful of table queries, and a provider's
# hundred tenants should neither queue one behind another nor open a hundred connections.
ROLLUP_CONCURRENCY = 4
log = structlog.get_logger("etg_monitor")


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


async def _weeks(store: TableStore, week: IsoWeek, now: datetime) -> tuple[dict[str, Any], Any]:
    """The week's summary and the previous week's rate, kept ones preferred (a finished week
    does not change), computed from stored state otherwise. Nothing is written: the roll-up
    only reads a tenant's tables; keeping is the tenant's own job."""
    summaries = SummaryRepository(store)
    rates = await summaries.rates(str(week.previous(7)), str(week))
    kept = await summaries.get(str(week)) if week.end <= now else None
    previous = str(week.previous())
    if kept is not None and previous in rates:
        return kept, rates[previous]
    anomalies = [a async for a in store.anomalies.iter()]
    suppressions = await store.suppressions.all()
    state = ScanState(store)

    async def computed(w: IsoWeek, trend: dict[str, float | None]) -> dict[str, Any]:
        rows = await state.summary_rows(w.start, w.end)
        return compute_summary(w, rows, anomalies, suppressions, trend, now)

    summary = kept or await computed(week, rates)
    if previous in rates:
        return summary, rates[previous]
    return summary, summary_rate(await computed(week.previous(), {}))


def _problem(exc: BaseException) -> str:
    """Why a tenant's tables could not be read, by the error's type and service code only:
    its message can quote stored values."""
    code = getattr(exc, "error_code", None)
    return f"its tables could not be read ({type(exc).__name__}{f': {code}' if code else ''})"


async def tenant_week(base: Settings, tenant: Tenant, week: IsoWeek, now: datetime) -> TenantWeek:
    """One tenant's week for the roll-up; unavailable, never raised, when its tables cannot be
    read, so one tenant never hides the others."""
    try:
        async with open_store(storage_settings(base, tenant)) as store:
            summary, previous = await _weeks(store, week, now)
    except Exception as exc:  # any failure of this one tenant: shown, logged, not raised
        log.warning(
            "rollup.tenant_unavailable",
            tenant=tenant.tenant_id,
            error=type(exc).__name__,
            code=getattr(exc, "error_code", None),
        )
        return TenantWeek(
            tenant.tenant_id, tenant.display_name, tenant.enabled, None, problem=_problem(exc)
        )
    return TenantWeek(tenant.tenant_id, tenant.display_name, tenant.enabled, summary, previous)


async def build_rollup(
    store: TableStore, base: Settings, week: IsoWeek, now: datetime
) -> dict[str, Any]:
    """Every registered tenant's week (enabled or not), worst first: ``store`` is the
    deployment's own (the registry's), ``base`` its settings."""
    tenants = await TenantRegistry(store).all()
    gate = asyncio.Semaphore(ROLLUP_CONCURRENCY)

    async def one(tenant: Tenant) -> TenantWeek:
        async with gate:
            return await tenant_week(base, tenant, week, now)

    weeks = await asyncio.gather(*(one(t) for t in tenants))
    return rollup(week, weeks, now)


async def _rollup_run(ctx: JobContext, week: IsoWeek, now: datetime) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        data = await build_rollup(ctx.store, ctx.settings, week, now)
        item = OutboxItem(
            SUMMARY_PARTITION,
            "summary",
            ctx.run_id,
            now,
            {"title": f"weekly roll-up {week}", "card": rollup_card(data)},
            row_key=f"outbox|rollup|{week}",
        )
        await OutboxRepository(ctx.store).add(item)
        return data

    def summarize(data: dict[str, Any]) -> tuple[str, dict[str, Any], list[Unverified]]:
        totals = data["totals"]
        outcome = "degraded" if totals["unavailable"] else "ok"
        return outcome, {"week": str(week), "rollup": totals}, []

    return await recorded_run(ctx, JOB, body, summarize)


async def weekly_summary_job(ctx: JobContext) -> dict[str, Any]:
    """The timer's job: last complete week's summary, its card queued once per week however
    often this runs. Run under the deployment's own settings while the registry has enabled
    tenants, it is the provider's roll-up instead (each tenant's summary is its own job)."""
    now = ctx.clock.now()
    week = IsoWeek.last_complete(now)
    if ctx.settings.tenant_name is None and await TenantRegistry(ctx.store).enabled():
        return await _rollup_run(ctx, week, now)
    tenant = tenant_label(ctx.settings.tenant_name, ctx.settings.tenant_id)

    async def body() -> dict[str, Any]:
        summary = await keep_summary(ctx.store, week, now)
        item = OutboxItem(
            SUMMARY_PARTITION,
            "summary",
            ctx.run_id,
            now,
            {"title": f"weekly summary {week}", "card": with_tenant(summary_card(summary), tenant)},
            row_key=f"outbox|summary|{week}",
        )
        await OutboxRepository(ctx.store).add(item)
        return summary

    def summarize(summary: dict[str, Any]) -> tuple[str, dict[str, Any], list[Unverified]]:
        return "ok", {"week": str(week), "rate": summary_rate(summary)}, []

    return await recorded_run(ctx, JOB, body, summarize)
