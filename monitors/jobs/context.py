"""What every job run gets: settings, clients, the clock, a logger bound to a run id."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import structlog

from monitors.clock import Clock, SystemClock
from monitors.graph.client import GraphClient
from monitors.logs import scrub
from monitors.models import Unverified
from monitors.settings import Settings
from monitors.store.tables import TableStore

T = TypeVar("T")


@dataclass
class JobContext:
    settings: Settings
    graph: GraphClient
    store: TableStore
    clock: Clock
    run_id: str
    log: Any


@asynccontextmanager
async def open_context(
    settings: Settings,
    *,
    clock: Clock | None = None,
    graph_credential: Any = None,
    storage_credential: Any = None,
) -> AsyncIterator[JobContext]:
    run_id = uuid.uuid4().hex[:12]
    log = structlog.get_logger("etg_monitor").bind(run_id=run_id)
    async with (
        GraphClient(
            settings,
            credential=graph_credential,
            retry_budget_seconds=settings.graph_retry_budget_seconds,
        ) as graph,
        TableStore(settings, credential=storage_credential) as store,
    ):
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            yield JobContext(settings, graph, store, clock or SystemClock(), run_id, log)


@asynccontextmanager
async def open_store(settings: Settings, *, credential: Any = None) -> AsyncIterator[TableStore]:
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
    lease = await ctx.store.leases.acquire(job, ctx.run_id, started, LEASE_SECONDS)
    try:
        return await _run(ctx, job, body, summarize, started, began)
    finally:
        await ctx.store.leases.release(job, ctx.run_id, lease)


LEASE_SECONDS = 15 * 60


async def _run(
    ctx: JobContext,
    job: str,
    body: Callable[[], Awaitable[T]],
    summarize: Callable[[T], tuple[str, dict[str, Any], list[Unverified]]],
    started: Any,
    began: float,
) -> T:
    await ctx.store.runs.record(job, {"LastStarted": started, "LastRunId": ctx.run_id})
    ctx.log.info("job.started", job=job)
    try:
        result = await body()
    except Exception as exc:
        finished = ctx.clock.now()
        ctx.log.exception("job.failed", job=job)
        error = scrub(f"{type(exc).__name__}: {exc}")[:500]
        try:
            await ctx.store.runs.record(
                job, {"LastFinished": finished, "LastOutcome": "failed", "LastError": error}
            )
            await _monitor_anomaly(ctx, job, finished, error)
        except Exception:  # the store itself may be what failed; the original error matters more
            ctx.log.warning("job.failure_not_recorded", job=job)
        raise
    outcome, summary, unverified = summarize(result)
    finished = ctx.clock.now()
    record: dict[str, Any] = {
        "LastFinished": finished,
        "LastOutcome": outcome,
        "LastError": "",
        "LastSummary": summary,
        "LastUnverified": [u.to_json() for u in unverified],
        "MissingPermissions": missing_permissions(unverified),
        "GraphRequests": ctx.graph.request_count,
    }
    if outcome != "failed":
        record["LastSuccess"] = finished
    await ctx.store.runs.record(job, record)
    await _monitor_anomaly(ctx, job, finished, None)
    ctx.log.info(
        "job.finished",
        job=job,
        outcome=outcome,
        graph_requests=ctx.graph.request_count,
        unverified=len(unverified),
        seconds=round(time.monotonic() - began, 3),
    )
    return result


async def _monitor_anomaly(ctx: JobContext, job: str, now: Any, error: str | None) -> None:
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
    await save_transitions(ctx.store, transitions, ctx.run_id, now)
