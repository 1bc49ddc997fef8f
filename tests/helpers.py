"""Helpers shared by test modules: the function app's functions called the way the host calls
them, and the few ways an integration test drives the monitor (a job run on the simulated
tenant's clock, a look into the store, a storage write that fails on cue)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import azure.functions as func
import pytest
from aiohttp import web
from azure.functions.timer import TimerRequest

from monitors.settings import Settings

T = TypeVar("T")


# --- a loopback Graph stand-in ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """The app on a free loopback port for the block's length: its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def loopback_settings(base: str, **overrides: Any) -> Settings:
    """Settings for a GraphClient of a loopback stand-in, signed in as nobody."""
    fields: dict[str, Any] = {
        "graph_endpoint": base,
        "graph_credential": "none",
        "storage_connection": None,
        "storage_table_url": None,
        "table_prefix": "t",
    }
    return Settings(**(fields | overrides))


# --- the function app ------------------------------------------------------------------------


@functools.cache
def app_functions() -> dict[str, Any]:
    """The function app's functions by name. get_functions() indexes the app and refuses to run
    twice in one process, so every test module goes through this one cached call."""
    import function_app
    from devtools.simtenant.funchost import app_functions as indexed

    return {f.get_function_name(): f for f in indexed(function_app.app)}


def trigger_of(name: str) -> dict[str, Any]:
    return json.loads(app_functions()[name].get_function_json())["bindings"][0]


def user_function(name: str) -> Any:
    return app_functions()[name].get_user_function()


