"""What the Azure Functions triggers call. Kept import-light: heavy modules load on first run."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog

from monitors.clock import Clock, SystemClock
from monitors.logs import configure_logging, register_secret
from monitors.settings import Settings, SettingsError

_settings: Settings | None = None
F = TypeVar("F", bound=Callable[..., Awaitable[dict[str, Any]]])


def _skip_when_running(fn: F) -> F:
    """A job that another run holds is skipped, not failed: the other run does the work."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        from monitors.store.tables import LeaseHeld

        try:
            return await fn(*args, **kwargs)
        except LeaseHeld as held:
            structlog.get_logger("etg_monitor").info(
                "job.skipped", job=str(held), reason="another run holds the lease"
            )
            return {"skipped": str(held)}

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    """Validated once per worker; a bad setting fails every run with the same clear message."""
    global _settings
    if _settings is None:
        loaded = Settings.from_env(os.environ)
        configure_logging(loaded.log_format)
        register_secret(loaded.storage_connection)
        register_secret(loaded.teams_webhook_url)
        register_secret(loaded.notification_url)
        register_secret(loaded.client_state)
        _settings = loaded
    return _settings


@_skip_when_running
async def run_config_check(clock: Clock | None = None) -> dict[str, Any]:
    from monitors.jobs.config_check import check_config
    from monitors.jobs.context import open_context

    async with open_context(settings(), clock=clock) as ctx:
        report = await check_config(ctx)
    await run_alerts(clock)
    return report.to_json()


async def run_alerts(clock: Clock | None = None) -> dict[str, Any]:
    from monitors.jobs.context import open_store
    from monitors.jobs.dispatch import dispatch_alerts

    async with open_store(settings()) as store:
        result = await dispatch_alerts(store, settings(), (clock or SystemClock()).now())
    return result.to_json()


@_skip_when_running
async def run_scan(clock: Clock | None = None) -> dict[str, Any]:
    from monitors.jobs.context import open_context
    from monitors.jobs.scan import run_scan as scan

    async with open_context(settings(), clock=clock) as ctx:
        report = await scan(ctx)
    await run_alerts(clock)
    return report.to_json(devices_limit=0)


async def run_weekly_summary(clock: Clock | None = None) -> dict[str, Any]:
    from monitors.jobs.context import open_store
    from monitors.jobs.summary import weekly_summary
    from monitors.summary.compute import IsoWeek

    now = (clock or SystemClock()).now()
    async with open_store(settings()) as store:
        summary = await weekly_summary(
            store, IsoWeek.last_complete(now), now, queue_card=True, run_id="weekly"
        )
    await run_alerts(clock)
    return summary


async def weekly_report(week_text: str | None, clock: Clock | None = None) -> tuple[int, str]:
    """(status, HTML or a short plain-text error) for GET /api/reports/weekly."""
    from monitors.jobs.context import open_store
    from monitors.jobs.summary import stored_summary, weekly_summary
    from monitors.summary.compute import IsoWeek
    from monitors.summary.html import render_html

    now = (clock or SystemClock()).now()
    try:
        week = IsoWeek.parse(week_text) if week_text else IsoWeek.last_complete(now)
    except ValueError as exc:
        return 400, str(exc)
    if week.start > now:
        return 400, f"week {week} has not started yet"
    async with open_store(settings()) as store:
        summary = await stored_summary(store, week) if week.end <= now else None
        if summary is None:
            summary = await weekly_summary(store, week, now, queue_card=False, run_id="http")
    return 200, render_html(summary)


_webhook_stores: dict[tuple[int, str | None, str], Any] = {}


async def _webhook_store(current: Settings) -> Any:
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
    from azure.core.exceptions import AzureError

    from monitors.jobs.notifications import receive

    now = (clock or SystemClock()).now()
    try:
        current = settings()
    except SettingsError:
        return 503, "not configured", "text/plain"
    try:
        store = await _webhook_store(current)
        answer = await receive(store, current, params, content_type, body, now)
    except AzureError as exc:
        # Graph redelivers on a 5xx for hours; a 503 now loses nothing, a 500 says "bug".
        structlog.get_logger("etg_monitor").error(
            "webhook.store_unavailable", error=type(exc).__name__
        )
        return 503, "state store unavailable; retry later", "text/plain"
    return answer.status, answer.body, answer.mimetype


@_skip_when_running
async def run_notifications(clock: Clock | None = None) -> dict[str, Any]:
    from monitors.jobs.context import open_context
    from monitors.jobs.notifications import process_inbox

    async with open_context(settings(), clock=clock) as ctx:
        report = await process_inbox(ctx)
    return report.to_json()


@_skip_when_running
async def run_subscriptions(clock: Clock | None = None) -> dict[str, Any]:
    from monitors.jobs.context import open_context
    from monitors.jobs.subscriptions import sync_subscriptions

    async with open_context(settings(), clock=clock) as ctx:
        report = await sync_subscriptions(ctx)
    return report.to_json()


async def health(clock: Clock | None = None) -> tuple[int, dict[str, Any]]:
    from azure.core.exceptions import AzureError

    from monitors.jobs.context import open_store
    from monitors.jobs.health import health_report

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
        async with open_store(current) as store:
            healthy, report = await health_report(store, now)
    except AzureError as exc:
        return 503, {
            "status": "unhealthy",
            "checked_at": now.isoformat(),
            "error": f"state store unreachable: {type(exc).__name__}",
        }
    return (200 if healthy else 503), report
