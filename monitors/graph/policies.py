"""Device preparation policies and their Enrollment Time Group (beta endpoints)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from monitors.graph import permissions
from monitors.graph.batch import BatchItem, BatchResult, send_batch
from monitors.graph.client import GraphClient
from monitors.graph.errors import (
    GRAPH_ERRORS,
    Endpoint,
    GraphCallError,
    MalformedResponse,
    graph_call,
    object_items,
    status_of,
)
from monitors.graph.odata import odata_filter
from monitors.models import (
    ETG_SOURCE_ACTION,
    ETG_SOURCE_JIT,
    ETG_SOURCE_OPERATOR,
    ETG_SOURCE_SETTINGS,
    EtgLookup,
    Policy,
    PolicyAssignment,
    Unverified,
    UnverifiedReason,
    is_guid,
)

DEVICE_PREPARATION_TEMPLATES = {
    "80d33118-b7b4-40d8-b15f-81be745e053f",  # user-driven
    "a6157a7f-aa00-42d9-ac82-7d2479f545db",  # automatic (Windows 365)
}
TEMPLATE_FAMILY = "enrollmentConfiguration"
SETTING_PREFIX = "enrollment_autopilot_dpp_"
ETG_ACTION = ETG_SOURCE_ACTION
JIT_ACTION = ETG_SOURCE_JIT
# A policy with the ETG lookup of its own: the ETG, or why it could not be read.
PolicyWithEtg = tuple[Policy, EtgLookup | Unverified]
# The validation code that means the monitor's own Intune scope does not cover the group: the
# ETG exists, the monitor just may not see it (documented in enrollmentTimeDeviceMembershipTarget
# ValidationErrorCode, beta resource intune-deviceconfigv2-...validationerrorcode.md).
OUT_OF_SCOPE_CODE = "securityGroupNotInCallerScope"


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


def _priority(item: Mapping[str, Any]) -> int | None:
    meta = item.get("priorityMetaData")
    value = meta.get("priority") if isinstance(meta, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_policy(item: Mapping[str, Any]) -> Policy:
    policy_id = item.get("id")
    if not isinstance(policy_id, str) or not policy_id:
        raise MalformedResponse("configuration policy without an id")
    raw_settings = item.get("settings") or ()
    ref = item.get("templateReference") or {}
    if not isinstance(raw_settings, list | tuple) or not isinstance(ref, Mapping):
        raise MalformedResponse(f"configuration policy {policy_id[:64]!r} has malformed settings")
    settings: dict[str, list[Any]] = {}
    for setting in raw_settings:
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
    return Policy(
        id=policy_id,
        name=str(item.get("name") or policy_id),
        template_id=str(ref.get("templateId") or ""),
        timeout_minutes=timeout,
        allowed_app_ids=_ids(settings.get("allowedappids", [])),
        allowed_script_ids=_ids(settings.get("allowedscriptids", [])),
        priority=_priority(item),
        settings_group_ids=tuple(
            g.lower() for g in _ids(settings.get("devicesecuritygroupids", [])) if is_guid(g)
        ),
    )


@graph_call("GET /beta/deviceManagement/configurationPolicies", permissions.CONFIGURATION_POLICIES)
async def list_device_preparation_policies(graph: GraphClient) -> list[Policy]:
    """All device preparation policies, whether or not the service honours the filter."""
    filtered = graph.beta(
        "deviceManagement/configurationPolicies",
        **{
            "$filter": odata_filter(
                "templateReference/templateFamily eq @family", family=TEMPLATE_FAMILY
            ),
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


def _target_id(item: object, source: str, what: str) -> str:
    target = item.get("targetId") if isinstance(item, Mapping) else None
    if not isinstance(target, str) or not is_guid(target):
        raise MalformedResponse(f"{source}: {what} without a group id")
    return target


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
        validated: list[str] = []
        for status in statuses:
            group_id = _target_id(status, source, "validation status")
            ids.append(group_id)
            code = status.get("targetValidationErrorCode")
            if status.get("validationSucceeded") is False and isinstance(code, str):
                errors.append((group_id, code))
            elif status.get("validationSucceeded") is True:
                validated.append(group_id)
        return EtgLookup(tuple(ids), source, tuple(errors), validated_group_ids=tuple(validated))

    targets = payload.get("enrollmentTimeDeviceMembershipTargets")
    if isinstance(targets, list):
        ids = [_target_id(item, source, "membership target") for item in targets]
        return EtgLookup(tuple(ids), source)

    if "target" in payload:
        # The older action's shape; an explicit null or empty target means "none configured".
        target = payload.get("target")
        if target is None:
            return EtgLookup((), source)
        if isinstance(target, str):
            target = [target]
        if not isinstance(target, list) or not all(is_guid(t) for t in target if t):
            raise MalformedResponse(f"{source}: target is not a list of group ids")
        return EtgLookup(tuple(t for t in target if t), source)

    raise MalformedResponse(f"{source}: no known ETG fields in response")


def _action_path(policy_id: str, action: str) -> str:
    return f"deviceManagement/configurationPolicies('{policy_id}')/{action}"


def _action_endpoint(action: str) -> Endpoint:
    return Endpoint(
        f"POST /beta/deviceManagement/configurationPolicies/{{id}}/{action}",
        permissions.CONFIGURATION_POLICIES,
    )


ETG_READ = _action_endpoint(ETG_ACTION)
JIT_READ = _action_endpoint(JIT_ACTION)


def is_unrouted(exc: BaseException) -> bool:
    """The tenant does not route this action at all (as opposed to failing it): Graph answers
    400 "No OData route exists ...", 404 "Resource not found for the segment ..." or 405."""
    status = status_of(exc)
    if status in (404, 405):
        return True
    text = str(getattr(getattr(exc, "error", None), "message", None) or exc)
    return status == 400 and ("no odata route" in text.lower() or "segment" in text.lower())


def _result_error(result: BatchResult) -> GraphCallError:
    body: Mapping[str, Any] = result.body if isinstance(result.body, Mapping) else {}
    raw = body.get("error")
    error: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    return GraphCallError(result.status, code, message or f"failed with {result.status}")


def _checked(lookup: EtgLookup) -> EtgLookup | Unverified:
    """A lookup whose target Intune says is outside the monitor's scope is not an answer."""
    hidden = [gid for gid, code in lookup.validation_errors if code == OUT_OF_SCOPE_CODE]
    if hidden:
        endpoint = JIT_READ if lookup.source == JIT_ACTION else ETG_READ
        return Unverified(
            endpoint.label,
            UnverifiedReason.OUT_OF_SCOPE,
            f"Intune reports {OUT_OF_SCOPE_CODE} for group {hidden[0]}: the monitor's identity "
            "lacks the Intune scope (scope tags) to read this policy's ETG",
            # Not a missing permission as such, but the grant whose scope is too narrow.
            permission=endpoint.permission,
        )
    return lookup


