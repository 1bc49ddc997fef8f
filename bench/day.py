"""A simulated day: how long after provisioning completed does each alert leave the outbox?

500 deployments enroll over 24 hours (``devtools.simtenant.day``: the generator's mix of
failure modes, the report export a few minutes behind, audit events 2 to 60 minutes late,
delta and change notifications within a minute). The monitor runs as the service runs it:
every job through ``monitors.service`` on its default schedule, change notifications POSTed by
the simulated tenant to the function app's own webhook, the simulator's clock (which is also the
monitor's clock) moved minute by minute. Each alert that leaves the outbox is scored against
the ground truth each device's spec gives.

    python -m bench.day --early both            # one JSON line on stdout
    python -m bench.day --deployments 20 --hours 3 --early off

``--early on`` sets ETG_EARLY_CONCLUSION=true, ``off`` false (the reference, today's
behaviour), ``both`` runs the two in one invocation on the same scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.simtenant.day import Truth, generate_day_scenario, ground_truth, kind_family
from devtools.simtenant.scenario import Scenario
from monitors.settings import SETTINGS_BY_NAME, Settings, schedule_firings

# Openings: what pages on-call. A reopening is a second opening of the same anomaly.
OPENINGS = frozenset({"opened", "reopened"})
# An anomaly whose cause is older than this at the end of the run must have been alerted (the
# reference waits for the audit log: its latency setting, a scan interval and the report lag).
SETTLE = timedelta(minutes=150)
# The order jobs due in the same minute run in: notifications feed the scan, which queues what
# the alerts job sends.
JOB_ORDER = (
    "SUBSCRIPTIONS_SCHEDULE",
    "CONFIG_CHECK_SCHEDULE",
    "NOTIFICATIONS_SCHEDULE",
    "SCAN_SCHEDULE",
    "ALERTS_SCHEDULE",
)
TARGET_ETG_MISSING_P95_MIN = 15.0


@dataclass(frozen=True, slots=True)
class SentAlert:
    """One outbox row: its change, the anomaly's kind and deployment, when it left (sim time)."""

    change: str
    kind: str
    managed_device_id: str | None
    device_name: str | None
    created_at: datetime
    sent_at: datetime | None


# --- scoring (pure) ---------------------------------------------------------------------------


def _minutes(values: Iterable[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "median": None, "p95": None, "max": None}
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 1),
        "p95": round(p95, 1),
        "max": round(ordered[-1], 1),
    }


def _false_alarm(alert: SentAlert, truth: Truth | None) -> str | None:
    """Why ``alert`` (an opening) is one the ground truth does not call for, or None."""
    if truth is None:
        return "no deployment behind it" if alert.managed_device_id else "tenant or policy alert"
    if truth.family is None:
        return f"{truth.mode} deployment needs no alert"
    if kind_family(alert.kind) != truth.family:
        return f"{truth.mode} deployment calls for {sorted(truth.kinds)}"
    when = alert.sent_at or alert.created_at
    if truth.since is not None and when < truth.since:
        return "alerted before it happened"
    return None


