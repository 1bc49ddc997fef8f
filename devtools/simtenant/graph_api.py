"""The Graph endpoints: routing and handlers, independent of the HTTP framework.

Handlers take a ``GraphRequest`` and return a ``GraphResponse`` (or raise
``GraphError``) so ``$batch`` can dispatch inner requests through exactly the
same code as top-level ones.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from devtools.simtenant.odata import (
    GraphError,
    bad_request,
    decode_token,
    encode_token,
    graph_time,
    graph_time_7,
    not_found,
    parse_odata_time,
    parse_select,
    parse_top,
    project,
    split_and,
    strip_parens,
    ts_to_datetime,
)
from devtools.simtenant.reports import ExportJobStore, RowsAt, report_rows
from devtools.simtenant.scenario import DeviceSpec, Policy, User
from devtools.simtenant.state import (
    AuditQuery,
    EntraDevice,
    MembershipRecord,
    TenantState,
    activity_key,
)

JSON_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)
CFG = "#microsoft.graph.deviceManagementConfiguration"
USER_DRIVEN_TEMPLATE = "80d33118-b7b4-40d8-b15f-81be745e053f_1"
AUTOMATIC_TEMPLATE = "a6157a7f-aa00-42d9-ac82-7d2479f545db_1"
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
DELTA_TOKEN_MAX_AGE_S = 7 * 86400.0
DELTA_PAGE_SIZE = 1000
# microsoft-graph-docs-contrib api-reference/v1.0/api/directoryobject-checkmembergroups.md
MAX_CHECK_MEMBER_GROUPS = 20
# microsoft-graph-docs-contrib concepts/query-parameters.md (known issues: `in`, 15 expressions)
MAX_IN_VALUES = 15
_IN_CLAUSE = re.compile(r"\bin\s*\((?P<values>(?:[^()']|'(?:[^']|'')*')*)\)", re.IGNORECASE)
ID_NAMESPACE = uuid.UUID("3b8f0c52-6a55-4f7e-9d0b-6f1e2a4c7d90")
OP_NAMES = {
    "add": "Add member to group",
    "remove": "Remove member from group",
    "owner_add": "Add owner to group",
    "owner_remove": "Remove owner from group",
}
OP_TYPES = {
    "add": "Assign",
    "remove": "Unassign",
    "owner_add": "Assign",
    "owner_remove": "Unassign",
}
NAME_TO_OP = {v.lower(): k for k, v in OP_NAMES.items()}


@dataclass(slots=True)
class GraphRequest:
    method: str
    version: str  # "v1.0", "beta", or "" for non-Graph paths such as downloads
    path: str  # after the version, starting with "/"
    query: dict[str, str]  # keys lower-cased without the "$"
    raw_query: list[tuple[str, str]]
    base_url: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def full_path(self) -> str:
        return f"/{self.version}{self.path}" if self.version else self.path

    def q(self, name: str) -> str | None:
        return self.query.get(name)

    def context(self, fragment: str) -> str:
        return f"{self.base_url}/{self.version}/$metadata#{fragment}"

    def link(self, **replace: str) -> str:
        """This request's absolute URL with paging parameters replaced."""
        dropped = {"$skiptoken", "skiptoken", "$deltatoken", "deltatoken"}
        pairs = [(k, v) for k, v in self.raw_query if k.lower() not in dropped]
        pairs.extend((f"${k}", v) for k, v in replace.items())
        query = "&".join(f"{quote(k, safe='$')}={quote(v, safe=_SAFE)}" for k, v in pairs)
        return f"{self.base_url}{self.full_path}?{query}"


_SAFE = "$'(),:/=@"


@dataclass(slots=True)
class GraphResponse:
    status: int = 200
    body: Any = None
    raw: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# Most handlers answer at once; a few (subscriptions) await network calls first.
Handler = Callable[[GraphRequest], GraphResponse | Awaitable[GraphResponse]]


@dataclass(slots=True, frozen=True)
class Route:
    name: str
    methods: frozenset[str]
    versions: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    # The pattern's literal start, lower case: an ASCII path without it cannot match, which a
    # string comparison tells at a fraction of a failed regex match's cost.
    prefix: str = ""


def _literal_start(pattern: str) -> str:
    """The letters, digits and slashes a route pattern starts with, lower case."""
    literal = itertools.takewhile(lambda c: c.isascii() and (c.isalnum() or c == "/"), pattern)
    return "".join(literal).lower()


