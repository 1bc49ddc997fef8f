"""Graph change notifications on groups: subscriptions, the handshake, deliveries, lifecycle.

``SubscriptionService`` serves ``/subscriptions`` (create, list, get, renew, delete,
reauthorize) through the Graph dispatcher, so fault rules, statistics and ``$batch``
apply as for any other route. It is also the tenant state's change sink: membership
changes of watched groups arrive here as they become due, ``Scenario.delta_delay_s``
after they take effect (the clock passes them, or a mutation adds one already due; groups
average under 2 minutes in microsoft-graph-docs-contrib
concepts/includes/change-notifications-delivery-latency.md) and are POSTed to the subscribers'
``notificationUrl`` from the server's event loop, never from the thread that moved
the clock or changed the tenant. What is due to one URL by the time the loop posts
goes out as one POST (change and lifecycle items of any subscriptions); ``hold`` keeps
items back so a test decides what one POST holds. Every delivery attempt is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from devtools.simtenant.graph_api import (
    BOTH,
    GraphApi,
    GraphRequest,
    GraphResponse,
    _key_segment,
    _param,
)
from devtools.simtenant.odata import GraphError, parse_odata_time
from devtools.simtenant.scenario import format_time
from devtools.simtenant.state import MembershipRecord, TenantState

MAX_EXPIRATION_MINUTES = 41_760  # directory resources (groups): just under 29 days
MAX_SUBSCRIPTIONS = 100  # per application per tenant
MAX_CLIENT_STATE = 128
MAX_ITEMS_PER_POST = 100
VALIDATION_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 3.0
DELIVERY_ATTEMPTS = 4
RETRY_BACKOFF_S = 0.05  # doubled after each failed attempt (Graph's own backoff is minutes)
LIFECYCLE_EVENTS: tuple[str, ...] = ("reauthorizationRequired", "subscriptionRemoved", "missed")
# For groups only reauthorizationRequired exists ("Supported resources"):
# microsoft-graph-docs-contrib concepts/change-notifications-lifecycle-events.md
GROUP_LIFECYCLE_EVENTS: tuple[str, ...] = ("reauthorizationRequired",)
TLS_VERSIONS = frozenset({"v1_0", "v1_1", "v1_2", "v1_3"})
KNOWN_CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
SUPPORTED_CHANGE_TYPES = frozenset({"updated", "deleted"})

VALIDATION_FAILED = (
    "Subscription validation request failed. "
    "Notification endpoint must respond with 200 OK to validation request."
)
UNREADABLE_PAYLOAD = (
    "Could not process subscription creation payload. Are all property names spelled and "
    "camelCased properly? Also are the dateTimeOffest properties in a valid internet "
    "date-time format?"
)
# Properties of a subscription a client may send on creation (read-only ones included:
# serializers echo them, usually as null).
CREATE_FIELDS = frozenset(
    {
        "@odata.type",
        "id",
        "resource",
        "changeType",
        "notificationUrl",
        "lifecycleNotificationUrl",
        "expirationDateTime",
        "clientState",
        "applicationId",
        "creatorId",
        "includeResourceData",
        "latestSupportedTlsVersion",
        "encryptionCertificate",
        "encryptionCertificateId",
        "notificationQueryOptions",
        "notificationUrlAppId",
    }
)
ID_NAMESPACE = uuid.UUID("9d3b6f0e-2c1a-4f5e-8b7d-3a6c9e1f2b40")

_RESOURCE = re.compile(
    r"^/?groups(?:/(?P<id>[^/()']+)|\('(?P<id_q>[^']+)'\))(?P<members>/members)?/?$",
    re.IGNORECASE,
)
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _invalid(message: str) -> GraphError:
    return GraphError(400, message, "InvalidRequest")


def _extension_error(status: int, operation: str, reason: str) -> GraphError:
    """The wrapped form the notification service uses for errors of the resource behind it."""
    names = {400: "BadRequest", 403: "Forbidden", 404: "NotFound"}
    return GraphError(
        status,
        f"Operation: {operation}; Exception: [Status Code: {names.get(status, status)}; "
        f"Reason: {reason}]",
        "ExtensionError",
    )


def _not_found(subscription_id: str) -> GraphError:
    return GraphError(
        404, f"The subscription '{subscription_id}' was not found.", "ResourceNotFound"
    )


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def strip_query(url: str) -> str:
    """``url`` without its query string or fragment (they may carry secrets such as ``code``)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _with_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    pair = f"{name}={quote(value, safe='')}"
    query = f"{parts.query}&{pair}" if parts.query else pair
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _entity_time(value: datetime) -> str:
    """Subscription entity times: seven fractional digits and ``Z`` (as Graph answers)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0Z"


def _notification_time(value: datetime) -> str:
    """Times inside notifications: seven fractional digits and ``+00:00``."""
    return _entity_time(value)[:-1] + "+00:00"


@dataclass(slots=True)
class Subscription:
    id: str
    resource: str
    group_id: str
    change_type: str  # as the client wrote it
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    created_ts: float
    application_id: str
    creator_id: str
    tls_version: str
    reauthorization_required: bool = False

    @property
    def expiration_ts(self) -> float:
        return self.expiration.timestamp()

    def live_at(self, ts: float) -> bool:
        return self.created_ts <= ts < self.expiration_ts

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _entity_time(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


@dataclass(slots=True)
class Due:
    """One change or lifecycle notification waiting for its POST."""

    kind: str  # "notification" or "lifecycle"
    url: str
    subscription_id: str
    item: dict[str, Any]


@dataclass(slots=True)
class Delivery:
    """One POST: its items were due to the same URL; a retry sends the same body again."""

    url: str
    items: list[Due]
    body: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.body = {"value": [due.item for due in self.items]}

    @property
    def kind(self) -> str:
        kinds = {due.kind for due in self.items}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def subscription_ids(self) -> list[str]:
        return list(dict.fromkeys(due.subscription_id for due in self.items))


@dataclass(slots=True)
class _CreateSpec:
    resource: str
    group_id: str
    change_type: str
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    tls_version: str


@dataclass(slots=True)
class _Counters:
    pending: int = 0  # POSTs in flight (retries included) plus URLs with items due
    closed: bool = False
    held: bool = False
    flush_scheduled: bool = False
    due: dict[str, list[Due]] = field(default_factory=dict)  # by URL, oldest first


class SubscriptionService:
    """Subscriptions on groups and the delivery of their notifications.

    Thread-safe: Graph handlers run on the server loop, the change-sink methods in
    whatever thread moved the clock or mutated the tenant, the inspection methods in
    the test thread. Deliveries only ever run on the loop given to ``start``.
    """

    def __init__(
        self,
        state: TenantState,
        *,
        validation_timeout: float = VALIDATION_TIMEOUT_S,
        delivery_timeout: float = DELIVERY_TIMEOUT_S,
        delivery_attempts: int = DELIVERY_ATTEMPTS,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        application_id: str | None = None,
    ) -> None:
        if delivery_attempts < 1:
            raise ValueError("delivery_attempts must be >= 1")
        self.state = state
        self.validation_timeout = float(validation_timeout)
        self.delivery_timeout = float(delivery_timeout)
        self.delivery_attempts = int(delivery_attempts)
        self.retry_backoff_s = float(retry_backoff_s)
        self.max_subscriptions = int(max_subscriptions)
        # Who "the app" is: the tenant has one caller, so a stable made-up identity.
        self.application_id = application_id or str(
            uuid.uuid5(ID_NAMESPACE, f"{state.tenant_id}:application")
        )
        self.creator_id = str(uuid.uuid5(ID_NAMESPACE, f"{self.application_id}:creator"))
        self._lock = threading.Lock()  # subscriptions
        self._subs: dict[str, Subscription] = {}
        self._watched: frozenset[str] = frozenset()
        self._sequence = itertools.count(1)
        self._cond = threading.Condition()  # deliveries, records
        self._counters = _Counters()
        self._sent: list[dict[str, Any]] = []
        self._validations: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ routes

    def register(self, api: GraphApi) -> None:
        key = r"/subscriptions" + _key_segment("id")
        api.add_route("subscriptions.list", "GET", BOTH, r"/subscriptions", self.list_all)
        api.add_route("subscriptions.create", "POST", BOTH, r"/subscriptions", self.create)
        api.add_route("subscriptions.get", "GET", BOTH, key, self.get)
        api.add_route("subscriptions.update", "PATCH", BOTH, key, self.update)
        api.add_route("subscriptions.delete", "DELETE", BOTH, key, self.delete)
        api.add_route(
            "subscriptions.reauthorize",
            "POST",
            BOTH,
            key + r"/(?:microsoft\.graph\.)?reauthorize",
            self.reauthorize,
        )

    # ------------------------------------------------------------------ lifecycle of the service

    async def start(self) -> None:
        """Bind to the running (server) loop; items that became due before now go out."""
        loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession()
        with self._cond:
            self._loop = loop
            self._counters.closed = False
        self._schedule_flush()

    async def close(self) -> None:
        """Cancel deliveries in flight (they count as done) and close the HTTP client."""
        with self._cond:
            self._loop = None
            self._counters.closed = True
            self._counters.pending = 0
            self._counters.due = {}
            self._cond.notify_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ Graph handlers

    def _now(self) -> datetime:
        return self.state.now()

    def _purge(self, now_ts: float) -> None:
        with self._lock:
            gone = [s.id for s in self._subs.values() if s.expiration_ts <= now_ts]
            for subscription_id in gone:
                del self._subs[subscription_id]
            if gone:
                self._rewatch()

    def _rewatch(self) -> None:
        self._watched = frozenset(s.group_id for s in self._subs.values())

    def _live(self, subscription_id: str) -> Subscription:
        now_ts = self.state.now_ts()
        self._purge(now_ts)
        with self._lock:
            sub = self._subs.get(subscription_id.lower())
        if sub is None:
            raise _not_found(subscription_id)
        return sub

    def _entity(self, req: GraphRequest, sub: Subscription) -> dict[str, Any]:
        body: dict[str, Any] = {"@odata.context": req.context("subscriptions/$entity")}
        body.update(sub.to_json())
        return body

    async def create(self, req: GraphRequest) -> GraphResponse:
        spec = self._parse_create(req.body)
        self._purge(self.state.now_ts())
        self._check_quota("Create")
        await self._validate_endpoint(spec.notification_url)
        if spec.lifecycle_url is not None:
            await self._validate_endpoint(spec.lifecycle_url)
        with self._lock:
            if len(self._subs) >= self.max_subscriptions:
                raise self._quota_error("Create")
            sub = Subscription(
                id=str(uuid.uuid4()),
                resource=spec.resource,
                group_id=spec.group_id,
                change_type=spec.change_type,
                change_types=spec.change_types,
                notification_url=spec.notification_url,
                lifecycle_url=spec.lifecycle_url,
                client_state=spec.client_state,
                expiration=spec.expiration,
                created_ts=self.state.now_ts(),
                application_id=self.application_id,
                creator_id=self.creator_id,
                tls_version=spec.tls_version,
            )
            self._subs[sub.id] = sub
            self._rewatch()
        return GraphResponse(status=201, body=self._entity(req, sub))

    def list_all(self, req: GraphRequest) -> GraphResponse:
        self._purge(self.state.now_ts())
        with self._lock:
            value = [s.to_json() for s in self._subs.values()]
        return GraphResponse(body={"@odata.context": req.context("subscriptions"), "value": value})

    def get(self, req: GraphRequest) -> GraphResponse:
        return GraphResponse(body=self._entity(req, self._live(_param(req, "id"))))

    def update(self, req: GraphRequest) -> GraphResponse:
        sub = self._live(_param(req, "id"))
        body = req.body
        if not isinstance(body, dict) or "expirationDateTime" not in body:
            raise _invalid("expirationDateTime is required to renew a subscription.")
        others = sorted(
            k
            for k, v in body.items()
            if k not in ("expirationDateTime", "@odata.type") and v is not None
        )
        if others:
            raise _invalid(
                "Only expirationDateTime can be updated on this tenant; "
                f"unexpected: {', '.join(others)}."
            )
        expiration = self._parse_expiration(body["expirationDateTime"])
        with self._lock:
            if self._subs.get(sub.id) is not sub:
                raise _not_found(sub.id)
            sub.expiration = expiration
            sub.reauthorization_required = False  # renewing also reauthorizes
        return GraphResponse(body=self._entity(req, sub))

    def delete(self, req: GraphRequest) -> GraphResponse:
        sub = self._live(_param(req, "id"))
        with self._lock:
            self._subs.pop(sub.id, None)
            self._rewatch()
        return GraphResponse(status=204)

    def reauthorize(self, req: GraphRequest) -> GraphResponse:
        sub = self._live(_param(req, "id"))
        with self._lock:
            sub.reauthorization_required = False
        return GraphResponse(status=204)

    # ------------------------------------------------------------------ validation

    def _quota_error(self, operation: str) -> GraphError:
        return _extension_error(
            403,
            operation,
            f"The number of subscriptions for this application in this tenant has reached "
            f"the limit of {self.max_subscriptions}.",
        )

    def _check_quota(self, operation: str) -> None:
        with self._lock:
            if len(self._subs) >= self.max_subscriptions:
                raise self._quota_error(operation)

    def _parse_expiration(self, value: Any) -> datetime:
        if not isinstance(value, str) or not value.strip():
            raise _invalid(UNREADABLE_PAYLOAD)
        try:
            expiration = parse_odata_time(value)
        except ValueError:
            raise _invalid(UNREADABLE_PAYLOAD) from None
        now = self._now()
        if expiration <= now:
            raise _invalid(
                f"Subscription expiration date time '{value}' is in the past (now is "
                f"{_entity_time(now)})."
            )
        if expiration - now > timedelta(minutes=MAX_EXPIRATION_MINUTES):
            raise GraphError(
                400,
                f"Subscription expiration can only be {MAX_EXPIRATION_MINUTES} minutes in the "
                "future.",
                "ExtensionError",
            )
        return expiration

    @staticmethod
    def _check_url(value: Any, name: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"{name} is required and must be a string.")
        parts = urlsplit(value.strip())
        scheme = parts.scheme.lower()
        try:
            host = parts.hostname
        except ValueError:
            host = None
        if not host or not (scheme == "https" or (scheme == "http" and is_loopback(host))):
            raise _invalid(
                f"Invalid {name}: it must be an absolute https URL "
                "(this simulator also accepts http to a loopback host)."
            )
        return value.strip()

    def _parse_create(self, body: Any) -> _CreateSpec:
        if not isinstance(body, dict):
            raise _invalid(UNREADABLE_PAYLOAD)
        if set(body) - CREATE_FIELDS:
            raise _invalid(UNREADABLE_PAYLOAD)
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if body.get(name) is None:
                raise _invalid(f"{name} is a required property for subscription creation.")
        resource = body["resource"]
        if not isinstance(resource, str):
            raise _invalid(UNREADABLE_PAYLOAD)
        match = _RESOURCE.match(resource.strip())
        if match is None:
            raise _extension_error(
                400,
                "Create",
                f"Unsupported resource '{resource}': this tenant supports subscriptions to "
                "groups/{id} and groups/{id}/members.",
            )
        group_id = (match.group("id") or match.group("id_q")).lower()
        if not _GUID.match(group_id):
            raise _extension_error(400, "Create", f"Invalid object identifier '{group_id}'.")
        group = self.state.get_group(group_id)
        if group is None or group.deleted:
            raise _extension_error(
                404,
                "Create",
                f"Resource '{group_id}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        change_type = body["changeType"]
        if not isinstance(change_type, str):
            raise _invalid(UNREADABLE_PAYLOAD)
        kinds = [k.strip() for k in change_type.split(",")]
        if not all(kinds) or any(k not in KNOWN_CHANGE_TYPES for k in kinds):
            raise _invalid(
                f"Invalid changeType '{change_type}': use created, updated and/or deleted, "
                "separated by commas."
            )
        unsupported = sorted(set(kinds) - SUPPORTED_CHANGE_TYPES)
        if unsupported:
            raise _extension_error(
                400,
                "Create",
                f"changeType '{unsupported[0]}' is not supported for resource '{resource}'.",
            )
        notification_url = self._check_url(body["notificationUrl"], "notificationUrl")
        lifecycle_url = None
        if body.get("lifecycleNotificationUrl") is not None:
            lifecycle_url = self._check_url(
                body["lifecycleNotificationUrl"], "lifecycleNotificationUrl"
            )
        client_state = body.get("clientState")
        if client_state is not None:
            if not isinstance(client_state, str):
                raise _invalid(UNREADABLE_PAYLOAD)
            if len(client_state) > MAX_CLIENT_STATE:
                raise _invalid(
                    f"clientState is {len(client_state)} characters; the maximum is "
                    f"{MAX_CLIENT_STATE}."
                )
        if body.get("includeResourceData") is True:
            raise _extension_error(
                400,
                "Create",
                f"includeResourceData is not supported for resource '{resource}'.",
            )
        tls = body.get("latestSupportedTlsVersion") or "v1_2"
        if tls not in TLS_VERSIONS:
            raise _invalid(f"Invalid latestSupportedTlsVersion '{tls}'.")
        expiration = self._parse_expiration(body["expirationDateTime"])
        return _CreateSpec(
            resource=resource,
            group_id=group_id,
            change_type=change_type,
            change_types=frozenset(kinds),
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=client_state,
            expiration=expiration,
            tls_version=tls,
        )

    async def _validate_endpoint(self, url: str) -> None:
        """Graph's handshake: POST ``?validationToken=...``; expect the token back as text."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        target = URL(_with_query(url, "validationToken", token), encoded=True)
        status: int | None = None
        error: str | None = None
        ok = False
        session = self._session
        if session is None:
            raise RuntimeError("the subscription service is not started")
        try:
            async with session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=self.validation_timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                payload = await response.read()
                if status != 200:
                    error = f"status {status}"
                elif response.content_type != "text/plain":
                    error = f"Content-Type {response.content_type!r}"
                elif payload != token.encode():
                    error = "body is not the validation token"
                else:
                    ok = True
        except TimeoutError:
            error = f"no answer within {self.validation_timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._validations.append(
                {
                    "url": strip_query(url),
                    "status": status,
                    "ok": ok,
                    "error": error,
                    "at": format_time(self._now()),
                }
            )
        if not ok:
            raise GraphError(400, VALIDATION_FAILED, "InvalidRequest")

    # ------------------------------------------------------------------ change sink

    @property
    def watched_groups(self) -> frozenset[str]:
        return self._watched

    def _subs_by_group(self) -> dict[str, list[Subscription]]:
        by_group: dict[str, list[Subscription]] = {}
        for sub in self._subs.values():
            by_group.setdefault(sub.group_id, []).append(sub)
        return by_group

    def _resource_data(self, group_id: str) -> dict[str, Any]:
        return {
            "@odata.type": "#Microsoft.Graph.Group",
            "@odata.id": f"Groups/{group_id}",
            "id": group_id,
            "organizationId": self.state.tenant_id,
        }

    def _item(
        self, sub: Subscription, change_type: str, members: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        data = self._resource_data(sub.group_id)
        data["sequenceNumber"] = next(self._sequence)
        if members is not None:
            data["members@delta"] = members
        return {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _notification_time(sub.expiration),
            "changeType": change_type,
            "resource": f"Groups/{sub.group_id}",
            "resourceData": data,
            "clientState": sub.client_state,
            "tenantId": self.state.tenant_id,
        }

    def _change(
        self, sub: Subscription, change_type: str, members: list[dict[str, Any]] | None
    ) -> Due:
        item = self._item(sub, change_type, members)
        return Due("notification", sub.notification_url, sub.id, item)

    def membership_changed(self, changes: list[tuple[MembershipRecord, float]]) -> None:
        due: list[Due] = []
        with self._lock:
            by_group = self._subs_by_group()
            for record, at in changes:
                for sub in by_group.get(record.group_id, ()):
                    if "updated" not in sub.change_types or not sub.live_at(at):
                        continue
                    member: dict[str, Any] = {"id": record.member_id}
                    if record.op == "remove":
                        member["@removed"] = "deleted"
                    due.append(self._change(sub, "updated", [member]))
        self._enqueue(due)

    def group_deleted(self, group_id: str, ts: float) -> None:
        with self._lock:
            due = [
                self._change(sub, "deleted", None)
                for sub in self._subs_by_group().get(group_id, ())
                if "deleted" in sub.change_types and sub.live_at(ts)
            ]
        self._enqueue(due)

    def time_moved(self, now_ts: float) -> None:
        self._purge(now_ts)

    # ------------------------------------------------------------------ lifecycle events

    def _lifecycle_due(self, sub: Subscription, event: str) -> list[Due]:
        # microsoft-graph-docs-contrib concepts/change-notifications-lifecycle-events.md
        # (a subscription without lifecycleNotificationUrl receives no lifecycle notifications)
        if sub.lifecycle_url is None:
            return []
        # microsoft-graph-docs-contrib concepts/change-notifications-lifecycle-events.md
        # ("Structure of a lifecycle notification": no resource, no resourceData)
        item = {
            "lifecycleEvent": event,
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _notification_time(sub.expiration),
            "tenantId": self.state.tenant_id,
            "clientState": sub.client_state,
        }
        # Sent to lifecycleNotificationUrl, which may equal notificationUrl:
        # microsoft-graph-docs-contrib concepts/change-notifications-lifecycle-events.md
        return [Due("lifecycle", sub.lifecycle_url, sub.id, item)]

    def send_lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle notification for a live subscription (KeyError when unknown).

        Only ``reauthorizationRequired`` exists for groups (ValueError for the others). It
        marks the subscription until it is reauthorized or renewed, and is sent only when the
        subscription has a ``lifecycleNotificationUrl``.
        """
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(
                f"unknown lifecycle event {event!r}; expected one of {', '.join(LIFECYCLE_EVENTS)}"
            )
        # microsoft-graph-docs-contrib concepts/change-notifications-lifecycle-events.md
        # ("Supported resources": subscriptionRemoved and missed are Outlook and Teams only)
        if event not in GROUP_LIFECYCLE_EVENTS:
            raise ValueError(
                f"Graph sends no {event!r} lifecycle notification for group subscriptions; "
                f"only {', '.join(GROUP_LIFECYCLE_EVENTS)}"
            )
        self._purge(self.state.now_ts())
        with self._lock:
            sub = self._subs.get(subscription_id.lower())
            if sub is None:
                raise KeyError(f"no live subscription {subscription_id!r}")
            sub.reauthorization_required = True
            due = self._lifecycle_due(sub, event)
        self._enqueue(due)

    def drop_subscription(self, subscription_id: str) -> None:
        """Graph removes the subscription on its own (KeyError when it is not live).

        Nothing is sent: ``subscriptionRemoved`` is not a lifecycle event of group
        subscriptions, so the owner learns it only by listing its subscriptions.
        """
        # subscriptionRemoved is Outlook and Teams only ("Supported resources"):
        # microsoft-graph-docs-contrib concepts/change-notifications-lifecycle-events.md
        self._purge(self.state.now_ts())
        with self._lock:
            sub = self._subs.pop(subscription_id.lower(), None)
            if sub is None:
                raise KeyError(f"no live subscription {subscription_id!r}")
            self._rewatch()

    # ------------------------------------------------------------------ inspection

    def subscriptions(self) -> list[dict[str, Any]]:
        """Live subscriptions as Graph shows them, plus ``reauthorizationRequired``."""
        self._purge(self.state.now_ts())
        with self._lock:
            return [
                {**s.to_json(), "reauthorizationRequired": s.reauthorization_required}
                for s in self._subs.values()
            ]

    def notifications_sent(self) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first (deep copies: safe to change)."""
        with self._cond:
            return copy.deepcopy(self._sent)

    def validations(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(item) for item in self._validations]

    def clear_notifications(self) -> None:
        with self._cond:
            self._sent.clear()
            self._validations.clear()

    def pending_deliveries(self) -> int:
        with self._cond:
            return self._counters.pending

    def wait_for_deliveries(self, timeout: float = 5.0) -> None:
        """Block until every queued delivery finished (all its attempts); TimeoutError if not."""
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                raise RuntimeError("wait_for_deliveries would block the server loop")
        with self._cond:
            if not self._cond.wait_for(lambda: self._counters.pending == 0, timeout):
                raise TimeoutError(
                    f"{self._counters.pending} notification deliveries still pending "
                    f"after {timeout:g} s"
                )

    # ------------------------------------------------------------------ delivery

    def _enqueue(self, due: list[Due]) -> None:
        if not due:
            return
        with self._cond:
            if self._counters.closed:
                return
            for item in due:
                waiting = self._counters.due.setdefault(item.url, [])
                if not waiting:
                    self._counters.pending += 1
                waiting.append(item)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        with self._cond:
            counters = self._counters
            loop = self._loop
            if loop is None or counters.held or counters.flush_scheduled or not counters.due:
                return
            counters.flush_scheduled = True
        try:
            loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop closed meanwhile
            with self._cond:
                self._counters.flush_scheduled = False

    def _flush(self) -> None:
        """On the loop: everything due to one URL by now leaves as one POST (or a few, when
        there are more items than one POST carries)."""
        # Several subscriptions' items, change and lifecycle, share a POST to one URL:
        # microsoft-graph-docs-contrib concepts/change-notifications-delivery-webhooks.md
        # microsoft-graph-docs-contrib api-reference/v1.0/resources/changenotificationcollection.md
        deliveries: list[Delivery] = []
        with self._cond:
            counters = self._counters
            counters.flush_scheduled = False
            if counters.held or counters.closed:
                return
            due, counters.due = counters.due, {}
            for url, items in due.items():
                chunks = [
                    items[i : i + MAX_ITEMS_PER_POST]
                    for i in range(0, len(items), MAX_ITEMS_PER_POST)
                ]
                counters.pending += len(chunks) - 1  # the URL counted once already
                deliveries += [Delivery(url, chunk) for chunk in chunks]
        for delivery in deliveries:
            self._spawn(delivery)

    def hold(self) -> None:
        """Keep due items back (they stay pending) until ``release``: what becomes due
        meanwhile is then posted together, one POST per URL."""
        with self._cond:
            self._counters.held = True

    def release(self) -> None:
        with self._cond:
            self._counters.held = False
        self._schedule_flush()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    def _spawn(self, delivery: Delivery) -> None:
        if self._session is None:
            self._done()
            return
        task = asyncio.get_running_loop().create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _done(self) -> None:
        with self._cond:
            if self._counters.pending > 0:
                self._counters.pending -= 1
            if self._counters.pending == 0:
                self._cond.notify_all()

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            payload = json.dumps(delivery.body).encode()
            for attempt in range(1, self.delivery_attempts + 1):
                status, error = await self._post(delivery.url, payload)
                self._record(delivery, attempt, status, error)
                if status is not None and 200 <= status < 300:
                    return
                if attempt < self.delivery_attempts:
                    await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
        finally:
            self._done()

    async def _post(self, url: str, payload: bytes) -> tuple[int | None, str | None]:
        session = self._session
        if session is None:
            return None, "service stopped"
        try:
            async with session.post(
                URL(url, encoded=True),
                data=payload,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=self.delivery_timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                return response.status, None
        except TimeoutError:
            return None, f"no answer within {self.delivery_timeout:g} s"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _record(
        self, delivery: Delivery, attempt: int, status: int | None, error: str | None
    ) -> None:
        with self._cond:
            self._sent.append(
                {
                    "kind": delivery.kind,
                    "subscription_ids": delivery.subscription_ids,
                    "url": strip_query(delivery.url),
                    "body": delivery.body,
                    "status": status,
                    "error": error,
                    "attempt": attempt,
                    "at": format_time(self._now()),
                }
            )
