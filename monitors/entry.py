"""What the Azure Functions triggers call: the service layer, with answers shaped for the host.

A timer whose job another run holds skips quietly. A dependency that cannot be reached is logged
as one error line (the runner has recorded the failed run, and health shows it) instead of a
traceback; anything else is a bug and reaches the host as the exception it is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from monitors import service
from monitors.clock import Clock, SystemClock
from monitors.failures import SettingsError, Unavailable

if TYPE_CHECKING:
    from datetime import datetime

    from monitors.settings import Settings
    from monitors.store.tables import TableStore
    from monitors.summary.compute import IsoWeek
    from monitors.tenants.fanout import JobMessage
    from monitors.tenants.registry import Tenant

_settings: Settings | None = None


def _log() -> Any:
    """The app's logger, imported on first use: structlog is most of what this module would
    otherwise add to the host's cold import of function_app."""
    import structlog

    return structlog.get_logger("etg_monitor")


def settings() -> Settings:
    """Validated once per worker; a bad setting fails every run with the same clear message."""
    global _settings
    if _settings is None:
        _settings = service.load_settings()
    return _settings


# The jobs a fanned-out timer still runs under the deployment's own settings, after enqueuing
# its tenants': the weekly summary, which there is the provider's roll-up (monitors.jobs.summary),
# and the alerts, whose dispatch of the deployment's own outbox is what retries the roll-up's
# card when Teams did not take it at once.
_OWN_AFTER_FAN_OUT = frozenset({service.Job.WEEKLY_SUMMARY, service.Job.ALERTS})


async def run_job(job: service.Job, clock: Clock | None = None) -> dict[str, Any]:
    """What a timer does: run its job (and the dispatch after it), report the outcome. With
    enabled tenants in the registry it enqueues the job for each instead (docs/msp.md), and
    runs the deployment's own roll-up and its delivery."""
    from monitors.tenants.fanout import fan_out

    try:
        current = settings()
        fanned = await fan_out(current, job.value, clock=clock)
        if fanned is None:
            return service.outcome(await service.TIMER_JOBS[job](current, clock=clock))
    except (SettingsError, Unavailable) as exc:
        _log().error("job.not_run", job=job.value, problem=str(exc))
        return {"failed": str(exc)}
    answer = fanned.to_json()
    if job in _OWN_AFTER_FAN_OUT:
        try:
            answer["deployment"] = service.outcome(
                await service.TIMER_JOBS[job](current, clock=clock)
            )
        except Unavailable as exc:
            # The tenants' messages are queued already: only the deployment's own run failed.
            _log().error("job.own_not_run", job=job.value, problem=str(exc))
            answer["deployment"] = {"failed": str(exc)}
    return answer


def _queued(
    message_body: bytes, dequeue_count: int | None, event: str
) -> tuple[JobMessage, Settings] | dict[str, Any]:
    """The message's job and the deployment's settings; or, after one log line saying why it
    can never run, the answer for the host, which then completes the message: retrying
    cannot help."""
    from monitors.tenants.fanout import BadMessage, parse_message

    try:
        message = parse_message(message_body)
    except BadMessage as exc:
        _log().error(event, problem=str(exc), dequeue_count=dequeue_count)
        return {"refused": "not a job message"}
    base = _job_settings(message.job)
    if isinstance(base, str):
        return {"failed": base}
    return message, base


async def run_queued(
    message_body: bytes, dequeue_count: int | None, clock: Clock | None = None
) -> dict[str, Any]:
    """What the queue trigger does: run one tenant's job. A message that can never run
    (hostile, unknown job, tenant not registered or disabled) is logged and completed; a run
    that fails raises, so the host retries it and, after the fifth try, moves it to the
    poison queue."""
    from monitors.tenants.run import run_tenant_job

    queued = _queued(message_body, dequeue_count, "queue.message_refused")
    if isinstance(queued, dict):
        return queued
    message, base = queued
    try:
        return await run_tenant_job(base, message.tenant_id, message.job, clock=clock)
    except Unavailable as exc:
        _log().error(
            "tenant_job.failed",
            tenant=message.tenant_id,
            job=message.job,
            dequeue_count=dequeue_count,
            problem=str(exc),
        )
        raise


def _job_settings(job: str) -> Settings | str:
    """The deployment's settings for a queued job, or why they cannot be read (logged)."""
    try:
        return settings()
    except SettingsError as exc:
        _log().error("job.not_run", job=job, problem=str(exc))
        return str(exc)


async def poisoned(message_body: bytes, clock: Clock | None = None) -> dict[str, Any]:
    """What the poison queue's trigger does: the job the host gave up on becomes that
    tenant's monitor_job_failing, alerted through its own outbox."""
    from monitors.tenants.run import give_up

    queued = _queued(message_body, None, "queue.poison_refused")
    if isinstance(queued, dict):
        return queued
    message, base = queued
    error = (
        f"the queued {message.job} run of {message.at.isoformat()} failed on every try; "
        f"the host moved it to {base.job_queue}-poison"
    )
    return await give_up(base, message.tenant_id, message.job, error, clock=clock)


def _report_week(week_text: str | None, now: datetime) -> IsoWeek | str:
    """The week a report route asks for (the last complete one by default), or why not, in a
    short sentence that never quotes the input."""
    from monitors.summary.compute import IsoWeek

    try:
        week = IsoWeek.parse(week_text) if week_text else IsoWeek.last_complete(now)
    except ValueError as exc:
        return str(exc)
    if week.start > now:
        return f"week {week} has not started yet"
    return week


