"""`etg-monitor`: the same jobs the function app runs, from a laptop."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitors import service
from monitors.clock import Clock, SystemClock
from monitors.failures import Unavailable
from monitors.models import Anomaly, Status
from monitors.rules.kinds import KINDS
from monitors.settings import Settings, SettingsError

if TYPE_CHECKING:
    from monitors.store.tables import TableStore
    from monitors.summary.compute import IsoWeek

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2  # bad usage or bad settings
EXIT_UNVERIFIED = 3
EXIT_UNAVAILABLE = 4  # the state store (or another dependency) could not be reached


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
    summary.add_argument(
        "--all-tenants",
        action="store_true",
        help="every registered tenant's compliance, worst first, with its trend (exits 3 when "
        "a tenant's tables could not be read)",
    )

    subs = sub.add_parser(
        "subscriptions",
        help="list ETG change-notification subscriptions; `subscriptions sync` creates, renews "
        "and removes them",
    )
    subs.add_argument("action", nargs="?", choices=["sync"], help=argparse.SUPPRESS)
    subs.add_argument("--json", action="store_true", help="print JSON")

    health = sub.add_parser("health", help="show the monitor's own health")
    health.add_argument("--json", action="store_true", help="print the result as JSON")

    _remediation_parsers(sub)
    from monitors.tenants.commands import add_parsers as tenants_parsers

    tenants_parsers(sub)
    return parser


def _remediation_parsers(sub: Any) -> None:
    remediate = sub.add_parser(
        "remediate",
        help="show what remediation would add to ETGs; `--apply` makes the additions",
    )
    remediate.add_argument(
        "--apply", action="store_true", help="make the additions (needs ETG_REMEDIATION on)"
    )
    remediate.add_argument("--device", help="only this device (name or Entra object id)")
    remediate.add_argument("--policy", help="only this policy (name or id)")
    remediate.add_argument("--json", action="store_true", help="print the plan as JSON")

    log = sub.add_parser("remediations", help="list the remediation log, newest first")
    log.add_argument("--json", action="store_true", help="print a JSON list")


def _print_json(value: Any) -> None:
    """The one JSON document a ``--json`` command writes to standard output."""
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


def _note(text: str) -> None:
    """Anything besides a command's result goes to standard error, so `--json | jq` works."""
    print(text, file=sys.stderr)


def _report_dispatch(ran: service.Ran[Any]) -> None:
    sent = ran.dispatched.report if ran.dispatched is not None else None
    if sent is not None and (sent.messages_sent or sent.retry_scheduled):
        _note(
            f"Teams: {sent.messages_sent} messages sent ({sent.items_sent} alerts), "
            f"{sent.retry_scheduled} to retry, {sent.pending} pending"
        )


def _did_not_run(ran: service.Ran[Any]) -> bool:
    """Say so when another run held the job's lease (the caller exits 3)."""
    if ran.skipped is None and ran.report is not None:
        return False
    _note(f"etg-monitor: {ran.skipped or 'the job did not run'}; nothing done")
    return True


def _report_remediation(ran: service.Ran[Any]) -> None:
    done = ran.remediated.report if ran.remediated is not None else None
    if done is not None and done.items:
        counts = ", ".join(f"{n} {name}" for name, n in sorted(done.counts().items()))
        _note(f"remediation ({done.mode}): {counts}; see `etg-monitor remediate`")


def _job_result(
    ran: service.Ran[Any], as_json: bool, text: Callable[[dict[str, Any]], str]
) -> dict[str, Any] | None:
    """A job command's result printed (JSON or text); None when the job did not run."""
    if _did_not_run(ran) or ran.report is None:
        return None
    _report_remediation(ran)
    _report_dispatch(ran)
    data: dict[str, Any] = ran.report.to_json()
    print(json.dumps(data, indent=2, default=str) if as_json else text(data))
    return data