def parse_query(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Query options keyed case-insensitively, with or without the ``$`` prefix."""
    result: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower().lstrip("$").strip()
        result.setdefault(name, value)
    return result


def split_version(path: str) -> tuple[str, str]:
    for version in ("v1.0", "beta"):
        prefix = f"/{version}"
        if path.lower() == prefix:
            return version, "/"
        if path.lower().startswith(prefix + "/"):
            return version, path[len(prefix) :]
    return "", path


def _key_segment(name: str) -> str:
    """``/{id}`` or ``('{id}')`` (Graph accepts both key syntaxes)."""
    return rf"(?:/(?P<{name}>[^/()']+)|\('(?P<{name}_q>[^']+)'\))"


def _user_key_segment() -> str:
    """``/{id | userPrincipalName}`` or ``('{id | userPrincipalName}')``."""
    return r"(?:/(?P<id>[^/()']+)|\('(?P<id_q>(?:[^']|'')+)'\))"


def _param(req: GraphRequest, name: str) -> str:
    # GUID keys are case-insensitive in Graph; the tenant stores them lower-cased.
    return (req.params.get(name) or req.params.get(f"{name}_q") or "").lower()


def check_in_limit(expression: str | None) -> None:
    """Refuse a $filter whose ``in (...)`` lists more values than Graph takes."""
    if not expression:
        return
    for match in _IN_CLAUSE.finditer(expression):
        values = re.findall(r"'(?:[^']|'')*'|[^,\s][^,]*", match.group("values"))
        # microsoft-graph-docs-contrib concepts/query-parameters.md (known issues: `in`, 15 expressions)  # noqa: E501
        if len(values) > MAX_IN_VALUES:
            raise bad_request(
                "Too many child clauses specified in search filter expression "
                f"containing 'OR' operators: max {MAX_IN_VALUES}."
            )


def no_route(req: GraphRequest, template: str) -> GraphError:
    """Intune's 400 for an action its service does not route ("No method match route template").

    The wording is from public reports of Intune answers, e.g. microsoft-graph-docs-contrib
    issue #2014 (DeviceConfigV2 service) and msgraph-sdk-powershell issue #1729.
    """
    # microsoft-graph-docs-contrib issue #2014: 400 "No OData route exists that match template ..."
    # The service names keys in parentheses: configurationPolicies('{id}')/...
    path = re.sub(r"/configurationPolicies/([^/(']+)", r"/configurationPolicies('\1')", req.path)
    return GraphError(
        400,
        f"No OData route exists that match template {template} with http verb "
        f"{req.method.upper()} for request /DeviceConfigV2/DCV2GraphService{path}.",
        "No method match route template",
    )


BOTH = frozenset({"v1.0", "beta"})
BETA = frozenset({"beta"})
NONE = frozenset({""})


class GraphApi:
    """Every Graph endpoint the monitor uses, served from a ``TenantState``."""

    def __init__(self, state: TenantState) -> None:
        self.state = state
        self.exports = ExportJobStore()
        # Audit ids derive from the event sequence so they are stable across
        # queries and runs of the same scenario; uuid5 per event is too slow here.
        self._audit_salt = uuid.uuid5(ID_NAMESPACE, f"{state.tenant_id}:audit").int
        self._correlation_salt = uuid.uuid5(ID_NAMESPACE, f"{state.tenant_id}:correlation").int
        policy = r"/deviceManagement/configurationPolicies" + _key_segment("id")
        job = r"/deviceManagement/reports/exportJobs" + _key_segment("id")
        managed = r"/deviceManagement/managedDevices" + _key_segment("id")
        self.routes: list[Route] = []
        self._add(
            "configurationPolicies.list",
            "GET",
            BETA,
            r"/deviceManagement/configurationPolicies",
            self.list_policies,
        )
        self._add("configurationPolicies.get", "GET", BETA, policy, self.get_policy)
        self._add(
            "configurationPolicies.assignments",
            "GET",
            BETA,
            policy + r"/assignments",
            self.list_policy_assignments,
        )
        self._add(
            "configurationPolicies.retrieveEnrollmentTimeDeviceMembershipTarget",
            "POST",
            BETA,
            policy + r"/(?:microsoft\.graph\.)?retrieveEnrollmentTimeDeviceMembershipTarget",
            self.retrieve_etg,
        )
        self._add(
            "configurationPolicies.retrieveJustInTimeConfiguration",
            "GET POST",
            BETA,
            policy + r"/(?:microsoft\.graph\.)?retrieveJustInTimeConfiguration",
            self.retrieve_jit,
        )
        self._add("groups.delta", "GET", BOTH, r"/groups/delta(?:\(\))?", self.groups_delta)
        self._add("groups.get", "GET", BOTH, r"/groups" + _key_segment("id"), self.get_group)
        self._add(
            "groups.owners",
            "GET",
            BOTH,
            r"/groups" + _key_segment("id") + r"/owners",
            self.group_owners,
        )
        self._add(
            "groups.members",
            "GET",
            BOTH,
            r"/groups" + _key_segment("id") + r"/members(?P<cast>/(?:microsoft\.)?graph\.device)?",
            self.group_members,
        )
        self._add(
            "servicePrincipals.list",
            "GET",
            BOTH,
            r"/servicePrincipals",
            self.list_service_principals,
        )
        owned_cast = r"/ownedObjects(?P<cast>/(?:microsoft\.)?graph\.group)?"
        self._add(
            "servicePrincipals.ownedObjects",
            "GET",
            BOTH,
            r"/servicePrincipals\(appId='(?P<app_id>[^']+)'\)" + owned_cast,
            self.service_principal_owned_objects,
        )
        self._add(
            "servicePrincipals.ownedObjects",
            "GET",
            BOTH,
            r"/servicePrincipals" + _key_segment("id") + owned_cast,
            self.service_principal_owned_objects,
        )
        user = r"/users" + _user_key_segment()
        self._add("users.get", "GET", BOTH, user, self.get_user)
        self._add(
            "users.transitiveMemberOf",
            "GET",
            BOTH,
            user + r"/transitiveMemberOf(?P<cast>/(?:microsoft\.)?graph\.group)?",
            self.user_transitive_member_of,
        )
        self._add(
            "users.checkMemberGroups",
            "POST",
            BOTH,
            user + r"/(?:microsoft\.graph\.)?checkMemberGroups",
            self.user_check_member_groups,
        )
        self._add(
            "exportJobs.create",
            "POST",
            BOTH,
            r"/deviceManagement/reports/exportJobs",
            self.create_export,
        )
        self._add("exportJobs.get", "GET", BOTH, job, self.get_export)
        self._add(
            "exportJobs.download",
            "GET",
            NONE,
            r"/_download/(?P<id>[^/]+)\.zip",
            self.download_export,
        )
        self._add(
            "managedDevices.list",
            "GET",
            BOTH,
            r"/deviceManagement/managedDevices",
            self.list_managed_devices,
        )
        self._add("managedDevices.get", "GET", BOTH, managed, self.get_managed_device)
        self._add("devices.list", "GET", BOTH, r"/devices", self.list_devices)
        self._add(
            "devices.get",
            "GET",
            BOTH,
            r"/devices\(deviceId='(?P<device_id>[^']+)'\)",
            self.get_device,
        )
        self._add("devices.get", "GET", BOTH, r"/devices" + _key_segment("id"), self.get_device)
        self._add(
            "devices.checkMemberGroups",
            "POST",
            BOTH,
            r"/devices" + _key_segment("id") + r"/(?:microsoft\.graph\.)?checkMemberGroups",
            self.check_member_groups,
        )
        self._add(
            "directoryAudits.list", "GET", BOTH, r"/auditLogs/directoryAudits", self.list_audits
        )
        # Imported here: the write routes build on this module's request and response types.
        from devtools.simtenant.writes_api import register_writes

        register_writes(self)
        from devtools.simtenant.payload_api import register_payload

        register_payload(self)
        self._add("$batch", "POST", BOTH, r"/\$batch", self._batch_placeholder)

    def add_route(
        self, name: str, methods: str, versions: frozenset[str], pattern: str, handler: Handler
    ) -> None:
        """Serve ``pattern`` (a regex on the path after the version) with ``handler``."""
        self._add(name, methods, versions, pattern, handler)

    def _add(
        self, name: str, methods: str, versions: frozenset[str], pattern: str, handler: Handler
    ) -> None:
        self.routes.append(
            Route(
                name,
                frozenset(methods.split()),
                versions,
                re.compile(f"^{pattern}/?$", re.IGNORECASE),
                handler,
                _literal_start(pattern),
            )
        )

    @staticmethod
    def _batch_placeholder(req: GraphRequest) -> GraphResponse:
        raise bad_request("$batch cannot be nested.")

    def resolve(self, method: str, version: str, path: str) -> tuple[Route, dict[str, str]]:
        """Find the route for a request; unknown paths raise a Graph-shaped 404."""
        method_mismatch: Route | None = None
        # IGNORECASE also matches a few non-ASCII letters to ASCII ones: those paths skip it.
        folded = path.lower() if path.isascii() else ""
        for route in self.routes:
            if version not in route.versions:
                continue
            if folded and not folded.startswith(route.prefix):
                continue
            match = route.pattern.match(path)
            if match is None:
                continue
            if method.upper() not in route.methods:
                method_mismatch = route
                continue
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            return route, params
        if method_mismatch is not None:
            raise GraphError(
                405,
                f"The HTTP method '{method.upper()}' is not allowed for this resource.",
                "BadRequest",
            )
        segments = [s for s in path.split("/") if s]
        segment = segments[-1] if segments else version
        raise GraphError(404, f"Resource not found for the segment '{segment}'.", "BadRequest")

    # ------------------------------------------------------------------ helpers

    def _ok(self, body: dict[str, Any], status: int = 200) -> GraphResponse:
        return GraphResponse(status=status, body=body)

    def _single(
        self,
        req: GraphRequest,
        kind: str,
        context: str,
        item: dict[str, Any],
        odata_type: str,
        status: int = 200,
    ) -> GraphResponse:
        """One object, bare (as memdocs shows) or wrapped in ``value`` (as several
        Intune pages of the Graph reference show) when the scenario says so."""
        if kind in self.state.wrapped_single_objects:
            # microsoft-graph-docs-contrib api-reference/beta/api/intune-reporting-devicemanagementexportjob-get.md  # noqa: E501
            return self._ok(
                {
                    "@odata.context": req.context(context),
                    "value": {"@odata.type": odata_type, **item},
                },
                status=status,
            )
        # memdocs intune/intune-service/fundamentals/reports-export-graph-apis.md
        return self._ok({"@odata.context": req.context(context), **item}, status=status)

    @staticmethod
    def _filter(req: GraphRequest) -> str | None:
        expression = req.q("filter")
        check_in_limit(expression)
        return expression

    def _entra_device_json(self, device: EntraDevice) -> dict[str, Any]:
        if isinstance(device, DeviceSpec):
            object_id, device_id, name = (
                device.object_id,
                device.entra_device_id,
                device.device_name,
            )
            registered = device.enrolled_at.timestamp() - 60.0
        else:
            object_id, device_id, name = device.object_id, device.device_id, device.display_name
            registered = device.registered_at.timestamp()
        return {
            "@odata.type": "#microsoft.graph.device",
            "id": object_id,
            "deletedDateTime": None,
            "accountEnabled": True,
            "approximateLastSignInDateTime": None,
            "deviceId": device_id,
            "displayName": name,
            "isCompliant": None,
            "isManaged": True,
            "operatingSystem": "Windows",
            "operatingSystemVersion": "10.0.26100.4061",
            "profileType": "RegisteredDevice",
            "registrationDateTime": graph_time(ts_to_datetime(registered)),
            "trustType": "AzureAd",
        }

    # ------------------------------------------------------------------ configuration policies

    def _other_policies(self) -> list[dict[str, Any]]:
        families = [
            ("endpointSecurityAntivirus", "Microsoft Defender Antivirus", "mdm,microsoftSense"),
            ("none", "", "mdm"),
            ("baseline", "Security Baseline for Windows 10 and later", "mdm"),
            ("endpointSecurityFirewall", "Windows Firewall", "mdm,microsoftSense"),
            ("deviceConfigurationScripts", "", "mdm"),
        ]
        created = graph_time(self.state.start.replace(microsecond=0) - _days(120))
        items = []
        for index in range(self.state.other_configuration_policies):
            family, template_name, technologies = families[index % len(families)]
            policy_id = str(
                uuid.uuid5(ID_NAMESPACE, f"{self.state.tenant_id}:other-policy:{index}")
            )
            items.append(
                {
                    "createdDateTime": created,
                    "creationSource": None,
                    "description": "",
                    "lastModifiedDateTime": created,
                    "name": f"Contoso - {template_name or 'Settings catalog'} {index + 1}",
                    "platforms": "windows10",
                    "priorityMetaData": None,
                    "roleScopeTagIds": ["0"],
                    "settingCount": 4,
                    "technologies": technologies,
                    "id": policy_id,
                    "templateReference": {
                        "templateId": ""
                        if family == "none"
                        else str(uuid.uuid5(ID_NAMESPACE, family)) + "_1",
                        "templateFamily": family,
                        "templateDisplayName": template_name or None,
                        "templateDisplayVersion": "Version 1" if template_name else None,
                    },
                    "_settings": [],
                    "_assignments": [],
                }
            )
        return items

    def _policy_json(self, policy: Policy) -> dict[str, Any]:
        created = policy.created_at or (self.state.start - _days(60))
        template = USER_DRIVEN_TEMPLATE if policy.template == "user-driven" else AUTOMATIC_TEMPLATE
        settings = self._policy_settings(policy)
        return {
            "createdDateTime": graph_time_7(created),
            "creationSource": None,
            "description": policy.description,
            "lastModifiedDateTime": graph_time_7(created + _days(1)),
            "name": policy.name,
            "platforms": "windows10",
            # microsoft-graph-docs-contrib api-reference/beta/resources/intune-deviceconfigv2-devicemanagementconfigurationpolicy.md  # noqa: E501
            "priorityMetaData": {"priority": self.state.policy_priority(policy.id)},
            "roleScopeTagIds": ["0"],
            "settingCount": len(settings),
            "technologies": "enrollment",
            "id": policy.id,
            "templateReference": {
                "templateId": template,
                "templateFamily": "enrollmentConfiguration",
                "templateDisplayName": "Windows Autopilot device preparation",
                "templateDisplayVersion": "Version 1",
            },
            "_settings": settings,
            "_assignments": self._assignments_json(policy),
        }

    @staticmethod
    def _assignments_json(policy: Policy) -> list[dict[str, Any]]:
        # microsoft-graph-docs-contrib api-reference/beta/resources/intune-deviceconfigv2-devicemanagementconfigurationpolicyassignment.md  # noqa: E501
        return [
            {
                "id": f"{policy.id}_{group_id}",
                "source": "direct",
                "sourceId": policy.id,
                "target": {
                    "@odata.type": "#microsoft.graph.groupAssignmentTarget",
                    "deviceAndAppManagementAssignmentFilterId": None,
                    "deviceAndAppManagementAssignmentFilterType": "none",
                    "groupId": group_id,
                },
            }
            for group_id in policy.assigned_group_ids
        ]

    def _policy_settings(self, policy: Policy) -> list[dict[str, Any]]:
        automatic = policy.template == "automatic"

        def choice(
            definition: str, value: str, instance_template: str, value_template: str
        ) -> dict[str, Any]:
            return {
                "@odata.type": f"{CFG}ChoiceSettingInstance",
                "settingDefinitionId": definition,
                "settingInstanceTemplateReference": {
                    "settingInstanceTemplateId": instance_template
                },
                "choiceSettingValue": {
                    "@odata.type": f"{CFG}ChoiceSettingValue",
                    "value": value,
                    "settingValueTemplateReference": {
                        "settingValueTemplateId": value_template,
                        "useTemplateDefault": False,
                    },
                    "children": [],
                },
            }

        def simple(
            definition: str,
            value_type: str,
            value: Any,
            instance_template: str,
            value_template: str,
        ) -> dict[str, Any]:
            return {
                "@odata.type": f"{CFG}SimpleSettingInstance",
                "settingDefinitionId": definition,
                "settingInstanceTemplateReference": {
                    "settingInstanceTemplateId": instance_template
                },
                "simpleSettingValue": {
                    "@odata.type": f"{CFG}{value_type}SettingValue",
                    "settingValueTemplateReference": {
                        "settingValueTemplateId": value_template,
                        "useTemplateDefault": False,
                    },
                    "value": value,
                },
            }

        def collection(
            definition: str, values: list[str], instance_template: str
        ) -> dict[str, Any]:
            return {
                "@odata.type": f"{CFG}SimpleSettingCollectionInstance",
                "settingDefinitionId": definition,
                "settingInstanceTemplateReference": {
                    "settingInstanceTemplateId": instance_template
                },
                "simpleSettingCollectionValue": [
                    {
                        "@odata.type": f"{CFG}StringSettingValue",
                        "value": v,
                    }
                    for v in values
                ],
            }

        # This setting is what older tools read as "the ETG"; it is not kept in
        # sync with the real target, so by default it is stale or empty on purpose.
        if policy.settings_group_ids is not None:
            stale = list(policy.settings_group_ids)
        else:
            stale = (
                [str(uuid.uuid5(ID_NAMESPACE, f"stale-etg:{policy.id}"))]
                if int(policy.id[-1], 16) % 2 == 0
                else []
            )
        apps = [
            json.dumps(
                {"id": app_id, "type": "#microsoft.graph.win32LobApp"}, separators=(",", ":")
            )
            for app_id in policy.allowed_app_ids
        ]
        instances = [
            choice(
                "enrollment_autopilot_dpp_deploymentmode",
                "enrollment_autopilot_dpp_deploymentmode_0",
                "5180aeab-886e-4589-97d4-40855c646315",
                "5874c2f6-bcf1-463b-a9eb-bee64e2f2d82",
            ),
            choice(
                "enrollment_autopilot_dpp_deploymenttype",
                f"enrollment_autopilot_dpp_deploymenttype_{1 if automatic else 0}",
                "f4184296-fa9f-4b67-8b12-1723b3f8456b",
                "e0af022f-37f3-4a40-916d-1ab7281c88d9",
            ),
            choice(
                "enrollment_autopilot_dpp_jointype",
                "enrollment_autopilot_dpp_jointype_0",
                "6310e95d-6cfa-4d2f-aae0-1e7af12e2182",
                "1fa84eb3-fcfa-4ed6-9687-0f3d486402c4",
            ),
            choice(
                "enrollment_autopilot_dpp_accountype",
                "enrollment_autopilot_dpp_accountype_0",
                "d4f2a840-86d5-4162-9a08-fa8cc608b94e",
                "bf13bb47-69ef-4e06-97c1-50c2859a49c2",
            ),
            simple(
                "enrollment_autopilot_dpp_timeout",
                "Integer",
                policy.timeout_minutes,
                "6dec0657-dfb8-4906-a7ee-3ac6ee1edecb",
                "0bbcce5b-a55a-4e05-821a-94bf576d6cc8",
            ),
            simple(
                "enrollment_autopilot_dpp_customerrormessage",
                "String",
                "Contact your organization's support person for help.",
                "2ddf0619-2b7a-46de-b29b-c6191e9dda6e",
                "fe5002d5-fbe9-4920-9e2d-26bfc4b4cc97",
            ),
            choice(
                "enrollment_autopilot_dpp_allowskip",
                "enrollment_autopilot_dpp_allowskip_0",
                "2a71dc89-0f17-4ba9-bb27-af2521d34710",
                "a2323e5e-ac56-4517-8847-b0a6fdb467e7",
            ),
            choice(
                "enrollment_autopilot_dpp_allowdiagnostics",
                "enrollment_autopilot_dpp_allowdiagnostics_1",
                "e2b7a81b-f243-4abd-bce3-c1856345f405",
                "c59d26fd-3460-4b26-b47a-f7e202e7d5a3",
            ),
            collection(
                "enrollment_autopilot_dpp_allowedappids",
                apps,
                "a9dedfd6-c3b2-46d9-ae39-91fd0dcb7a20"
                if automatic
                else "70d22a8a-a03c-4f62-b8df-dded3e327639",
            ),
            collection(
                "enrollment_autopilot_dpp_allowedscriptids",
                list(policy.allowed_script_ids),
                "ff20a4a9-a2f4-4a2e-84e0-4cd1dc9bed31"
                if automatic
                else "1bc67702-800c-4271-8fd9-609351cc19cf",
            ),
            collection(
                "enrollment_autopilot_dpp_devicesecuritygroupids",
                stale,
                "a46a50ab-3076-4968-9366-75a40dde950e",
            ),
        ]
        return [{"id": str(i), "settingInstance": instance} for i, instance in enumerate(instances)]

    def _all_policies(self) -> list[dict[str, Any]]:
        items = [self._policy_json(p) for p in self.state.policies()] + self._other_policies()
        items.sort(key=lambda item: item["id"])
        return items

    @staticmethod
    def _finish_policy(
        item: dict[str, Any], expand: frozenset[str], select: list[str] | None
    ) -> dict[str, Any]:
        settings = item.pop("_settings")
        assignments = item.pop("_assignments")
        result = project(item, select)
        if "settings" in expand:
            result["settings"] = settings
        # assignments is a navigation property of the policy, so $expand reaches it:
        # microsoft-graph-docs-contrib api-reference/beta/resources/intune-deviceconfigv2-devicemanagementconfigurationpolicy.md  # noqa: E501
        if "assignments" in expand:
            result["assignments"] = assignments
        return result

    _POLICY_CLAUSE = re.compile(
        r"^(?P<prop>[\w/]+)\s+(?P<op>eq|ne|has)\s+'(?P<value>(?:[^']|'')*)'$", re.IGNORECASE
    )

    def _policy_predicate(self, expression: str | None) -> Callable[[dict[str, Any]], bool]:
        if not expression:
            return lambda item: True
        getters: dict[str, Callable[[dict[str, Any]], str]] = {
            "templatereference/templatefamily": lambda i: i["templateReference"]["templateFamily"],
            "templatereference/templateid": lambda i: i["templateReference"]["templateId"],
            "technologies": lambda i: i["technologies"],
            "platforms": lambda i: i["platforms"],
            "name": lambda i: i["name"],
            "id": lambda i: i["id"],
        }
        checks: list[Callable[[dict[str, Any]], bool]] = []
        for clause in split_and(expression):
            match = self._POLICY_CLAUSE.match(clause)
            getter = getters.get(match.group("prop").lower()) if match else None
            if match is None or getter is None:
                raise bad_request(f"Invalid filter clause: '{clause}'.")
            op = match.group("op").lower()
            value = match.group("value").replace("''", "'").lower()

            def check(
                item: dict[str, Any],
                getter: Callable[[dict[str, Any]], str] = getter,
                op: str = op,
                value: str = value,
            ) -> bool:
                actual = (getter(item) or "").lower()
                if op == "has":
                    return value in [part.strip() for part in actual.split(",")]
                return (actual == value) == (op == "eq")

            checks.append(check)
        return lambda item: all(check(item) for check in checks)

    @staticmethod
    def _expands(req: GraphRequest) -> frozenset[str]:
        """The navigation properties named in $expand (``settings``, ``assignments``)."""
        expand = (req.q("expand") or "").lower()
        found = set()
        for part in expand.split(","):
            name = part.strip().split("(", 1)[0].strip()
            if not name:
                continue
            if name not in ("settings", "assignments"):
                # microsoft-graph-docs-contrib api-reference/beta/resources/intune-deviceconfigv2-devicemanagementconfigurationpolicy.md  # noqa: E501
                raise bad_request(
                    f"Could not find a property named '{name}' on type "
                    "'microsoft.graph.deviceManagementConfigurationPolicy'."
                )
            found.add(name)
        return frozenset(found)

    def list_policies(self, req: GraphRequest) -> GraphResponse:
        predicate = self._policy_predicate(self._filter(req))
        items = [item for item in self._all_policies() if predicate(item)]
        top = parse_top(req.q("top"), 25, 1000)
        offset = (
            int(decode_token(req.q("skiptoken") or "").get("o", 0)) if req.q("skiptoken") else 0
        )
        page = items[offset : offset + top]
        expand = self._expands(req)
        select = parse_select(req.q("select"))
        body: dict[str, Any] = {
            "@odata.context": req.context("deviceManagement/configurationPolicies"),
            "@odata.count": len(items),
            "value": [self._finish_policy(item, expand, select) for item in page],
        }
        if offset + top < len(items):
            body["@odata.nextLink"] = req.link(skiptoken=encode_token({"o": offset + top}))
        return self._ok(body)

    def _find_policy_item(self, policy_id: str) -> dict[str, Any]:
        for item in self._all_policies():
            if item["id"].lower() == policy_id.lower():
                return item
        raise GraphError(404, f"No policy found with id '{policy_id}'.", "ResourceNotFound")

    def get_policy(self, req: GraphRequest) -> GraphResponse:
        item = self._find_policy_item(_param(req, "id"))
        body = {"@odata.context": req.context("deviceManagement/configurationPolicies/$entity")}
        body.update(self._finish_policy(item, self._expands(req), parse_select(req.q("select"))))
        return self._ok(body)

    def list_policy_assignments(self, req: GraphRequest) -> GraphResponse:
        """``GET /configurationPolicies/{id}/assignments``: the policy's group assignments."""
        # microsoft-graph-docs-contrib api-reference/beta/api/intune-deviceconfigv2-devicemanagementconfigurationpolicyassignment-list.md  # noqa: E501
        item = self._find_policy_item(_param(req, "id"))
        items = [
            {"@odata.type": "#microsoft.graph.deviceManagementConfigurationPolicyAssignment", **a}
            for a in item["_assignments"]
        ]
        policy_id = item["id"]
        return self._offset_page(
            req,
            f"deviceManagement/configurationPolicies('{policy_id}')/assignments",
            items,
            default=100,
            maximum=1000,
        )

    def _device_preparation_policy(self, req: GraphRequest) -> Policy:
        policy_id = _param(req, "id")
        policy = self.state.get_policy(policy_id)
        if policy is None:
            self._find_policy_item(policy_id)  # 404 when unknown
            raise bad_request("The policy is not a Windows Autopilot device preparation policy.")
        return policy

    def retrieve_etg(self, req: GraphRequest) -> GraphResponse:
        policy = self._device_preparation_policy(req)
        if policy.etg_api in ("jit_only", "unrouted"):
            # microsoft-graph-docs-contrib issue #2014 (400 "No OData route exists that match ...")
            raise no_route(req, "~/singleton/navigation/key/action")
        if policy.etg_api == "error":
            raise GraphError(500, "An internal server error occurred.", "InternalServerError")
        targets = [] if policy.etg_group_id is None else [policy.etg_group_id]
        if policy.etg_api == "documented":
            statuses = []
            for target in targets:
                code = self.state.etg_validation_error(target)
                statuses.append(
                    {
                        "targetId": target,
                        "validationSucceeded": code is None,
                        # The documented enum has no "none"; success reports "unknown".
                        "targetValidationErrorCode": code or "unknown",
                    }
                )
            # microsoft-graph-docs-contrib api-reference/beta/api/intune-deviceconfigv2-devicemanagementconfigurationpolicy-retrieveenrollmenttimedevicemembershiptarget.md  # noqa: E501
            return self._single(
                req,
                "etgAction",
                "microsoft.graph.enrollmentTimeDeviceMembershipTargetResult",
                {
                    "validationSucceeded": all(s["validationSucceeded"] for s in statuses),
                    "enrollmentTimeDeviceMembershipTargetValidationStatuses": statuses,
                },
                "microsoft.graph.enrollmentTimeDeviceMembershipTargetResult",
            )
        inner = {
            "enrollmentTimeDeviceMembershipTargets": [
                {"targetType": "staticSecurityGroup", "targetId": target} for target in targets
            ]
        }
        if policy.etg_api == "targets_wrapped":
            return self._ok(
                {
                    "@odata.context": req.context(
                        "microsoft.graph.enrollmentTimeDeviceMembershipTargetResult"
                    ),
                    "value": inner,
                }
            )
        return self._single(
            req,
            "etgAction",
            "microsoft.graph.enrollmentTimeDeviceMembershipTargetResult",
            inner,
            "microsoft.graph.enrollmentTimeDeviceMembershipTargetResult",
        )

    def retrieve_jit(self, req: GraphRequest) -> GraphResponse:
        policy = self._device_preparation_policy(req)
        if policy.etg_api == "unrouted" or not self.state.jit_action_routed:
            # microsoft-graph-docs-contrib issue #2014 (400 "No OData route exists that match ...")
            raise no_route(req, "~/singleton/navigation/key/action")
        target = [] if policy.etg_group_id is None else [policy.etg_group_id]
        # Always wrapped, as the only page showing this action prints it:
        # microsoft-graph-docs-contrib api-reference/beta/api/intune-deviceconfigv2-devicemanagementconfigurationpolicy-retrievejustintimeconfiguration.md  # noqa: E501
        return self._ok(
            {
                "@odata.context": req.context(
                    "microsoft.graph.deviceManagementConfigurationJustInTimeAssignmentPolicy"
                ),
                "value": {"targetType": "entraSecurityGroup", "target": target},
            }
        )

    # ------------------------------------------------------------------ groups

    def _live_group(self, group_id: str) -> Any:
        group = self.state.get_group(group_id)
        if group is None or group.deleted:
            raise not_found(group_id)
        return group

    def get_group(self, req: GraphRequest) -> GraphResponse:
        group_id = _param(req, "id")
        group = self._live_group(group_id)
        created = group.created_at or (self.state.start - _days(90))
        dynamic = "DynamicMembership" in group.group_types
        item = {
            "id": group.id,
            "deletedDateTime": None,
            "classification": None,
            "createdDateTime": graph_time(created),
            "description": None,
            "displayName": group.display_name,
            "groupTypes": list(group.group_types),
            "isAssignableToRole": group.is_assignable_to_role,
            "mail": None,
            "mailEnabled": group.mail_enabled,
            "mailNickname": re.sub(r"[^A-Za-z0-9]", "", group.display_name)[:64] or "group",
            "membershipRule": group.membership_rule,
            "membershipRuleProcessingState": "On" if dynamic else None,
            "securityEnabled": group.security_enabled,
            "visibility": None,
        }
        body = {"@odata.context": req.context("groups/$entity")}
        body.update(project(item, parse_select(req.q("select"))))
        return self._ok(body)

    def group_owners(self, req: GraphRequest) -> GraphResponse:
        group_id = _param(req, "id")
        self._live_group(group_id)
        owners = self.state.group_owners(group_id)
        if req.version == "v1.0" and self.state.v1_owners_omit_service_principals:
            # "service principals are not listed as group owners due to the staged rollout":
            # microsoft-graph-docs-contrib api-reference/v1.0/api/group-list-owners.md
            owners = [o for o in owners if o.kind != "servicePrincipal"]
        items: list[dict[str, Any]] = []
        for owner in owners:
            if owner.kind == "servicePrincipal":
                items.append(
                    {
                        "@odata.type": "#microsoft.graph.servicePrincipal",
                        "id": owner.id,
                        "accountEnabled": True,
                        "appDisplayName": owner.display_name,
                        "appId": owner.app_id,
                        "appOwnerOrganizationId": MICROSOFT_TENANT,
                        "displayName": owner.display_name,
                        "servicePrincipalType": "Application",
                    }
                )
            else:
                items.append(
                    {
                        "@odata.type": "#microsoft.graph.user",
                        "id": owner.id,
                        "displayName": owner.display_name,
                        "mail": owner.user_principal_name,
                        "userPrincipalName": owner.user_principal_name,
                    }
                )
        return self._offset_page(req, "directoryObjects", items, default=100, maximum=999)

    def _offset_page(
        self,
        req: GraphRequest,
        context: str,
        items: list[dict[str, Any]],
        *,
        default: int,
        maximum: int,
    ) -> GraphResponse:
        top = parse_top(req.q("top"), default, maximum, strict=True)
        offset = (
            int(decode_token(req.q("skiptoken") or "").get("o", 0)) if req.q("skiptoken") else 0
        )
        select = parse_select(req.q("select"))
        body: dict[str, Any] = {
            "@odata.context": req.context(context),
            "value": [project(item, select) for item in items[offset : offset + top]],
        }
        if offset + top < len(items):
            body["@odata.nextLink"] = req.link(skiptoken=encode_token({"o": offset + top}))
        return self._ok(body)

    def _member_json(self, object_id: str) -> dict[str, Any]:
        obj = self.state.directory_object(object_id)
        if isinstance(obj, User):
            return {
                "@odata.type": "#microsoft.graph.user",
                "id": object_id,
                "displayName": obj.display_name,
                "userPrincipalName": obj.user_principal_name,
            }
        if obj is None:
            return {"@odata.type": "#microsoft.graph.directoryObject", "id": object_id}
        return self._entra_device_json(obj)

    def group_members(self, req: GraphRequest) -> GraphResponse:
        group_id = _param(req, "id")
        self._live_group(group_id)
        devices_only = bool(req.params.get("cast"))
        top = parse_top(req.q("top"), 100, 999, strict=True)
        after = decode_token(req.q("skiptoken") or "").get("a") if req.q("skiptoken") else None
        ids, cursor = self.state.members_page(
            group_id, self.state.now_ts(), after, top, devices_only=devices_only
        )
        select = parse_select(req.q("select"))
        context = "devices" if devices_only else "directoryObjects"
        body: dict[str, Any] = {
            "@odata.context": req.context(context),
            "value": [project(self._member_json(object_id), select) for object_id in ids],
        }
        if cursor is not None:
            body["@odata.nextLink"] = req.link(skiptoken=encode_token({"a": cursor}))
        return self._ok(body)

    def list_service_principals(self, req: GraphRequest) -> GraphResponse:
        pc = self.state.provisioning_client()
        candidates = []
        if pc.present:
            candidates.append(
                {
                    "id": pc.object_id,
                    "accountEnabled": True,
                    "appDisplayName": pc.display_name,
                    "appId": pc.app_id,
                    "appOwnerOrganizationId": MICROSOFT_TENANT,
                    "displayName": pc.display_name,
                    "servicePrincipalNames": [pc.app_id],
                    "servicePrincipalType": "Application",
                    "signInAudience": "AzureADMultipleOrgs",
                    "tags": [],
                }
            )
        expression = self._filter(req)
        if expression:
            for clause in split_and(expression):
                match = re.match(
                    r"^(appId|displayName|id)\s+eq\s+'((?:[^']|'')*)'$", clause, re.IGNORECASE
                )
                if match is None:
                    raise bad_request(f"Invalid filter clause: '{clause}'.")
                prop = {"appid": "appId", "displayname": "displayName", "id": "id"}[
                    match.group(1).lower()
                ]
                value = match.group(2).replace("''", "'").lower()
                candidates = [c for c in candidates if str(c[prop]).lower() == value]
        return self._offset_page(req, "servicePrincipals", candidates, default=100, maximum=999)

    def service_principal_owned_objects(self, req: GraphRequest) -> GraphResponse:
        """``GET /servicePrincipals/{id}/ownedObjects[/microsoft.graph.group]``: the groups it owns.

        Addressed by object id or ``(appId='...')`` (v1.0 page); only the provisioning
        client exists, and it owns groups only.
        """
        # microsoft-graph-docs-contrib api-reference/v1.0/api/serviceprincipal-list-ownedobjects.md
        pc = self.state.provisioning_client()
        if "app_id" in req.params:
            key = req.params["app_id"]
            found = pc.present and key.lower() == pc.app_id.lower()
        else:
            key = _param(req, "id")
            found = pc.present and key == pc.object_id
        if not found:
            raise not_found(key)
        items = [self._group_json(g) for g in self.state.owned_groups(pc.object_id)]
        context = "groups" if req.params.get("cast") else "directoryObjects"
        return self._offset_page(req, context, items, default=100, maximum=999)

    # ------------------------------------------------------------------ groups delta

    def groups_delta(self, req: GraphRequest) -> GraphResponse:
        now_ts = self.state.now_ts()
        delta_token = req.q("deltatoken")
        skip_token = req.q("skiptoken")
        latest = "latest"  # Graph's "start from now" token
        if delta_token == latest:
            group_id = self._delta_group_filter(req)
            select = req.q("select") or ""
            return self._delta_body(
                req, [], None, {"k": "d", "g": group_id, "w": now_ts, "s": select}
            )
        if delta_token or skip_token:
            token = decode_token(delta_token or skip_token or "")
            if not isinstance(token.get("g"), str) or not isinstance(token.get("w"), int | float):
                raise bad_request("The provided delta token is invalid.")
            if now_ts - float(token["w"]) > DELTA_TOKEN_MAX_AGE_S:
                raise GraphError(
                    410,
                    "The sync state is too old; start a full synchronization.",
                    "syncStateNotFound",
                )
            kind = token.get("k")
            if kind == "f":
                return self._delta_full_page(
                    req, token["g"], float(token["w"]), token.get("a"), token.get("s", "")
                )
            if kind == "d":
                return self._delta_changes(
                    req, token["g"], float(token["w"]), now_ts, 0, token.get("s", "")
                )
            if kind == "i":
                return self._delta_changes(
                    req,
                    token["g"],
                    float(token["w"]),
                    float(token["u"]),
                    int(token.get("o", 0)),
                    token.get("s", ""),
                )
            raise bad_request("The provided delta token is invalid.")
        group_id = self._delta_group_filter(req)
        return self._delta_full_page(req, group_id, now_ts, None, req.q("select") or "")

    @staticmethod
    def _delta_group_filter(req: GraphRequest) -> str:
        expression = GraphApi._filter(req) or ""
        match = re.match(r"^id\s+eq\s+'([^']+)'$", strip_parens(expression), re.IGNORECASE)
        if match is None:
            raise bad_request(
                "This tenant only supports groups/delta filtered on one group: "
                "$filter=id eq '<id>'."
            )
        return match.group(1).lower()

    @staticmethod
    def _wants_members(select: str) -> bool:
        return not select or "members" in [s.strip().lower() for s in select.split(",")]

    def _delta_group_item(
        self, group_id: str, select: str, members: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {"@odata.type": "#microsoft.graph.group", "id": group_id}
        group = self.state.get_group(group_id)
        wanted = {s.strip().lower() for s in select.split(",") if s.strip()}
        if group is not None and (not wanted or "displayname" in wanted):
            item["displayName"] = group.display_name
        if members is not None and self._wants_members(select):
            item["members@delta"] = members
        return item

    def _delta_full_page(
        self, req: GraphRequest, group_id: str, watermark: float, after: str | None, select: str
    ) -> GraphResponse:
        group = self.state.get_group(group_id)
        if group is None or group.deleted:
            return self._delta_body(
                req, [], None, {"k": "d", "g": group_id, "w": watermark, "s": select}
            )
        ids, cursor = self.state.members_page(
            group_id, self.state.now_ts(), after, DELTA_PAGE_SIZE, devices_only=False
        )
        members = [
            {"@odata.type": self._member_type(object_id), "id": object_id} for object_id in ids
        ]
        item = self._delta_group_item(group_id, select, members)
        if cursor is not None:
            return self._delta_body(
                req,
                [item],
                {"k": "f", "g": group_id, "w": watermark, "a": cursor, "s": select},
                None,
            )
        return self._delta_body(
            req, [item], None, {"k": "d", "g": group_id, "w": watermark, "s": select}
        )

    def _delta_changes(
        self, req: GraphRequest, group_id: str, since: float, until: float, offset: int, select: str
    ) -> GraphResponse:
        group = self.state.get_group(group_id)
        if group is None or group.deleted:
            removed = {
                "@odata.type": "#microsoft.graph.group",
                "id": group_id,
                "@removed": {"reason": "deleted"},
            }
            return self._delta_body(
                req, [removed], None, {"k": "d", "g": group_id, "w": until, "s": select}
            )
        changes = self.state.membership_changes(group_id, since, until) if until > since else []
        page = changes[offset : offset + DELTA_PAGE_SIZE]
        members = []
        for object_id, op in page:
            entry: dict[str, Any] = {"@odata.type": self._member_type(object_id), "id": object_id}
            if op == "remove":
                entry["@removed"] = {"reason": "changed"}
            members.append(entry)
        value = [self._delta_group_item(group_id, select, members)] if members else []
        if offset + DELTA_PAGE_SIZE < len(changes):
            next_token = {
                "k": "i",
                "g": group_id,
                "w": since,
                "u": until,
                "o": offset + DELTA_PAGE_SIZE,
                "s": select,
            }
            return self._delta_body(req, value, next_token, None)
        return self._delta_body(
            req, value, None, {"k": "d", "g": group_id, "w": until, "s": select}
        )

    def _member_type(self, object_id: str) -> str:
        obj = self.state.directory_object(object_id)
        return "#microsoft.graph.user" if isinstance(obj, User) else "#microsoft.graph.device"

    def _delta_body(
        self,
        req: GraphRequest,
        value: list[dict[str, Any]],
        next_token: dict[str, Any] | None,
        delta_token: dict[str, Any] | None,
    ) -> GraphResponse:
        body: dict[str, Any] = {"@odata.context": req.context("groups"), "value": value}
        base = f"{req.base_url}/{req.version}/groups/delta"
        if next_token is not None:
            body["@odata.nextLink"] = f"{base}?$skiptoken={encode_token(next_token)}"
        if delta_token is not None:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={encode_token(delta_token)}"
        return self._ok(body)

    # ------------------------------------------------------------------ report exports

    def create_export(self, req: GraphRequest) -> GraphResponse:
        now = self.state.now()
        job = self.exports.create(req.body, now, self._rows_at(now))
        # microsoft-graph-docs-contrib api-reference/beta/api/intune-reporting-devicemanagementexportjob-create.md  # noqa: E501
        return self._single(
            req,
            "exportJob",
            "deviceManagement/reports/exportJobs/$entity",
            job.to_graph(None),
            "#microsoft.graph.deviceManagementExportJob",
            status=201,
        )

    def _rows_at(self, now: datetime) -> RowsAt:
        def rows_at(
            report_name: str, keep: Callable[[DeviceSpec], bool] | None
        ) -> list[dict[str, str]]:
            devices = self.state.visible_deployments(now.timestamp())
            if keep is not None:
                devices = [d for d in devices if keep(d)]
            return report_rows(report_name, devices, now.timestamp())

        return rows_at

    def get_export(self, req: GraphRequest) -> GraphResponse:
        now = self.state.now()
        job = self.exports.poll(
            _param(req, "id"),
            now,
            polls_before_ready=self.state.export_polls_before_ready,
            fail=self.state.export_jobs_fail,
            rows_at=self._rows_at(now),
        )
        # microsoft-graph-docs-contrib api-reference/beta/api/intune-reporting-devicemanagementexportjob-get.md  # noqa: E501
        return self._single(
            req,
            "exportJob",
            "deviceManagement/reports/exportJobs/$entity",
            job.to_graph(f"{req.base_url}/_download/{quote(job.id)}.zip"),
            "#microsoft.graph.deviceManagementExportJob",
        )

    def download_export(self, req: GraphRequest) -> GraphResponse:
        content = self.exports.content(_param(req, "id"))
        if content is None:
            return GraphResponse(
                status=404,
                raw=b'<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code>'
                b"<Message>The specified blob does not exist.</Message></Error>",
                content_type="application/xml",
            )
        return GraphResponse(raw=content, content_type="application/octet-stream")

    # ------------------------------------------------------------------ managed devices

    _TIME_FILTER = re.compile(
        r"^(?P<prop>\w+)\s+(?P<op>ge|gt|le|lt|eq)\s+(?P<value>'?[0-9][0-9T:.\-+Z]*'?)$",
        re.IGNORECASE,
    )
    _EQ_FILTER = re.compile(r"^(?P<prop>\w+)\s+eq\s+'(?P<value>(?:[^']|'')*)'$", re.IGNORECASE)

    def _managed_device_json(
        self, device: DeviceSpec, now_ts: float, *, by_id: bool = False
    ) -> dict[str, Any]:
        finished = device.enrolled_at.timestamp() + device.deployment.duration_s
        last_sync = min(now_ts, finished) if device.deployment.outcome != "in_progress" else now_ts
        make, model = _hardware(device.serial_number)
        return {
            "id": device.managed_device_id,
            "userId": None,
            "deviceName": device.device_name,
            "managedDeviceOwnerType": "company",
            "enrolledDateTime": graph_time(device.enrolled_at),
            "lastSyncDateTime": graph_time(ts_to_datetime(last_sync)),
            "operatingSystem": "Windows",
            "complianceState": "compliant",
            "jailBroken": "Unknown",
            "managementAgent": "mdm",
            "osVersion": "10.0.26100.4061",
            "easActivated": False,
            "azureADRegistered": True,
            "deviceEnrollmentType": "windowsAzureADJoin",
            "emailAddress": device.user_principal_name,
            "azureADDeviceId": device.entra_device_id,
            "deviceRegistrationState": "registered",
            "isEncrypted": True,
            "userPrincipalName": device.user_principal_name,
            "model": model,
            "manufacturer": make,
            "serialNumber": device.serial_number,
            "userDisplayName": device.user_principal_name.split("@")[0].replace(".", " ").title(),
            # LIST answers leave it null; only GET by id fills it: microsoft-graph-docs-contrib
            # issues #1455 and #8816, msgraph-sdk-powershell issue #2228.
            "enrollmentProfileName": self.state.policy_name(device.policy_id)
            if by_id and device.profile_name_stamped
            else None,
            "joinType": "azureADJoined",
            "autopilotEnrolled": False,
        }

    def list_managed_devices(self, req: GraphRequest) -> GraphResponse:
        now_ts = self.state.now_ts()
        since: float | None = None
        until: float | None = None
        equals: dict[str, str] = {}
        expression = self._filter(req)
        for clause in split_and(expression) if expression else []:
            if (match := self._TIME_FILTER.match(clause)) and match.group(
                "prop"
            ).lower() == "enrolleddatetime":
                bound = _parse_bound(match.group("value"))
                op = match.group("op").lower()
                if op in ("ge", "gt", "eq"):
                    value = bound + (1e-6 if op == "gt" else 0.0)
                    since = value if since is None else max(since, value)
                if op in ("le", "lt", "eq"):
                    value = bound - (1e-6 if op == "lt" else 0.0)
                    until = value if until is None else min(until, value)
            elif (match := self._EQ_FILTER.match(clause)) and match.group("prop").lower() in (
                "azureaddeviceid",
                "serialnumber",
                "devicename",
                "operatingsystem",
                "id",
            ):
                equals[match.group("prop").lower()] = (
                    match.group("value").replace("''", "'").lower()
                )
            else:
                raise bad_request(f"Invalid filter clause: '{clause}'.")
        top = parse_top(req.q("top"), 100, 1000)
        token = decode_token(req.q("skiptoken") or "") if req.q("skiptoken") else {}
        select = parse_select(req.q("select"))
        if equals:
            devices = [
                d
                for d in self.state.visible_deployments(now_ts)
                if _managed_matches(d, equals, since, until)
            ]
            return self._offset_page(
                req,
                "deviceManagement/managedDevices",
                [self._managed_device_json(d, now_ts) for d in devices],
                default=100,
                maximum=1000,
            )
        after = (float(token["t"]), str(token["i"])) if "t" in token else None
        page, cursor = self.state.managed_devices_page(now_ts, since, until, after, top)
        body: dict[str, Any] = {
            "@odata.context": req.context("deviceManagement/managedDevices"),
            "value": [project(self._managed_device_json(d, now_ts), select) for d in page],
        }
        if cursor is not None:
            body["@odata.nextLink"] = req.link(
                skiptoken=encode_token({"t": cursor[0], "i": cursor[1]})
            )
        return self._ok(body)

    def get_managed_device(self, req: GraphRequest) -> GraphResponse:
        now_ts = self.state.now_ts()
        managed_id = _param(req, "id")
        device = self.state.managed_device(managed_id, now_ts)
        if device is None:
            raise GraphError(
                404, f"Managed device '{managed_id}' was not found.", "ResourceNotFound"
            )
        item = project(
            self._managed_device_json(device, now_ts, by_id=True), parse_select(req.q("select"))
        )
        # microsoft-graph-docs-contrib api-reference/v1.0/api/intune-devices-manageddevice-get.md
        return self._single(
            req,
            "managedDevice",
            "deviceManagement/managedDevices/$entity",
            item,
            "#microsoft.graph.managedDevice",
        )

    # ------------------------------------------------------------------ Entra devices

    _IN_FILTER = re.compile(r"^deviceId\s+in\s+\((?P<values>.*)\)$", re.IGNORECASE)

    def list_devices(self, req: GraphRequest) -> GraphResponse:
        now_ts = self.state.now_ts()
        expression = self._filter(req)
        select = parse_select(req.q("select"))
        if not expression:
            top = parse_top(req.q("top"), 100, 999)
            after = decode_token(req.q("skiptoken") or "").get("a") if req.q("skiptoken") else None
            page, cursor = self.state.entra_devices_page(now_ts, after, top)
            body: dict[str, Any] = {
                "@odata.context": req.context("devices"),
                "value": [project(self._entra_device_json(d), select) for d in page],
            }
            if cursor is not None:
                body["@odata.nextLink"] = req.link(skiptoken=encode_token({"a": cursor}))
            return self._ok(body)
        wanted: list[str] | None = None
        names: list[str] | None = None
        for clause in split_and(expression):
            if match := self._IN_FILTER.match(clause):
                values = re.findall(r"'([^']*)'", match.group("values"))
                if len(values) > 15:
                    raise bad_request(
                        "Too many child clauses specified in search filter expression "
                        "containing 'OR' operators: max 15."
                    )
                wanted = values if wanted is None else [v for v in wanted if v in values]
            elif (match := self._EQ_FILTER.match(clause)) and match.group(
                "prop"
            ).lower() == "deviceid":
                value = match.group("value")
                wanted = [value] if wanted is None else [v for v in wanted if v == value]
            elif (match := self._EQ_FILTER.match(clause)) and match.group(
                "prop"
            ).lower() == "displayname":
                names = [match.group("value").replace("''", "'")]
            else:
                raise bad_request(f"Invalid filter clause: '{clause}'.")
        found: list[EntraDevice] = []
        if wanted is not None:
            for device_id in dict.fromkeys(v.lower() for v in wanted):
                device = self.state.entra_device_by_device_id(device_id, now_ts)
                if device is not None and (
                    names is None or self._entra_device_json(device)["displayName"] in names
                ):
                    found.append(device)
        elif names is not None:
            found = [d for d in self.state.visible_deployments(now_ts) if d.device_name in names]
        items = [self._entra_device_json(d) for d in found]
        return self._offset_page(req, "devices", items, default=100, maximum=999)

    def get_device(self, req: GraphRequest) -> GraphResponse:
        now_ts = self.state.now_ts()
        if "device_id" in req.params:
            key = req.params["device_id"]
            device = self.state.entra_device_by_device_id(key.lower(), now_ts)
        else:
            key = _param(req, "id")
            device = self.state.entra_device(key.lower(), now_ts)
        if device is None:
            raise not_found(key)
        body = {"@odata.context": req.context("devices/$entity")}
        body.update(project(self._entra_device_json(device), parse_select(req.q("select"))))
        return self._ok(body)

    @staticmethod
    def _check_member_groups_ids(req: GraphRequest) -> list[str]:
        body = req.body
        group_ids = body.get("groupIds") if isinstance(body, dict) else None
        if not isinstance(group_ids, list) or not all(isinstance(g, str) for g in group_ids):
            raise bad_request(
                "The request body must be a JSON object with a 'groupIds' array of strings."
            )
        if len(group_ids) > MAX_CHECK_MEMBER_GROUPS:
            raise bad_request(
                f"The number of groupIds ({len(group_ids)}) exceeds the maximum of "
                f"{MAX_CHECK_MEMBER_GROUPS}."
            )
        wanted: list[str] = []
        for value in group_ids:
            try:
                wanted.append(str(uuid.UUID(value.strip())))
            except ValueError as exc:
                raise bad_request(f"Invalid GUID: '{value}'.") from exc
        return wanted

    def _check_member_groups_answer(
        self, req: GraphRequest, object_id: str, wanted: list[str], now_ts: float
    ) -> GraphResponse:
        groups = self.state.transitive_member_groups(object_id, now_ts)
        return self._ok(
            {
                "@odata.context": req.context("Collection(Edm.String)"),
                "value": [g for g in dict.fromkeys(wanted) if g in groups],
            }
        )

    def check_member_groups(self, req: GraphRequest) -> GraphResponse:
        """``POST /devices/{id}/checkMemberGroups``: which of the given groups hold the device.

        Membership is transitive and evaluated at the current sim time; the answer keeps
        the request's order, without duplicates, with GUIDs in Graph's lower case.
        """
        now_ts = self.state.now_ts()
        object_id = _param(req, "id")
        # microsoft-graph-docs-contrib api-reference/v1.0/api/directoryobject-checkmembergroups.md
        wanted = self._check_member_groups_ids(req)
        if self.state.entra_device(object_id, now_ts) is None:
            raise not_found(object_id)
        return self._check_member_groups_answer(req, object_id, wanted, now_ts)

    # ------------------------------------------------------------------ users

    def _user(self, req: GraphRequest) -> User:
        raw = req.params.get("id") or (req.params.get("id_q") or "").replace("''", "'")
        user = self.state.user_by_key(raw)
        if user is None:
            # microsoft-graph-docs-contrib api-reference/v1.0/api/user-get.md (404: no such user)
            raise not_found(raw)
        return user

    @staticmethod
    def _user_json(user: User) -> dict[str, Any]:
        # Default properties: microsoft-graph-docs-contrib api-reference/v1.0/api/user-get.md
        given, _, surname = user.display_name.partition(" ")
        return {
            "businessPhones": [],
            "displayName": user.display_name,
            "givenName": given or None,
            "jobTitle": None,
            "mail": user.user_principal_name,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": surname or None,
            "userPrincipalName": user.user_principal_name,
            "id": user.id,
        }

    def get_user(self, req: GraphRequest) -> GraphResponse:
        """``GET /users/{id | userPrincipalName}`` (the UPN matches case-insensitively)."""
        # microsoft-graph-docs-contrib api-reference/v1.0/api/user-get.md
        user = self._user(req)
        body = {"@odata.context": req.context("users/$entity")}
        body.update(project(self._user_json(user), parse_select(req.q("select"))))
        return self._ok(body)

    def _group_json(self, group: Any) -> dict[str, Any]:
        created = group.created_at or (self.state.start - _days(90))
        return {
            "@odata.type": "#microsoft.graph.group",
            "id": group.id,
            "deletedDateTime": None,
            "createdDateTime": graph_time(created),
            "description": None,
            "displayName": group.display_name,
            "groupTypes": list(group.group_types),
            "isAssignableToRole": group.is_assignable_to_role,
            "mailEnabled": group.mail_enabled,
            "securityEnabled": group.security_enabled,
        }

    def user_transitive_member_of(self, req: GraphRequest) -> GraphResponse:
        """``GET /users/{id | upn}/transitiveMemberOf[/microsoft.graph.group]``."""
        # microsoft-graph-docs-contrib api-reference/v1.0/api/user-list-transitivememberof.md
        user = self._user(req)
        group_ids = sorted(self.state.transitive_member_groups(user.id, self.state.now_ts()))
        items = []
        for group_id in group_ids:
            group = self.state.get_group(group_id)
            if group is not None and not group.deleted:
                items.append(self._group_json(group))
        # Default and maximum page sizes 100 and 999 (same page).
        context = "groups" if req.params.get("cast") else "directoryObjects"
        return self._offset_page(req, context, items, default=100, maximum=999)

    def user_check_member_groups(self, req: GraphRequest) -> GraphResponse:
        """``POST /users/{id | upn}/checkMemberGroups``: at most 20 group ids, like devices."""
        # microsoft-graph-docs-contrib api-reference/v1.0/api/directoryobject-checkmembergroups.md
        wanted = self._check_member_groups_ids(req)
        user = self._user(req)
        return self._check_member_groups_answer(req, user.id, wanted, self.state.now_ts())

    # ------------------------------------------------------------------ directory audits

    _ANY_TARGET = re.compile(
        r"^targetResources/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'([^']+)'\s*\)$", re.IGNORECASE
    )

    def _audit_query(self, expression: str | None) -> tuple[AuditQuery, bool]:
        """Parse the filter; the flag is False when a clause can never match our events."""
        query = AuditQuery()
        possible = True
        for clause in split_and(expression) if expression else []:
            if (match := self._TIME_FILTER.match(clause)) and match.group(
                "prop"
            ).lower() == "activitydatetime":
                bound = _parse_bound(match.group("value"))
                op = match.group("op").lower()
                if op in ("ge", "gt", "eq"):
                    value = bound + (1e-6 if op == "gt" else 0.0)
                    query.since_ts = value if query.since_ts is None else max(query.since_ts, value)
                if op in ("le", "lt", "eq"):
                    value = bound - (1e-6 if op == "lt" else 0.0)
                    query.until_ts = value if query.until_ts is None else min(query.until_ts, value)
            elif match := self._ANY_TARGET.match(clause):
                target = match.group(2).lower()
                if query.target_id is not None and query.target_id != target:
                    possible = False
                query.target_id = target
            elif clause.lower().startswith("activitydisplayname"):
                ops: set[str] = set()
                for part in re.split(r"\s+or\s+", clause, flags=re.IGNORECASE):
                    m = re.match(
                        r"^\(?\s*activityDisplayName\s+eq\s+'((?:[^']|'')*)'\s*\)?$",
                        part.strip(),
                        re.IGNORECASE,
                    )
                    if m is None:
                        raise bad_request(f"Invalid filter clause: '{clause}'.")
                    op_name = NAME_TO_OP.get(m.group(1).replace("''", "'").lower())
                    if op_name:
                        ops.add(op_name)
                query.ops = frozenset(ops) if query.ops is None else query.ops & ops
            elif match := re.match(
                r"^initiatedBy/app/appId\s+eq\s+'([^']*)'$", clause, re.IGNORECASE
            ):
                query.app_id = match.group(1)
            elif match := re.match(
                r"^(category|loggedByService|result)\s+eq\s+'([^']*)'$", clause, re.IGNORECASE
            ):
                expected = {
                    "category": "groupmanagement",
                    "loggedbyservice": "core directory",
                    "result": "success",
                }
                if match.group(2).lower() != expected[match.group(1).lower()]:
                    possible = False
            else:
                raise bad_request(f"Invalid filter clause: '{clause}'.")
        return query, possible

    def list_audits(self, req: GraphRequest) -> GraphResponse:
        query, possible = self._audit_query(self._filter(req))
        top = parse_top(req.q("top"), 100, 999, strict=True)
        token = decode_token(req.q("skiptoken") or "") if req.q("skiptoken") else {}
        snapshot = float(token["s"]) if "s" in token else self.state.now_ts()
        cursor = (float(token["c"][0]), int(token["c"][1])) if "c" in token else None
        records: list[MembershipRecord] = []
        next_cursor = None
        if possible:
            records, next_cursor = self.state.audit_page(query, snapshot, cursor, top)
        body: dict[str, Any] = {
            "@odata.context": req.context("auditLogs/directoryAudits"),
            "value": self._audit_page_json(records),
        }
        if next_cursor is not None:
            body["@odata.nextLink"] = req.link(
                skiptoken=encode_token({"s": snapshot, "c": list(next_cursor)})
            )
        return self._ok(body)

    def _audit_page_json(self, records: list[MembershipRecord]) -> list[dict[str, Any]]:
        """A page of records, each actor's and group's part made once per page: a page holds
        hundreds of events by the same provisioning client into the same few ETGs."""
        actors: dict[tuple[str, str], dict[str, Any]] = {}
        groups: dict[str, tuple[str | None, str, str | None]] = {}
        out = []
        for record in records:
            actor = (record.actor, record.audit_actor_fields)
            if actor not in actors:
                actors[actor] = self._audit_actor(record)
            if record.group_id not in groups:
                name = self.state.group_display_name(record.group_id)
                groups[record.group_id] = (
                    name,
                    json.dumps(record.group_id),
                    json.dumps(name) if name is not None else None,
                )
            out.append(self._audit_json(record, actors[actor], groups[record.group_id]))
        return out

    def _audit_actor(self, record: MembershipRecord) -> dict[str, Any]:
        """The event's ``initiatedBy``."""
        state = self.state
        if record.actor == "monitor":
            monitor = state.monitor_app()
            return {
                "app": {
                    "appId": monitor.app_id,
                    "displayName": monitor.display_name,
                    "servicePrincipalId": monitor.object_id,
                    "servicePrincipalName": None,
                },
                "user": None,
            }
        if record.actor == "provisioning_client":
            pc = state.provisioning_client()
            fields = record.audit_actor_fields
            return {
                "app": {
                    "appId": pc.app_id if fields in ("both", "appId") else None,
                    "displayName": pc.display_name if fields in ("both", "displayName") else None,
                    "servicePrincipalId": pc.object_id if fields == "both" else None,
                    "servicePrincipalName": None,
                },
                "user": None,
            }
        admin = state.admin_user
        return {
            "app": None,
            "user": {
                "id": admin.id if admin else None,
                "displayName": None,
                "userPrincipalName": admin.user_principal_name if admin else None,
                "ipAddress": "",
                "userType": None,
                "homeTenantId": None,
                "homeTenantName": None,
            },
        }

    def _audit_json(
        self,
        record: MembershipRecord,
        initiated: dict[str, Any],
        group: tuple[str | None, str, str | None],
    ) -> dict[str, Any]:
        state = self.state
        group_name, quoted_group, quoted_name = group
        member = state.directory_object(record.member_id)
        adding = record.op == "add"
        modified = [
            {
                "displayName": "Group.ObjectID",
                "oldValue": None if adding else quoted_group,
                "newValue": quoted_group if adding else None,
            },
            {
                "displayName": "Group.DisplayName",
                "oldValue": None if adding else quoted_name,
                "newValue": quoted_name if adding else None,
            },
        ]
        return {
            "id": _sequence_uuid(self._audit_salt, record.seq),
            "category": "GroupManagement",
            "correlationId": _sequence_uuid(self._correlation_salt, record.seq),
            "result": "success",
            "resultReason": "",
            "activityDisplayName": OP_NAMES[activity_key(record)],
            "activityDateTime": graph_time_7(ts_to_datetime(record.ts)),
            "loggedByService": "Core Directory",
            "operationType": OP_TYPES[activity_key(record)],
            "userAgent": None,
            "initiatedBy": initiated,
            "targetResources": [
                {
                    "id": record.member_id,
                    "displayName": state.member_display_name(record.member_id),
                    "type": _target_type(state, record.member_id, member),
                    "userPrincipalName": member.user_principal_name
                    if isinstance(member, User)
                    else None,
                    "groupType": None,
                    "modifiedProperties": modified,
                },
                {
                    "id": record.group_id,
                    "displayName": group_name,
                    "type": "Group",
                    "userPrincipalName": None,
                    "groupType": "azureAD",
                    "modifiedProperties": [],
                },
            ],
            "additionalDetails": [],
        }


_MASK_128 = (1 << 128) - 1
_GOLDEN_128 = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd, so multiplication is a bijection


def _sequence_uuid(salt: int, seq: int) -> str:
    """A unique-looking, deterministic v4-format GUID for a sequence number."""
    h = f"{((seq * _GOLDEN_128) ^ salt) & _MASK_128:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _target_type(state: TenantState, object_id: str, member: object) -> str:
    if isinstance(member, User):
        return "User"
    if member is None and object_id in (
        state.provisioning_client().object_id,
        state.monitor_app().object_id,
    ):
        return "ServicePrincipal"
    return "Device"


def _days(n: float) -> timedelta:
    return timedelta(days=n)


def _parse_bound(literal: str) -> float:
    try:
        return parse_odata_time(literal).timestamp()
    except ValueError as exc:
        raise bad_request(f"Invalid DateTimeOffset literal '{literal}'.") from exc


def _managed_matches(
    device: DeviceSpec, equals: dict[str, str], since: float | None, until: float | None
) -> bool:
    values = {
        "azureaddeviceid": device.entra_device_id,
        "serialnumber": device.serial_number,
        "devicename": device.device_name,
        "operatingsystem": "Windows",
        "id": device.managed_device_id,
    }
    if any(values[k].lower() != v for k, v in equals.items()):
        return False
    ts = device.enrolled_at.timestamp()
    return (since is None or ts >= since) and (until is None or ts <= until)


_HARDWARE = [
    ("LENOVO", "ThinkPad T14 Gen 5"),
    ("HP", "HP EliteBook 840 G11"),
    ("Dell Inc.", "Latitude 7450"),
    ("Microsoft Corporation", "Surface Laptop 7"),
]


def _hardware(serial: str) -> tuple[str, str]:
    return _HARDWARE[sum(map(ord, serial)) % len(_HARDWARE)]
