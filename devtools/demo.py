"""`make demo`: the monitor against the bundled simulated tenant and a private Azurite.

It runs the jobs through the same service layer as the function app and the CLI, and prints
what the matching `etg-monitor` command would. Everything started here is stopped here, so the
demo leaves nothing running behind it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from devtools.simtenant.azurite import Azurite
from devtools.simtenant.clock import SimClock
from devtools.simtenant.funchost import FunctionHost
from devtools.simtenant.scenario import Scenario, demo_scenario
from devtools.simtenant.server import SimulatedTenant
from monitors import entry, render, service
from monitors.console.ids import console_url
from monitors.models import Anomaly, Status
from monitors.remediation.job import RemediationReport
from monitors.settings import Settings
from monitors.store.tables import TableStore
from monitors.summary.compute import IsoWeek, headline
from monitors.summary.html import render_html


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)))


def _check_config(settings: Settings, clock: SimClock) -> None:
    ran = asyncio.run(service.check_config(settings, clock=clock))
    assert ran.report is not None
    print(render.config_report_text(ran.report.to_json()))
    _remediation(ran.remediated)


def _scan(settings: Settings, clock: SimClock) -> None:
    ran = asyncio.run(service.scan(settings, clock=clock))
    assert ran.report is not None
    print(render.scan_report_text(ran.report.to_json()))
    _remediation(ran.remediated)


def _remediation(ran: service.Ran[RemediationReport] | None) -> None:
    """What the remediation run that followed the job planned or did, when it had anything."""
    if ran is None or ran.report is None:
        return
    data = ran.report.to_json()
    if data["items"]:
        print()
        print(render.remediation_plan_text(data))


def _anomalies(settings: Settings, status: Status) -> list[Anomaly]:
    async def read(store: TableStore) -> list[Anomaly]:
        rows = [a async for a in store.anomalies.iter(status=status)]
        return sorted(rows, key=lambda a: (a.first_seen, a.kind, a.subject.key))

    return asyncio.run(service.read_store(settings, read))


@contextmanager
def _served_settings(env: dict[str, str]) -> Iterator[None]:
    """The served function app reads its settings from the process environment, as in Azure:
    point it at the demo's, and put back what was there before."""
    saved = {key: os.environ.get(key) for key in env}
    cached, entry._settings = entry._settings, None
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        entry._settings = cached


def _console(host: FunctionHost, settings: Settings) -> None:
    """The console page the cards' buttons open, fetched as the signed-in operator would."""
    url = host.url("console/anomalies", with_key=False)
    answer = httpx.get(url, timeout=30)
    rows = answer.text.count('href="/api/console/anomalies/')
    print(f"  GET {url} -> {answer.status_code}, {rows} open anomalies listed")
    print(f"  signed in locally as {settings.console_dev_principal} (ETG_CONSOLE_DEV_PRINCIPAL)")
    first = next(iter(_anomalies(settings, Status.OPEN)), None)
    page = console_url(settings.public_base_url, first.to_json()) if first else None
    if page is not None:
        shown = httpx.get(page, timeout=30)
        print("  each card's 'Open in console' button opens its anomaly's page, such as")
        print(f"  {page} -> {shown.status_code}")


def _pagerduty(tenant: SimulatedTenant) -> None:
    for incident in tenant.pagerduty_incidents():
        d = incident.to_dict()
        closed = f", resolved {d['resolved_at']}" if d["resolved_at"] else ""
        print(f"  [{d['status']:<9}] {d['severity']:<8} {d['summary']}")
        print(f"              opened {d['opened_at']}{closed}")


