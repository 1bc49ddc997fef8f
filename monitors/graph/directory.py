"""Entra directory reads for the ETG health check, through the typed msgraph-sdk (v1.0)."""

from __future__ import annotations

from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
from msgraph.generated.groups.item.owners.owners_request_builder import OwnersRequestBuilder
from msgraph.generated.service_principals.item.owned_objects.owned_objects_request_builder import (
    OwnedObjectsRequestBuilder,
)
from msgraph.generated.service_principals.service_principals_request_builder import (
    ServicePrincipalsRequestBuilder,
)

from monitors.graph import permissions
from monitors.graph.client import GraphClient
from monitors.graph.errors import GRAPH_ERRORS, MalformedResponse, graph_call, status_of
from monitors.graph.odata import odata_filter
from monitors.models import (
    PROVISIONING_CLIENT_APP_ID,
    Group,
    GroupNotFound,
    Owner,
    OwnerSource,
    ProvisioningClient,
)

_GROUP_FIELDS = [
    "id",
    "displayName",
    "securityEnabled",
    "mailEnabled",
    "groupTypes",
    "isAssignableToRole",
    "membershipRule",
]


@graph_call("GET /v1.0/groups/{id}", permissions.GROUP_READ)
async def read_group(graph: GraphClient, group_id: str) -> Group | GroupNotFound:
    config = RequestConfiguration(
        query_parameters=GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
            select=_GROUP_FIELDS
        )
    )
    try:
        group = await graph.typed(graph.sdk.groups.by_group_id(group_id).get(config))
    except GRAPH_ERRORS as exc:
        if status_of(exc) == 404:
            return GroupNotFound(group_id, read_group.source)
        raise
    if group is None or not group.id:
        raise MalformedResponse("empty group response")
    return Group(
        id=group.id,
        display_name=group.display_name or group.id,
        security_enabled=bool(group.security_enabled),
        mail_enabled=bool(group.mail_enabled),
        group_types=tuple(group.group_types or ()),
        is_assignable_to_role=bool(group.is_assignable_to_role),
        membership_rule=group.membership_rule,
    )


def _owner(obj: Any) -> Owner:
    return Owner(
        id=str(obj.id),
        odata_type=str(obj.odata_type or ""),
        display_name=getattr(obj, "display_name", None),
        app_id=getattr(obj, "app_id", None),
    )


@graph_call(OwnerSource.V1_OWNERS.call, permissions.GROUP_READ)
async def read_owners(graph: GraphClient, group_id: str) -> tuple[Owner, ...]:
    builder = graph.sdk.groups.by_group_id(group_id).owners
    config = RequestConfiguration(
        query_parameters=OwnersRequestBuilder.OwnersRequestBuilderGetQueryParameters(top=999)
    )
    page = await graph.typed(builder.get(config))
    owners: list[Owner] = []
    while True:
        owners.extend(_owner(o) for o in _identified(page, "group owners"))
        if not page or not page.odata_next_link:
            break
        page = await graph.typed(builder.with_url(page.odata_next_link).get())
    return tuple(owners)


def _identified(page: Any, what: str) -> list[Any]:
    """A typed page's items, each with an id. An unidentifiable item means the answer cannot be
    read: skipping it could turn "unreadable" into "not an owner" or "not in the tenant"."""
    items = page.value if page is not None else None
    if items is None or any(item is None or not item.id for item in items):
        raise MalformedResponse(f"{what}: a page without a list of identified objects")
    return list(items)


@graph_call(OwnerSource.BETA_OWNERS.call, permissions.GROUP_READ)
async def read_beta_owners(graph: GraphClient, group_id: str) -> tuple[Owner, ...]:
    """The beta owners list, which shows service principals that v1.0 may leave out."""
    owners: list[Owner] = []
    async for page in graph.pages(graph.beta(f"groups/{group_id}/owners")):
        for item in page:
            owner_id, app_id = item.get("id"), item.get("appId")
            if not isinstance(owner_id, str) or not owner_id:
                raise MalformedResponse("beta group owners: an owner without an id")
            name = item.get("displayName")
            owners.append(
                Owner(
                    id=owner_id,
                    odata_type=str(item.get("@odata.type") or ""),
                    display_name=name if isinstance(name, str) else None,
                    app_id=app_id if isinstance(app_id, str) else None,
                )
            )
    return tuple(owners)


@graph_call(OwnerSource.OWNED_OBJECTS.call, permissions.SERVICE_PRINCIPALS)
async def read_owned_object_ids(graph: GraphClient, object_id: str) -> frozenset[str]:
    """Ids of every object the service principal owns, read once for all ETGs."""
    builder = graph.sdk.service_principals.by_service_principal_id(object_id).owned_objects
    # No $top: the reference page names no maximum page size for this relationship, and an
    # oversized one can be refused; the default page size only costs more pages.
    config = RequestConfiguration(
        query_parameters=OwnedObjectsRequestBuilder.OwnedObjectsRequestBuilderGetQueryParameters(
            select=["id"]
        )
    )
    page = await graph.typed(builder.get(config))
    ids: set[str] = set()
    seen: set[str] = set()
    while True:
        ids.update(str(o.id).lower() for o in _identified(page, "owned objects"))
        link = page.odata_next_link if page else None
        if not link:
            break
        if link in seen:
            raise MalformedResponse("owned objects: a nextLink loop")
        seen.add(link)
        page = await graph.typed(builder.with_url(link).get())
    return frozenset(ids)


@graph_call(
    "GET /v1.0/servicePrincipals?$filter=appId eq '{provisioning client}'",
    permissions.SERVICE_PRINCIPALS,
)
async def find_provisioning_client(graph: GraphClient) -> ProvisioningClient:
    config = RequestConfiguration(
        query_parameters=ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(
            filter=odata_filter("appId eq @app", app=PROVISIONING_CLIENT_APP_ID),
            select=["id", "appId", "displayName"],
        )
    )
    result = await graph.typed(graph.sdk.service_principals.get(config))
    for sp in _identified(result, "service principals"):
        if str(sp.app_id or "").lower() == PROVISIONING_CLIENT_APP_ID:
            return ProvisioningClient(object_id=sp.id, display_name=sp.display_name)
    return ProvisioningClient(object_id=None)
