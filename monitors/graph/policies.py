"""Device preparation policies and their Enrollment Time Group (beta endpoints)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from monitors.graph import permissions
from monitors.graph.batch import BatchItem, BatchResult, send_batch
from monitors.graph.client import GraphClient
from monitors.graph.errors import GRAPH_ERRORS, MalformedResponse, attempt, status_of, unverified
from monitors.models import EtgLookup, Policy, Unverified

DEVICE_PREPARATION_TEMPLATES = {
    "80d33118-b7b4-40d8-b15f-81be745e053f",  # user-driven
    "a6157a7f-aa00-42d9-ac82-7d2479f545db",  # automatic (Windows 365)
}
TEMPLATE_FAMILY = "enrollmentConfiguration"
SETTING_PREFIX = "enrollment_autopilot_dpp_"
LIST_SOURCE = "GET /beta/deviceManagement/configurationPolicies"
ETG_ACTION = "retrieveEnrollmentTimeDeviceMembershipTarget"
JIT_ACTION = "retrieveJustInTimeConfiguration"


def is_device_preparation(item: Mapping[str, Any]) -> bool:
    ref = item.get("templateReference")
    if not isinstance(ref, Mapping):
        return False
    family = str(ref.get("templateFamily") or "")
    base = str(ref.get("templateId") or "").split("_", 1)[0].lower()
    return family == TEMPLATE_FAMILY and base in DEVICE_PREPARATION_TEMPLATES


def _setting_values(instance: Mapping[str, Any]) -> list[Any]:
    simple = instance.get("simpleSettingValue")
    if isinstance(simple, Mapping):
        return [simple.get("value")]
    collection = instance.get("simpleSettingCollectionValue")
    if isinstance(collection, list):
        return [v.get("value") for v in collection if isinstance(v, Mapping)]
    choice = instance.get("choiceSettingValue")
    if isinstance(choice, Mapping):
        return [choice.get("value")]
    return []


def _ids(values: Iterable[Any]) -> tuple[str, ...]:
    """Allowed app/script ids arrive as bare ids or as JSON strings {"id": ...}."""
    out = []
    for value in values:
        if not isinstance(value, str) or not value:
            continue
        if value.lstrip().startswith("{"):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                continue
            if isinstance(decoded, Mapping) and isinstance(decoded.get("id"), str):
                out.append(decoded["id"])
        else:
            out.append(value)
    return tuple(out)


def parse_policy(item: Mapping[str, Any]) -> Policy:
    policy_id = item.get("id")
    if not isinstance(policy_id, str) or not policy_id:
        raise MalformedResponse("configuration policy without an id")
    settings: dict[str, list[Any]] = {}
    for setting in item.get("settings") or ():
        instance = setting.get("settingInstance") if isinstance(setting, Mapping) else None
        if isinstance(instance, Mapping):
            definition = str(instance.get("settingDefinitionId") or "").lower()
            if definition.startswith(SETTING_PREFIX):
                settings[definition.removeprefix(SETTING_PREFIX)] = _setting_values(instance)
    timeout = None
    for raw in settings.get("timeout", []):
        try:
            timeout = int(raw)
        except (TypeError, ValueError):
            continue
        break
    ref = item.get("templateReference") or {}
    return Policy(
        id=policy_id,
        name=str(item.get("name") or policy_id),
        template_id=str(ref.get("templateId") or ""),
        timeout_minutes=timeout,
        allowed_app_ids=_ids(settings.get("allowedappids", [])),
        allowed_script_ids=_ids(settings.get("allowedscriptids", [])),
    )


async def list_device_preparation_policies(graph: GraphClient) -> list[Policy]:
    """All device preparation policies, whether or not the service honours the filter."""
    filtered = graph.beta(
        "deviceManagement/configurationPolicies",
        **{
            "$filter": f"templateReference/templateFamily eq '{TEMPLATE_FAMILY}'",
            "$expand": "settings",
        },
    )
    try:
        items = [item async for page in graph.pages(filtered) for item in page]
    except GRAPH_ERRORS as exc:
        if status_of(exc) != 400:
            raise
        # Some tenants reject the family filter; the client-side test below is authoritative.
        unfiltered = graph.beta("deviceManagement/configurationPolicies", **{"$expand": "settings"})
        items = [item async for page in graph.pages(unfiltered) for item in page]
    return sorted(
        (parse_policy(item) for item in items if is_device_preparation(item)),
        key=lambda p: p.name.lower(),
    )


def parse_etg_response(payload: Any, source: str) -> EtgLookup:
    """Read every response shape seen for the ETG actions (see domain reference, section 2)."""
    if (
        isinstance(payload, Mapping)
        and "value" in payload
        and len([k for k in payload if not k.startswith("@")]) == 1
    ):
        payload = payload["value"]
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], Mapping):
        payload = payload[0]
    if not isinstance(payload, Mapping):
        raise MalformedResponse(f"{source}: unexpected response {type(payload).__name__}")

    statuses = payload.get("enrollmentTimeDeviceMembershipTargetValidationStatuses")
    if isinstance(statuses, list):
        ids: list[str] = []
        errors: list[tuple[str, str]] = []
        for status in statuses:
            target = status.get("targetId") if isinstance(status, Mapping) else None
            if not isinstance(target, str) or not target:
                raise MalformedResponse(f"{source}: validation status without targetId")
            ids.append(target)
            code = status.get("targetValidationErrorCode")
            if status.get("validationSucceeded") is False and isinstance(code, str):
                errors.append((target, code))
        return EtgLookup(tuple(ids), source, tuple(errors))

    targets = payload.get("enrollmentTimeDeviceMembershipTargets")
    if isinstance(targets, list):
        ids = []
        for target in targets:
            target_id = target.get("targetId") if isinstance(target, Mapping) else None
            if not isinstance(target_id, str) or not target_id:
                raise MalformedResponse(f"{source}: membership target without targetId")
            ids.append(target_id)
        return EtgLookup(tuple(ids), source)

    if "target" in payload:
        # The older action's shape; an explicit null or empty target means "none configured".
        target = payload.get("target")
        if target is None:
            return EtgLookup((), source)
        if isinstance(target, str):
            target = [target]
        if not isinstance(target, list) or not all(isinstance(t, str) for t in target):
            raise MalformedResponse(f"{source}: target is not a list of group ids")
        return EtgLookup(tuple(t for t in target if t), source)

    raise MalformedResponse(f"{source}: no known ETG fields in response")


def _action_path(policy_id: str, action: str) -> str:
    return f"deviceManagement/configurationPolicies('{policy_id}')/{action}"


async def _post_action(graph: GraphClient, policy_id: str, action: str) -> Any:
    url = graph.beta(_action_path(policy_id, action))
    try:
        return await graph.request("POST", url)
    except GRAPH_ERRORS as exc:
        # Older tooling called the JIT action with GET; some tenants only accept that.
        if action == JIT_ACTION and status_of(exc) == 405:
            return await graph.request("GET", url)
        raise


async def retrieve_etg(graph: GraphClient, policy_id: str) -> EtgLookup | Unverified:
    """The policy's ETG from the current action, falling back to the older JIT action."""
    first_source = f"POST /beta/deviceManagement/configurationPolicies/{{id}}/{ETG_ACTION}"
    try:
        payload = await _post_action(graph, policy_id, ETG_ACTION)
        return parse_etg_response(payload, ETG_ACTION)
    except GRAPH_ERRORS as exc:
        first = unverified(exc, first_source, permissions.CONFIGURATION_POLICIES)

    fallback_source = f"POST /beta/deviceManagement/configurationPolicies/{{id}}/{JIT_ACTION}"

    async def fallback() -> EtgLookup:
        return parse_etg_response(await _post_action(graph, policy_id, JIT_ACTION), JIT_ACTION)

    result = await attempt(fallback(), fallback_source, permissions.CONFIGURATION_POLICIES)
    if isinstance(result, Unverified):
        # Name the first failure: it is the call the operator should look at.
        return Unverified(
            source=first.source,
            reason=first.reason,
            detail=f"{first.detail}; fallback {JIT_ACTION}: {result.detail}",
            permission=first.permission or result.permission,
            status=first.status,
        )
    return result


async def retrieve_etgs(
    graph: GraphClient, policy_ids: Sequence[str]
) -> list[EtgLookup | Unverified]:
    """The ETG of each policy, in order, asked in one beta $batch; any policy that does not
    answer cleanly there takes the single-policy path with its fallback."""
    items = [BatchItem("POST", "/" + _action_path(p, ETG_ACTION)) for p in policy_ids]
    try:
        results: Sequence[BatchResult | None] = await send_batch(graph, items, beta=True)
    except GRAPH_ERRORS:
        results = [None] * len(policy_ids)

    async def one(policy_id: str, result: BatchResult | None) -> EtgLookup | Unverified:
        if result is not None and 200 <= result.status < 300:
            try:
                return parse_etg_response(result.body, ETG_ACTION)
            except MalformedResponse:
                pass
        return await retrieve_etg(graph, policy_id)

    return list(
        await asyncio.gather(*(one(p, r) for p, r in zip(policy_ids, results, strict=True)))
    )
