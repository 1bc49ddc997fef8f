"""The Graph writes remediation makes: add a group member, add a group owner.

Both follow microsoft-graph-docs-contrib api-reference/v1.0/api/group-post-members.md and
api-reference/v1.0/api/group-post-owners.md (the beta pages describe the same requests).
Every write the routes receive is logged on the tenant state with the status answered,
so tests can prove that a write happened, or that none did.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

# GraphApi imports this module when it is built, after graph_api has loaded: no cycle.
from devtools.simtenant.graph_api import GraphApi, GraphRequest, GraphResponse
from devtools.simtenant.odata import GraphError, not_found
from devtools.simtenant.scenario import User
from devtools.simtenant.state import Relation, TenantState

BOTH = frozenset({"v1.0", "beta"})
# A reference names its object by URL: {service root}/{version}/{entity set}/{id} (or
# ('{id}')). group-post-members.md uses directoryObjects, group-post-owners.md users; the
# other entity sets name the same directory objects.
_REFERENCE = re.compile(
    r"^(?P<root>https?://[^/]+)/(?:v1\.0|beta)/"
    r"(?:directoryObjects|devices|users|groups|servicePrincipals|contacts)"
    r"(?:/(?P<id>[^/()']+)|\('(?P<id_q>[^']+)'\))/?$",
    re.IGNORECASE,
)
GRAPH_ROOT = "https://graph.microsoft.com"
DIRECTORY_WRITE = "Directory.ReadWrite.All"
# group-post-members.md: the least privileged permissions per member type (each with
# GroupMember.ReadWrite.All; Group.ReadWrite.All and Directory.ReadWrite.All are broader).
MEMBER_TYPE_PERMISSION = {
    "device": "Device.ReadWrite.All",
    "user": "User.ReadWrite.All",
    "group": "Group.ReadWrite.All",
    "servicePrincipal": "Application.ReadWrite.All",
}
MEMBER_WRITE = frozenset({"GroupMember.ReadWrite.All", "Group.ReadWrite.All", DIRECTORY_WRITE})
# group-post-owners.md: Group.ReadWrite.All, then Directory.ReadWrite.All.
OWNER_WRITE = frozenset({"Group.ReadWrite.All", DIRECTORY_WRITE})
# group-post-members.md (important note): role-assignable groups also need this one.
ROLE_ASSIGNABLE_WRITE = "RoleManagement.ReadWrite.Directory"
# Owners are users or service principals (group-post-owners.md, request body).
OWNER_TYPES = frozenset({"user", "servicePrincipal"})


def _already_exists(relation: Relation) -> GraphError:
    # microsoft-graph-docs-contrib issue #8637 (microsoft-graph-docs): the 400 Graph answers
    # when the reference already exists; group-post-members.md documents the 400 itself.
    return GraphError(
        400,
        "One or more added object references already exist for the following "
        f"modified properties: '{relation}'.",
        "Request_BadRequest",
    )


def _denied() -> GraphError:
    # SupportArticles-docs support/entra/entra-id/users-groups-entra-apis/
    # authorization-requestdenied-403-error-add-user-group.md
    return GraphError(
        403, "Insufficient privileges to complete the operation.", "Authorization_RequestDenied"
    )


def _bad_reference(relation: Relation) -> GraphError:
    return GraphError(
        400,
        f"Unsupported referenced-object resource identifier for link property '{relation}'.",
        "Request_BadRequest",
    )


class WritesApi:
    """``POST /groups/{id}/members/$ref`` and ``POST /groups/{id}/owners/$ref``."""

    def __init__(self, state: TenantState) -> None:
        self.state = state

    def register(self, api: GraphApi) -> None:
        key = r"(?:/(?P<id>[^/()']+)|\('(?P<id_q>[^']+)'\))"
        api.add_route(
            "groups.members.add",
            "POST",
            BOTH,
            r"/groups" + key + r"/members/\$ref",
            self.add_member,
        )
        api.add_route(
            "groups.owners.add", "POST", BOTH, r"/groups" + key + r"/owners/\$ref", self.add_owner
        )

    # ------------------------------------------------------------------ handlers

    def add_member(self, req: GraphRequest) -> GraphResponse:
        """Add a device (or user, group) to a group's members: 204, or Graph's error."""
        return self._logged(req, lambda: self._add(req, "members"))

    def add_owner(self, req: GraphRequest) -> GraphResponse:
        """Add a service principal or user to a group's owners: 204, or Graph's error."""
        return self._logged(req, lambda: self._add(req, "owners"))

    def _logged(self, req: GraphRequest, write: Callable[[], GraphResponse]) -> GraphResponse:
        try:
            response = write()
        except GraphError as error:
            self.state.record_write(req.method.upper(), req.full_path, req.body, error.status)
            raise
        self.state.record_write(req.method.upper(), req.full_path, req.body, response.status)
        return response

    def _add(self, req: GraphRequest, relation: Relation) -> GraphResponse:
        object_id = self._reference_id(req, relation)
        group_id = (req.params.get("id") or req.params.get("id_q") or "").lower()
        state = self.state
        group = state.get_group(group_id)
        if group is None or group.deleted:
            # group-post-members.md: 404 when an object does not exist.
            raise not_found(group_id)
        kind = self._object_kind(object_id)
        if kind is None:
            raise not_found(object_id)
        if relation == "owners" and kind not in OWNER_TYPES:
            raise _bad_reference(relation)
        self._check_permissions(relation, kind, group.is_assignable_to_role)
        if relation == "members" and (
            "DynamicMembership" in group.group_types
            or (group.mail_enabled and "Unified" not in group.group_types)
        ):
            # authorization-requestdenied-403-error-add-user-group.md: Graph cannot manage
            # the membership of dynamic groups, mail-enabled security groups or distribution
            # groups, and answers this 403.
            raise _denied()
        delay = state.write_audit_delay_s
        if relation == "members":
            if state.is_member(group_id, object_id, state.now_ts()):
                raise _already_exists(relation)
            state.add_member_now(group_id, object_id, actor="monitor", audit_delay_s=delay)
        else:
            if object_id in group.owners:
                raise _already_exists(relation)
            state.add_owner_now(group_id, object_id, actor="monitor", audit_delay_s=delay)
        lost = state.take_lost_answer()
        if lost is not None:
            # The write took effect; only its answer is lost, as after a gateway timeout.
            raise GraphError(lost)
        # group-post-members.md, group-post-owners.md: 204 No Content, no body.
        return GraphResponse(status=204)

    def _reference_id(self, req: GraphRequest, relation: Relation) -> str:
        """The object id in the body's ``@odata.id`` (400 for anything else)."""
        body: Any = req.body
        reference = body.get("@odata.id") if isinstance(body, dict) else None
        if not isinstance(reference, str):
            raise GraphError(
                400,
                "The request body must be a JSON object with an '@odata.id' reference.",
                "Request_BadRequest",
            )
        match = _REFERENCE.match(reference.strip())
        if match is None or match.group("root").lower() not in (
            GRAPH_ROOT,
            req.base_url.lower(),
        ):
            raise _bad_reference(relation)
        raw = match.group("id") or match.group("id_q")
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            raise GraphError(
                400, f"Invalid object identifier '{raw}'.", "Request_BadRequest"
            ) from None

    def _object_kind(self, object_id: str) -> str | None:
        """The directory object's type, or None when the tenant has no such live object."""
        state = self.state
        now_ts = state.now_ts()
        if state.entra_device(object_id, now_ts) is not None:
            return "device"
        if isinstance(state.directory_object(object_id), User):
            return "user"
        pc = state.provisioning_client()
        if (pc.present and object_id == pc.object_id) or object_id == state.monitor_app().object_id:
            return "servicePrincipal"
        group = state.get_group(object_id)
        if group is not None and not group.deleted:
            return "group"
        return None

    def _check_permissions(self, relation: Relation, kind: str, role_assignable: bool) -> None:
        held = self.state.write_permissions()
        if relation == "owners":
            allowed = bool(held & OWNER_WRITE)
        else:
            allowed = bool(held & MEMBER_WRITE) and (
                MEMBER_TYPE_PERMISSION[kind] in held or DIRECTORY_WRITE in held
            )
        if role_assignable and ROLE_ASSIGNABLE_WRITE not in held:
            allowed = False
        if not allowed:
            raise _denied()


def register_writes(api: GraphApi) -> WritesApi:
    """Serve the write routes on ``api`` (v1.0 and beta) from its tenant state."""
    writes = WritesApi(api.state)
    writes.register(api)
    return writes
