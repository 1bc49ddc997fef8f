"""Entra directory audit: when devices were added to and removed from ETGs (v1.0)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from monitors.aio import between_turns
from monitors.graph import permissions
from monitors.graph.batch import BatchItem, send_batch
from monitors.graph.client import GraphClient
from monitors.graph.errors import GRAPH_ERRORS, MalformedResponse, graph_call, object_items
from monitors.graph.odata import odata_filter
from monitors.graph.reports import parse_report_time
from monitors.models import (
    PROVISIONING_CLIENT_APP_ID,
    PROVISIONING_CLIENT_NAMES,
    MembershipEvent,
    MembershipOp,
    Unverified,
    is_guid,
)

ADD = "Add member to group"
REMOVE = "Remove member from group"
_PC_NAMES = {n.lower() for n in PROVISIONING_CLIENT_NAMES}


def _unquote(value: Any) -> str | None:
    """modifiedProperties values are JSON-encoded strings ("\\"<guid>\\"")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        decoded = value
    if isinstance(decoded, list) and decoded:
        decoded = decoded[0]
    return decoded.strip().strip('"').lower() if isinstance(decoded, str) else None


def _field(item: Mapping[str, Any], *names: str) -> Any:
    """A property under any of ``names``, whatever its letter case: the reference's own
    examples print ``Type`` for ``type`` and ``targetResource`` for ``targetResources``."""
    for name in names:
        if name in item:
            return item[name]
    wanted = {n.lower() for n in names}
    return next((v for k, v in item.items() if isinstance(k, str) and k.lower() in wanted), None)


def parse_audit_event(item: Mapping[str, Any]) -> MembershipEvent | None:
    """A membership event; None for another activity, a failed change or a member that is not
    a device. A record Graph could not have sent (no id, no readable time, no target list)
    raises MalformedResponse: dropping it could hide the one join that matters."""
    event_id, when = item.get("id"), item.get("activityDateTime")
    if not isinstance(event_id, str) or not event_id or not isinstance(when, str):
        raise MalformedResponse("audit record without id or activityDateTime")
    activity = item.get("activityDisplayName")
    op = (
        MembershipOp.ADD if activity == ADD else MembershipOp.REMOVE if activity == REMOVE else None
    )
    if op is None:
        return None
    if str(item.get("result") or "success").lower() not in ("success", ""):
        return None
    targets = _field(item, "targetResources", "targetResource")
    if not isinstance(targets, list):
        raise MalformedResponse("membership audit record without targetResources")
    try:
        at = parse_report_time(when)
    except ValueError as exc:
        raise MalformedResponse("audit record with an unreadable activityDateTime") from exc
    device = group = None
    for target in targets:
        if not isinstance(target, Mapping):
            continue
        kind = str(_field(target, "type") or "").lower()
        target_id = _field(target, "id")
        # An id that is not a GUID (the reference's "id-value") names no directory object.
        if not isinstance(target_id, str) or not is_guid(target_id):
            continue
        if kind == "device":
            device = target_id.lower()
            for prop in _field(target, "modifiedProperties") or ():
                if isinstance(prop, Mapping) and _field(prop, "displayName") == "Group.ObjectID":
                    value = _unquote(
                        _field(prop, "newValue")
                        if op is MembershipOp.ADD
                        else _field(prop, "oldValue")
                    )
                    if value is not None and is_guid(value):
                        group = value
        elif kind == "group" and group is None:
            group = target_id.lower()
    if device is None or group is None:
        return None
    initiated = item.get("initiatedBy")
    initiated = initiated if isinstance(initiated, Mapping) else {}
    app, user = initiated.get("app"), initiated.get("user")
    actor = None
    by_pc = False
    if isinstance(app, Mapping) and app:
        app_id = str(app.get("appId") or "").lower()
        name = str(app.get("displayName") or "")
        by_pc = app_id == PROVISIONING_CLIENT_APP_ID or name.lower() in _PC_NAMES
        actor = name or app_id or None
    elif isinstance(user, Mapping) and user:
        actor = str(user.get("userPrincipalName") or user.get("id") or "") or None
    # The group and the actor repeat over a large tenant's events (a few ETGs, one
    # provisioning client): one copy of each instead of one per event.
    return MembershipEvent(
        op,
        sys.intern(group),
        device,
        at,
        True,
        f"audit:{event_id}",
        event_id,
        sys.intern(actor) if actor else None,
        by_pc,
    )


def _listing_url(graph: GraphClient, group_id: str, since: datetime) -> str:
    return graph.v1(
        "auditLogs/directoryAudits",
        **{
            "$filter": odata_filter(
                "activityDateTime ge @since and targetResources/any(t:t/id eq @group)",
                since=since,
                group=group_id,
            ),
            "$top": "999",
        },
    )


async def _pages(
    graph: GraphClient, url: str, first: Mapping[str, Any] | None
) -> AsyncIterator[list[dict[str, Any]]]:
    if first is None:
        async for page in graph.pages(url):
            yield page
        return
    yield object_items(first.get("value"), "GET /v1.0/auditLogs/directoryAudits")
    link = first.get("@odata.nextLink")
    if isinstance(link, str) and link:
        async for page in graph.pages(link):
            yield page


@graph_call("GET /v1.0/auditLogs/directoryAudits", permissions.AUDIT_LOGS)
async def membership_events(
    graph: GraphClient,
    group_id: str,
    since: datetime,
    first_page: Mapping[str, Any] | None = None,
) -> list[MembershipEvent]:
    """Adds and removals for one group since ``since``, oldest first, unique by event id.
    ``first_page``: the listing's first page, when it was already read in a $batch."""
    events: dict[str, MembershipEvent] = {}
    async for page in _pages(graph, _listing_url(graph, group_id, since), first_page):
        async for part in between_turns(page, EVENTS_PER_TURN):
            for item in part:
                event = parse_audit_event(item)
                if event is not None and event.group_id == group_id.lower() and event.at >= since:
                    events.setdefault(event.event_id, event)
    return sorted(events.values(), key=lambda e: (e.at, e.event_id))


# Audit events parsed between two turns of the event loop (a page of 999 at once held the
# loop for 20 ms).
EVENTS_PER_TURN = 250


async def membership_events_of(
    graph: GraphClient, since: Mapping[str, datetime]
) -> dict[str, list[MembershipEvent] | Unverified]:
    """``membership_events`` of every group in ``since``, their first pages read together."""
    firsts = await _first_pages(graph, since) if len(since) > 1 else {}
    results = await asyncio.gather(
        *(membership_events(graph, g, when, firsts.get(g)) for g, when in since.items())
    )
    return dict(zip(since, results, strict=True))


async def _first_pages(
    graph: GraphClient, since: Mapping[str, datetime]
) -> dict[str, dict[str, Any]]:
    """The first page of each group's listing, 20 listings to a $batch (json-batching.md: a
    batch holds up to 20 requests): an incremental scan's audit read is then one request, not
    one per ETG. A group whose sub-request failed, or a batch that failed whole, is left out:
    its listing is then read on its own, which names what went wrong as it always has."""
    root = graph.settings.graph_v1
    items = [
        BatchItem("GET", _listing_url(graph, g, when).removeprefix(root))
        for g, when in since.items()
    ]
    try:
        answers = await send_batch(graph, items)
    except GRAPH_ERRORS:
        return {}
    return {
        g: a.body
        for g, a in zip(since, answers, strict=True)
        if a.status == 200 and isinstance(a.body, dict)
    }
