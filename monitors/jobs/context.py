"""The job runner: what every job run gets (settings, clients, the clock, a logger bound to a
run id), and the one way a job runs: under its lease, with its outcome recorded for health."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from monitors.clock import Clock, SystemClock
from monitors.failures import is_dependency_failure
from monitors.logs import scrub
from monitors.models import Unverified
from monitors.settings import Settings
from monitors.store.runs import RunRepository
from monitors.store.tables import LeaseHeld, TableStore

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from monitors.graph.client import GraphClient

T = TypeVar("T")


@dataclass
class JobContext:
    settings: Settings
    store: TableStore
    clock: Clock
    run_id: str
    log: FilteringBoundLogger
    graph_client: GraphClient | None = None

    @property
    def graph(self) -> GraphClient:
        if self.graph_client is None:
            raise RuntimeError("this job was opened without a Graph client")
        return self.graph_client

    @property
    def graph_requests(self) -> int:
        return self.graph_client.request_count if self.graph_client is not None else 0


@asynccontextmanager
async def open_context(
    settings: Settings,
    *,
    clock: Clock | None = None,
    graph_credential: AsyncTokenCredential | None = None,
    storage_credential: AsyncTokenCredential | None = None,
    with_graph: bool = True,
) -> AsyncIterator[JobContext]:
    """``with_graph=False`` for jobs that only read and write the store (alerts, the weekly
    summary): they then neither load the Graph SDK nor open its connections."""
    run_id = uuid.uuid4().hex[:12]
    log: FilteringBoundLogger = structlog.get_logger("etg_monitor").bind(run_id=run_id)
    async with TableStore(settings, credential=storage_credential) as store:
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            if not with_graph:
                yield JobContext(settings, store, clock or SystemClock(), run_id, log)
                return
            from monitors.graph.client import GraphClient

            async with GraphClient(
                settings,
                credential=graph_credential,
                retry_budget_seconds=settings.graph_retry_budget_seconds,
            ) as graph:
                yield JobContext(settings, store, clock or SystemClock(), run_id, log, graph)


@asynccontextmanager
async def open_store(
    settings: Settings, *, credential: AsyncTokenCredential | None = None
) -> AsyncIterator[TableStore]:
    async with TableStore(settings, credential=credential) as store:
        yield store


def missing_permissions(items: list[Unverified]) -> list[str]:
    return sorted({u.permission for u in items if u.permission})


async def recorded_run(
    ctx: JobContext,
    job: str,
    body: Callable[[], Awaitable[T]],
    summarize: Callable[[T], tuple[str, dict[str, Any], list[Unverified]]],
) -> T:
    """Run a job and keep its outcome for /api/health, including when it fails."""
    started = ctx.clock.now()
    began = time.monotonic()
    # One run of a job at a time, whatever started it (timer, CLI, a manual trigger). The lease
    # outlives a crashed run by at most LEASE_SECONDS.
    lease = await _acquire(ctx, job, started)
    try:
        return await _run(ctx, job, body, summarize, started, began)
    finally:
        await ctx.store.leases.release(job, ctx.run_id, lease)


LEASE_SECONDS = 15 * 60
# A lease owner starting with this holds it for seconds only (the notifications run's targeted
# re-check takes the scan's): a run that finds it so held waits rather than skipping a whole
# schedule interval.
BRIEF_HOLDER = "brief:"
BRIEF_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0)


async def _acquire(ctx: JobContext, job: str, started: datetime) -> str:
    waits = iter(BRIEF_WAITS)
    while True:
        try:
            return await ctx.store.leases.acquire(job, ctx.run_id, started, LEASE_SECONDS)
        except LeaseHeld as held:
            wait = next(waits, None)
            if wait is None or not (held.holder or "").startswith(BRIEF_HOLDER):
                raise
            await asyncio.sleep(wait)


async def _run(
    ctx: JobContext,
    job: str,
    body: Callable[[], Awaitable[T]],
    summarize: Callable[[T], tuple[str, dict[str, Any], list[Unverified]]],
    started: datetime,
    began: float,
) -> T:
    runs = RunRepository(ctx.store)
    await runs.started(job, ctx.run_id, started)
    ctx.log.info("job.started", job=job)
    try:
        result = await body()
    except Exception as exc:
        finished = ctx.clock.now()
        error = scrub(f"{type(exc).__name__}: {exc}")[:500]
        if is_dependency_failure(exc):
            # Not a bug: one line says what failed; the caller tells the operator what to check.
            ctx.log.error("job.failed", job=job, error=error)
        else:
            ctx.log.exception("job.failed", job=job)
        try:
            await runs.failed(job, finished, error)
            await _monitor_anomaly(ctx, job, finished, error)
        except Exception:  # the store itself may be what failed; the original error matters more
            ctx.log.warning("job.failure_not_recorded", job=job)
        raise
    outcome, summary, unverified = summarize(result)
    finished = ctx.clock.now()
    await runs.finished(
        job,
        finished,
        outcome,
        summary,
        [u.to_json() for u in unverified],
        missing_permissions(unverified),
        ctx.graph_requests,
    )
    await _monitor_anomaly(ctx, job, finished, None)
    ctx.log.info(
        "job.finished",
        job=job,
        outcome=outcome,
        graph_requests=ctx.graph_requests,
        unverified=len(unverified),
        # Per reason, for the workbook (e.g. throttled: retries ran out on 429/503).
        unverified_reasons=dict(Counter(u.reason.value for u in unverified)),
        seconds=round(time.monotonic() - began, 3),
    )
    return result


async def _monitor_anomaly(ctx: JobContext, job: str, now: datetime, error: str | None) -> None:
    """A failing job is an anomaly of the monitor itself: alerted once when it starts failing
    and once when it recovers, through the same lifecycle and outbox as any other."""
    from monitors.jobs.alerting import save_transitions
    from monitors.models import Clear, Finding, Scope, Subject
    from monitors.rules.kinds import MONITOR_JOB_FAILING
    from monitors.rules.lifecycle import reconcile

    subject = Subject(Scope.MONITOR, job=job)
    kind = MONITOR_JOB_FAILING.name
    existing = await ctx.store.anomalies.by_key([kind])
    verdict = (
        Finding(
            kind,
            subject,
            f"The {job} job failed: {error}",
            MONITOR_JOB_FAILING.fix,
            {"job": job, "error": error, "run_id": ctx.run_id},
        )
        if error
        else Clear(kind, subject, f"the {job} job succeeded again")
    )
    # Repeated failures only refresh the record hourly; the alert went out on the first.
    transitions = reconcile(existing, [verdict], now, refresh_after=timedelta(hours=1))
    await save_transitions(ctx.store, transitions, ctx.run_id, now, ctx.settings.alert_routes)


async def record_job_failure(
    settings: Settings, job: str, error: str, *, clock: Clock | None = None
) -> None:
    """A job that failed where its runner could not see it (a queued run the host gave up on,
    a tenant whose settings could not be built): its monitor_job_failing opens and alerts as
    if the runner had recorded the failure, and health shows the failed run."""
    async with open_context(settings, clock=clock, with_graph=False) as ctx:
        now = ctx.clock.now()
        error = scrub(error)[:500]
        await _monitor_anomaly(ctx, job, now, error)
        await RunRepository(ctx.store).failed(job, now, error)