async def _post_action(graph: GraphClient, policy_id: str, action: str) -> Any:
    url = graph.beta(_action_path(policy_id, action))
    try:
        return await graph.request("POST", url)
    except GRAPH_ERRORS as exc:
        # Older tooling called the JIT action with GET; some tenants only accept that.
        if action == JIT_ACTION and status_of(exc) == 405:
            return await graph.request("GET", url)
        raise


def _from_settings(policy: Policy, detail: str) -> EtgLookup | Unverified:
    if policy.settings_group_ids:
        return EtgLookup(policy.settings_group_ids, ETG_SOURCE_SETTINGS)
    # Neither action is routed and the setting is empty: that is not "no ETG configured".
    return ETG_READ.unverified(
        UnverifiedReason.REJECTED,
        f"this tenant routes neither {ETG_ACTION} nor {JIT_ACTION}, and the policy's "
        f"devicesecuritygroupids setting is empty; set ETG_POLICY_GROUPS for it ({detail})",
    )


def operator_lookup(policy: Policy, operator_map: Mapping[str, str]) -> EtgLookup | None:
    """The operator's own word for this policy's ETG, by policy id or by name."""
    for key in (policy.id.lower(), policy.name.strip().casefold()):
        if key in operator_map:
            return EtgLookup((operator_map[key],), ETG_SOURCE_OPERATOR)
    return None


async def _jit_and_settings(
    graph: GraphClient, policy: Policy, first: Unverified, first_unrouted: bool
) -> EtgLookup | Unverified:
    """After the current action failed: the older action, then (only if neither is routed)
    the policy's own setting."""
    try:
        payload = await _post_action(graph, policy.id, JIT_ACTION)
        return _checked(parse_etg_response(payload, JIT_ACTION))
    except GRAPH_ERRORS as exc:
        second = JIT_READ.failed(exc)
        if first_unrouted and is_unrouted(exc):
            return _from_settings(policy, f"{first.detail}; {second.detail}")
    # Name the first failure: it is the call the operator should look at.
    return Unverified(
        source=first.source,
        reason=first.reason,
        detail=f"{first.detail}; fallback {JIT_ACTION}: {second.detail}",
        permission=first.permission or second.permission,
        status=first.status,
    )


