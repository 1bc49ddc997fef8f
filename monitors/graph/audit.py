"""Entra directory audit: when devices were added to and removed from ETGs (v1.0)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from monitors.graph import permissions
from monitors.graph.client import GraphClient
from monitors.graph.errors import MalformedResponse, graph_call
from monitors.graph.odata import odata_filter
from monitors.graph.reports import parse_report_time
from monitors.models import (
    PROVISIONING_CLIENT_APP_ID,
    PROVISIONING_CLIENT_NAMES,
    MembershipEvent,
    MembershipOp,
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


@graph_call("GET /v1.0/auditLogs/directoryAudits", permissions.AUDIT_LOGS)
async def membership_events(
    graph: GraphClient, group_id: str, since: datetime
) -> list[MembershipEvent]:
    """Adds and removals for one group since ``since``, oldest first, unique by event id."""
    url = graph.v1(
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
    events: dict[str, MembershipEvent] = {}
    async for page in graph.pages(url):
        for item in page:
            event = parse_audit_event(item)
            if event is not None and event.group_id == group_id.lower() and event.at >= since:
                events.setdefault(event.event_id, event)
    return sorted(events.values(), key=lambda e: (e.at, e.event_id))
