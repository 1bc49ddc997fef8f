"""`etg-monitor`: the same jobs the function app runs, from a laptop."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitors.clock import Clock, SystemClock
from monitors.logs import configure_logging, register_secret
from monitors.models import Status
from monitors.rules.kinds import KINDS
from monitors.settings import Settings, SettingsError
from monitors.store.tables import LeaseHeld

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNVERIFIED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etg-monitor",
        description="Prove every Autopilot device preparation enrollment joined its Enrollment "
        "Time Group before provisioning completed.",
        epilog="Settings come from the environment: ETG_GRAPH_ENDPOINT, ETG_GRAPH_CREDENTIAL, "
        "ETG_STORAGE_CONNECTION or ETG_STORAGE_TABLE_URL, ETG_TABLE_PREFIX.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="check every device preparation policy's ETG")
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    scan = sub.add_parser("scan", help="judge new and still-open device preparation deployments")
    scan.add_argument("--json", action="store_true", help="print the result as JSON")

    anomalies = sub.add_parser("anomalies", help="list recorded anomalies")
    anomalies.add_argument("--json", action="store_true", help="print a JSON list")
    anomalies.add_argument(
        "--status",
        choices=["open", "resolved", "suppressed", "all"],
        default="open",
        help="which anomalies to list (default: open)",
    )

    suppress = sub.add_parser(
        "suppress", help="stop alerting on a device, a policy or a kind (still recorded)"
    )
    target = suppress.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="managed device id, device name or serial number")
    target.add_argument("--policy", help="policy id or name")
    target.add_argument("--kind", choices=sorted(KINDS), help="anomaly kind")
    suppress.add_argument("--reason", required=True, help="why (shown in every report)")
    suppress.add_argument("--expires", help="7d, 12h, 30m, or an ISO-8601 time; default never")
    suppress.add_argument("--by", help="who decided (recorded with the suppression)")

    unsuppress = sub.add_parser("unsuppress", help="lift a suppression")
    unsuppress.add_argument("id", help="suppression id (see `etg-monitor suppressions`)")

    suppressions = sub.add_parser("suppressions", help="list suppressions")
    suppressions.add_argument("--json", action="store_true", help="print a JSON list")

    alerts = sub.add_parser(
        "alerts",
        help="show the Teams alert outbox; `alerts preview KIND` prints a sample card; "
        "`alerts send` delivers what is due",
    )
    alerts.add_argument("action", nargs="?", choices=["preview", "send"], help=argparse.SUPPRESS)
    alerts.add_argument("kind", nargs="?", help=argparse.SUPPRESS)
    alerts.add_argument("--json", action="store_true", help="print JSON")

    summary = sub.add_parser("summary", help="the weekly compliance summary")
    summary.add_argument("--week", help="ISO week, e.g. 2026-W47 (default: last complete week)")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    summary.add_argument("--html", metavar="FILE", help="also write the HTML report here")

    subs = sub.add_parser(
        "subscriptions",
        help="list ETG change-notification subscriptions; `subscriptions sync` creates, renews "
        "and removes them",
    )
    subs.add_argument("action", nargs="?", choices=["sync"], help=argparse.SUPPRESS)
    subs.add_argument("--json", action="store_true", help="print JSON")

    health = sub.add_parser("health", help="show the monitor's own health")
    health.add_argument("--json", action="store_true", help="print the result as JSON")

    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


async def _check_config(settings: Settings, as_json: bool, clock: Clock | None = None) -> int:
    from monitors.jobs.config_check import check_config
    from monitors.jobs.context import open_context
    from monitors.render import config_report_text

    async with open_context(settings, clock=clock) as ctx:
        report = await check_config(ctx)
    await _dispatch_after(settings, clock)
    data = report.to_json()
    if as_json:
        _print_json(data)
    else:
        print(config_report_text(data))
    if any(p["status"] == "broken" for p in data["policies"] or []) or data["tenant_findings"]:
        return EXIT_FINDINGS
    return EXIT_UNVERIFIED if data["unverified"] else EXIT_OK


async def _scan(settings: Settings, as_json: bool, clock: Clock | None = None) -> int:
    from monitors.jobs.context import open_context
    from monitors.jobs.scan import run_scan
    from monitors.render import scan_report_text

    async with open_context(settings, clock=clock) as ctx:
        report = await run_scan(ctx)
    await _dispatch_after(settings, clock)
    data = report.to_json()
    if as_json:
        _print_json(data)
    else:
        print(scan_report_text(data))
    if data["findings"]:
        return EXIT_FINDINGS
    return EXIT_UNVERIFIED if data["outcome"] != "ok" else EXIT_OK


async def _anomalies(settings: Settings, as_json: bool, status: str) -> int:
    from monitors.jobs.context import open_store
    from monitors.render import anomalies_text

    async with open_store(settings) as store:
        rows = [
            a async for a in store.anomalies.iter() if status == "all" or a.status is Status(status)
        ]
    rows.sort(key=lambda a: (a.first_seen, a.kind, a.subject.key))
    if as_json:
        _print_json([a.to_json() for a in rows])
    else:
        print(anomalies_text(rows))
    return EXIT_OK


async def _suppress(settings: Settings, args: argparse.Namespace) -> int:
    from monitors.jobs.context import open_store
    from monitors.jobs.suppressions import new_suppression, settle_suppressions
    from monitors.rules.suppression import SuppressionScope

    now = SystemClock().now()
    scope, value = next(
        (SuppressionScope(name), getattr(args, name))
        for name in ("device", "policy", "kind")
        if getattr(args, name)
    )
    try:
        suppression = new_suppression(scope, value, args.reason, now, args.expires, args.by)
    except ValueError as exc:
        print(f"etg-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with open_store(settings) as store:
        await store.suppressions.add(suppression)
        changed = await settle_suppressions(store, now)
    print(f"suppression {suppression.id}: {suppression.describe()}")
    print(f"{len(changed)} anomalies now suppressed")
    return EXIT_OK


async def _unsuppress(settings: Settings, suppression_id: str) -> int:
    from monitors.jobs.context import open_store
    from monitors.jobs.suppressions import settle_suppressions

    async with open_store(settings) as store:
        if not await store.suppressions.remove(suppression_id):
            print(f"etg-monitor: no suppression {suppression_id}", file=sys.stderr)
            return EXIT_USAGE
        changed = await settle_suppressions(store, SystemClock().now())
    print(f"suppression {suppression_id} lifted; {len(changed)} anomalies open again")
    return EXIT_OK


async def _suppressions(settings: Settings, as_json: bool) -> int:
    from monitors.jobs.context import open_store

    async with open_store(settings) as store:
        rows = await store.suppressions.all()
    now = SystemClock().now()
    if as_json:
        _print_json([{**s.to_json(), "active": s.active(now)} for s in rows])
    else:
        for s in rows:
            state = "active" if s.active(now) else "expired"
            print(f"{s.id}  {state:<8} {s.describe()}")
        if not rows:
            print("No suppressions.")
    return EXIT_OK


async def _dispatch_after(settings: Settings, clock: Clock | None) -> None:
    if not settings.teams_webhook_url:
        return
    from monitors.jobs.context import open_store
    from monitors.jobs.dispatch import dispatch_alerts

    async with open_store(settings) as store:
        result = await dispatch_alerts(store, settings, (clock or SystemClock()).now())
    if result.messages_sent or result.retry_scheduled:
        print(
            f"Teams: {result.messages_sent} messages sent ({result.items_sent} alerts), "
            f"{result.retry_scheduled} to retry, {result.pending} pending"
        )


async def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from monitors.jobs.context import open_store
    from monitors.store.outbox import OutboxRepository

    if args.action == "send":
        await _dispatch_after(settings, None)
        return EXIT_OK
    async with open_store(settings) as store:
        items = await OutboxRepository(store).items()
    if args.json:
        _print_json([i.to_json() for i in items])
        return EXIT_OK
    if not items:
        print("The alert outbox is empty.")
    for i in items:
        row = i.to_json()
        print(
            f"{row['status']:<8} {row['created_at'][:19]}  {row['change']:<12} "
            f"{row['kind']:<28} {row['subject'] or ''}"
            + (f"  (attempts {row['attempts']}, {row['last_error']})" if row["last_error"] else "")
        )
    return EXIT_OK


def _preview(kind: str | None, graph_endpoint: str) -> int:
    from monitors.alerts.cards import anomaly_card, message, size_of
    from monitors.alerts.samples import sample_anomaly

    if kind not in KINDS:
        print(
            f"etg-monitor: alerts preview needs a kind: {', '.join(sorted(KINDS))}", file=sys.stderr
        )
        return EXIT_USAGE
    payload = message(anomaly_card(sample_anomaly(kind).to_json(), "opened", graph_endpoint))
    _print_json(payload)
    print(f"# {size_of(payload)} bytes", file=sys.stderr)
    return EXIT_OK


async def _summary(settings: Settings, args: argparse.Namespace, clock: Clock | None = None) -> int:
    from monitors.jobs.context import open_store
    from monitors.jobs.summary import weekly_summary
    from monitors.summary.compute import IsoWeek, headline
    from monitors.summary.html import render_html

    now = (clock or SystemClock()).now()
    try:
        week = IsoWeek.parse(args.week) if args.week else IsoWeek.last_complete(now)
    except ValueError as exc:
        print(f"etg-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with open_store(settings) as store:
        data = await weekly_summary(store, week, now, queue_card=False)
    if args.html:
        Path(args.html).write_text(render_html(data), encoding="utf-8")  # noqa: ASYNC240
    if args.json:
        _print_json(data)
    else:
        c, d = data["compliance"], data["deployments"]
        print(headline(data))
        print(
            f"  deployments {d['total']}: {d['success']} succeeded, {d['failed']} failed, "
            f"{d['in_progress']} in progress"
        )
        print(
            f"  on time {c['on_time']}, late {c['late']}, missing {c['missing']}, "
            f"no ETG {c['no_etg']}, pending {c['pending']}, unverified {c['unverified']}"
        )
        lead = data["lead_time_minutes"]
        print(
            f"  joined before completion by {lead['median']} min (median), "
            f"{lead['p95']} min (95th percentile)"
        )
        print(
            f"  anomalies opened {data['anomalies_opened']['total']}, resolved "
            f"{data['anomalies_resolved']['total']}, open {data['open_anomalies']['total']}"
        )
        if args.html:
            print(f"  report written to {args.html}")
    return EXIT_OK


async def _subscriptions(
    settings: Settings, args: argparse.Namespace, clock: Clock | None = None
) -> int:
    from monitors.jobs.context import open_context, open_store
    from monitors.jobs.subscriptions import subscription_rows, sync_subscriptions
    from monitors.store.notifications import NotificationStore

    now = (clock or SystemClock()).now()
    if args.action == "sync":
        async with open_context(settings, clock=clock) as ctx:
            report = await sync_subscriptions(ctx)
        data = report.to_json()
        if args.json:
            _print_json(data)
        elif not report.configured:
            print("Not configured: set ETG_NOTIFICATION_URL and ETG_CLIENT_STATE.")
        else:
            print(
                f"created {len(report.created)}, renewed {len(report.renewed)}, "
                f"removed {len(report.deleted)}, unchanged {len(report.kept)}"
            )
            for item in data["unverified"]:
                print(f"  could not verify: {item['source']}: {item['detail']}")
        return EXIT_UNVERIFIED if report.unverified else EXIT_OK
    async with open_store(settings) as store:
        rows = subscription_rows(await NotificationStore(store).subscriptions(), now)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("No subscriptions. Run `etg-monitor subscriptions sync`.")
    for r in rows:
        print(
            f"{r['group_id']}  expires in {r['expires_in_hours']:>6} h  last notification "
            f"{r['last_notification_at'] or 'never':<32} {r['policies']}"
        )
    return EXIT_OK


async def _health(settings: Settings, as_json: bool) -> int:
    from monitors.jobs.context import open_store
    from monitors.jobs.health import health_report

    async with open_store(settings) as store:
        healthy, report = await health_report(store, SystemClock().now())
    if as_json:
        _print_json(report)
    else:
        print(f"monitor: {report['status']}")
        for problem in report["problems"]:
            print(f"  PROBLEM: {problem}")
        for job, state in report["jobs"].items():
            outcome = state.get("last_outcome", state.get("state"))
            print(
                f"  {job:<15} {outcome:<15} last success {state.get('last_success') or 'never'}"
                + ("  OVERDUE" if state.get("overdue") else "")
            )
        print(f"  open anomalies: {report['open_anomalies'] or 'none'}")
        if report["missing_permissions"]:
            print(f"  missing Graph permissions: {', '.join(report['missing_permissions'])}")
        outbox = report["outbox"]
        print(f"  alerts: {outbox['pending']} pending, {outbox['failed']} failed")
    return EXIT_OK if healthy else EXIT_UNVERIFIED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    if args.command == "alerts" and args.action == "preview":
        # Works without any settings: it is how an engineer sees a card before deploying.
        endpoint = os.environ.get("ETG_GRAPH_ENDPOINT") or "https://graph.microsoft.com"
        return _preview(args.kind, endpoint.rstrip("/"))
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"etg-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, level)
    try:
        return _dispatch(args, settings)
    except LeaseHeld as held:
        print(f"etg-monitor: another {held} run is in progress; nothing done", file=sys.stderr)
        return EXIT_UNVERIFIED


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    register_secret(settings.storage_connection)
    register_secret(settings.teams_webhook_url)
    register_secret(settings.notification_url)
    register_secret(settings.client_state)
    if args.command == "check-config":
        return asyncio.run(_check_config(settings, args.json))
    if args.command == "scan":
        return asyncio.run(_scan(settings, args.json))
    if args.command == "anomalies":
        return asyncio.run(_anomalies(settings, args.json, args.status))
    if args.command == "suppress":
        return asyncio.run(_suppress(settings, args))
    if args.command == "unsuppress":
        return asyncio.run(_unsuppress(settings, args.id))
    if args.command == "suppressions":
        return asyncio.run(_suppressions(settings, args.json))
    if args.command == "alerts":
        return asyncio.run(_alerts(settings, args))
    if args.command == "summary":
        return asyncio.run(_summary(settings, args))
    if args.command == "subscriptions":
        return asyncio.run(_subscriptions(settings, args))
    if args.command == "health":
        return asyncio.run(_health(settings, args.json))
    raise AssertionError(f"unhandled command {args.command}")