def score(alerts: list[SentAlert], truth: dict[str, Truth], run_end: datetime) -> dict[str, Any]:
    """Detection latencies per kind, false alarms, missed anomalies and second openings."""
    openings: dict[tuple[str, str], list[SentAlert]] = defaultdict(list)
    false_alarms: list[dict[str, Any]] = []
    job_failures = 0
    for alert in sorted(alerts, key=lambda a: (a.created_at, a.sent_at or a.created_at)):
        if alert.change not in OPENINGS:
            continue
        if alert.kind == "monitor_job_failing":
            job_failures += 1  # the monitor's own health, not a finding about a device
            continue
        spec = truth.get(alert.managed_device_id or "")
        why = _false_alarm(alert, spec)
        if why is not None:
            false_alarms.append({"kind": alert.kind, "device_name": alert.device_name, "why": why})
            continue
        openings[(alert.managed_device_id or "", kind_family(alert.kind))].append(alert)
    from_event: dict[str, list[float]] = defaultdict(list)
    from_report: dict[str, list[float]] = defaultdict(list)
    unsent = 0
    for (device_id, _), found in openings.items():
        first, spec = found[0], truth[device_id]
        if first.sent_at is None:
            unsent += 1
            continue
        if spec.since is not None:
            from_event[first.kind].append((first.sent_at - spec.since).total_seconds() / 60)
        if spec.report_at is not None:
            from_report[first.kind].append((first.sent_at - spec.report_at).total_seconds() / 60)
    missed = [
        {"device_name": t.device_name, "mode": t.mode, "kinds": sorted(t.kinds)}
        for t in truth.values()
        if t.family is not None
        and t.since is not None
        and t.since + SETTLE <= run_end
        and (t.managed_device_id, t.family) not in openings
    ]
    kinds = sorted(from_event.keys() | from_report.keys())
    return {
        "alerts_sent": sum(1 for a in alerts if a.sent_at is not None),
        "openings": sum(len(found) for found in openings.values()),
        "kinds": {
            kind: {
                "from_event_min": _minutes(from_event[kind]),
                "from_report_min": _minutes(from_report[kind]),
            }
            for kind in kinds
        },
        "false_alarms": len(false_alarms),
        "false_alarm_examples": false_alarms[:10],
        "missed": len(missed),
        "missed_examples": missed[:10],
        "second_openings": sum(1 for found in openings.values() if len(found) > 1),
        "unsent_openings": unsent,
        "monitor_job_failing": job_failures,
    }


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for one mode: etg_missing p95 after the report shows the completed
    row, no false alarm, no second opening."""
    p95 = result["kinds"].get("etg_missing", {}).get("from_report_min", {}).get("p95")
    return {
        "etg_missing_p95_from_report_min": p95,
        "etg_missing_p95_ok": p95 is not None and p95 <= TARGET_ETG_MISSING_P95_MIN,
        "no_false_alarms": result["false_alarms"] == 0,
        "no_second_openings": result["second_openings"] == 0,
    }


# --- the day (I/O) ----------------------------------------------------------------------------


def due_minutes(
    schedules: dict[str, str], start: datetime, end: datetime
) -> dict[str, set[datetime]]:
    """For each schedule setting, the minutes in [start, end] at which the host fires it."""
    due: dict[str, set[datetime]] = {}
    for name in JOB_ORDER:
        fired: set[datetime] = set()
        for at in schedule_firings(schedules[name], start - timedelta(seconds=1)):
            if at > end:
                break
            fired.add(at.replace(second=0, microsecond=0))
        due[name] = fired
    return due


@contextmanager
def _webhook_settings(settings: Settings) -> Iterator[None]:
    """The served function app's webhook reads the settings the entry module holds: this
    mode's, for the length of the mode."""
    from monitors import entry

    saved, entry._settings = entry._settings, settings
    try:
        yield
    finally:
        entry._settings = saved


def _services() -> dict[str, Callable[..., Awaitable[Any]]]:
    from monitors import service

    return {
        "SUBSCRIPTIONS_SCHEDULE": service.sync_subscriptions,
        "CONFIG_CHECK_SCHEDULE": service.check_config,
        "NOTIFICATIONS_SCHEDULE": service.process_notifications,
        "SCAN_SCHEDULE": service.scan,
        "ALERTS_SCHEDULE": service.send_alerts,
    }


async def _outbox(settings: Settings) -> list[SentAlert]:
    from monitors.jobs.context import open_store
    from monitors.store.outbox import OutboxRepository

    async with open_store(settings) as store:
        items = await OutboxRepository(store).items()
    found = []
    for item in items:
        payload = item.payload
        kind = payload.get("kind")
        if not isinstance(kind, str):
            continue  # a summary card
        device = payload.get("managed_device_id")
        name = payload.get("device_name")
        found.append(
            SentAlert(
                item.change,
                kind,
                device if isinstance(device, str) else None,
                name if isinstance(name, str) else None,
                item.created_at,
                item.sent_at,
            )
        )
    return found


@dataclass
class DayRun:
    """What one mode's day did besides alerting: where the wall time went."""

    job_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    job_runs: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


async def _live_day(
    settings: Settings, tenant: Any, start: datetime, end: datetime, run: DayRun
) -> None:
    """Minute by minute from ``start`` to ``end``: move the clock, let Graph's notifications
    reach the webhook, run the jobs due this minute, in ``JOB_ORDER``."""
    services = _services()
    due = due_minutes(dict(settings.schedules), start, end)
    minute = start
    first = True
    while minute <= end:
        for name in JOB_ORDER:
            # The app was already running before the day: its subscriptions and policy check
            # exist from the first minute.
            starting = first and name in ("SUBSCRIPTIONS_SCHEDULE", "CONFIG_CHECK_SCHEDULE")
            if minute not in due[name] and not starting:
                continue
            began = time.perf_counter()
            ran = await services[name](settings, clock=tenant.clock)
            run.job_seconds[name] += time.perf_counter() - began
            run.job_runs[name] += 1
            if ran.skipped:
                run.skipped[name] += 1
        first = False
        minute += timedelta(minutes=1)
        tenant.clock.advance(60)
        # Deliveries leave on the simulator's loop; the notifications run must see them.
        await asyncio.to_thread(tenant.wait_for_deliveries, 30)


