"""The apps and scripts a device preparation policy selects, and their assignments.

Apps follow microsoft-graph-docs-contrib api-reference/v1.0/api/intune-apps-mobileapp-get.md
and intune-apps-mobileappassignment-list.md (served on beta too, as Graph does); platform
scripts exist only in beta: api-reference/beta/api/intune-devices-devicemanagementscript-get.md
and intune-devices-devicemanagementscriptassignment-list.md.
"""

from __future__ import annotations

import uuid
from typing import Any

# GraphApi imports this module when it is built, after graph_api has loaded: no cycle.
from devtools.simtenant.graph_api import GraphApi, GraphRequest, GraphResponse, _key_segment
from devtools.simtenant.odata import bad_request, not_found, parse_select, project
from devtools.simtenant.scenario import AppSpec, PayloadAssignment, ScriptSpec
from devtools.simtenant.state import TenantState

BOTH = frozenset({"v1.0", "beta"})
BETA = frozenset({"beta"})
_NAMESPACE = uuid.UUID("7f0c3e2a-5b1d-4c6e-8a9f-2d3b4c5e6f70")
# The @odata.type of each target (intune-shared-groupassignmenttarget.md,
# intune-shared-alldevicesassignmenttarget.md, intune-shared-alllicensedusersassignmenttarget.md,
# intune-shared-exclusiongroupassignmenttarget.md).
_TARGET_TYPES = {
    "group": "#microsoft.graph.groupAssignmentTarget",
    "allDevices": "#microsoft.graph.allDevicesAssignmentTarget",
    "allLicensedUsers": "#microsoft.graph.allLicensedUsersAssignmentTarget",
    "exclusionGroup": "#microsoft.graph.exclusionGroupAssignmentTarget",
}


def _target(assignment: PayloadAssignment) -> dict[str, Any]:
    target: dict[str, Any] = {
        "@odata.type": _TARGET_TYPES[assignment.target],
        # intune-shared-deviceandappmanagementassignmenttarget.md: filters are optional.
        "deviceAndAppManagementAssignmentFilterId": None,
        "deviceAndAppManagementAssignmentFilterType": "none",
    }
    if assignment.target in ("group", "exclusionGroup"):
        target["groupId"] = assignment.group_id
    return target


