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


def request_items(body: bytes, content_type: str | None) -> list[Any]:
    """The request's items, unchecked. Raises Rejected for a request that is wrong as a whole:
    size, content type, JSON shape."""
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
    return items


def _state_matches(item: Mapping[str, Any], expected: bytes) -> bool:
    state = item.get("clientState")
    return isinstance(state, str) and hmac.compare_digest(state.encode(), expected)


def _accepted(
    item: Any, expected: bytes, known_subscriptions: Collection[str], tenant_id: str | None
) -> Notification | None:
    """The item as a notification, or None when it is refused: the client state (constant-
    time), the subscription, the tenant, the event and the resource are each checked."""
    if not isinstance(item, dict) or not _state_matches(item, expected):
        return None
    sub_id = _text(item, "subscriptionId", 64)
    if not sub_id or not _GUID.match(sub_id) or sub_id.lower() not in known_subscriptions:
        return None
    tenant = claimed_tenant(item)
    if tenant_id and tenant != tenant_id:
        return None
    event = _text(item, "lifecycleEvent", 64)
    if event is not None and event not in LIFECYCLE_EVENTS:
        return None
    change = _text(item, "changeType", 64) or ""
    group = None
    resource = _text(item, "resource", 512)
    match = _GROUP_RESOURCE.match(resource or "")
    if match:
        group = match.group(1).lower()
    elif event is None:
        return None  # a change notification must name one of our groups
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
    return Notification(digest, sub_id.lower(), group, change, event, tenant)


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
    items = request_items(body, content_type)
    expected = client_state.encode()
    accepted: dict[str, Notification] = {}
    refused = 0
    for item in items:
        notification = _accepted(item, expected, known_subscriptions, tenant_id)
        if notification is None:
            refused += 1
        else:
            accepted[notification.id] = notification
    if not accepted:
        raise Rejected(403, "no acceptable notification")
    return list(accepted.values()), refused


# A registry (many tenants): each item is routed by its tenantId. changenotification.md:
# "tenantId: The unique identifier of the tenant from which the change notification
# originated. Required." Lifecycle notifications carry it too
# (change-notifications-lifecycle-events.md), so they route the same way.


def claimed_tenant(item: Any) -> str | None:
    """The tenant an item names, lower-cased; None when it names none."""
    if not isinstance(item, dict):
        return None
    tenant = _text(item, "tenantId", 64)
    return tenant.lower() if tenant else None


# Compared against when an item names no registered tenant, so a refusal takes the time of a
# comparison whatever the item names.
_NO_STATE = b"\x00" * 43


def authentic_tenants(items: list[Any], client_states: Mapping[str, str]) -> set[str]:
    """The registered tenants named by at least one item that carries that tenant's client
    state (constant-time): the only tenants whose data the request may touch."""
    out: set[str] = set()
    for item in items:
        tenant = claimed_tenant(item)
        expected = client_states.get(tenant or "")
        matches = isinstance(item, dict) and _state_matches(
            item, expected.encode() if expected else _NO_STATE
        )
        if matches and tenant is not None and expected:
            out.add(tenant)
    return out


def route_notifications(
    items: list[Any],
    client_states: Mapping[str, str],
    known_subscriptions: Mapping[str, Collection[str]],
) -> tuple[dict[str, list[Notification]], int]:
    """Each registered tenant's accepted notifications and the number of items refused.
    ``client_states``: tenant id -> the client state its subscriptions carry;
    ``known_subscriptions``: tenant id -> its subscription ids. An item is accepted only for
    the tenant it names, with that tenant's client state and one of its subscriptions: an item
    naming an unregistered tenant, or carrying another tenant's state, is refused. Raises
    Rejected(403) when nothing is acceptable, as the single-tenant webhook does."""
    accepted: dict[str, dict[str, Notification]] = {}
    refused = 0
    for item in items:
        tenant = claimed_tenant(item)
        expected = client_states.get(tenant or "")
        notification = None
        if tenant is not None and expected:
            known = known_subscriptions.get(tenant, ())
            notification = _accepted(item, expected.encode(), known, tenant)
        else:
            _state_matches(item if isinstance(item, dict) else {}, _NO_STATE)
        if notification is None:
            refused += 1
        else:
            accepted.setdefault(tenant or "", {})[notification.id] = notification
    if not accepted:
        raise Rejected(403, "no acceptable notification")
    return {tenant: list(found.values()) for tenant, found in accepted.items()}, refused
