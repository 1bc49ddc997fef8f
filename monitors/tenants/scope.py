"""A registry tenant's settings: the deployment's, narrowed to that one tenant.

Everything a job touches follows from its Settings, so a tenant's job is the single-tenant job
run with these: its own tables (``<prefix>t<tag>``: every row it reads or writes is keyed by
tenant), its own Graph credential (the multi-tenant app in that directory), its own client
state, alert channels, schedules and remediation mode. Pure: secrets come in resolved.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Mapping

from monitors.alerts.routing import parse_routes
from monitors.failures import SettingsError
from monitors.settings import SETTINGS, Settings
from monitors.tenants.registry import SECRET_FIELDS, Tenant


def table_prefix_for(base_prefix: str, tenant: Tenant) -> str:
    return f"{base_prefix}t{tenant.tag}"


def storage_settings(base: Settings, tenant: Tenant) -> Settings:
    """The deployment's settings opening one tenant's tables, named as that tenant, and
    nothing else of it. Not tenant_settings: reading or recording stored state needs neither
    the tenant's Graph credential nor its alert secrets, so a tenant whose secrets do not
    resolve (or a machine without ETG_MSP_APP_CLIENT_ID) still shows in the roll-up and its
    report, and its failing job is still recorded in its own tables."""
    return dataclasses.replace(
        base,
        tenant_id=tenant.tenant_id,
        tenant_name=tenant.display_name,
        table_prefix=table_prefix_for(base.table_prefix, tenant),
    )


def client_state_for(base_client_state: str, tenant_id: str) -> str:
    """Each tenant's subscriptions carry their own client state, derived from the deployment's
    secret: a notification is accepted only with the state of the tenant it names, so one
    tenant's subscription can never deliver into another's inbox. 43 URL-safe characters,
    within Graph's 128."""
    digest = hmac.new(
        base_client_state.encode(), f"client-state:{tenant_id}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _secret_value(name: str, reference: str, value: str | None) -> tuple[object, str | None]:
    """A resolved secret, read as its deployment-wide setting reads it (a Teams webhook must be
    https, ...). A problem names the reference, never the value."""
    if not value:
        return None, f"{name} reference {reference} did not resolve"
    setting = next(s for s in SETTINGS if s.field == name)
    try:
        return setting.read(value), None
    except ValueError:
        return None, f"the value behind {reference} is not a valid {setting.name}"


def tenant_settings(base: Settings, tenant: Tenant, secrets: Mapping[str, str]) -> Settings:
    """``secrets``: Settings field -> the resolved value of each of the tenant's references.
    Raises SettingsError when the tenant cannot be reached or alerted as configured."""
    problems: list[str] = []
    simulated = tenant.graph_endpoint is not None
    if not simulated and not base.msp_app_client_id:
        problems.append(
            f"tenant {tenant.display_name} ({tenant.tenant_id}): set ETG_MSP_APP_CLIENT_ID, the "
            "multi-tenant app registration every customer tenant consents to"
        )
    changes: dict[str, object] = {
        "tenant_id": tenant.tenant_id,
        "tenant_name": tenant.display_name,
        "table_prefix": table_prefix_for(base.table_prefix, tenant),
        "graph_endpoint": tenant.graph_endpoint or base.graph_endpoint,
        "graph_credential": "none" if simulated else "federated",
        "client_state": client_state_for(base.client_state, tenant.tenant_id)
        if base.client_state
        else None,
        # The remediation writer is the deployment's own identity in its own tenant; in a
        # customer's it acts through the same app registration, as reads do.
        "remediation_client_id": None,
    }
    for name in SECRET_FIELDS:
        if name in tenant.secrets:
            value, problem = _secret_value(name, tenant.secrets[name], secrets.get(name))
            if problem:
                problems.append(f"tenant {tenant.display_name}: {problem}")
            changes[name] = value
    if bool(tenant.secrets.get("alert_webhook_url")) != bool(
        tenant.secrets.get("alert_webhook_secret")
    ):
        problems.append(
            f"tenant {tenant.display_name}: the alert webhook needs both its URL and its secret"
        )
    if tenant.alert_routes is not None:
        try:
            changes["alert_routes"] = parse_routes(tenant.alert_routes)
        except ValueError as exc:
            problems.append(f"tenant {tenant.display_name}: alert routes {exc}")
    overrides = tenant.overrides
    if overrides.schedules:
        changes["schedules"] = {**base.schedules, **overrides.schedules}
    if overrides.scan_lookback_hours is not None:
        changes["scan_lookback_hours"] = overrides.scan_lookback_hours
    if overrides.remediation is not None:
        changes["remediation"] = overrides.remediation
    if problems:
        raise SettingsError(problems)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
