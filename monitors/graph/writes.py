"""The only writes the monitor makes to Entra: adding a reference to a group's members or owners.

Nothing here removes anything. Each answer is classified as the reference pages document it,
so that a rerun can count "already there" as done and never retries a vanished object blindly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from kiota_http.middleware.options import HeadersInspectionHandlerOption

from monitors.graph.client import GraphClient
from monitors.graph.errors import GRAPH_ERRORS, _message, status_of, unverified
from monitors.models import Unverified

# group-post-members.md: a device member needs GroupMember.ReadWrite.All and
# Device.ReadWrite.All (application).
MEMBER_WRITE = "GroupMember.ReadWrite.All and Device.ReadWrite.All"
# group-post-owners.md: Group.ReadWrite.All is the least privileged application permission.
OWNER_WRITE = "Group.ReadWrite.All"


class Relation(StrEnum):
    MEMBERS = "members"
    OWNERS = "owners"

    @property
    def permission(self) -> str:
        return MEMBER_WRITE if self is Relation.MEMBERS else OWNER_WRITE

    @property
    def label(self) -> str:
        return f"POST /v1.0/groups/{{id}}/{self.value}/$ref"


class WriteResult(StrEnum):
    DONE = "done"  # 204 No Content
    ALREADY = "already"  # 400: the reference already exists, which is what was wanted
    FORBIDDEN = "forbidden"  # 401/403: the write identity lacks the permission
    GONE = "gone"  # 404: the group or the object does not exist (any more)
    FAILED = "failed"  # anything else; whether it happened is unknown until re-read

    @property
    def in_place(self) -> bool:
        """The reference is there now."""
        return self in (WriteResult.DONE, WriteResult.ALREADY)


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    result: WriteResult
    client_request_id: str
    request_id: str = ""  # Graph's request-id response header, when it came back
    detail: str = ""
    unverified: Unverified | None = None  # what health reports for forbidden and failed

    @property
    def trace_id(self) -> str:
        """What a support case quotes: Graph's request id, else the one the monitor sent."""
        return self.request_id or self.client_request_id


def _already_exists(message: str) -> bool:
    # group-post-members.md / group-post-owners.md: 400 when the object is already a member
    # (or owner); Graph's message reads "One or more added object references already exist".
    return "already exist" in message.lower()


def _first(headers: HeadersInspectionHandlerOption, name: str) -> str:
    values = headers.response_headers.get(name)
    return sorted(values)[0] if values else ""


async def add_reference(
    graph: GraphClient, relation: Relation, group_id: str, object_id: str
) -> WriteOutcome:
    """``POST /groups/{id}/{members|owners}/$ref`` with the directory object's @odata.id, the
    shape both reference pages show, and a client-request-id the log keeps."""
    client_request_id = str(uuid.uuid4())
    inspect = HeadersInspectionHandlerOption(inspect_request_headers=False)
    body = {"@odata.id": graph.v1(f"directoryObjects/{object_id}")}
    url = graph.v1(f"groups/{group_id}/{relation.value}/$ref")
    try:
        await graph.request(
            "POST", url, body, headers={"client-request-id": client_request_id}, inspect=inspect
        )
    except GRAPH_ERRORS as exc:
        return _refused(exc, relation, client_request_id, _first(inspect, "request-id"))
    return WriteOutcome(WriteResult.DONE, client_request_id, _first(inspect, "request-id"))


def _refused(
    exc: BaseException, relation: Relation, client_request_id: str, request_id: str
) -> WriteOutcome:
    status, message = status_of(exc), _message(exc)
    if status == 400 and _already_exists(message):
        return WriteOutcome(WriteResult.ALREADY, client_request_id, request_id, message)
    if status == 404:
        return WriteOutcome(WriteResult.GONE, client_request_id, request_id, message)
    failed = unverified(exc, relation.label, relation.permission)
    result = WriteResult.FORBIDDEN if status in (401, 403) else WriteResult.FAILED
    return WriteOutcome(result, client_request_id, request_id, message, failed)
