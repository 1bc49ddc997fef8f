"""`make demo`: the monitor against the bundled simulated tenant and a private Azurite.

It runs the jobs through the same service layer as the function app and the CLI, and prints
what the matching `etg-monitor` command would. Then, with ``--tenants N`` (3 unless told, 0 for
none), one deployment watches N simulated customer tenants (docs/msp.md): each registered with
`etg-monitor tenants add`, the scan fanned out on Azurite's queue and run by the queue function,
each tenant's alerts in its own Teams channel, and one roll-up of them all. Everything started
here is stopped here, so the demo leaves nothing running behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import secrets
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from devtools.environment import environment
from devtools.simtenant.azurite import Azurite
from devtools.simtenant.clock import SimClock
from devtools.simtenant.funchost import FunctionHost
from devtools.simtenant.generate import add_deployments, generate_scale_scenario
from devtools.simtenant.scenario import Scenario, demo_scenario
from devtools.simtenant.server import SimulatedTenant
from monitors import cli, entry, render, service
from monitors.console.ids import console_url
from monitors.models import Anomaly, Status
from monitors.remediation.job import RemediationReport
from monitors.settings import Settings
from monitors.store.tables import TableStore
from monitors.summary.compute import IsoWeek, headline
from monitors.summary.html import render_html
from monitors.summary.rollup import rollup_text
from monitors.summary.rollup_html import render_rollup_html


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
    cached, entry._settings = entry._settings, None
    try:
        with environment(env):
            yield
    finally:
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


def run_demo(tenants: int = 3) -> int:
    """The single-tenant story, then, unless ``tenants`` is 0, the provider's with that many
    simulated customer tenants on the same Azurite."""
    import function_app

    scenario = demo_scenario()
    with (
        Azurite(queues=tenants > 0) as azurite,
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
            code = _story(env, scenario, azurite, tenant, host)
        if code == 0 and tenants:
            code = _many_tenants(azurite, tenants)
    print("\nDemo finished; the simulated tenants, the function app and Azurite have been stopped.")
    return code


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
    return 0


# --- many tenants: one deployment for a managed service provider ------------------------------

# The host's queue settings (host.json extensions.queues): how many messages one instance takes
# at once, and how many tries a message gets before the host moves it to the poison queue.
_HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"
# Fixed directory ids, so every run of the demo prints the same tenants.
_TENANT_NAMESPACE = uuid.UUID("5b0e4a52-2f6e-4c8b-9d1e-3a7c2f0d9e61")


def _tenant_id(name: str) -> str:
    return str(uuid.uuid5(_TENANT_NAMESPACE, name))


def _small_tenant(seed: int, deployments: int) -> Scenario:
    """A generated tenant of ``deployments`` report rows over the week before the demo's start,
    with the generator's usual mix of failures."""
    return generate_scale_scenario(
        deployments=deployments,
        etg_members=deployments * 3,
        audit_events=deployments * 6,
        seed=seed,
        start=demo_scenario().start,
        users=40,
        other_groups=6,
    )


def _contoso() -> Scenario:
    """The bundled demo tenant, its own directory this time: late and missing devices, an
    unassigned app, a removed ETG owner."""
    return demo_scenario()


def _fabrikam() -> Scenario:
    """Every deployment healthy: the provider's best-run customer."""
    scenario = _small_tenant(seed=31, deployments=0)
    week = timedelta(days=7)
    add_deployments(
        scenario, 48, at=scenario.start - week, spread_s=(week - timedelta(hours=3)).total_seconds()
    )
    return scenario


def _tailspin() -> Scenario:
    """The generator's failures, and a third of its healthy devices never added to their ETG:
    the customer the roll-up should put first."""
    scenario = _small_tenant(seed=32, deployments=60)
    healthy = [d for d in scenario.devices if d.note == "healthy"]
    for device in healthy[::3]:
        device.membership = []
        device.note = "missing"
    return scenario