def call_route(
    name: str,
    method: str,
    route: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> func.HttpResponse:
    """An HTTP function called in process with the request the host would hand it."""
    request = func.HttpRequest(
        method, f"/api/{route}", params=dict(params or {}), headers=dict(headers or {}), body=body
    )
    response: func.HttpResponse = asyncio.run(user_function(name)(request))
    return response


def run_timer(name: str) -> None:
    asyncio.run(user_function(name)(TimerRequest(past_due=False)))


def provider_from_env(
    monkeypatch: Any,
    storage_connection: str,
    table_prefix: str,
    unset: tuple[str, ...] = (),
    **env: str,
) -> Settings:
    """A multi-tenant deployment's own settings, read by the function app from the environment
    as in Azure: its own tables and job queue, its Graph a closed port (its tenants each have
    their own), the settings named in ``unset`` removed. ``env`` adds or overrides settings."""
    from monitors import entry

    values = {
        "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:9",
        "ETG_GRAPH_CREDENTIAL": "none",
        "ETG_STORAGE_CONNECTION": storage_connection,
        "ETG_TABLE_PREFIX": table_prefix,
        "ETG_JOB_QUEUE": "q" + uuid.uuid4().hex[:12],
        **env,
    }
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(entry, "_settings", None)
    return entry.settings()


def serve_webhook_from_env(monkeypatch: Any, settings: Settings) -> None:
    """Point the function app's own settings (read from the environment, as in Azure) at these
    test settings, so the app's functions and the test share one tenant and one table prefix.
    Settings these test settings leave unset are removed from the environment."""
    from monitors import entry

    env = {
        "ETG_GRAPH_ENDPOINT": settings.graph_endpoint,
        "ETG_GRAPH_CREDENTIAL": "none",
        "ETG_STORAGE_CONNECTION": settings.storage_connection,
        "ETG_TABLE_PREFIX": settings.table_prefix,
        "ETG_NOTIFICATION_URL": settings.notification_url,
        "ETG_CLIENT_STATE": settings.client_state,
        "ETG_TEAMS_WEBHOOK_URL": settings.teams_webhook_url,
        "ETG_DETAILED_REPORTS": "true" if settings.detailed_reports else None,
    }
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(entry, "_settings", None)


def with_webhook(monkeypatch: Any, settings: Settings, host: Any, client_state: str) -> Settings:
    """``settings`` with Graph's change notifications sent to the webhook ``host`` serves,
    under ``client_state``, and the function app reading these same settings."""
    served = dataclasses.replace(
        settings, notification_url=host.url("graph/notifications"), client_state=client_state
    )
    serve_webhook_from_env(monkeypatch, served)
    return served


# --- the demo scenario ----------------------------------------------------------------------

# What the demo scenario's notes say each broken device demonstrates.
GROUND_TRUTH = {
    ("etg_missing", "CTSO-J5NB1GX"),
    ("etg_missing", "CTSO-FT9R9ZU"),
    ("etg_missing", "CTSO-1606069"),
    ("etg_missing", "ENG-9PR4P42"),
    ("etg_missing", "ENG-6124HUH"),
    ("etg_late", "CTSO-9968945"),
    ("etg_removed", "CTSO-2046MYB"),
    ("deployment_failed", "CTSO-Y5RZ32B"),
    ("deployment_failed", "CTSO-2734CGA"),
    ("deployment_stuck", "CTSO-F85ML45"),
    ("payload_incomplete", "CTSO-6510KGR"),
    ("payload_incomplete", "CTSO-5738CKS"),
}


def scenario_device(scenario: Any, name: str) -> Any:
    """A scenario's device by its name."""
    return next(d for d in scenario.devices if d.device_name == name)


def etg_of(scenario: Any, device: Any) -> str:
    """The ETG of the policy a scenario's device enrolled with."""
    group: str = next(p.etg_group_id for p in scenario.policies if p.id == device.policy_id)
    return group


# --- settings, jobs and the store ------------------------------------------------------------


def settings_for(
    graph_endpoint: str, storage_connection: str, table_prefix: str, **env: str
) -> Settings:
    """Settings of one test: the simulated tenant, one Azurite, the test's own tables."""
    return Settings.from_env(
        {
            "ETG_GRAPH_ENDPOINT": graph_endpoint,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": storage_connection,
            "ETG_TABLE_PREFIX": table_prefix,
            **env,
        }
    )


def run_job(
    settings: Settings,
    tenant: Any,
    job: Callable[[Any], Awaitable[T]],
    *,
    with_graph: bool = True,
) -> T:
    """One run of a job (``job(ctx)``) on the simulated tenant's clock."""
    from monitors.jobs.context import open_context

    async def go() -> T:
        async with open_context(settings, clock=tenant.clock, with_graph=with_graph) as ctx:
            return await job(ctx)

    return asyncio.run(go())


def scan(settings: Settings, tenant: Any) -> Any:
    from monitors.scan.pipeline import run_scan

    return run_job(settings, tenant, run_scan)


def config_check(settings: Settings, tenant: Any) -> Any:
    from monitors.jobs.config_check import check_config

    return run_job(settings, tenant, check_config)


def send_alerts(settings: Settings, tenant: Any) -> Any:
    from monitors.jobs.dispatch import dispatch_alerts

    return run_job(settings, tenant, dispatch_alerts, with_graph=False)


def in_store(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(store)`` on the test's tables."""
    from monitors.jobs.context import open_store

    async def go() -> T:
        async with open_store(settings) as store:
            return await work(store)

    return asyncio.run(go())


def outbox(settings: Settings, *statuses: str) -> list[Any]:
    """Outbox items, in creation order, of the given statuses (all when none are given)."""
    from monitors.store.outbox import OutboxRepository

    return in_store(settings, lambda store: OutboxRepository(store).items(*statuses))


def device_anomalies(settings: Settings) -> list[Any]:
    """Every stored anomaly except the monitor's own (a failing job)."""

    async def read(store: Any) -> list[Any]:
        return [a async for a in store.anomalies.iter() if a.kind != "monitor_job_failing"]

    return in_store(settings, read)


def stored_anomalies(settings: Settings, status: Any = None) -> list[Any]:
    """Every stored anomaly, the monitor's own included, or only those of ``status``."""

    async def read(store: Any) -> list[Any]:
        return [a async for a in store.anomalies.iter() if status is None or a.status is status]

    return in_store(settings, read)


def pairs(anomalies: list[Any]) -> set[tuple[str, str]]:
    return {(a.kind, a.subject.device_name) for a in anomalies}


def checkpoints(settings: Settings) -> dict[str, Any]:
    """The scan's checkpoints by name."""
    from monitors.store.scan_state import ScanState

    return in_store(settings, lambda store: ScanState(store).checkpoints())


def notification_inbox(settings: Settings) -> list[Any]:
    """Change notifications stored by the webhook and not yet processed."""
    from monitors.store.notifications import NotificationStore

    return in_store(settings, lambda store: NotificationStore(store).inbox())


# --- storage writes --------------------------------------------------------------------------

# The Table client calls that write; a transaction is one call, however many entities it holds.
STORAGE_WRITES = (
    "create_entity",
    "update_entity",
    "upsert_entity",
    "submit_transaction",
    "delete_entity",
)


def on_storage_writes(monkeypatch: Any, before: Callable[[int, str], None]) -> Callable[[], int]:
    """Call ``before(n, name)`` ahead of every storage write, ``n`` counting from 1. Returns a
    function that removes the hook and answers how many writes there were."""
    from azure.data.tables.aio import TableClient

    from monitors.store import transactions

    calls = {"n": 0}
    originals = {name: getattr(TableClient, name) for name in STORAGE_WRITES}
    original_submit = transactions.submit

    def wrap(name: str) -> Any:
        async def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            before(calls["n"], name)
            return await originals[name](self, *args, **kwargs)

        return write

    # The store sends its transactions on its own path (monitors.store.transactions), not
    # through TableClient.submit_transaction: each is one write all the same.
    async def submit(table: Any, operations: Any) -> Any:
        calls["n"] += 1
        before(calls["n"], "submit_transaction")
        return await original_submit(table, operations)

    for name in STORAGE_WRITES:
        monkeypatch.setattr(TableClient, name, wrap(name))
    monkeypatch.setattr(transactions, "submit", submit)

    def restore() -> int:
        for name, original in originals.items():
            monkeypatch.setattr(TableClient, name, original)
        monkeypatch.setattr(transactions, "submit", original_submit)
        return calls["n"]

    return restore


def at_storage_write(
    monkeypatch: Any, write_no: int, action: Callable[[str], None]
) -> Callable[[], None]:
    """Call ``action(name)`` just before the run's ``write_no``-th storage write. Returns a
    function that removes the hook and checks that the write was reached, so a case can never
    pass without its fault."""

    def before(n: int, name: str) -> None:
        if n == write_no:
            action(name)

    remove = on_storage_writes(monkeypatch, before)

    def restore() -> None:
        assert remove() >= write_no, "the fault never happened"

    return restore


# --- the demo scenario's first scan, broken and repeated -------------------------------------

# Storage writes of a first scan of the demo scenario, pinned by test_faults' counting test so
# the fault cases there break every one of them.
DEMO_FIRST_SCAN_WRITES = 46


def alerts_queued(settings: Settings) -> Counter[tuple[str, Any, Any]]:
    return Counter(
        (i.change, i.payload.get("kind"), i.payload.get("device_name"))
        for i in outbox(settings)
        if i.payload.get("kind") != "monitor_job_failing"
    )


def assert_matches_a_clean_run(settings: Settings) -> None:
    """What a fault-free scan of the demo scenario ends with: exactly the ground-truth
    anomalies, each stored once and opened once, and exactly one queued alert for each."""
    rows = device_anomalies(settings)
    assert pairs(rows) == GROUND_TRUTH  # nothing lost, nothing invented
    assert len(rows) == len({a.key for a in rows})
    assert all(len(a.history) == 1 for a in rows)  # never reopened or doubled
    assert alerts_queued(settings) == Counter(("opened", k, d) for k, d in GROUND_TRUTH)


def scan_broken_at_write_then_rerun(
    settings: Settings,
    tenant: Any,
    monkeypatch: Any,
    write_no: int,
    action: Callable[[str], None],
    errors: type[BaseException] | tuple[type[BaseException], ...],
    before_rerun: Callable[[], object] | None = None,
) -> None:
    """A scan broken by ``action`` at its ``write_no``-th storage write, failing with
    ``errors``, then a complete scan once a dead run's lease has expired; the caller checks
    where the second one ends."""
    restore = at_storage_write(monkeypatch, write_no, action)
    with contextlib.suppress(errors):
        scan(settings, tenant)
    restore()
    if before_rerun is not None:
        before_rerun()
    tenant.clock.advance(16 * 60)
    scan(settings, tenant)


def system_chromium() -> str | None:
    """Debian's chromium: browser tests drive the system's, never a downloaded one."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing(reason: str) -> NoReturn:
    """A browser test whose tools are missing is skipped locally and fails in CI, where
    ETG_REQUIRE_BROWSER says they must be there."""
    if os.environ.get("ETG_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def system_browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright; its own browsers are never
    downloaded. Skipped (failed in CI) without either."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if system_chromium() is None or sync_playwright is None:
        browser_missing(
            "needs Debian's chromium and the playwright package (requirements-dev.txt; "
            "`apt-get install chromium` to run it locally; no browser is downloaded)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=system_chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()
