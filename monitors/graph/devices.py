"""Intune managed devices and their Entra identities (v1.0)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from monitors.aio import between_turns
from monitors.graph import permissions
from monitors.graph.batch import BatchItem, BatchResult, send_batch
from monitors.graph.client import GraphClient
from monitors.graph.errors import (
    GraphCallError,
    MalformedResponse,
    graph_call,
    object_items,
    single_object,
)
from monitors.graph.odata import odata_filter
from monitors.graph.reports import parse_report_time
from monitors.models import ManagedDevice, is_guid

MANAGED_FIELDS = (
    "id,deviceName,azureADDeviceId,enrolledDateTime,enrollmentProfileName,"
    "serialNumber,userPrincipalName"
)
IN_LIMIT = 15  # Entra caps the values of one `in` filter
_NULL_GUID = "00000000-0000-0000-0000-000000000000"


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_managed_device(item: Any) -> ManagedDevice:
    """A managed device, bare or wrapped in ``value`` (the reference shows the GET wrapped).
    Both ids are GUIDs: anything else (the reference's "Azure ADDevice Id value") names no
    device, so an unreadable Entra id is unknown, never a key to look up."""
    item = single_object(item, "managed device")
    device_id = _text(item, "id")
    if not device_id or not is_guid(device_id):
        raise MalformedResponse("managed device without a GUID id")
    enrolled = _text(item, "enrolledDateTime")
    if enrolled and enrolled.startswith("0001-01-01"):
        enrolled = None  # Intune's way of writing "no date"
    aad = _text(item, "azureADDeviceId")
    return ManagedDevice(
        id=device_id.lower(),
        azure_ad_device_id=aad.lower() if aad and is_guid(aad) and aad != _NULL_GUID else None,
        enrollment_profile_name=_text(item, "enrollmentProfileName"),
        device_name=_text(item, "deviceName"),
        serial_number=_text(item, "serialNumber"),
        user_principal_name=_text(item, "userPrincipalName"),
        enrolled_at=parse_report_time(enrolled) if enrolled else None,
    )


@graph_call("GET /v1.0/deviceManagement/managedDevices/{id}", permissions.MANAGED_DEVICES)
async def managed_devices_by_id(graph: GraphClient, ids: Iterable[str]) -> dict[str, ManagedDevice]:
    """Managed devices by id, 20 to a $batch: only this read carries enrollmentProfileName
    (list answers leave it null), so it is how every deployment's device is read."""
    wanted = sorted(set(ids))
    items = [
        BatchItem("GET", f"/deviceManagement/managedDevices/{i}?$select={MANAGED_FIELDS}")
        for i in wanted
    ]
    out: dict[str, ManagedDevice] = {}
    answers = list(zip(wanted, await send_batch(graph, items), strict=True))
    async for part in between_turns(answers, PARSED_PER_TURN):
        for device_id, result in part:
            if result.status == 404:
                continue
            # The reference prints this GET wrapped in "value"; parse_managed_device reads both.
            device = parse_managed_device(result.json())
            if device.id != device_id.lower():
                raise MalformedResponse("managed device read answered with another device")
            out[device_id] = device
    return out


# Devices parsed between two turns of the event loop (about 3 ms).
PARSED_PER_TURN = 300


@graph_call("GET /v1.0/devices?$filter=deviceId in (...)", permissions.DEVICES)
async def entra_object_ids(graph: GraphClient, device_ids: Iterable[str]) -> dict[str, str]:
    """Entra device id (azureADDeviceId) -> Entra object id, fifteen ids per filter."""
    wanted = sorted({d.lower() for d in device_ids})
    chunks = [wanted[i : i + IN_LIMIT] for i in range(0, len(wanted), IN_LIMIT)]
    items = [
        BatchItem(
            "GET",
            "/devices?$select=id,deviceId&$filter=" + odata_filter("deviceId in @ids", ids=chunk),
        )
        for chunk in chunks
    ]
    out: dict[str, str] = {}
    for result in await send_batch(graph, items):
        body = result.json()
        for item in object_items(body.get("value"), "device lookup"):
            object_id, device_id = _text(item, "id"), _text(item, "deviceId")
            if not is_guid(object_id) or not is_guid(device_id):
                raise MalformedResponse("device without a GUID id or deviceId")
            assert object_id is not None and device_id is not None
            out[device_id.lower()] = object_id.lower()
        if body.get("@odata.nextLink"):
            raise MalformedResponse("device lookup unexpectedly paged")
    return out


CHECK_LIMIT = 20  # checkMemberGroups takes at most 20 group ids (directoryobject-checkmembergroups)


def _check_items(path: str, groups: list[str]) -> list[BatchItem]:
    return [
        BatchItem("POST", f"{path}/checkMemberGroups", {"groupIds": groups[i : i + CHECK_LIMIT]})
        for i in range(0, len(groups), CHECK_LIMIT)
    ]


def _check_answer(result: BatchResult, asked: list[str]) -> set[str]:
    values = result.json().get("value")
    if not isinstance(values, list):
        raise GraphCallError(result.status, None, "checkMemberGroups without value")
    # The answer is a subset of the groups asked about; anything else is not an answer.
    wanted = {g.lower() for g in asked}
    if not all(isinstance(v, str) and v.lower() in wanted for v in values):
        raise MalformedResponse("checkMemberGroups answered with unknown values")
    return {v.lower() for v in values}


async def check_member_groups(
    graph: GraphClient, path_prefix: str, asks: Mapping[str, Iterable[str]]
) -> dict[str, set[str] | None]:
    """For each directory object (``/devices/{id}``, ``/users/{upn}``), which of its own groups
    it is a member of now, asking each only about its groups, 20 to a call. ``None`` when the
    object does not exist (404)."""
    wanted = {k: sorted({g.lower() for g in v}) for k, v in asks.items() if v}
    keys: list[str] = []
    items: list[BatchItem] = []
    for key, groups in wanted.items():
        for item in _check_items(f"/{path_prefix}/{quote(key, safe='@')}", groups):
            keys.append(key)
            items.append(item)
    out: dict[str, set[str] | None] = {k: set() for k in wanted}
    for key, item, result in zip(keys, items, await send_batch(graph, items), strict=True):
        if result.status == 404:
            out[key] = None
            continue
        found = out[key]
        if found is not None:
            found |= _check_answer(result, item.body["groupIds"])
    return out


@graph_call("POST /v1.0/devices/{id}/checkMemberGroups", permissions.GROUP_READ)
async def member_groups(
    graph: GraphClient, asks: Mapping[str, Iterable[str]]
) -> dict[str, set[str]]:
    """For each device object id, which of its own ETGs it is a member of right now."""
    found = await check_member_groups(graph, "devices", asks)
    # A device object that is gone is in no group.
    return {k: v or set() for k, v in found.items()}


@graph_call("POST /v1.0/users/{upn}/checkMemberGroups", permissions.USER_GROUPS)
async def user_member_groups(
    graph: GraphClient, asks: Mapping[str, Iterable[str]]
) -> dict[str, set[str] | None]:
    """For each user principal name, which of the groups asked about it is in (transitively);
    ``None`` for a user that does not exist."""
    return await check_member_groups(graph, "users", asks)
