"""`etg-monitor tenants add|list|remove|test`: the registry from a terminal (docs/msp.md).

Results go to standard output, anything else to standard error, as every other command does;
each handler answers an Outcome, which monitors.cli turns into its exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from monitors import service
from monitors.clock import Clock, SystemClock
from monitors.settings import SCHEDULE_SETTINGS
from monitors.tenants.registry import (
    REMEDIATION_MODES,
    Tenant,
    TenantError,
    TenantRegistry,
    checked_overrides,
    normalize_tenant_id,
)
from monitors.tenants.scope import table_prefix_for

if TYPE_CHECKING:
    from monitors.settings import Settings
    from monitors.store.tables import TableStore
    from monitors.tenants.probe import TenantTest


T = TypeVar("T")


class Outcome(StrEnum):
    OK = "ok"
    USAGE = "usage"  # bad input: said on one line, nothing changed
    UNVERIFIED = "unverified"  # `tenants test` found something missing or could not tell


# Command-line option -> the Settings field its secret reference fills.
SECRET_OPTIONS = {
    "teams_webhook": "teams_webhook_url",
    "pagerduty_key": "pagerduty_routing_key",
    "alert_webhook": "alert_webhook_url",
    "alert_webhook_secret": "alert_webhook_secret",
}


def add_parsers(sub: Any) -> None:
    tenants = sub.add_parser(
        "tenants", help="the tenant registry of a multi-tenant deployment (docs/msp.md)"
    )
    actions = tenants.add_subparsers(dest="tenants_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a tenant, or replace its entry")
    add.add_argument("tenant_id", help="the tenant's directory (tenant) id")
    add.add_argument("--name", required=True, help="display name on every card and report")
    add.add_argument("--disabled", action="store_true", help="registered, but not monitored")
    ref = "a secret reference: kv:<Key Vault secret name> or env:<VARIABLE>, never the secret"
    add.add_argument("--teams-webhook", metavar="REF", help=f"Teams workflow URL, {ref}")
    add.add_argument("--pagerduty-key", metavar="REF", help=f"PagerDuty routing key, {ref}")
    add.add_argument("--alert-webhook", metavar="REF", help=f"generic webhook URL, {ref}")
    add.add_argument("--alert-webhook-secret", metavar="REF", help=f"its signing secret, {ref}")
    add.add_argument("--routes", metavar="TEXT", help="alert routes, as ETG_ALERT_ROUTES")
    add.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="NAME=NCRONTAB",
        help="a schedule override, e.g. SCAN_SCHEDULE='0 */30 * * * *' (repeatable)",
    )
    add.add_argument("--lookback-hours", metavar="N", help="the scan's look-back, in hours")
    add.add_argument("--remediation", choices=REMEDIATION_MODES, help="remediation mode")
    add.add_argument(
        "--graph-endpoint", metavar="LOOPBACK_URL", help="a simulated tenant's Graph (loopback)"
    )
    listing = actions.add_parser("list", help="list the registered tenants")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    remove = actions.add_parser("remove", help="remove a tenant (its tables are kept)")
    remove.add_argument("tenant_id")
    test = actions.add_parser("test", help="check a tenant's secrets, consent and permissions")
    test.add_argument("tenant_id")
    test.add_argument("--json", action="store_true", help="print the result as JSON")


def _note(text: str) -> None:
    print(text, file=sys.stderr)


async def _on_registry(settings: Settings, work: Callable[[TenantRegistry], Awaitable[T]]) -> T:
    """``work`` on the registry, in the deployment's own store (never a tenant's)."""

    async def on(store: TableStore) -> T:
        return await work(TenantRegistry(store))

    return await service.read_store(settings, on)


async def run(settings: Settings, args: argparse.Namespace, clock: Clock | None = None) -> Outcome:
    action = args.tenants_action
    try:
        if action == "add":
            return await _add(settings, args, clock)
        if action == "list":
            return await _list(settings, args.json)
        if action == "remove":
            return await _remove(settings, args.tenant_id)
        return await _test(settings, args.tenant_id, args.json)
    except TenantError as exc:
        _note(f"etg-monitor: {exc}")
        return Outcome.USAGE


def tenant_from_args(args: argparse.Namespace) -> Tenant:
    """The entry the options describe. Raises TenantError saying what is wrong, never quoting
    a value given where a secret reference belongs."""
    secrets = {
        field: getattr(args, option)
        for option, field in SECRET_OPTIONS.items()
        if getattr(args, option) is not None
    }
    if ("alert_webhook_url" in secrets) != ("alert_webhook_secret" in secrets):
        raise TenantError("--alert-webhook and --alert-webhook-secret go together")
    return Tenant(
        tenant_id=args.tenant_id,
        display_name=args.name,
        enabled=not args.disabled,
        secrets=secrets,
        alert_routes=args.routes,
        overrides=checked_overrides(
            _schedules(args.schedule), _lookback(args.lookback_hours), args.remediation
        ),
        graph_endpoint=args.graph_endpoint,
    )


def _schedules(items: list[str]) -> dict[str, str]:
    """``NAME=NCRONTAB``; NAME is the schedule setting (SCAN_SCHEDULE) or its job (scan)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, expression = item.partition("=")
        if not sep or not expression.strip():
            raise TenantError(f"--schedule takes NAME=NCRONTAB, got {item!r}")
        key = name.strip().upper().replace("-", "_")
        if key not in SCHEDULE_SETTINGS and f"{key}_SCHEDULE" in SCHEDULE_SETTINGS:
            key = f"{key}_SCHEDULE"
        out[key] = expression.strip()
    return out


