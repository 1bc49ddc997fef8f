from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.service_principal import ServicePrincipal

from devtools.simtenant import PROVISIONING_CLIENT_APP_ID, Policy, Scenario, SimulatedTenant


def test_group_has_the_fields_etg_health_needs(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    body = client.get(f"/v1.0/groups/{group_id}").json()
    assert body["@odata.context"].endswith("$metadata#groups/$entity")
    assert body["id"] == group_id
    assert body["securityEnabled"] is True and body["mailEnabled"] is False
    assert body["groupTypes"] == [] and body["membershipRule"] is None
    assert body["isAssignableToRole"] is False
    assert body["createdDateTime"].endswith("Z")


def test_dynamic_group_shows_its_rule(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    body = client.get(f"/v1.0/groups/{policy_named('Contoso - Engineering').etg_group_id}").json()
    assert body["groupTypes"] == ["DynamicMembership"]
    assert body["membershipRule"]
    assert body["membershipRuleProcessingState"] == "On"


def test_select_limits_group_properties(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    body = client.get(f"/v1.0/groups/{group_id}", params={"$select": "id,securityEnabled"}).json()
    assert set(body) == {"@odata.context", "id", "securityEnabled"}


def test_deleted_or_unknown_group_is_not_found(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    assert group_id is not None
    tenant.state.update_group(group_id, deleted=True)
    for path in (
        f"/v1.0/groups/{group_id}",
        f"/v1.0/groups/{group_id}/owners",
        "/v1.0/groups/00000000-0000-0000-0000-00000000abcd",
    ):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "Request_ResourceNotFound"


def test_owners_list_the_provisioning_client_as_a_service_principal(
    client: httpx.Client,
    tenant: SimulatedTenant,
    policy_named: Callable[[str], Policy],
    demo: Scenario,
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    assert group_id is not None
    owners = client.get(f"/v1.0/groups/{group_id}/owners").json()["value"]
    sp = next(o for o in owners if o["@odata.type"] == "#microsoft.graph.servicePrincipal")
    assert sp["appId"] == PROVISIONING_CLIENT_APP_ID
    assert sp["id"] == demo.provisioning_client.object_id
    assert sp["servicePrincipalType"] == "Application"
    tenant.state.set_group_owners(group_id, [])
    assert client.get(f"/v1.0/groups/{group_id}/owners").json()["value"] == []


def test_owner_paging_uses_absolute_next_links(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    first = client.get(f"/v1.0/groups/{group_id}/owners", params={"$top": "1"}).json()
    assert len(first["value"]) == 1
    assert first["@odata.nextLink"].startswith(f"{tenant.base_url}/v1.0/groups/{group_id}/owners?")
    second = httpx.get(first["@odata.nextLink"]).json()
    assert len(second["value"]) == 1 and "@odata.nextLink" not in second
    assert second["value"][0]["id"] != first["value"][0]["id"]


def test_service_principal_lookup_by_app_id(client: httpx.Client, tenant: SimulatedTenant) -> None:
    params = {"$filter": f"appId eq '{PROVISIONING_CLIENT_APP_ID}'"}
    body = client.get("/v1.0/servicePrincipals", params=params).json()
    assert [sp["appId"] for sp in body["value"]] == [PROVISIONING_CLIENT_APP_ID]
    other = client.get(
        "/v1.0/servicePrincipals",
        params={"$filter": "appId eq '00000000-0000-0000-0000-000000000000'"},
    )
    assert other.json()["value"] == []
    tenant.state.set_provisioning_client_present(False)
    assert client.get("/v1.0/servicePrincipals", params=params).json()["value"] == []


def test_unknown_paths_answer_a_graph_404(client: httpx.Client) -> None:
    response = client.get("/v1.0/nothingHere")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert "nothingHere" in error["message"]
    assert response.headers["request-id"] == error["innerError"]["request-id"]


def sdk_client(tenant: SimulatedTenant) -> GraphServiceClient:
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider())
    adapter.base_url = tenant.base_url + "/v1.0"
    return GraphServiceClient(request_adapter=adapter)


# The SDK's generated builders warn about their own deprecated classes on import.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_msgraph_sdk_reads_groups_owners_and_members(
    tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    assert group_id is not None

    async def scenario() -> None:
        graph = sdk_client(tenant)
        group = await graph.groups.by_group_id(group_id).get()
        assert group is not None and group.display_name == "APv2-ETG-Standard-Laptops"
        assert group.security_enabled is True and group.group_types == []
        owners = await graph.groups.by_group_id(group_id).owners.get()
        assert owners is not None and owners.value is not None
        assert any(
            isinstance(o, ServicePrincipal) and o.app_id == PROVISIONING_CLIENT_APP_ID
            for o in owners.value
        )
        members = await graph.groups.by_group_id(group_id).members.graph_device.get()
        assert members is not None and members.value
        assert all(m.device_id for m in members.value)
        with pytest.raises(ODataError) as missing:
            await graph.groups.by_group_id("00000000-0000-0000-0000-000000000000").get()
        assert missing.value.response_status_code == 404
        assert (
            missing.value.error is not None
            and missing.value.error.code == "Request_ResourceNotFound"
        )

    asyncio.run(scenario())
