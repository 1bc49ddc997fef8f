"""The generic JSON webhook: one signed event per outbox row (schema in docs/alerting.md).

The signature is HMAC-SHA256, keyed with ETG_ALERT_WEBHOOK_SECRET, over ``"{timestamp}.{body}"``
(the timestamp as sent in ``X-Etg-Timestamp``, the body byte for byte): binding the time into
the signature lets a receiver refuse a captured request replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitors.alerts.cards import TenantLabel
from monitors.models import JSON

SCHEMA = "etg-monitor.alert.v1"
TIMESTAMP_HEADER = "X-Etg-Timestamp"
SIGNATURE_HEADER = "X-Etg-Signature"
EVENTS = {
    "opened": "opened",
    "reopened": "opened",
    "unsuppressed": "opened",
    "resolved": "resolved",
    "reminder": "reminder",
    "summary": "digest",
}


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: str = field(repr=False)


def webhook_event(
    item_id: str,
    change: str,
    payload: Mapping[str, JSON],
    now: datetime,
    tenant: TenantLabel | None = None,
) -> dict[str, JSON]:
    """Schema v1. ``id`` is the outbox row's id: the same on every retry, so a receiver that
    saw it already drops the repeat. ``tenant``: the registry tenant the event is of, added as
    ``tenant`` (a field new within v1); None for a single-tenant install, whose events are
    unchanged."""
    event = EVENTS.get(change, "opened")
    body: dict[str, JSON] = {
        "schema": SCHEMA,
        "event": event,
        "id": item_id,
        "change": change,
        "sent_at": now.isoformat(),
        "anomaly": None if event == "digest" else dict(payload),
    }
    if event == "digest":
        body["summary"] = dict(payload)
    if tenant is not None:
        body["tenant"] = {"id": tenant.tenant_id, "name": tenant.display_name}
    return body


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed(
    target: WebhookTarget, event: Mapping[str, JSON], now: datetime
) -> tuple[bytes, dict[str, str]]:
    """The body bytes and headers of one post: what is signed is exactly what is sent."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(target.secret, timestamp, body),
    }
    return body, headers
