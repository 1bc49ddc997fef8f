"""Graph subscriptions for ETG membership changes (v1.0)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitors.graph import permissions
from monitors.graph.client import GraphClient
from monitors.graph.errors import GRAPH_ERRORS, MalformedResponse, graph_call
from monitors.graph.reports import parse_report_time
from monitors.models import Unverified

# Every subscription call on a group resource needs Group.Read.All, although reading the
# groups themselves needs only GroupMember.Read.All (api/subscription-post-subscriptions.md).
PERMISSION = permissions.GROUP_SUBSCRIPTIONS
MAX_LIFETIME = timedelta(minutes=41_760)  # the maximum for directory resources
# A little under the maximum, so clock skew never gets a create refused.
LIFETIME = MAX_LIFETIME - timedelta(minutes=60)
QUOTA = 100


@dataclass(frozen=True, slots=True)
class GraphSubscription:
    id: str
    resource: str
    notification_url: str
    expires_at: datetime

    @property
    def group_id(self) -> str | None:
        parts = self.resource.strip("/").split("/")
        return parts[1].lower() if len(parts) >= 2 and parts[0].lower() == "groups" else None


def _parse(item: Mapping[str, Any]) -> GraphSubscription:
    sub_id, resource = item.get("id"), item.get("resource")
    expires, url = item.get("expirationDateTime"), item.get("notificationUrl")
    if not all(isinstance(v, str) and v for v in (sub_id, resource, expires)):
        raise MalformedResponse("subscription without id, resource or expiry")
    return GraphSubscription(
        str(sub_id).lower(), str(resource), str(url or ""), parse_report_time(str(expires))
    )


@graph_call("GET /v1.0/subscriptions", PERMISSION)
async def list_subscriptions(graph: GraphClient) -> list[GraphSubscription]:
    return [_parse(i) async for page in graph.pages(graph.v1("subscriptions")) for i in page]


@graph_call("POST /v1.0/subscriptions", PERMISSION)
async def create_subscription(
    graph: GraphClient, group_id: str, notification_url: str, client_state: str, now: datetime
) -> GraphSubscription:
    body = {
        "changeType": "updated,deleted",
        "notificationUrl": notification_url,
        "lifecycleNotificationUrl": notification_url,
        "resource": f"groups/{group_id}",
        "expirationDateTime": (now + LIFETIME).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "clientState": client_state,
    }
    return _parse(await graph.request("POST", graph.v1("subscriptions"), body))


@graph_call("PATCH /v1.0/subscriptions/{id}", PERMISSION)
async def renew_subscription(graph: GraphClient, subscription_id: str, now: datetime) -> datetime:
    body = {"expirationDateTime": (now + LIFETIME).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")}
    data = await graph.request("PATCH", graph.v1(f"subscriptions/{subscription_id}"), body)
    return _parse(data).expires_at if isinstance(data, Mapping) else now + LIFETIME


@graph_call("POST /v1.0/subscriptions/{id}/reauthorize", PERMISSION)
async def reauthorize_subscription(graph: GraphClient, subscription_id: str) -> None:
    await graph.request("POST", graph.v1(f"subscriptions/{subscription_id}/reauthorize"))


async def keep_authorized(
    graph: GraphClient, subscription_id: str, now: datetime
) -> datetime | Unverified | None:
    """Answer a reauthorizationRequired notification: reauthorize, or where that is refused,
    renew (which reauthorizes too). None when reauthorized; the new expiry when renewed;
    when both failed, the reason, named after the reauthorization that was asked for."""
    if not isinstance(await reauthorize_subscription(graph, subscription_id), Unverified):
        return None
    try:
        return await renew_subscription.fetch(graph, subscription_id, now)
    except GRAPH_ERRORS as exc:
        return reauthorize_subscription.failed(exc)


@graph_call("DELETE /v1.0/subscriptions/{id}", PERMISSION)
async def delete_subscription(graph: GraphClient, subscription_id: str) -> None:
    await graph.request("DELETE", graph.v1(f"subscriptions/{subscription_id}"))