async def _report_scope(base: Settings, tenant_text: str | None) -> Settings | None:
    """The settings the weekly report reads: the deployment's own without ``?tenant=``, else
    the registry tenant's tables (monitors.tenants.scope.storage_settings: no secret of the
    tenant is needed to read them). None when no registered tenant has that id."""
    from monitors.tenants.registry import TenantError, TenantRegistry, normalize_tenant_id
    from monitors.tenants.scope import storage_settings

    wanted = (tenant_text or "").strip()
    if not wanted:
        return base
    try:
        tenant_id = normalize_tenant_id(wanted)
    except TenantError:
        return None

    async def read(store: TableStore) -> Tenant | None:
        return await TenantRegistry(store).get(tenant_id)

    tenant = await service.read_store(base, read)
    return None if tenant is None else storage_settings(base, tenant)


async def weekly_report(
    week_text: str | None, clock: Clock | None = None, tenant_text: str | None = None
) -> tuple[int, str]:
    """(status, HTML or a short plain-text error) for GET /api/reports/weekly; ``tenant_text``
    (``?tenant=<id>``) asks for a registry tenant's, named on the page."""
    from monitors.alerts.cards import tenant_label
    from monitors.summary.html import render_html

    week = _report_week(week_text, (clock or SystemClock()).now())
    if isinstance(week, str):
        return 400, week
    try:
        scoped = await _report_scope(settings(), tenant_text)
        if scoped is None:
            return 404, "unknown tenant: no registered tenant has this id"
        summary = await service.summary_of_week(scoped, week, clock=clock, prefer_kept=True)
    except SettingsError:
        return 503, "not configured"
    except Unavailable as exc:
        _log().error("report.unavailable", problem=str(exc))
        return 503, "state store unavailable; retry later"
    return 200, render_html(summary, tenant=tenant_label(scoped.tenant_name, scoped.tenant_id))


async def rollup_report(week_text: str | None, clock: Clock | None = None) -> tuple[int, str]:
    """(status, HTML or a short plain-text error) for GET /api/reports/rollup: every registry
    tenant's week, worst first; 404 while no tenant is registered."""
    from monitors.summary.rollup_html import render_rollup_html

    week = _report_week(week_text, (clock or SystemClock()).now())
    if isinstance(week, str):
        return 400, week
    try:
        rollup = await service.rollup_of_week(settings(), week, clock=clock)
    except SettingsError:
        return 503, "not configured"
    except Unavailable as exc:
        _log().error("report.unavailable", problem=str(exc))
        return 503, "state store unavailable; retry later"
    if not rollup["tenants"]:
        return 404, "no tenants registered"
    return 200, render_rollup_html(rollup)


_webhook_stores: dict[tuple[int, str | None, str], TableStore] = {}


async def _webhook_store(current: Settings) -> TableStore:
    """One Table client per event loop for the webhook: it answers many small requests, and a
    new connection per request would cost most of Graph's 3-second budget under load."""
    from monitors.store.tables import TableStore

    key = (id(asyncio.get_running_loop()), current.storage_connection, current.table_prefix)
    store = _webhook_stores.get(key)
    if store is None:
        _webhook_stores.clear()  # a previous loop has ended; its client cannot be reused
        store = _webhook_stores[key] = TableStore(current)
    return store


async def graph_notifications(
    params: Mapping[str, str], content_type: str | None, body: bytes, clock: Clock | None = None
) -> tuple[int, str, str]:
    try:
        current = settings()
    except SettingsError:
        return 503, "not configured", "text/plain"
    try:
        store = await _webhook_store(current)
        answer = await service.receive_notification(
            store, current, params, content_type, body, clock=clock
        )
    except Unavailable as exc:
        # Graph redelivers on a 5xx for hours; a 503 now loses nothing, a 500 says "bug".
        _log().error("webhook.store_unavailable", problem=str(exc))
        return 503, "state store unavailable; retry later", "text/plain"
    return answer.status, answer.body, answer.mimetype


async def health(clock: Clock | None = None) -> tuple[int, dict[str, Any]]:
    now = (clock or SystemClock()).now()
    try:
        current = settings()
    except SettingsError as exc:
        return 503, {
            "status": "misconfigured",
            "checked_at": now.isoformat(),
            "problems": exc.problems,
        }
    try:
        healthy, report = await service.health(current, clock=clock)
    except Unavailable as exc:
        return 503, {"status": "unhealthy", "checked_at": now.isoformat(), "error": str(exc)}
    return (200 if healthy else 503), report


async def console(
    action: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    params: Mapping[str, str],
    anomaly_id: str | None = None,
    body: bytes = b"",
    clock: Clock | None = None,
) -> tuple[int, str, dict[str, str]]:
    """(status, HTML, headers) for the operator console's routes (monitors/console)."""
    from monitors.console import pages
    from monitors.console.routes import Action, Request, Response, handle

    try:
        current = settings()
    except SettingsError:
        nonce = "unconfigured"
        page = pages.message_page("Not configured", "The monitor is not configured.", nonce)
        return 503, page, pages.headers(nonce)
    request = Request(
        method,
        url,
        {name.lower(): value for name, value in headers.items()},
        params,
        anomaly_id,
        body,
        # reference-app-settings.md: "Read-only. Injected into a Windows or Linux app to
        # indicate whether App Service authentication is enabled."
        platform_auth=os.environ.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true",
    )
    now = (clock or SystemClock()).now()

    async def answer(store: TableStore) -> Response:
        return await handle(Action(action), request, current, store, now)

    try:
        response = await service.read_store(current, answer)
    except Unavailable as exc:
        _log().error("console.unavailable", problem=str(exc))
        nonce = "unavailable"
        page = pages.message_page("Unavailable", "The state store cannot be reached.", nonce)
        return 503, page, pages.headers(nonce)
    return response.status, response.body, response.headers