@dataclass
class ModeRun:
    """One mode's day as it happened: what left the outbox and what Teams received."""

    alerts: list[SentAlert]
    teams_received: list[datetime]  # sim time of each post the Teams receiver accepted
    run_end: datetime
    wall_s: float
    run: DayRun
    webhook_errors: int


def simulate(scenario: Scenario, storage_connection: str, *, early: bool, hours: float) -> ModeRun:
    """One day with early conclusion on or off, on a fresh tenant and its own tables."""
    import function_app
    from devtools.simtenant.funchost import FunctionHost
    from devtools.simtenant.server import SimulatedTenant
    from monitors import service

    began = time.perf_counter()
    with SimulatedTenant(scenario) as tenant, FunctionHost(function_app.app) as host:
        env = {
            "ETG_GRAPH_ENDPOINT": tenant.base_url,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": storage_connection,
            "ETG_TABLE_PREFIX": "day" + uuid.uuid4().hex[:10],
            "ETG_TEAMS_WEBHOOK_URL": tenant.teams_url,
            "ETG_NOTIFICATION_URL": host.url("graph/notifications"),
            "ETG_CLIENT_STATE": secrets.token_urlsafe(24),
            "ETG_EARLY_CONCLUSION": "true" if early else "false",
            "ETG_LOG_FORMAT": "json",
        }
        settings = service.load_settings(env, log_level=40)  # errors only: a day logs a lot
        start = tenant.clock.now()
        run = DayRun()
        with _webhook_settings(settings):
            asyncio.run(_live_day(settings, tenant, start, start + timedelta(hours=hours), run))
        alerts = asyncio.run(_outbox(settings))
        teams = [m.received_at for m in tenant.teams_messages()]
        run_end = tenant.clock.now()
        errors = len(host.errors)
    return ModeRun(alerts, teams, run_end, time.perf_counter() - began, run, errors)


def mode_figures(day: ModeRun, truth: dict[str, Truth], *, early: bool) -> dict[str, Any]:
    result = score(day.alerts, truth, day.run_end)
    result.update(
        early_conclusion=early,
        wall_s=round(day.wall_s, 1),
        job_seconds={k: round(v, 1) for k, v in sorted(day.run.job_seconds.items())},
        job_runs=dict(sorted(day.run.job_runs.items())),
        jobs_skipped=dict(sorted(day.run.skipped.items())),
        webhook_errors=day.webhook_errors,
    )
    result["targets"] = targets(result)
    return result


def run_day(
    *,
    deployments: int,
    hours: float,
    tail_hours: float,
    modes: list[bool],
    seed: int,
    storage_connection: str | None = None,
) -> dict[str, Any]:
    """The day in each mode; Azurite is started here unless a connection string is given."""
    scenario = generate_day_scenario(deployments, hours, seed=seed)
    truth = ground_truth(scenario)
    mix = Counter(t.mode for t in truth.values())
    figures: dict[str, Any] = {
        "bench": "day",
        "deployments": deployments,
        "hours": hours,
        "tail_hours": tail_hours,
        "seed": seed,
        "mix": dict(sorted(mix.items())),
        "anomalies_in_truth": sum(1 for t in truth.values() if t.family is not None),
        # Until the setting exists, "on" runs today's rules and matches "off".
        "early_setting_known": "ETG_EARLY_CONCLUSION" in SETTINGS_BY_NAME,
        "modes": {},
    }

    def each(connection: str) -> None:
        for early in modes:
            day = simulate(scenario, connection, early=early, hours=hours + tail_hours)
            figures["modes"]["on" if early else "off"] = mode_figures(day, truth, early=early)

    if storage_connection is not None:
        each(storage_connection)
    else:
        from devtools.simtenant.azurite import Azurite

        with Azurite() as azurite:
            each(azurite.connection_string)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.day", description=__doc__.split("\n")[0])
    parser.add_argument("--early", choices=("off", "on", "both"), default="both")
    parser.add_argument("--deployments", type=int, default=500)
    parser.add_argument("--hours", type=float, default=24.0, help="enrollments span this long")
    parser.add_argument(
        "--tail-hours", type=float, default=3.0, help="the monitor keeps running this long after"
    )
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.early]
    figures = run_day(
        deployments=args.deployments,
        hours=args.hours,
        tail_hours=args.tail_hours,
        modes=modes,
        seed=args.seed,
    )
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
