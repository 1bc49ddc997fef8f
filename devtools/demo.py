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
import sys
import tempfile
from pathlib import Path

from devtools.simtenant.azurite import Azurite
from devtools.simtenant.clock import SimClock
from devtools.simtenant.scenario import demo_scenario
from devtools.simtenant.server import SimulatedTenant
from monitors import render, service
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


def run_demo() -> int:
    scenario = demo_scenario()
    with Azurite() as azurite, SimulatedTenant(scenario) as tenant:
        env = {
            "ETG_GRAPH_ENDPOINT": tenant.base_url,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": azurite.connection_string,
            "ETG_TABLE_PREFIX": "demo",
            "ETG_DETAILED_REPORTS": "true",
            "ETG_TEAMS_WEBHOOK_URL": tenant.teams_url,
            "ETG_REMEDIATION": "dry-run",
        }
        settings = service.load_settings(env, log_level=logging.WARNING)
        print("etg-monitor demo: a simulated Intune tenant on", tenant.base_url)
        print("and the Azurite Table Storage emulator on port", azurite.port)
        print("To run any command yourself against such a setup, export:")
        for key, value in env.items():
            shown = {
                "ETG_STORAGE_CONNECTION": "<Azurite connection string>",
                "ETG_TEAMS_WEBHOOK_URL": "<the simulated Teams webhook>",
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
    print("\nDemo finished; the simulated tenant and Azurite have been stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
