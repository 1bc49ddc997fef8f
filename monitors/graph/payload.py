"""The apps and scripts a device preparation policy selects, and their assignments.

Apps are read from v1.0 (intune-apps-mobileapp-get.md, intune-apps-mobileappassignment-list.md);
platform scripts exist only in beta (intune-devices-devicemanagementscript-get.md,
intune-devices-devicemanagementscriptassignment-list.md). Each is read once per run, however
many policies select it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from monitors.graph import permissions
from monitors.graph.batch import BatchItem, BatchResult, send_batch
from monitors.graph.client import GraphClient
from monitors.graph.errors import (
    GRAPH_ERRORS,
    GraphCall,
    MalformedResponse,
    graph_call,
    object_items,
    single_object,
    status_of,
)
from monitors.models import (
    PayloadAssignment,
    PayloadFacts,
    PayloadKind,
    PayloadObject,
    Policy,
    Unverified,
)

# intune-apps-mobileapp-get.md and intune-apps-mobileappassignment-list.md (application
# permissions: DeviceManagementApps.Read.All, DeviceManagementApps.ReadWrite.All).
APPS = permissions.APPS
# intune-devices-devicemanagementscript-get.md names DeviceManagementConfiguration.Read.All;
# intune-devices-devicemanagementscriptassignment-list.md names
# DeviceManagementManagedDevices.Read.All. The monitor already holds both.
SCRIPTS = permissions.CONFIGURATION_POLICIES
SCRIPT_ASSIGNMENTS = permissions.MANAGED_DEVICES

# $select keeps the answer small: an app carries its icon, a script its whole content.
_APP_FIELDS = "id,displayName"
_SCRIPT_FIELDS = "id,displayName,runAsAccount"


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{what} is not a string")
    return value


def _target_type(target: Any) -> str:
    if not isinstance(target, dict):
        raise MalformedResponse("assignment without a target object")
    odata_type = _text(target.get("@odata.type"), "target @odata.type")
    if not odata_type:
        raise MalformedResponse("assignment target without @odata.type")
    return odata_type.lstrip("#").removeprefix("microsoft.graph.")


def _assignments(payload: Any, what: str, with_intent: bool) -> tuple[PayloadAssignment, ...]:
    if not isinstance(payload, dict):
        raise MalformedResponse(f"{what}: answer is not an object")
    if payload.get("@odata.nextLink"):
        # Neither list documents paging; a partial list could hide the ETG's assignment.
        raise MalformedResponse(f"{what}: paged answer")
    out = []
    for item in object_items(payload.get("value"), what):
        target = item.get("target")
        target_type = _target_type(target)
        group = target.get("groupId") if isinstance(target, dict) else None
        out.append(
            PayloadAssignment(
                target_type=target_type,
                group_id=(_text(group, "groupId") or "").lower() or None,
                intent=_text(item.get("intent"), "intent") if with_intent else None,
            )
        )
    return tuple(out)


def _object(payload: Any, what: str, with_run_as: bool) -> PayloadObject:
    body = single_object(payload, what)
    name = _text(body.get("displayName"), "displayName")
    return PayloadObject(
        display_name=name or str(body.get("id") or ""),
        odata_type=_text(body.get("@odata.type"), "@odata.type"),
        run_as_account=_text(body.get("runAsAccount"), "runAsAccount") if with_run_as else None,
    )


async def _get_or_none(graph: GraphClient, url: str) -> Any:
    """The answer, or None for a 404: the object does not exist."""
    try:
        return await graph.get(url)
    except GRAPH_ERRORS as exc:
        if status_of(exc) == 404:
            return None
        raise


@graph_call("GET /v1.0/deviceAppManagement/mobileApps/{id}", APPS)
async def read_app(graph: GraphClient, app_id: str) -> PayloadObject | None:
    url = graph.v1(f"deviceAppManagement/mobileApps/{app_id}", **{"$select": _APP_FIELDS})
    answer = await _get_or_none(graph, url)
    return None if answer is None else _object(answer, "mobileApp", with_run_as=False)


@graph_call("GET /v1.0/deviceAppManagement/mobileApps/{id}/assignments", APPS)
async def read_app_assignments(graph: GraphClient, app_id: str) -> tuple[PayloadAssignment, ...]:
    url = graph.v1(f"deviceAppManagement/mobileApps/{app_id}/assignments")
    answer = await _get_or_none(graph, url)
    return () if answer is None else _assignments(answer, "mobileApp assignments", True)


@graph_call("GET /beta/deviceManagement/deviceManagementScripts/{id}", SCRIPTS)
async def read_script(graph: GraphClient, script_id: str) -> PayloadObject | None:
    url = graph.beta(
        f"deviceManagement/deviceManagementScripts/{script_id}", **{"$select": _SCRIPT_FIELDS}
    )
    answer = await _get_or_none(graph, url)
    return None if answer is None else _object(answer, "deviceManagementScript", with_run_as=True)


@graph_call(
    "GET /beta/deviceManagement/deviceManagementScripts/{id}/assignments", SCRIPT_ASSIGNMENTS
)
async def read_script_assignments(
    graph: GraphClient, script_id: str
) -> tuple[PayloadAssignment, ...]:
    url = graph.beta(f"deviceManagement/deviceManagementScripts/{script_id}/assignments")
    answer = await _get_or_none(graph, url)
    return () if answer is None else _assignments(answer, "script assignments", False)


async def read_payload(graph: GraphClient, kind: PayloadKind, item_id: str) -> PayloadFacts:
    """One app or script and its assignments, read directly. Assignments of an object that is
    gone, or that could not be read, are not asked."""
    read, assigned = _CALLS[kind]
    item = await read(graph, item_id)
    if item is None or isinstance(item, Unverified):
        return PayloadFacts(kind, item_id, item)
    return PayloadFacts(kind, item_id, item, await assigned(graph, item_id))


_ObjectRead = GraphCall[[GraphClient, str], PayloadObject | None]
_AssignmentsRead = GraphCall[[GraphClient, str], tuple[PayloadAssignment, ...]]
_CALLS: dict[PayloadKind, tuple[_ObjectRead, _AssignmentsRead]] = {
    PayloadKind.APP: (read_app, read_app_assignments),
    PayloadKind.SCRIPT: (read_script, read_script_assignments),
}
_PATHS = {
    PayloadKind.APP: ("/deviceAppManagement/mobileApps/{}", f"?$select={_APP_FIELDS}"),
    PayloadKind.SCRIPT: (
        "/deviceManagement/deviceManagementScripts/{}",
        f"?$select={_SCRIPT_FIELDS}",
    ),
}


def _from_batch(
    kind: PayloadKind, item_id: str, got: BatchResult, listed: BatchResult
) -> PayloadFacts:
    read, assigned = _CALLS[kind]
    if got.status == 404:
        return PayloadFacts(kind, item_id, None)
    try:
        item = _object(got.json(), kind.value, with_run_as=kind is PayloadKind.SCRIPT)
    except GRAPH_ERRORS as exc:
        return PayloadFacts(kind, item_id, read.failed(exc))
    try:
        # A 404 here means it was deleted between the two reads: then it has no assignments.
        found = (
            ()
            if listed.status == 404
            else _assignments(listed.json(), "assignments", kind is PayloadKind.APP)
        )
    except GRAPH_ERRORS as exc:
        return PayloadFacts(kind, item_id, item, assigned.failed(exc))
    return PayloadFacts(kind, item_id, item, found)


async def _read_kind(graph: GraphClient, kind: PayloadKind, ids: list[str]) -> list[PayloadFacts]:
    """Each object and its assignments in $batch requests (apps on v1.0, scripts on beta);
    when a batch itself fails, each item is read on its own."""
    if not ids:
        return []
    path, select = _PATHS[kind]
    items = [
        BatchItem("GET", path.format(i) + suffix)
        for i in ids
        for suffix in (select, "/assignments")
    ]
    try:
        results = await send_batch(graph, items, beta=kind is PayloadKind.SCRIPT)
    except GRAPH_ERRORS:
        return list(await asyncio.gather(*(read_payload(graph, kind, i) for i in ids)))
    return [_from_batch(kind, i, results[2 * n], results[2 * n + 1]) for n, i in enumerate(ids)]


def selected(policy: Policy) -> list[tuple[PayloadKind, str]]:
    return [(PayloadKind.APP, a.lower()) for a in policy.allowed_app_ids] + [
        (PayloadKind.SCRIPT, s.lower()) for s in policy.allowed_script_ids
    ]


async def read_payloads(
    graph: GraphClient, policies: Iterable[Policy]
) -> dict[tuple[PayloadKind, str], PayloadFacts]:
    """Every app and script the policies select, each read once."""
    wanted = list(dict.fromkeys(key for policy in policies for key in selected(policy)))
    read = await asyncio.gather(
        *(_read_kind(graph, kind, [i for k, i in wanted if k is kind]) for kind in PayloadKind)
    )
    return {(f.kind, f.id): f for facts in read for f in facts}


def policy_payload(
    policy: Policy, read: dict[tuple[PayloadKind, str], PayloadFacts]
) -> tuple[PayloadFacts, ...]:
    return tuple(read[key] for key in dict.fromkeys(selected(policy)))