# Name, scenario: each a different mix of outcomes.
DEMO_TENANTS: tuple[tuple[str, Callable[[], Scenario]], ...] = (
    ("Contoso", _contoso),
    ("Fabrikam", _fabrikam),
    ("Tailspin Toys", _tailspin),
)


def _env_name(name: str) -> str:
    return "DEMO_TEAMS_" + "".join(c if c.isalnum() else "_" for c in name.upper())


def _queue_settings() -> dict[str, Any]:
    queues: dict[str, Any] = json.loads(_HOST_JSON.read_text())["extensions"]["queues"]
    return queues


async def _host_drain(settings: Settings, clock: SimClock) -> dict[str, dict[str, Any]]:
    """What the Functions host does with the job queue until it is empty: take a batch of
    host.json's ``batchSize`` messages, run the queue function on each (``entry.run_queued``,
    the body of function_app's ``tenant_job``, on the demo's simulated clock), delete it on
    success, let it reappear on failure until its ``maxDequeueCount``-th try
    (functions-bindings-storage-queue-trigger.md, "Poison messages"). Answers each tenant's
    outcome, by tenant id."""
    from azure.storage.queue import (
        BinaryBase64DecodePolicy,
        BinaryBase64EncodePolicy,
        QueueMessage,
    )
    from azure.storage.queue.aio import QueueClient

    host = _queue_settings()
    batch_size, tries = int(host["batchSize"]), int(host["maxDequeueCount"])
    answers: dict[str, dict[str, Any]] = {}
    async with QueueClient.from_connection_string(
        settings.storage_connection or "",
        settings.job_queue,
        message_encode_policy=BinaryBase64EncodePolicy(),
        message_decode_policy=BinaryBase64DecodePolicy(),
    ) as client:

        async def deliver(message: QueueMessage) -> None:
            count = message.dequeue_count or 1
            try:
                answer = await entry.run_queued(message.content, count, clock=clock)
            except Exception as exc:  # the host retries it; the demo says so
                print(f"  a run failed ({type(exc).__name__}), try {count} of {tries}")
                if count < tries:
                    await client.update_message(message, visibility_timeout=0)
                else:  # the host would move it to <queue>-poison: the demo stops retrying
                    await client.delete_message(message)
                return
            await client.delete_message(message)
            answers[str(answer.get("tenant"))] = answer

        while True:
            batch = [m async for m in client.receive_messages(max_messages=batch_size)]
            if not batch:
                return answers
            await asyncio.gather(*(deliver(m) for m in batch))
    raise AssertionError("unreachable")


def _fanned_scan(settings: Settings, clock: SimClock, names: dict[str, str]) -> None:
    fanned = asyncio.run(entry.run_job(service.Job.SCAN, clock=clock))
    print(
        f"  the scan timer enqueued {fanned['enqueued']} messages on {fanned['queue']} "
        f"({fanned['tenants']} enabled tenants) and ran no scan itself"
    )
    answers = asyncio.run(_host_drain(settings, clock))
    for tenant_id, name in names.items():
        answer = answers.get(tenant_id, {})
        counts = answer.get("deployments") or {}
        found = answer.get("findings") or {}
        shown = ", ".join(f"{k} {v}" for k, v in found.items()) or "none"
        print(
            f"  {name}: scan {answer.get('outcome', answer.get('failed', '?'))}, "
            f"{counts.get('evaluated', 0)} deployments judged, findings: {shown}"
        )


def _tenants_add(name: str, sim: SimulatedTenant) -> None:
    argv = [
        "tenants",
        "add",
        sim.state.tenant_id,
        "--name",
        name,
        "--teams-webhook",
        f"env:{_env_name(name)}",
        "--graph-endpoint",
        sim.base_url,
    ]
    print("$ etg-monitor " + " ".join(f"'{a}'" if " " in a else a for a in argv))
    code = cli.main(argv)
    assert code == cli.EXIT_OK, f"tenants add exited {code}"


