"""The writes remediation makes: POST /groups/{id}/members/$ref and /owners/$ref."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from devtools.simtenant import DeviceSpec, FaultRule, Policy, Scenario, SimulatedTenant

UNKNOWN_ID = "00000000-0000-0000-0000-00000000abcd"
MONITOR_APP_ID = "5b0c8f3e-61a2-4d7b-9e44-0f2a7c1d9b36"
ALREADY_MEMBER = (
    "One or more added object references already exist for the following "
    "modified properties: 'members'."
)


def ref(
    object_id: str, entity_set: str = "directoryObjects", version: str = "v1.0"
) -> dict[str, str]:
    return {"@odata.id": f"https://graph.microsoft.com/{version}/{entity_set}/{object_id}"}


def etg_of(demo: Scenario, device: DeviceSpec) -> str:
    policy = next(p for p in demo.policies if p.id == device.policy_id)
    assert policy.etg_group_id is not None
    return policy.etg_group_id


def add_member(
    client: httpx.Client, group_id: str, body: Any, version: str = "v1.0", **headers: str
) -> httpx.Response:
    return client.post(f"/{version}/groups/{group_id}/members/$ref", json=body, headers=headers)


def audits(client: httpx.Client, filter_: str) -> list[dict[str, Any]]:
    response = client.get("/v1.0/auditLogs/directoryAudits", params={"$filter": filter_})
    assert response.status_code == 200, response.text
    value: list[dict[str, Any]] = response.json()["value"]
    return value


@pytest.fixture
def missing(device_by_note: Callable[[str], DeviceSpec]) -> DeviceSpec:
    """A provisioned device Intune never added to its ETG (what remediation heals)."""
    return device_by_note("Missing:")


def test_adding_a_device_answers_204_then_400_already_exists(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    assert not tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    first = add_member(client, etg, ref(missing.object_id), **{"client-request-id": "abc-123"})
    assert first.status_code == 204, first.text
    assert first.content == b""
    assert first.headers["client-request-id"] == "abc-123"
    assert first.headers["request-id"] and first.headers["request-id"] != "abc-123"

    again = add_member(client, etg, ref(missing.object_id))
    assert again.status_code == 400
    error = again.json()["error"]
    assert error["code"] == "Request_BadRequest"
    assert error["message"] == ALREADY_MEMBER
    assert again.headers["request-id"] == again.headers["client-request-id"]
    assert [(w.method, w.status) for w in tenant.state.writes()] == [("POST", 204), ("POST", 400)]
    assert tenant.state.writes()[0].path == f"/v1.0/groups/{etg}/members/$ref"
    assert tenant.state.writes()[0].body == ref(missing.object_id)


def test_added_device_is_a_member_in_check_member_groups_and_the_members_list(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    # beta, the devices entity set and the key in parentheses are accepted forms too.
    body = {"@odata.id": f"https://graph.microsoft.com/beta/devices('{missing.object_id.upper()}')"}
    assert add_member(client, etg.upper(), body, version="beta").status_code == 204
    checked = client.post(
        f"/v1.0/devices/{missing.object_id}/checkMemberGroups", json={"groupIds": [etg]}
    )
    assert checked.json()["value"] == [etg]
    members = client.get(f"/v1.0/groups/{etg}/members", params={"$top": "999"}).json()
    assert missing.object_id in {m["id"] for m in members["value"]}


def test_member_add_is_audited_as_the_monitor_app(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    tenant.state.set_monitor_app(app_id=MONITOR_APP_ID)
    etg = etg_of(demo, missing)
    assert add_member(client, etg, ref(missing.object_id)).status_code == 204
    by_monitor = audits(client, f"initiatedBy/app/appId eq '{MONITOR_APP_ID}'")
    [event] = by_monitor
    assert event["activityDisplayName"] == "Add member to group"
    assert event["operationType"] == "Assign"
    app = event["initiatedBy"]["app"]
    assert app["appId"] == MONITOR_APP_ID
    assert app["displayName"] == "etg-monitor remediation"
    assert app["servicePrincipalId"] == tenant.state.monitor_app().object_id
    assert event["initiatedBy"]["user"] is None
    device, group = event["targetResources"]
    assert (device["id"], device["type"]) == (missing.object_id, "Device")
    assert (group["id"], group["type"]) == (etg, "Group")
    about_device = audits(
        client,
        f"targetResources/any(t:t/id eq '{missing.object_id}') "
        "and activityDisplayName eq 'Add member to group'",
    )
    assert event["id"] in {e["id"] for e in about_device}


def test_member_add_reaches_group_delta(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    first = client.get(
        "/v1.0/groups/delta", params={"$filter": f"id eq '{etg}'", "$select": "members"}
    ).json()
    tenant.clock.advance(60)
    assert add_member(client, etg, ref(missing.object_id)).status_code == 204
    changes = client.get(first["@odata.deltaLink"]).json()
    [group] = changes["value"]
    assert {"@odata.type": "#microsoft.graph.device", "id": missing.object_id} in group[
        "members@delta"
    ]


def test_unknown_or_deleted_group_and_unknown_object_answer_404(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    for group_id, object_id in ((UNKNOWN_ID, missing.object_id), (etg, UNKNOWN_ID)):
        response = add_member(client, group_id, ref(object_id))
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "Request_ResourceNotFound"
        assert UNKNOWN_ID in error["message"]
    tenant.state.update_group(etg, deleted=True)
    assert add_member(client, etg, ref(missing.object_id)).status_code == 404
    assert [w.status for w in tenant.state.writes()] == [404, 404, 404]
    assert not tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())


def test_missing_permission_answers_403_and_changes_nothing(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    # group-post-members.md: a device member also needs Device.ReadWrite.All.
    tenant.state.set_write_permissions({"GroupMember.ReadWrite.All"})
    denied = add_member(client, etg, ref(missing.object_id))
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == "Authorization_RequestDenied"
    assert error["message"] == "Insufficient privileges to complete the operation."
    assert not tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    monitor_app = tenant.state.monitor_app().app_id
    assert audits(client, f"initiatedBy/app/appId eq '{monitor_app}'") == []
    # The control surface sets the same switch; granting the pair makes the write work.
    granted = client.post(
        "/_sim/write-permissions",
        json={"permissions": ["GroupMember.ReadWrite.All", "Device.ReadWrite.All"]},
    )
    assert granted.json()["permissions"] == ["Device.ReadWrite.All", "GroupMember.ReadWrite.All"]
    assert add_member(client, etg, ref(missing.object_id)).status_code == 204
    assert client.post("/_sim/write-permissions", json={"permissions": []}).status_code == 200
    assert add_member(client, etg, ref(UNKNOWN_ID)).status_code == 404


def test_dynamic_group_membership_cannot_be_written(
    client: httpx.Client,
    tenant: SimulatedTenant,
    missing: DeviceSpec,
    policy_named: Callable[[str], Policy],
) -> None:
    dynamic = policy_named("Contoso - Engineering").etg_group_id
    assert dynamic is not None
    response = add_member(client, dynamic, ref(missing.object_id))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert not tenant.state.is_member(dynamic, missing.object_id, tenant.state.now_ts())


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"@odata.id": 7},
        {"@odata.id": "https://example.com/v1.0/directoryObjects/" + UNKNOWN_ID},
        {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects"},
        {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/not-a-guid"},
        {"@odata.id": "https://graph.microsoft.com/v2.0/directoryObjects/" + UNKNOWN_ID},
    ],
)
def test_malformed_reference_answers_400(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec, body: Any
) -> None:
    etg = etg_of(demo, missing)
    response = add_member(client, etg, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("BadRequest", "Request_BadRequest")
    assert not tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    assert [w.status for w in tenant.state.writes()] == [400]


def test_fault_rules_target_writes_by_endpoint_name(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    tenant.faults.add(FaultRule("groups.members.add", status=503, first_n=1))
    assert add_member(client, etg, ref(missing.object_id)).status_code == 503
    # A faulted request never reaches the tenant: nothing written, only the request counted.
    assert tenant.state.writes() == []
    assert not tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    assert add_member(client, etg, ref(missing.object_id)).status_code == 204
    assert tenant.stats()["groups.members.add"] == 2


def test_writes_log_is_readable_and_clearable_over_the_control_surface(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    assert add_member(client, etg, ref(missing.object_id)).status_code == 204
    [write] = client.get("/_sim/writes").json()["writes"]
    assert write["method"] == "POST" and write["status"] == 204
    assert write["path"] == f"/v1.0/groups/{etg}/members/$ref"
    assert write["body"] == ref(missing.object_id)
    assert client.delete("/_sim/writes").json() == {"writes": []}
    assert tenant.state.writes() == []
    app = client.post("/_sim/monitor-app", json={"app_id": MONITOR_APP_ID.upper()}).json()
    assert app["app_id"] == MONITOR_APP_ID
    assert app["display_name"] == "etg-monitor remediation"


# ---------------------------------------------------------------- owners


def test_adding_the_provisioning_client_as_owner(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    sp = tenant.state.provisioning_client()
    tenant.state.remove_group_owner(etg, sp.object_id)
    assert sp.object_id not in {o.id for o in tenant.state.group_owners(etg)}
    tenant.state.set_monitor_app(app_id=MONITOR_APP_ID)

    url = f"/v1.0/groups/{etg}/owners/$ref"
    added = client.post(url, json=ref(sp.object_id, "servicePrincipals"))
    assert added.status_code == 204, added.text
    owners = client.get(f"/beta/groups/{etg}/owners").json()["value"]
    assert {"id": sp.object_id, "type": "#microsoft.graph.servicePrincipal"} in [
        {"id": o["id"], "type": o["@odata.type"]} for o in owners
    ]
    again = client.post(url, json=ref(sp.object_id))
    assert again.status_code == 400
    assert again.json()["error"]["message"] == ALREADY_MEMBER.replace("'members'", "'owners'")

    [event] = audits(client, "activityDisplayName eq 'Add owner to group'")
    assert event["initiatedBy"]["app"]["appId"] == MONITOR_APP_ID
    owner, group = event["targetResources"]
    assert (owner["id"], owner["type"]) == (sp.object_id, "ServicePrincipal")
    assert owner["displayName"] == sp.display_name
    assert group["id"] == etg
    # An owner change is no membership change.
    assert (
        audits(
            client,
            f"targetResources/any(t:t/id eq '{sp.object_id}') and "
            "activityDisplayName eq 'Add member to group'",
        )
        == []
    )
    assert not tenant.state.is_member(etg, sp.object_id, tenant.state.now_ts())


def test_owner_writes_need_group_readwrite_and_a_user_or_service_principal(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    sp = tenant.state.provisioning_client()
    tenant.state.remove_group_owner(etg, sp.object_id)
    url = f"/v1.0/groups/{etg}/owners/$ref"
    # A device cannot own a group.
    device = client.post(url, json=ref(missing.object_id))
    assert device.status_code == 400
    assert device.json()["error"]["code"] == "Request_BadRequest"
    # group-post-owners.md: GroupMember.ReadWrite.All is not enough for owners.
    tenant.state.set_write_permissions({"GroupMember.ReadWrite.All", "Device.ReadWrite.All"})
    denied = client.post(url, json=ref(sp.object_id))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Authorization_RequestDenied"
    tenant.state.set_provisioning_client_present(False)
    tenant.state.set_write_permissions({"Group.ReadWrite.All"})
    assert client.post(url, json=ref(sp.object_id)).status_code == 404
    assert sp.object_id not in tenant.state.get_group(etg).owners  # type: ignore[union-attr]
    assert [w.status for w in tenant.state.writes()] == [400, 403, 404]


def test_a_lost_answer_still_applies_the_write_and_the_retry_sees_already_exists(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    tenant.state.lose_write_answers(1, status=504)
    lost = add_member(client, etg, ref(missing.object_id))
    assert lost.status_code == 504
    assert tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    retry = add_member(client, etg, ref(missing.object_id))
    assert retry.status_code == 400
    assert retry.json()["error"]["message"] == ALREADY_MEMBER
    assert [w.status for w in tenant.state.writes()] == [504, 400]


def test_write_audit_events_can_lag_like_entra(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    tenant.state.set_monitor_app(app_id=MONITOR_APP_ID)
    tenant.state.set_write_audit_delay(600)
    assert add_member(client, etg, ref(missing.object_id)).status_code == 204
    by_monitor = f"initiatedBy/app/appId eq '{MONITOR_APP_ID}'"
    assert audits(client, by_monitor) == []
    assert tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    tenant.clock.advance(601)
    assert [e["activityDisplayName"] for e in audits(client, by_monitor)] == ["Add member to group"]


# The SDK's generated builders warn about their own deprecated classes on import.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_msgraph_sdk_writes_members_and_owners(
    tenant: SimulatedTenant, demo: Scenario, missing: DeviceSpec
) -> None:
    etg = etg_of(demo, missing)
    sp = tenant.state.provisioning_client()
    tenant.state.remove_group_owner(etg, sp.object_id)
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider())
    adapter.base_url = tenant.base_url + "/v1.0"
    graph = GraphServiceClient(request_adapter=adapter)

    async def scenario() -> None:
        group = graph.groups.by_group_id(etg)
        await group.members.ref.post(ReferenceCreate(odata_id=ref(missing.object_id)["@odata.id"]))
        await group.owners.ref.post(ReferenceCreate(odata_id=ref(sp.object_id)["@odata.id"]))
        with pytest.raises(ODataError) as again:
            await group.members.ref.post(
                ReferenceCreate(odata_id=ref(missing.object_id)["@odata.id"])
            )
        assert again.value.response_status_code == 400
        assert again.value.error is not None and again.value.error.message == ALREADY_MEMBER

    asyncio.run(scenario())
    assert tenant.state.is_member(etg, missing.object_id, tenant.state.now_ts())
    assert sp.object_id in {o.id for o in tenant.state.group_owners(etg)}
    assert [w.status for w in tenant.state.writes()] == [204, 204, 400]