async def retrieve_etg(graph: GraphClient, policy: Policy) -> EtgLookup | Unverified:
    """One policy's ETG: the current action, then the older one, then the policy's setting."""
    try:
        payload = await _post_action(graph, policy.id, ETG_ACTION)
        return _checked(parse_etg_response(payload, ETG_ACTION))
    except GRAPH_ERRORS as exc:
        first = ETG_READ.failed(exc)
        return await _jit_and_settings(graph, policy, first, is_unrouted(exc))


async def retrieve_etgs(
    graph: GraphClient,
    policy_list: Sequence[Policy],
    operator_map: Mapping[str, str] | None = None,
) -> list[EtgLookup | Unverified]:
    """The ETG of each policy, in order. The operator map wins; the rest are asked in one beta
    $batch, and only a policy that does not answer cleanly there takes the fallbacks."""
    operator_map = operator_map or {}
    mapped = [operator_lookup(p, operator_map) for p in policy_list]
    asked = [p for p, m in zip(policy_list, mapped, strict=True) if m is None]
    items = [BatchItem("POST", "/" + _action_path(p.id, ETG_ACTION), {}) for p in asked]
    try:
        results: Sequence[BatchResult | None] = await send_batch(graph, items, beta=True)
    except GRAPH_ERRORS:
        results = [None] * len(asked)

    async def one(policy: Policy, result: BatchResult | None) -> EtgLookup | Unverified:
        if result is None:
            return await retrieve_etg(graph, policy)
        if 200 <= result.status < 300:
            try:
                return _checked(parse_etg_response(result.body, ETG_ACTION))
            except MalformedResponse:
                return await retrieve_etg(graph, policy)
        error = _result_error(result)
        if error.status in (429, 503, 504):
            return await retrieve_etg(graph, policy)
        first = ETG_READ.failed(error)
        return await _jit_and_settings(graph, policy, first, is_unrouted(error))

    answers = iter(await asyncio.gather(*(one(p, r) for p, r in zip(asked, results, strict=True))))
    return [m if m is not None else next(answers) for m in mapped]


def _assignment(items: list[dict[str, Any]]) -> PolicyAssignment:
    """The targets of a policy's assignments (intune-shared-deviceandappmanagementassignment
    target types): group includes and exclusions, and all licensed users. Device targets
    (all devices) name no user and cannot pick a policy for one."""
    include: list[str] = []
    exclude: list[str] = []
    all_users = False
    for item in items:
        target = item.get("target")
        if not isinstance(target, Mapping):
            raise MalformedResponse("policy assignment without a target")
        kind = str(target.get("@odata.type") or "").lower().rsplit(".", 1)[-1]
        if kind == "alllicensedusersassignmenttarget":
            all_users = True
        elif kind in ("groupassignmenttarget", "exclusiongroupassignmenttarget"):
            group = target.get("groupId")
            if not is_guid(group):
                raise MalformedResponse("group assignment without a group id")
            assert isinstance(group, str)
            (exclude if kind.startswith("exclusion") else include).append(group.lower())
    return PolicyAssignment(tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude)), all_users)


@graph_call(
    "GET /beta/deviceManagement/configurationPolicies/{id}/assignments",
    permissions.CONFIGURATION_POLICIES,
)
async def policy_assignments(
    graph: GraphClient, policy_ids: Sequence[str]
) -> dict[str, PolicyAssignment | Unverified]:
    """Who each policy is assigned to, asked in beta $batch requests of 20; a policy whose
    answer cannot be read has the reason in its place."""
    items = [
        BatchItem("GET", f"/deviceManagement/configurationPolicies('{p}')/assignments")
        for p in policy_ids
    ]
    out: dict[str, PolicyAssignment | Unverified] = {}
    results = await send_batch(graph, items, beta=True)
    for policy_id, result in zip(policy_ids, results, strict=True):
        try:
            body = result.json()
            assignment = _assignment(object_items(body.get("value"), "policy assignments"))
            if body.get("@odata.nextLink"):
                raise MalformedResponse("policy assignments unexpectedly paged")
            out[policy_id] = assignment
        except GRAPH_ERRORS as exc:
            out[policy_id] = policy_assignments.failed(exc)
    return out


async def policies_with_etgs(
    graph: GraphClient, operator_map: Mapping[str, str] | None = None
) -> list[PolicyWithEtg] | Unverified:
    """Every device preparation policy with its ETG lookup (group ids in lower case) or the
    reason it could not be read: one policy's failure stays with that policy."""
    listed = await list_device_preparation_policies(graph)
    if isinstance(listed, Unverified):
        return listed
    lookups = await retrieve_etgs(graph, listed, operator_map)
    return [
        (
            p,
            lookup
            if isinstance(lookup, Unverified)
            else dataclasses.replace(lookup, group_ids=tuple(g.lower() for g in lookup.group_ids)),
        )
        for p, lookup in zip(listed, lookups, strict=True)
    ]
