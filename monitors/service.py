"""The service layer: the one way the Functions triggers, the CLI and the demo run a job.

"Run this job, then dispatch": each job opens its context, runs under its lease through the job
runner (`monitors.jobs.context.recorded_run`), and the alerts it queued leave through the
alerts job, itself under its lease. A job that another run holds is skipped, not failed. A
dependency that cannot be reached becomes `Unavailable`, one short message naming the setting
to check; the runner has recorded the failed run where the store allowed it.

Kept import-light: job modules load on first use, so `import function_app` stays cheap.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from monitors.clock import Clock, SystemClock
from monitors.failures import Unavailable, dependency_failures_as_unavailable

if TYPE_CHECKING:
    from monitors.alerts.dispatch import DispatchResult
    from monitors.jobs.config_check import ConfigCheckReport
    from monitors.jobs.context import JobContext
    from monitors.jobs.notifications import ProcessReport, WebhookAnswer
    from monitors.jobs.subscriptions import SyncReport
    from monitors.remediation.job import RemediationReport
    from monitors.scan.report import ScanReport
    from monitors.settings import Settings
    from monitors.store.remediations import RemediationEntry
    from monitors.store.tables import TableStore
    from monitors.summary.compute import IsoWeek

R = TypeVar("R")
__all__ = ["Job", "Ran", "Unavailable", "load_settings"]


class Job(StrEnum):
    """The jobs, by the name their runs are recorded and leased under."""

    SCAN = "scan"
    CONFIG_CHECK = "config_check"
    ALERTS = "alerts"
    WEEKLY_SUMMARY = "weekly_summary"
    SUBSCRIPTIONS = "subscriptions"
    NOTIFICATIONS = "notifications"
    REMEDIATION = "remediation"


@dataclass(frozen=True)
class Ran(Generic[R]):
    """One job run as its caller sees it: the report, or why it did not run."""

    job: Job
    report: R | None
    skipped: str | None = None
    dispatched: Ran[DispatchResult] | None = None
    # The remediation run that followed the job (ETG_REMEDIATION not off), before dispatch.
    remediated: Ran[RemediationReport] | None = None


def load_settings(
    env: Mapping[str, str] | None = None, *, log_level: int | None = None
) -> Settings:
    """Validate the settings, configure logging and register every secret for redaction: the
    one place an entry point does this. Raises SettingsError."""
    from monitors.logs import configure_logging, register_secret
    from monitors.settings import Settings

    settings = Settings.from_env(os.environ if env is None else env)
    if log_level is None:
        configure_logging(settings.log_format)
    else:
        configure_logging(settings.log_format, log_level)
    for secret in settings.secrets():
        register_secret(secret)
    return settings


async def _run(
    settings: Settings,
    job: Job,
    work: Callable[[JobContext], Awaitable[R]],
    *,
    clock: Clock | None,
    with_graph: bool = True,
    dispatch: bool = False,
    remediate: bool = False,
) -> Ran[R]:
    from monitors.jobs.context import open_context
    from monitors.store.tables import LeaseHeld

    try:
        with dependency_failures_as_unavailable(settings):
            async with open_context(settings, clock=clock, with_graph=with_graph) as ctx:
                report = await work(ctx)
    except LeaseHeld:
        import structlog

        structlog.get_logger("etg_monitor").info(
            "job.skipped", job=job.value, reason="another run holds the lease"
        )
        return Ran(job, None, skipped=f"another {job.value} run is in progress")
    remediated = await _remediate_after(settings, clock) if remediate else None
    sent = await send_alerts(settings, clock=clock) if dispatch else None
    return Ran(job, report, dispatched=sent, remediated=remediated)


async def _remediate_after(
    settings: Settings, clock: Clock | None
) -> Ran[RemediationReport] | None:
    """Remediation after a scan or config check, before the alerts leave, so the opening card
    already says what was done. Off means it never runs and no write client is built. Its own
    failure (recorded by its runner as monitor_job_failing) never keeps the alerts back."""
    if settings.remediation == "off":
        return None
    import structlog

    log = structlog.get_logger("etg_monitor")
    try:
        return await remediate(settings, clock=clock)
    except Unavailable as exc:
        # A dependency that cannot be reached is one line naming the setting, not a traceback.
        log.error("remediation.unavailable", problem=str(exc))
    except Exception:
        log.exception("remediation.failed")
    return None


async def scan(settings: Settings, *, clock: Clock | None = None) -> Ran[ScanReport]:
    from monitors.scan.pipeline import run_scan

    return await _run(settings, Job.SCAN, run_scan, clock=clock, dispatch=True, remediate=True)


async def check_config(settings: Settings, *, clock: Clock | None = None) -> Ran[ConfigCheckReport]:
    from monitors.jobs.config_check import check_config as check

    return await _run(settings, Job.CONFIG_CHECK, check, clock=clock, dispatch=True, remediate=True)


async def remediate(
    settings: Settings,
    *,
    clock: Clock | None = None,
    apply: bool | None = None,
    device: str | None = None,
    policy: str | None = None,
) -> Ran[RemediationReport]:
    """Plan remediation and, in mode auto or with ``apply``, make the additions. ``apply``
    False shows the plan and changes nothing; None follows ETG_REMEDIATION."""
    from monitors.remediation.job import run_remediation

    async def work(ctx: JobContext) -> RemediationReport:
        return await run_remediation(ctx, apply=apply, device=device, policy=policy)

    return await _run(settings, Job.REMEDIATION, work, clock=clock)


async def remediation_log(settings: Settings) -> list[RemediationEntry]:
    """The remediation log, newest first."""

    async def read(store: TableStore) -> list[RemediationEntry]:
        return await store.remediations.all()

    return await read_store(settings, read)


async def send_alerts(settings: Settings, *, clock: Clock | None = None) -> Ran[DispatchResult]:
    from monitors.jobs.dispatch import dispatch_alerts

    return await _run(settings, Job.ALERTS, dispatch_alerts, clock=clock, with_graph=False)


async def weekly_summary(settings: Settings, *, clock: Clock | None = None) -> Ran[dict[str, Any]]:
    """The timer's job: last complete week's summary, kept, its card queued and sent."""
    from monitors.jobs.summary import weekly_summary_job

    return await _run(
        settings,
        Job.WEEKLY_SUMMARY,
        weekly_summary_job,
        clock=clock,
        with_graph=False,
        dispatch=True,
    )


async def sync_subscriptions(settings: Settings, *, clock: Clock | None = None) -> Ran[SyncReport]:
    from monitors.jobs.subscriptions import sync_subscriptions as sync

    return await _run(settings, Job.SUBSCRIPTIONS, sync, clock=clock)


async def process_notifications(
    settings: Settings, *, clock: Clock | None = None
) -> Ran[ProcessReport]:
    from monitors.jobs.notifications import process_inbox

    ran = await _run(settings, Job.NOTIFICATIONS, process_inbox, clock=clock)
    # Alerts a re-check queued leave now, as after a scan; a quiet minute starts no dispatch.
    if ran.report is not None and ran.report.recheck_alerts:
        return dataclasses.replace(ran, dispatched=await send_alerts(settings, clock=clock))
    return ran


async def read_store(settings: Settings, read: Callable[[TableStore], Awaitable[R]]) -> R:
    """A store-only operation of the CLI or a route (listing, suppressing, the report): small,
    so it needs no lease, but a store that cannot be reached is reported the same way."""
    from monitors.jobs.context import open_store

    with dependency_failures_as_unavailable(settings):
        async with open_store(settings) as store:
            return await read(store)


async def summary_of_week(
    settings: Settings, week: IsoWeek, *, clock: Clock | None = None, prefer_kept: bool = False
) -> dict[str, Any]:
    """A week's summary, computed from stored state and kept; a finished week's kept summary
    when ``prefer_kept`` (the report route: a finished week does not change)."""
    from monitors.jobs.summary import keep_summary, stored_summary

    now = (clock or SystemClock()).now()

    async def read(store: TableStore) -> dict[str, Any]:
        if prefer_kept and week.end <= now and (kept := await stored_summary(store, week)):
            return kept
        return await keep_summary(store, week, now)

    return await read_store(settings, read)


async def rollup_of_week(
    settings: Settings, week: IsoWeek, *, clock: Clock | None = None
) -> dict[str, Any]:
    """The provider's roll-up of ``week``: every registered tenant's compliance, worst first,
    with its trend; a tenant whose tables cannot be read is listed as unavailable. Reads only."""
    from monitors.jobs.summary import build_rollup

    now = (clock or SystemClock()).now()

    async def read(store: TableStore) -> dict[str, Any]:
        return await build_rollup(store, settings, week, now)

    return await read_store(settings, read)


async def health(settings: Settings, *, clock: Clock | None = None) -> tuple[bool, dict[str, Any]]:
    from monitors.jobs.health import health_report

    now = (clock or SystemClock()).now()

    async def read(store: TableStore) -> tuple[bool, dict[str, Any]]:
        return await health_report(store, now, settings.schedules)

    return await read_store(settings, read)


async def receive_notification(
    store: TableStore,
    settings: Settings,
    params: Mapping[str, str],
    content_type: str | None,
    body: bytes,
    *,
    clock: Clock | None = None,
) -> WebhookAnswer:
    """The webhook's work, on a store the caller keeps open across requests."""
    from monitors.jobs.notifications import receive

    now = (clock or SystemClock()).now()
    with dependency_failures_as_unavailable(settings):
        return await receive(store, settings, params, content_type, body, now)


# The jobs a timer starts (function_app.py), run here directly or, for registry tenants, from
# the job queue: each is its job and the dispatch after it.
TIMER_JOBS: Mapping[Job, Callable[..., Awaitable[Ran[Any]]]] = {
    Job.SCAN: scan,
    Job.CONFIG_CHECK: check_config,
    Job.ALERTS: send_alerts,
    Job.WEEKLY_SUMMARY: weekly_summary,
    Job.SUBSCRIPTIONS: sync_subscriptions,
    Job.NOTIFICATIONS: process_notifications,
}


def outcome(ran: Ran[Any]) -> dict[str, Any]:
    """A run's outcome as the host logs it: the report's JSON, or why it did not run."""
    report = ran.report
    if ran.skipped or report is None:
        return {"skipped": ran.skipped}
    if isinstance(report, dict):
        return report
    to_json = report.to_json
    return dict(to_json(devices_limit=0) if ran.job is Job.SCAN else to_json())
