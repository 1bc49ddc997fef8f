"""PagerDuty Events API v2: one alert event per outbox row.

PagerDuty's "Send an Alert Event" (Events API v2, ``POST https://events.pagerduty.com/v2/enqueue``)
takes ``routing_key``, ``event_action`` (trigger | acknowledge | resolve), ``dedup_key`` (at most
255 characters) and, for a trigger, ``payload.summary`` (at most 1024 characters),
``payload.source``, ``payload.severity`` (critical | error | warning | info),
``payload.timestamp``, ``payload.custom_details`` and ``links``. The Overview's "Response Codes &
Retry Logic": 202 accepted, 400 invalid (do not retry), 429 and 5xx retry after some time.

The dedup key is the anomaly's key, so the resolve closes the very alert its trigger opened,
and a trigger repeated after a lost answer is folded into the same alert by PagerDuty. A
registry tenant's key is prefixed with its tenant id: a provider routes many tenants to one
service, and two tenants' anomalies can have the same key (overlapping device ids, or any
tenant-wide kind). "Send an Alert Event", "Alert De-Duplication": events for a dedup key sent
with the same routing key apply to the open alert of that key, so without the prefix one
tenant's trigger would fold into another's alert and its resolve would close it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitors.alerts.cards import TenantLabel
from monitors.models import JSON
from monitors.rules.kinds import KINDS, Severity

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
SOURCE = "etg-monitor"
# Events API v2 severities are critical | error | warning | info. A critical kind breaks every
# enrollment of a policy or the tenant; a high kind breaks one device or blinds the monitor:
# something is broken now, not merely at risk, so "error" rather than "warning".
SEVERITY: Mapping[Severity, str] = {Severity.CRITICAL: "critical", Severity.HIGH: "error"}
TRIGGERING = frozenset({"opened", "reopened", "unsuppressed"})
# "Response Codes & Retry Logic": a 400 is an invalid event, sending it again cannot help.
PERMANENT_STATUSES = frozenset({400})


@dataclass(frozen=True, slots=True)
class PagerDutyTarget:
    routing_key: str = field(repr=False)
    events_url: str = EVENTS_URL


def dedup_key(anomaly_key: str, tenant: TenantLabel | None = None) -> str:
    """The anomaly key (under the tenant's id for a registry tenant), or its digest when
    longer than PagerDuty keeps."""
    key = anomaly_key if tenant is None else f"{tenant.tenant_id}/{anomaly_key}"
    if len(key) <= MAX_DEDUP_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def event_action(change: str) -> str | None:
    """trigger or resolve; None for a change PagerDuty is not told about (a reminder: the
    incident its trigger opened is still open and already paging)."""
    if change in TRIGGERING:
        return "trigger"
    return "resolve" if change == "resolved" else None


def _subject(anomaly: Mapping[str, JSON]) -> str:
    for name in ("device_name", "serial_number", "policy_name", "policy_id", "job"):
        value = anomaly.get(name)
        if isinstance(value, str) and value:
            return value
    return "tenant"


def pagerduty_event(
    anomaly: Mapping[str, JSON],
    key: str,
    change: str,
    routing_key: str,
    now: datetime,
    tenant: TenantLabel | None = None,
) -> dict[str, JSON] | None:
    """The Events API v2 body announcing ``change`` of the anomaly (Anomaly.to_json); None when
    the change is not one PagerDuty hears about. ``tenant``: the registry tenant it belongs to
    (monitors.alerts.cards.tenant_label), None for a single-tenant install."""
    action = event_action(change)
    if action is None:
        return None
    event: dict[str, JSON] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(key, tenant),
    }
    if action == "resolve":
        return event
    kind = KINDS.get(str(anomaly.get("kind")))
    title = kind.title if kind else str(anomaly.get("kind"))
    summary = f"{title}: {_subject(anomaly)}. {anomaly.get('explanation') or ''}".strip()
    details: dict[str, JSON] = {
        name: anomaly.get(name)
        for name in ("kind", "scope", "policy_id", "policy_name", "managed_device_id")
        if anomaly.get(name) is not None
    }
    details |= {"change": change, "fix": anomaly.get("fix"), "evidence": anomaly.get("evidence")}
    if tenant is not None:
        # "Send an Alert Event": payload.summary is "used to generate the summaries/titles of
        # any associated alerts", what on-call reads first; whose comes first, so the
        # truncation below never cuts it.
        summary = f"[{tenant}] {summary}"
        details["tenant"] = {"id": tenant.tenant_id, "name": tenant.display_name}
    event["payload"] = {
        "summary": summary[: MAX_SUMMARY - 1] + "…" if len(summary) > MAX_SUMMARY else summary,
        "source": SOURCE,
        "severity": SEVERITY[kind.severity] if kind else "error",
        "timestamp": now.isoformat(),
        "component": str(anomaly.get("kind")),
        "custom_details": details,
    }
    return event