def _teams_per_tenant(names: dict[str, str], sims: dict[str, SimulatedTenant]) -> None:
    for tenant_id, name in names.items():
        messages = sims[tenant_id].teams_messages()
        print(f"  {name}'s channel: {len(messages)} card{'' if len(messages) == 1 else 's'}")
        for message in messages[:3]:
            body = (message.card or {}).get("body") or []
            lines = [b.get("text", "") for b in body[:2] if isinstance(b, dict)]
            print(f"    {' / '.join(lines)}")
        if len(messages) > 3:
            print(f"    ... and {len(messages) - 3} more")


def _many_tenants(azurite: Azurite, count: int) -> int:
    """The provider's part: ``count`` simulated customer tenants watched by one deployment."""
    chosen = DEMO_TENANTS[:count]
    with ExitStack() as stack:
        clock: SimClock | None = None
        sims: dict[str, SimulatedTenant] = {}
        names: dict[str, str] = {}
        for name, build in chosen:
            scenario = dataclasses.replace(build(), tenant_id=_tenant_id(name))
            # One clock for all: the provider's timers fire for every tenant at once.
            sim = stack.enter_context(SimulatedTenant(scenario, clock=clock))
            clock = sim.clock
            sims[scenario.tenant_id], names[scenario.tenant_id] = sim, name
        assert clock is not None
        # The deployment's own Graph settings stay at their defaults: each registry tenant's
        # jobs reach that tenant's simulated Graph (its registry entry's graph endpoint).
        env = {
            "ETG_STORAGE_CONNECTION": azurite.connection_string,
            "ETG_TABLE_PREFIX": "demomsp",
            "ETG_JOB_QUEUE": "etg-demo-jobs",
            "ETG_DETAILED_REPORTS": "true",
            # The tenants' Teams webhooks, as their registry entries reference them (env:).
            **{_env_name(names[t]): sim.teams_url for t, sim in sims.items()},
        }
        with _served_settings(env):
            return _provider_story(env, clock, names, sims)
    raise AssertionError("unreachable")


def _provider_story(
    env: dict[str, str],
    clock: SimClock,
    names: dict[str, str],
    sims: dict[str, SimulatedTenant],
) -> int:
    settings = service.load_settings(env, log_level=logging.WARNING)
    # What the function app's worker holds once it has read its settings (put back after).
    entry._settings = settings
    _banner(f"many tenants: one deployment watching {len(names)} customer tenants (docs/msp.md)")
    print(f"ETG_TABLE_PREFIX={settings.table_prefix} ETG_JOB_QUEUE={settings.job_queue}")
    print("each tenant's Teams webhook is a secret reference (env: here, kv: in Azure)")
    for tenant_id, name in names.items():
        _tenants_add(name, sims[tenant_id])

    _banner("etg-monitor tenants list")
    assert cli.main(["tenants", "list"]) == cli.EXIT_OK

    _banner("the scan timer fires: one queue message per tenant, run by the queue function")
    _fanned_scan(settings, clock, names)

    _banner("two hours later, once late audit events have arrived: the scan timer again")
    clock.advance(2 * 3600)
    _fanned_scan(settings, clock, names)

    _banner("what each tenant's on-call received, in that tenant's own Teams channel")
    _teams_per_tenant(names, sims)

    week = IsoWeek.of(clock.now())
    report = Path(tempfile.gettempdir()) / "etg-monitor-demo-rollup.html"
    _banner(f"etg-monitor summary --all-tenants --week {week} --html ...")
    data = asyncio.run(service.rollup_of_week(settings, week, clock=clock))
    report.write_text(render_rollup_html(data), encoding="utf-8")
    print(rollup_text(data))
    print(f"  report written to {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument(
        "--tenants",
        type=int,
        choices=range(len(DEMO_TENANTS) + 1),
        default=len(DEMO_TENANTS),
        help="simulated customer tenants of the provider's part (0: the single-tenant story only)",
    )
    return run_demo(parser.parse_args(argv).tenants)


if __name__ == "__main__":
    sys.exit(main())