def run_demo() -> int:
    import function_app

    scenario = demo_scenario()
    with (
        Azurite() as azurite,
        SimulatedTenant(scenario) as tenant,
        FunctionHost(function_app.app) as host,
    ):
        env = {
            "ETG_GRAPH_ENDPOINT": tenant.base_url,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": azurite.connection_string,
            "ETG_TABLE_PREFIX": "demo",
            "ETG_DETAILED_REPORTS": "true",
            "ETG_TEAMS_WEBHOOK_URL": tenant.teams_url,
            "ETG_REMEDIATION": "dry-run",
            "ETG_PAGERDUTY_ROUTING_KEY": tenant.pagerduty_routing_key,
            "ETG_PAGERDUTY_EVENTS_URL": tenant.pagerduty_url,
            "ETG_ALERT_ROUTES": "etg_owner_missing=teams,pagerduty",
            "ETG_PUBLIC_BASE_URL": host.base_url,
            "ETG_CONSOLE_DEV_PRINCIPAL": "oncall@contoso.example",
            "ETG_CONSOLE_SECRET": secrets.token_urlsafe(32),
        }
        with _served_settings(env):
            return _story(env, scenario, azurite, tenant, host)


def _story(
    env: dict[str, str],
    scenario: Scenario,
    azurite: Azurite,
    tenant: SimulatedTenant,
    host: FunctionHost,
) -> int:
    settings = service.load_settings(env, log_level=logging.WARNING)
    print("etg-monitor demo: a simulated Intune tenant on", tenant.base_url)
    print("and the Azurite Table Storage emulator on port", azurite.port)
    print("To run any command yourself against such a setup, export:")
    for key, value in env.items():
        shown = {
            "ETG_STORAGE_CONNECTION": "<Azurite connection string>",
            "ETG_TEAMS_WEBHOOK_URL": "<the simulated Teams webhook>",
            "ETG_PAGERDUTY_ROUTING_KEY": "<the simulated PagerDuty routing key>",
            "ETG_CONSOLE_SECRET": "<a random secret>",
        }.get(key, value)
        print(f"  {key}={shown}")

    _banner("etg-monitor check-config, before any deployment is judged")
    _check_config(settings, tenant.clock)

    _banner("etg-monitor scan")
    _scan(settings, tenant.clock)

    _banner("two hours later, once late audit events have arrived: etg-monitor scan")
    tenant.clock.advance(2 * 3600)
    _scan(settings, tenant.clock)

    _banner("etg-monitor anomalies --json")
    print(json.dumps([a.to_json() for a in _anomalies(settings, Status.OPEN)], indent=2))

    auto = dataclasses.replace(settings, remediation="auto")
    _banner("ETG_REMEDIATION=auto: etg-monitor scan adds the devices and restores the owner")
    _scan(auto, tenant.clock)

    _banner("an hour later: etg-monitor scan verifies the additions")
    tenant.clock.advance(3600)
    _scan(auto, tenant.clock)
    for anomaly in _anomalies(settings, Status.RESOLVED):
        if anomaly.kind == "etg_missing" and anomaly.history:
            print(f"  {anomaly.subject.device_name}: {anomaly.history[-1]['why']}")

    _banner("etg-monitor check-config confirms the restored ETG owner")
    _check_config(auto, tenant.clock)

    _banner("etg-monitor remediations")
    log = asyncio.run(service.remediation_log(settings))
    print(render.remediation_log_text([entry.to_json() for entry in log]))

    _banner("etg-monitor anomalies --status resolved")
    print(render.anomalies_text(_anomalies(settings, Status.RESOLVED)))

    _banner("the operator console, served by the function app")
    _console(host, settings)

    _banner("what PagerDuty received (ETG_ALERT_ROUTES=etg_owner_missing=teams,pagerduty)")
    _pagerduty(tenant)

    _banner("what on-call received in Teams")
    for message in tenant.teams_messages():
        card = message.card or {}
        title = (card.get("body") or [{}])[0].get("text", "?")
        print(f"  [{message.size:>5} bytes] {title}")
    print("  (see any card in full: etg-monitor alerts preview etg_missing)")

    week = str(IsoWeek.of(tenant.clock.now()))
    _banner(f"etg-monitor summary --week {week} --html ...")
    report = Path(tempfile.gettempdir()) / "etg-monitor-demo-weekly.html"
    summary = asyncio.run(
        service.summary_of_week(settings, IsoWeek.parse(week), clock=tenant.clock)
    )
    report.write_text(render_html(summary), encoding="utf-8")
    print(headline(summary))
    print(f"  report written to {report}")
    print("\nDemo finished; the simulated tenant, the function app and Azurite have been stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