async def _check_config(settings: Settings, as_json: bool, clock: Clock | None = None) -> int:
    from monitors.render import config_report_text

    data = _job_result(
        await service.check_config(settings, clock=clock), as_json, config_report_text
    )
    if data is None:
        return EXIT_UNVERIFIED
    if any(p["status"] == "broken" for p in data["policies"] or []) or data["tenant_findings"]:
        return EXIT_FINDINGS
    return EXIT_UNVERIFIED if data["unverified"] else EXIT_OK


async def _scan(settings: Settings, as_json: bool, clock: Clock | None = None) -> int:
    from monitors.render import scan_report_text

    data = _job_result(await service.scan(settings, clock=clock), as_json, scan_report_text)
    if data is None:
        return EXIT_UNVERIFIED
    if data["findings"]:
        return EXIT_FINDINGS
    return EXIT_UNVERIFIED if data["outcome"] != "ok" else EXIT_OK


async def _anomalies(settings: Settings, as_json: bool, status: str) -> int:
    from monitors.render import anomalies_text

    async def read(store: TableStore) -> list[Anomaly]:
        wanted = None if status == "all" else Status(status)
        return [a async for a in store.anomalies.iter(status=wanted)]

    rows = await service.read_store(settings, read)
    rows.sort(key=lambda a: (a.first_seen, a.kind, a.subject.key))
    if as_json:
        _print_json([a.to_json() for a in rows])
    else:
        print(anomalies_text(rows))
    return EXIT_OK


async def _remediate(settings: Settings, args: argparse.Namespace) -> int:
    from monitors.render import remediation_plan_text

    if args.apply and settings.remediation == "off":
        _note(
            "etg-monitor: remediate --apply is refused while ETG_REMEDIATION is off: set "
            "ETG_REMEDIATION to dry-run or auto (and grant the write identity) to enable it"
        )
        return EXIT_USAGE
    ran = await service.remediate(
        settings, apply=args.apply, device=args.device, policy=args.policy
    )
    data = _job_result(ran, args.json, remediation_plan_text)
    if data is None:
        return EXIT_UNVERIFIED
    open_items = ("write", "refused", "deferred", "forbidden", "gone", "failed")
    if any((i["result"] or i["decision"]) in open_items for i in data["items"]):
        return EXIT_FINDINGS
    return EXIT_UNVERIFIED if data["unverified"] else EXIT_OK


async def _remediations(settings: Settings, as_json: bool) -> int:
    from monitors.render import remediation_log_text

    rows = [entry.to_json() for entry in await service.remediation_log(settings)]
    if as_json:
        _print_json(rows)
    else:
        print(remediation_log_text(rows))
    return EXIT_OK


async def _suppress(settings: Settings, args: argparse.Namespace) -> int:
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
        _note(f"etg-monitor: {exc}")
        return EXIT_USAGE

    async def write(store: TableStore) -> int:
        await store.suppressions.add(suppression)
        return len(await settle_suppressions(store, now, settings.alert_routes))

    changed = await service.read_store(settings, write)
    print(f"suppression {suppression.id}: {suppression.describe()}")
    print(f"{changed} anomalies now suppressed")
    return EXIT_OK


async def _unsuppress(settings: Settings, suppression_id: str) -> int:
    from monitors.jobs.suppressions import settle_suppressions

    async def write(store: TableStore) -> int | None:
        if not await store.suppressions.remove(suppression_id):
            return None
        return len(await settle_suppressions(store, SystemClock().now(), settings.alert_routes))

    changed = await service.read_store(settings, write)
    if changed is None:
        _note(f"etg-monitor: no suppression {suppression_id}")
        return EXIT_USAGE
    print(f"suppression {suppression_id} lifted; {changed} anomalies open again")
    return EXIT_OK


async def _suppressions(settings: Settings, as_json: bool) -> int:
    rows = await service.read_store(settings, lambda store: store.suppressions.all())
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