def _lookback(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise TenantError(f"--lookback-hours must be a whole number, got {text!r}") from None


async def _add(settings: Settings, args: argparse.Namespace, clock: Clock | None) -> Outcome:
    tenant = tenant_from_args(args)
    now = (clock or SystemClock()).now()
    replaced = await _on_registry(settings, lambda registry: registry.put(tenant, now))
    state = "disabled" if not tenant.enabled else "enabled"
    print(
        f"tenant {tenant.display_name} ({tenant.tenant_id}) {'updated' if replaced else 'added'}"
        f", {state}; its tables: {table_prefix_for(settings.table_prefix, tenant)}*"
    )
    if not tenant.graph_endpoint and not settings.msp_app_client_id:
        _note(
            "etg-monitor: note: set ETG_MSP_APP_CLIENT_ID before this tenant's jobs run; "
            "`etg-monitor tenants test` checks consent and permissions"
        )
    return Outcome.OK


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    """An entry as `tenants list --json` shows it: references by name, never secrets."""
    return {
        "tenant_id": tenant.tenant_id,
        "display_name": tenant.display_name,
        "enabled": tenant.enabled,
        "tag": tenant.tag,
        "secrets": dict(tenant.secrets),
        "alert_routes": tenant.alert_routes,
        "overrides": tenant.overrides.to_json(),
        "graph_endpoint": tenant.graph_endpoint,
        "added_at": tenant.added_at.isoformat() if tenant.added_at else None,
    }


def tenant_line(tenant: Tenant) -> str:
    parts = [
        tenant.tenant_id,
        f"{tenant.display_name:<24}",
        "enabled " if tenant.enabled else "disabled",
    ]
    secrets = ", ".join(f"{f}={r}" for f, r in sorted(tenant.secrets.items()))
    parts.append("alerts: " + (secrets or "the deployment's channels"))
    if tenant.alert_routes is not None:
        parts.append(f"routes: {tenant.alert_routes}")
    parts.extend(_override_words(tenant.overrides.to_json()))
    if tenant.graph_endpoint:
        parts.append(f"simulated at {tenant.graph_endpoint}")
    return "  ".join(parts)


def _override_words(overrides: Mapping[str, Any]) -> list[str]:
    words = [f"{name}={expr!r}" for name, expr in sorted(overrides["schedules"].items())]
    if overrides["scan_lookback_hours"] is not None:
        words.append(f"look-back {overrides['scan_lookback_hours']} h")
    if overrides["remediation"] is not None:
        words.append(f"remediation {overrides['remediation']}")
    return [f"overrides: {', '.join(words)}"] if words else []


async def _list(settings: Settings, as_json: bool) -> Outcome:
    tenants: list[Tenant] = await _on_registry(settings, lambda registry: registry.all())
    if as_json:
        print(json.dumps([tenant_json(t) for t in tenants], indent=2))
    elif not tenants:
        print("No tenants registered: this is a single-tenant install.")
    else:
        print("\n".join(tenant_line(t) for t in tenants))
    return Outcome.OK


async def _remove(settings: Settings, tenant_id: str) -> Outcome:
    tenant_id = normalize_tenant_id(tenant_id)
    removed = await _on_registry(settings, lambda registry: registry.remove(tenant_id))
    if not removed:
        _note(f"etg-monitor: no tenant {tenant_id} in the registry")
        return Outcome.USAGE
    print(f"tenant {tenant_id} removed; its tables are kept, for the record")
    return Outcome.OK


async def _test(settings: Settings, tenant_id: str, as_json: bool) -> Outcome:
    from monitors.tenants.probe import check_tenant

    tenant_id = normalize_tenant_id(tenant_id)
    tenant = await _on_registry(settings, lambda registry: registry.get(tenant_id))
    if tenant is None:
        _note(f"etg-monitor: no tenant {tenant_id} in the registry; add it with `tenants add`")
        return Outcome.USAGE
    result = await check_tenant(settings, tenant)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(check_text(result))
    return Outcome.OK if result.ok else Outcome.UNVERIFIED


def check_text(result: TenantTest) -> str:
    tenant = result.tenant
    how = (
        f"simulated tenant at {tenant.graph_endpoint}, no sign-in"
        if result.simulated
        else "the multi-tenant app, signed in with the managed identity"
    )
    lines = [f"tenant {tenant.display_name} ({tenant.tenant_id}): {how}"]
    if not tenant.enabled:
        lines.append("  (disabled: its jobs do not run until it is enabled)")
    if tenant.secrets:
        lines.append(f"  secrets: {len(result.secrets_resolved)} of {len(tenant.secrets)} resolved")
    lines += [f"  PROBLEM: {problem}" for problem in result.problems]
    if result.consent == "missing":
        lines.append(f"  ADMIN CONSENT NOT GRANTED: {result.consent_url}")
        lines.append(f"    {result.consent_detail}")
    elif result.consent_detail:
        lines.append(f"  consent: could not tell: {result.consent_detail}")
    elif result.consent == "unverified":
        lines.append("  consent: not checked until the problems above are fixed")
    elif result.consent == "granted":
        lines.append("  consent: granted")
    checks = result.permissions
    if checks:
        granted = sum(1 for c in checks if c.state == "granted")
        lines.append(f"  permissions: {granted} of {len(checks)} granted")
        missing = [c for c in checks if c.state != "granted"]
        lines += [f"  {c.state.upper()}: {c.permission}: {c.detail}" for c in missing]
    lines.append("all checks passed" if result.ok else "not ready: see above")
    return "\n".join(lines)
