"""Group membership delta (v1.0): what joined and left an ETG since the saved deltaLink."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitors.graph import permissions
from monitors.graph.client import GraphClient
from monitors.graph.errors import GRAPH_ERRORS, error_code, graph_call, status_of
from monitors.graph.odata import odata_filter
from monitors.models import MembershipOp


class DeltaExpired(Exception):
    """The saved deltaLink is no longer valid (410 Gone / syncStateNotFound): resync."""


@dataclass
class DeltaResult:
    changes: list[tuple[str, MembershipOp]] = field(default_factory=list)
    delta_link: str | None = None
    full_sync: bool = False


@graph_call("GET /v1.0/groups/delta", permissions.GROUP_READ)
async def member_delta(graph: GraphClient, group_id: str, delta_link: str | None) -> DeltaResult:
    """Changes since ``delta_link``; without one, a full read that only establishes the link
    (members present before the monitor started carry no join time, so none is recorded).
    Raises DeltaExpired when the link is no longer valid."""
    url: str | None = delta_link or graph.v1(
        "groups/delta", **{"$filter": odata_filter("id eq @id", id=group_id), "$select": "members"}
    )
    result = DeltaResult(full_sync=delta_link is None)
    try:
        while url:
            page = await graph.get(url)
            for group in page.get("value") or ():
                if not isinstance(group, dict) or str(group.get("id", "")).lower() != group_id:
                    continue
                for member in group.get("members@delta") or ():
                    if not isinstance(member, dict) or not isinstance(member.get("id"), str):
                        continue
                    if str(member.get("@odata.type", "#microsoft.graph.device")).lower() not in (
                        "#microsoft.graph.device",
                        "",
                    ):
                        continue
                    op = MembershipOp.REMOVE if "@removed" in member else MembershipOp.ADD
                    result.changes.append((member["id"].lower(), op))
            next_link = page.get("@odata.nextLink")
            if isinstance(next_link, str) and next_link:
                url = next_link
                continue
            link = page.get("@odata.deltaLink")
            result.delta_link = link if isinstance(link, str) and link else None
            url = None
    except GRAPH_ERRORS as exc:
        if delta_link and (
            status_of(exc) == 410
            or error_code(exc) in ("syncStateNotFound", "resyncRequired", "SyncStateNotFound")
        ):
            raise DeltaExpired(group_id) from exc
        raise
    if result.full_sync:
        result.changes = []
    return result
