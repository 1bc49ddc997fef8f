"""What the notification webhook accepts. Pure: request parts in, a decision out.

The endpoint is on the internet. Everything is checked before anything is stored: size,
content type, JSON shape, then per item the client state (constant-time), the subscription and
the tenant. Nothing from the request is echoed except a valid validation token, which Graph
requires back verbatim.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 256 * 1024  # Graph batches notifications; real bodies are a few KB
MAX_ITEMS = 1000
MAX_TOKEN_CHARS = 1024
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_GROUP_RESOURCE = re.compile(r"^/?groups/([0-9a-fA-F-]{36})(?:/members)?$", re.IGNORECASE)
LIFECYCLE_EVENTS = {"reauthorizationRequired", "subscriptionRemoved", "missed"}


class Rejected(Exception):
    """A request the webhook refuses; ``status`` and a short reason go back to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Notification:
    id: str  # content hash: a Graph retry of the same item maps to the same record
    subscription_id: str
    group_id: str | None
    change_type: str
    lifecycle_event: str | None
    tenant_id: str | None


def validation_token(params: Mapping[str, str]) -> str | None:
    """The handshake token to echo, or None when this is not a handshake. Rejects junk."""
    if "validationToken" not in params:
        return None
    token = params["validationToken"]
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isprintable():
        raise Rejected(400, "invalid validation token")
    return token


def _text(item: Mapping[str, Any], key: str, limit: int = 256) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def parse_notifications(
    body: bytes,
    content_type: str | None,
    *,
    client_state: str | None,
    known_subscriptions: Collection[str],
    tenant_id: str | None,
) -> tuple[list[Notification], int]:
    """Accepted notifications and the number of items refused. Raises Rejected for a request
    that is wrong as a whole."""
    if not client_state:
        raise Rejected(503, "notifications are not configured")
    if len(body) > MAX_BODY_BYTES:
        raise Rejected(413, "body too large")
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != "application/json":
        raise Rejected(415, "expected application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise Rejected(400, "malformed JSON") from None
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise Rejected(400, "expected a non-empty value list")
    if len(items) > MAX_ITEMS:
        raise Rejected(413, "too many notifications in one request")
    expected = client_state.encode()
    accepted: dict[str, Notification] = {}
    refused = 0
    for item in items:
        if not isinstance(item, dict):
            refused += 1
            continue
        state = item.get("clientState")
        if not isinstance(state, str) or not hmac.compare_digest(state.encode(), expected):
            refused += 1
            continue
        sub_id = _text(item, "subscriptionId", 64)
        if not sub_id or not _GUID.match(sub_id) or sub_id.lower() not in known_subscriptions:
            refused += 1
            continue
        tenant = _text(item, "tenantId", 64)
        if tenant_id and (tenant or "").lower() != tenant_id:
            refused += 1
            continue
        event = _text(item, "lifecycleEvent", 64)
        if event is not None and event not in LIFECYCLE_EVENTS:
            refused += 1
            continue
        change = _text(item, "changeType", 64) or ""
        group = None
        resource = _text(item, "resource", 512)
        match = _GROUP_RESOURCE.match(resource or "")
        if match:
            group = match.group(1).lower()
        elif event is None:
            refused += 1  # a change notification must name one of our groups
            continue
        canonical = json.dumps(
            {
                "s": sub_id.lower(),
                "r": resource,
                "c": change,
                "e": event,
                "d": item.get("resourceData"),
                "n": item.get("subscriptionExpirationDateTime"),
            },
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        accepted[digest] = Notification(digest, sub_id.lower(), group, change, event, tenant)
    if not accepted:
        raise Rejected(403, "no acceptable notification")
    return list(accepted.values()), refused
