"""What the Azure Functions triggers call: the service layer, with answers shaped for the host.

A timer whose job another run holds skips quietly. A dependency that cannot be reached is logged
as one error line (the runner has recorded the failed run, and health shows it) instead of a
traceback; anything else is a bug and reaches the host as the exception it is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from monitors import service
from monitors.clock import Clock, SystemClock
from monitors.failures import SettingsError, Unavailable

if TYPE_CHECKING:
    from monitors.settings import Settings
    from monitors.store.tables import TableStore

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


def _outcome(ran: service.Ran[Any]) -> dict[str, Any]:
    report = ran.report
    if ran.skipped or report is None:
        return {"skipped": ran.skipped}
    if isinstance(report, dict):
        return report
    to_json = report.to_json
    return dict(to_json(devices_limit=0) if ran.job is service.Job.SCAN else to_json())


_Runner = Callable[..., Awaitable[service.Ran[Any]]]
_RUNS: dict[service.Job, _Runner] = {
    service.Job.SCAN: service.scan,
    service.Job.CONFIG_CHECK: service.check_config,
    service.Job.ALERTS: service.send_alerts,
    service.Job.WEEKLY_SUMMARY: service.weekly_summary,
    service.Job.SUBSCRIPTIONS: service.sync_subscriptions,
    service.Job.NOTIFICATIONS: service.process_notifications,
}


async def run_job(job: service.Job, clock: Clock | None = None) -> dict[str, Any]:
    """What a timer does: run its job (and the dispatch after it), report the outcome."""
    try:
        return _outcome(await _RUNS[job](settings(), clock=clock))
    except (SettingsError, Unavailable) as exc:
        _log().error("job.not_run", job=job.value, problem=str(exc))
        return {"failed": str(exc)}


async def weekly_report(week_text: str | None, clock: Clock | None = None) -> tuple[int, str]:
    """(status, HTML or a short plain-text error) for GET /api/reports/weekly."""
    from monitors.summary.compute import IsoWeek
    from monitors.summary.html import render_html

    now = (clock or SystemClock()).now()
    try:
        week = IsoWeek.parse(week_text) if week_text else IsoWeek.last_complete(now)
    except ValueError as exc:
        return 400, str(exc)
    if week.start > now:
        return 400, f"week {week} has not started yet"
    try:
        summary = await service.summary_of_week(settings(), week, clock=clock, prefer_kept=True)
    except SettingsError:
        return 503, "not configured"
    except Unavailable as exc:
        _log().error("report.unavailable", problem=str(exc))
        return 503, "state store unavailable; retry later"
    return 200, render_html(summary)


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