async def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from monitors.store.outbox import OutboxRepository

    if args.action == "send":
        ran = await service.send_alerts(settings)
        if _did_not_run(ran) or ran.report is None:
            return EXIT_UNVERIFIED
        if args.json:
            _print_json(ran.report.to_json())
        else:
            _report_dispatch(service.Ran(ran.job, None, dispatched=ran))
        return EXIT_OK
    items = await service.read_store(settings, lambda store: OutboxRepository(store).items())
    if args.json:
        _print_json([i.to_json() for i in items])
        return EXIT_OK
    if not items:
        print("The alert outbox is empty.")
    for i in items:
        row = i.to_json()
        print(
            f"{i.status:<8} {i.created_at.isoformat()[:19]}  {i.channel:<9} {i.change:<12} "
            f"{row['kind']!s:<28} {row['subject'] or ''}"
            + (f"  (attempts {i.attempts}, {i.last_error})" if i.last_error else "")
        )
    return EXIT_OK


def _preview(kind: str | None, graph_endpoint: str) -> int:
    from monitors.alerts.cards import anomaly_card, message, size_of
    from monitors.alerts.samples import sample_anomaly

    if kind is None or kind not in KINDS:
        _note(f"etg-monitor: alerts preview needs a kind: {', '.join(sorted(KINDS))}")
        return EXIT_USAGE
    payload = message(anomaly_card(sample_anomaly(kind).to_json(), "opened", graph_endpoint))
    _print_json(payload)
    _note(f"# {size_of(payload)} bytes")
    return EXIT_OK


async def _summary(settings: Settings, args: argparse.Namespace, clock: Clock | None = None) -> int:
    from monitors.summary.compute import IsoWeek
    from monitors.summary.html import render_html

    now = (clock or SystemClock()).now()
    try:
        week = IsoWeek.parse(args.week) if args.week else IsoWeek.last_complete(now)
    except ValueError as exc:
        _note(f"etg-monitor: {exc}")
        return EXIT_USAGE
    if args.all_tenants:
        return await _rollup(settings, week, args, clock)
    data = await service.summary_of_week(settings, week, clock=clock)
    if args.html:
        Path(args.html).write_text(render_html(data), encoding="utf-8")  # noqa: ASYNC240
    if args.json:
        _print_json(data)
        return EXIT_OK
    print(_summary_text(data))
    if args.html:
        print(f"  report written to {args.html}")
    return EXIT_OK


async def _rollup(
    settings: Settings, week: IsoWeek, args: argparse.Namespace, clock: Clock | None
) -> int:
    from monitors.summary.rollup import rollup_text
    from monitors.summary.rollup_html import render_rollup_html

    data = await service.rollup_of_week(settings, week, clock=clock)
    if args.html:
        Path(args.html).write_text(render_rollup_html(data), encoding="utf-8")  # noqa: ASYNC240
    if args.json:
        _print_json(data)
    else:
        print(rollup_text(data))
        if args.html:
            print(f"  report written to {args.html}")
    return EXIT_UNVERIFIED if data["totals"]["unavailable"] else EXIT_OK


def _summary_text(data: dict[str, Any]) -> str:
    from monitors.summary.compute import headline

    c, d, lead = data["compliance"], data["deployments"], data["lead_time_minutes"]
    return "\n".join(
        [
            headline(data),
            f"  deployments {d['total']}: {d['success']} succeeded, {d['failed']} failed, "
            f"{d['in_progress']} in progress",
            f"  on time {c['on_time']}, late {c['late']}, missing {c['missing']}, "
            f"no ETG {c['no_etg']}, pending {c['pending']}, unverified {c['unverified']}",
            f"  joined before completion by {lead['median']} min (median), "
            f"{lead['p95']} min (95th percentile)",
            f"  anomalies opened {data['anomalies_opened']['total']}, resolved "
            f"{data['anomalies_resolved']['total']}, open {data['open_anomalies']['total']}",
        ]
    )