def _assignment_id(item_id: str, n: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{item_id}:{n}"))


def app_assignment_json(app: AppSpec, n: int, assignment: PayloadAssignment) -> dict[str, Any]:
    # intune-apps-mobileappassignment.md
    return {
        "@odata.type": "#microsoft.graph.mobileAppAssignment",
        "id": _assignment_id(app.id, n),
        "intent": assignment.intent,
        "target": _target(assignment),
        "settings": None,
    }


def script_assignment_json(
    script: ScriptSpec, n: int, assignment: PayloadAssignment
) -> dict[str, Any]:
    # intune-devices-devicemanagementscriptassignment.md: an id and a target, no intent.
    return {
        "@odata.type": "#microsoft.graph.deviceManagementScriptAssignment",
        "id": _assignment_id(script.id, n),
        "target": _target(assignment),
    }


def _expand_assignments(req: GraphRequest, entity: str) -> bool:
    expand = [p.strip().split("(", 1)[0].strip() for p in (req.q("expand") or "").split(",")]
    names = [p for p in expand if p]
    for name in names:
        if name.lower() != "assignments":
            # Only the documented relationships can be expanded (intune-apps-mobileapp.md,
            # intune-devices-devicemanagementscript.md list assignments among them).
            raise bad_request(
                f"Could not find a property named '{name}' on type 'microsoft.graph.{entity}'."
            )
    return bool(names)


class PayloadApi:
    def __init__(self, state: TenantState) -> None:
        self.state = state

    def register(self, api: GraphApi) -> None:
        app = r"/deviceAppManagement/mobileApps" + _key_segment("id")
        script = r"/deviceManagement/deviceManagementScripts" + _key_segment("id")
        api.add_route("mobileApps.get", "GET", BOTH, app, self.get_app)
        api.add_route(
            "mobileApps.assignments", "GET", BOTH, app + "/assignments", self.app_assignments
        )
        api.add_route("deviceManagementScripts.get", "GET", BETA, script, self.get_script)
        api.add_route(
            "deviceManagementScripts.assignments",
            "GET",
            BETA,
            script + "/assignments",
            self.script_assignments,
        )

    @staticmethod
    def _id(req: GraphRequest) -> str:
        return (req.params.get("id") or req.params.get("id_q") or "").lower()

    def _app(self, req: GraphRequest) -> AppSpec:
        app = self.state.payload.app(self._id(req))
        if app is None:
            raise not_found(self._id(req))
        return app

    def _script(self, req: GraphRequest) -> ScriptSpec:
        script = self.state.payload.script(self._id(req))
        if script is None:
            raise not_found(self._id(req))
        return script

    def get_app(self, req: GraphRequest) -> GraphResponse:
        app = self._app(req)
        expand = _expand_assignments(req, "mobileApp")
        # intune-apps-mobileapp.md: the base properties; the derived type names the app type.
        item: dict[str, Any] = {
            "@odata.type": app.odata_type,
            "id": app.id,
            "displayName": app.display_name,
            "description": "",
            "publisher": "Contoso",
            "largeIcon": None,
            "createdDateTime": "2026-01-01T00:00:00Z",
            "lastModifiedDateTime": "2026-01-01T00:00:00Z",
            "isFeatured": False,
            "privacyInformationUrl": None,
            "informationUrl": None,
            "owner": "",
            "developer": "",
            "notes": "",
            "publishingState": "published",
        }
        assignments = [app_assignment_json(app, n, a) for n, a in enumerate(app.assignments)]
        return _entity(req, "deviceAppManagement/mobileApps", item, assignments if expand else None)

    def app_assignments(self, req: GraphRequest) -> GraphResponse:
        app = self._app(req)
        return GraphResponse(
            status=200,
            body={
                "@odata.context": req.context(
                    f"deviceAppManagement/mobileApps('{app.id}')/assignments"
                ),
                "value": [app_assignment_json(app, n, a) for n, a in enumerate(app.assignments)],
            },
        )

    def get_script(self, req: GraphRequest) -> GraphResponse:
        script = self._script(req)
        expand = _expand_assignments(req, "deviceManagementScript")
        # intune-devices-devicemanagementscript.md
        item: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.deviceManagementScript",
            "id": script.id,
            "displayName": script.display_name,
            "description": "",
            "scriptContent": "V3JpdGUtT3V0cHV0ICJvayI=",
            "createdDateTime": "2026-01-01T00:00:00Z",
            "lastModifiedDateTime": "2026-01-01T00:00:00Z",
            "runAsAccount": script.run_as_account,
            "enforceSignatureCheck": False,
            "fileName": script.display_name,
            "roleScopeTagIds": ["0"],
            "runAs32Bit": False,
        }
        assignments = [
            script_assignment_json(script, n, a) for n, a in enumerate(script.assignments)
        ]
        return _entity(
            req, "deviceManagement/deviceManagementScripts", item, assignments if expand else None
        )

    def script_assignments(self, req: GraphRequest) -> GraphResponse:
        script = self._script(req)
        context = f"deviceManagement/deviceManagementScripts('{script.id}')/assignments"
        return GraphResponse(
            status=200,
            body={
                "@odata.context": req.context(context),
                "value": [
                    script_assignment_json(script, n, a) for n, a in enumerate(script.assignments)
                ],
            },
        )


def register_payload(api: GraphApi) -> PayloadApi:
    """Serve the app and script routes on ``api`` from its tenant state."""
    payload = PayloadApi(api.state)
    payload.register(api)
    return payload


def _entity(
    req: GraphRequest, entity_set: str, item: dict[str, Any], assignments: list[Any] | None
) -> GraphResponse:
    """One entity as Graph answers a GET by id: its context, the $select projection, and the
    expanded assignments when they were asked for."""
    body: dict[str, Any] = {"@odata.context": req.context(f"{entity_set}/$entity")}
    body.update(project(item, parse_select(req.q("select"))))
    if assignments is not None:
        body["assignments"] = assignments
    return GraphResponse(status=200, body=body)
