"""`etg-monitor demo`: the monitor against the bundled simulated tenant and a private Azurite.

Everything started here is stopped here, so the demo leaves nothing running behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from monitors.settings import Settings
from monitors.summary.compute import IsoWeek


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)))


def run_demo() -> int:
    try:
        from devtools.simtenant.azurite import Azurite
        from devtools.simtenant.scenario import demo_scenario
        from devtools.simtenant.server import SimulatedTenant
    except ImportError:
        print("etg-monitor demo needs the development tools: run `make demo` from a clone.")
        return 2
    from monitors.cli import _anomalies, _check_config, _scan, _summary

    scenario = demo_scenario()
    with Azurite() as azurite, SimulatedTenant(scenario) as tenant:
        env = {
            "ETG_GRAPH_ENDPOINT": tenant.base_url,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": azurite.connection_string,
            "ETG_TABLE_PREFIX": "demo",
            "ETG_DETAILED_REPORTS": "true",
            "ETG_TEAMS_WEBHOOK_URL": tenant.teams_url,
        }
        settings = Settings.from_env(env)
        print("etg-monitor demo: a simulated Intune tenant on", tenant.base_url)
        print("and the Azurite Table Storage emulator on port", azurite.port)
        print("To run any command yourself against such a setup, export:")
        for key, value in env.items():
            shown = {
                "ETG_STORAGE_CONNECTION": "<Azurite connection string>",
                "ETG_TEAMS_WEBHOOK_URL": "<the simulated Teams webhook>",
            }.get(key, value)
            print(f"  {key}={shown}")

        _banner("etg-monitor check-config")
        asyncio.run(_check_config(settings, False, clock=tenant.clock))

        _banner("etg-monitor scan")
        asyncio.run(_scan(settings, False, clock=tenant.clock))

        _banner("two hours later, once late audit events have arrived: etg-monitor scan")
        tenant.clock.advance(2 * 3600)
        asyncio.run(_scan(settings, False, clock=tenant.clock))

        _banner("etg-monitor anomalies --json")
        asyncio.run(_anomalies(settings, True, "open"))

        finance = next((p for p in scenario.policies if "Finance" in p.name), None)
        if finance is not None and finance.etg_group_id:
            _banner("an engineer restores the ETG owner, and the check runs again")
            tenant.state.add_group_owner(
                finance.etg_group_id, scenario.provisioning_client.object_id
            )
            tenant.clock.advance(3600)
            asyncio.run(_check_config(settings, False, clock=tenant.clock))

        _banner("etg-monitor anomalies --status resolved")
        asyncio.run(_anomalies(settings, False, "resolved"))

        _banner("what on-call received in Teams")
        for message in tenant.teams_messages():
            card = message.card or {}
            title = (card.get("body") or [{}])[0].get("text", "?")
            print(f"  [{message.size:>5} bytes] {title}")
        print("  (see any card in full: etg-monitor alerts preview etg_missing)")

        week = str(IsoWeek.of(tenant.clock.now()))
        _banner(f"etg-monitor summary --week {week} --html ...")
        report = Path(tempfile.gettempdir()) / "etg-monitor-demo-weekly.html"
        args = argparse.Namespace(week=week, json=False, html=str(report))
        asyncio.run(_summary(settings, args, clock=tenant.clock))
    print("\nDemo finished; the simulated tenant and Azurite have been stopped.")
    return 0