def _health_text(report: dict[str, Any]) -> str:
    lines = [f"monitor: {report['status']}"]
    lines += [f"  PROBLEM: {problem}" for problem in report["problems"]]
    for job, state in report["jobs"].items():
        outcome = state.get("last_outcome", state.get("state"))
        lines.append(
            f"  {job:<15} {outcome:<15} last success {state.get('last_success') or 'never'}"
            + ("  OVERDUE" if state.get("overdue") else "")
        )
    lines.append(f"  open anomalies: {report['open_anomalies'] or 'none'}")
    if report["missing_permissions"]:
        lines.append(f"  missing Graph permissions: {', '.join(report['missing_permissions'])}")
    outbox = report["outbox"]
    lines.append(f"  alerts: {outbox['pending']} pending, {outbox['failed']} failed")
    return "\n".join(lines)


async def _subscriptions(
    settings: Settings, args: argparse.Namespace, clock: Clock | None = None
) -> int:
    from monitors.jobs.subscriptions import subscription_rows
    from monitors.store.notifications import NotificationStore

    now = (clock or SystemClock()).now()
    if args.action == "sync":
        return await _sync(settings, args.json, clock)

    async def read(store: TableStore) -> list[dict[str, Any]]:
        return subscription_rows(await NotificationStore(store).subscriptions(), now)

    rows = await service.read_store(settings, read)
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


async def _sync(settings: Settings, as_json: bool, clock: Clock | None) -> int:
    ran = await service.sync_subscriptions(settings, clock=clock)
    if _did_not_run(ran) or ran.report is None:
        return EXIT_UNVERIFIED
    report = ran.report
    data = report.to_json()
    if as_json:
        _print_json(data)
    elif not report.configured:
        print("Not configured: set ETG_NOTIFICATION_URL and ETG_CLIENT_STATE.")
    else:
        print(
            f"created {len(report.created)}, renewed {len(report.renewed)}, "
            f"removed {len(report.deleted)}, unchanged {len(report.kept)}"
        )
        for item in report.unverified:
            print(f"  could not verify: {item.source}: {item.detail}")
    return EXIT_UNVERIFIED if report.unverified else EXIT_OK


async def _health(settings: Settings, as_json: bool) -> int:
    healthy, report = await service.health(settings)
    if as_json:
        _print_json(report)
    else:
        print(_health_text(report))
    return EXIT_OK if healthy else EXIT_UNVERIFIED


async def _tenants(settings: Settings, args: argparse.Namespace) -> int:
    from monitors.tenants.commands import Outcome, run

    exits = {Outcome.OK: EXIT_OK, Outcome.USAGE: EXIT_USAGE, Outcome.UNVERIFIED: EXIT_UNVERIFIED}
    return exits[await run(settings, args)]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    if args.command == "alerts" and args.action == "preview":
        # Works without any settings: it is how an engineer sees a card before deploying.
        endpoint = os.environ.get("ETG_GRAPH_ENDPOINT") or "https://graph.microsoft.com"
        return _preview(args.kind, endpoint.rstrip("/"))
    try:
        settings = service.load_settings(os.environ, log_level=level)
        return asyncio.run(_dispatch(args, settings))
    except SettingsError as exc:
        _note(f"etg-monitor: {exc}")
        return EXIT_USAGE
    except Unavailable as exc:
        _note(f"etg-monitor: {exc}")
        return EXIT_UNAVAILABLE


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "check-config":
        return await _check_config(settings, args.json)
    if command == "scan":
        return await _scan(settings, args.json)
    if command == "anomalies":
        return await _anomalies(settings, args.json, args.status)
    if command == "suppress":
        return await _suppress(settings, args)
    if command == "unsuppress":
        return await _unsuppress(settings, args.id)
    if command == "suppressions":
        return await _suppressions(settings, args.json)
    if command == "alerts":
        return await _alerts(settings, args)
    if command == "summary":
        return await _summary(settings, args)
    if command == "subscriptions":
        return await _subscriptions(settings, args)
    if command == "health":
        return await _health(settings, args.json)
    if command == "remediate":
        return await _remediate(settings, args)
    if command == "remediations":
        return await _remediations(settings, args.json)
    if command == "tenants":
        return await _tenants(settings, args)
    raise AssertionError(f"unhandled command {command}")
