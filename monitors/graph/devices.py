"""Intune managed devices and their Entra identities (v1.0)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from monitors.graph.batch import BatchItem, send_batch
from monitors.graph.client import GraphClient
from monitors.graph.errors import GraphCallError, MalformedResponse, object_items
from monitors.graph.reports import parse_report_time
from monitors.models import ManagedDevice

MANAGED_FIELDS = (
    "id,deviceName,azureADDeviceId,enrolledDateTime,enrollmentProfileName,"
    "serialNumber,userPrincipalName"
)
IN_LIMIT = 15  # Entra caps the values of one `in` filter
_NULL_GUID = "00000000-0000-0000-0000-000000000000"


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_managed_device(item: Mapping[str, Any]) -> ManagedDevice:
    device_id = _text(item, "id")
    if not device_id:
        raise MalformedResponse("managed device without id")
    enrolled = _text(item, "enrolledDateTime")
    aad = _text(item, "azureADDeviceId")
    return ManagedDevice(
        id=device_id.lower(),
        azure_ad_device_id=aad.lower() if aad and aad != _NULL_GUID else None,
        enrollment_profile_name=_text(item, "enrollmentProfileName"),
        device_name=_text(item, "deviceName"),
        serial_number=_text(item, "serialNumber"),
        user_principal_name=_text(item, "userPrincipalName"),
        enrolled_at=parse_report_time(enrolled) if enrolled else None,
    )


async def managed_devices_since(graph: GraphClient, since: datetime) -> dict[str, ManagedDevice]:
    """Devices enrolled since ``since``. Intune ignores some filters silently, so the window is
    applied again here; the filter only saves pages when the service honours it."""
    url = graph.v1(
        "deviceManagement/managedDevices",
        **{
            "$filter": f"enrolledDateTime ge {since:%Y-%m-%dT%H:%M:%SZ}",
            "$select": MANAGED_FIELDS,
            "$top": "1000",
        },
    )
    out: dict[str, ManagedDevice] = {}
    async for page in graph.pages(url):
        for item in page:
            device = parse_managed_device(item)
            if device.enrolled_at is None or device.enrolled_at >= since:
                out[device.id] = device
    return out


async def managed_devices_by_id(graph: GraphClient, ids: Iterable[str]) -> dict[str, ManagedDevice]:
    """Point reads for a few devices the window listing did not cover."""
    wanted = sorted(set(ids))
    items = [
        BatchItem("GET", f"/deviceManagement/managedDevices/{i}?$select={MANAGED_FIELDS}")
        for i in wanted
    ]
    out: dict[str, ManagedDevice] = {}
    for device_id, result in zip(wanted, await send_batch(graph, items), strict=True):
        if result.status == 404:
            continue
        out[device_id] = parse_managed_device(result.json())
    return out


async def entra_object_ids(graph: GraphClient, device_ids: Iterable[str]) -> dict[str, str]:
    """Entra device id (azureADDeviceId) -> Entra object id, fifteen ids per filter."""
    wanted = sorted({d.lower() for d in device_ids})
    chunks = [wanted[i : i + IN_LIMIT] for i in range(0, len(wanted), IN_LIMIT)]
    items = [
        BatchItem(
            "GET",
            "/devices?$select=id,deviceId&$filter=deviceId in ("
            + ",".join(f"'{d}'" for d in chunk)
            + ")",
        )
        for chunk in chunks
    ]
    out: dict[str, str] = {}
    for result in await send_batch(graph, items):
        body = result.json()
        for item in object_items(body.get("value"), "device lookup"):
            object_id, device_id = _text(item, "id"), _text(item, "deviceId")
            if not object_id or not device_id:
                raise MalformedResponse("device without id or deviceId")
            out[device_id.lower()] = object_id.lower()
        if body.get("@odata.nextLink"):
            raise MalformedResponse("device lookup unexpectedly paged")
    return out


async def member_groups(
    graph: GraphClient, object_ids: Iterable[str], group_ids: Iterable[str]
) -> dict[str, set[str]]:
    """For each device object id, which of ``group_ids`` it is a member of right now."""
    groups = sorted(set(group_ids))
    asked = {g.lower() for g in groups}
    wanted = sorted(set(object_ids))
    items = [
        BatchItem("POST", f"/devices/{o}/checkMemberGroups", {"groupIds": groups}) for o in wanted
    ]
    out: dict[str, set[str]] = {}
    for object_id, result in zip(wanted, await send_batch(graph, items), strict=True):
        if result.status == 404:
            out[object_id] = set()  # the device object is gone: it is in no group
            continue
        values = result.json().get("value")
        if not isinstance(values, list):
            raise GraphCallError(result.status, None, "checkMemberGroups without value")
        # The answer is a subset of the groups asked about; anything else is not an answer.
        if not all(isinstance(v, str) and v.lower() in asked for v in values):
            raise MalformedResponse("checkMemberGroups answered with unknown values")
        out[object_id] = {v.lower() for v in values}
    return out
