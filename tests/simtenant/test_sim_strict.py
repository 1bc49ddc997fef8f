"""Where the stand-in is as strict as Microsoft's documents say Graph is.

Each test names the document (microsoft-graph-docs-contrib unless memdocs is named) whose
behaviour it checks.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import httpx

from devtools.simtenant import DeviceSpec, Policy, Scenario, SimulatedTenant
from devtools.simtenant.generate import generate_scale_scenario
from tests.simtenant.test_sim_scan import read_csv, run_export

BETA_POLICIES = "/beta/deviceManagement/configurationPolicies"


def _policy_for_user(demo: Scenario, upn: str) -> Policy:
    """Intune's choice: among policies assigned to a group holding the user, the lowest priority."""
    user = next(u for u in demo.users if u.user_principal_name.lower() == upn.lower())
    groups = {g.id: g for g in demo.groups}
    candidates = []
    for position, policy in enumerate(demo.policies, start=1):
        if any(user.id in groups[g].initial_members for g in policy.assigned_group_ids):
            candidates.append((policy.priority or position, policy))
    return min(candidates, key=lambda pair: pair[0])[1]


# ---------------------------------------------------------------- managed devices


def test_managed_device_list_leaves_profile_name_null(
    client: httpx.Client, device_by_note: Callable[[str], DeviceSpec]
) -> None:
    # docs-contrib issues #1455 and #8816, msgraph-sdk-powershell #2228
    device = device_by_note("Healthy")
    listed = client.get("/v1.0/deviceManagement/managedDevices", params={"$top": "999"}).json()
    assert listed["value"] and all(d["enrollmentProfileName"] is None for d in listed["value"])
    filtered = client.get(
        "/v1.0/deviceManagement/managedDevices",
        params={"$filter": f"azureADDeviceId eq '{device.entra_device_id}'"},
    ).json()["value"]
    assert filtered[0]["enrollmentProfileName"] is None
    one = client.get(f"/v1.0/deviceManagement/managedDevices/{device.managed_device_id}").json()
    assert one["enrollmentProfileName"] is not None


def test_single_objects_can_be_wrapped(
    client: httpx.Client,
    tenant: SimulatedTenant,
    device_by_note: Callable[[str], DeviceSpec],
    policy_named: Callable[[str], Policy],
) -> None:
    # intune-reporting-devicemanagementexportjob-get.md wraps; memdocs shows bare
    device = device_by_note("Healthy")
    url = f"/v1.0/deviceManagement/managedDevices/{device.managed_device_id}"
    assert client.get(url).json()["id"] == device.managed_device_id
    tenant.state.set_wrapped_single_objects(["exportJob", "managedDevice", "etgAction"])
    wrapped = client.get(url).json()
    assert "id" not in wrapped
    assert wrapped["value"]["id"] == device.managed_device_id
    assert wrapped["value"]["enrollmentProfileName"] is not None
    created = client.post(
        "/beta/deviceManagement/reports/exportJobs",
        json={"reportName": "AutopilotV2DeploymentStatus", "select": ["DeviceId"]},
    )
    assert created.status_code == 201 and created.json()["value"]["status"] == "notStarted"
    job_id = created.json()["value"]["id"]
    polled = client.get(f"/beta/deviceManagement/reports/exportJobs('{job_id}')").json()
    assert polled["value"]["id"] == job_id
    standard = policy_named("Contoso - Standard Laptops")
    etg = client.post(
        f"{BETA_POLICIES}/{standard.id}/retrieveEnrollmentTimeDeviceMembershipTarget"
    ).json()
    assert etg["value"]["validationSucceeded"] is True


# ---------------------------------------------------------------- $batch


def _batch(client: httpx.Client, requests: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/beta/$batch", json={"requests": requests})


def test_batch_refuses_a_write_step_without_body_or_content_type(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    # concepts/json-batching.md: a body needs a Content-Type header, a body-less action {}
    policy = policy_named("Contoso - Standard Laptops")
    action = "retrieveEnrollmentTimeDeviceMembershipTarget"
    url = f"/deviceManagement/configurationPolicies/{policy.id}/{action}"
    read = {
        "id": "1",
        "method": "GET",
        "url": f"/deviceManagement/configurationPolicies/{policy.id}",
    }
    for step in (
        {"id": "2", "method": "POST", "url": url},
        {"id": "2", "method": "POST", "url": url, "body": {}},
        {"id": "2", "method": "POST", "url": url, "headers": {"Content-Type": "application/json"}},
    ):
        response = _batch(client, [read, step])
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "Write request id : 2 does not contain Content-Type header or body."
        )
    ok = _batch(
        client,
        [read, {**step, "body": {}, "headers": {"content-type": "application/json"}}],
    )
    assert ok.status_code == 200
    assert {r["id"]: r["status"] for r in ok.json()["responses"]} == {"1": 200, "2": 200}


# ---------------------------------------------------------------- limits


def test_in_filters_take_at_most_15_values(
    client: httpx.Client, demo: Scenario, policy_named: Callable[[str], Policy]
) -> None:
    # concepts/query-parameters.md, known issues: `in` is limited to 15 expressions
    ids = [d.entra_device_id for d in demo.devices]
    fifteen = ", ".join(f"'{i}'" for i in ids[:15])
    sixteen = ", ".join(f"'{i}'" for i in ids[:16])
    assert client.get("/v1.0/devices", params={"$filter": f"deviceId in ({fifteen})"}).is_success
    for url, expression in (
        ("/v1.0/devices", f"deviceId in ({sixteen})"),
        ("/v1.0/deviceManagement/managedDevices", f"azureADDeviceId in ({sixteen})"),
        (BETA_POLICIES, f"id in ({sixteen})"),
        ("/v1.0/servicePrincipals", f"appId in ({sixteen})"),
        ("/v1.0/auditLogs/directoryAudits", f"targetResources/any(t:t/id in ({sixteen}))"),
    ):
        response = client.get(url, params={"$filter": expression})
        assert response.status_code == 400, url
        assert "max 15" in response.json()["error"]["message"]


def test_user_check_member_groups_takes_at_most_20_ids(
    client: httpx.Client, demo: Scenario
) -> None:
    # api/directoryobject-checkmembergroups.md
    upn = demo.devices[0].user_principal_name
    policy = _policy_for_user(demo, upn)
    group = policy.assigned_group_ids[-1]
    url = f"/v1.0/users/{upn.upper()}/checkMemberGroups"
    answer = client.post(url, json={"groupIds": [group]})
    assert answer.status_code == 200 and answer.json()["value"] == [group]
    assert client.post(url, json={"groupIds": [group] * 21}).status_code == 400


# ---------------------------------------------------------------- users


def test_users_by_id_or_upn_and_their_groups(client: httpx.Client, demo: Scenario) -> None:
    # api/user-get.md, api/user-list-transitivememberof.md
    device = demo.devices[0]
    user = next(u for u in demo.users if u.user_principal_name == device.user_principal_name)
    by_id = client.get(f"/v1.0/users/{user.id}").json()
    by_upn = client.get(f"/v1.0/users/{user.user_principal_name.upper()}").json()
    quoted = client.get(f"/v1.0/users('{user.user_principal_name}')").json()
    assert by_id["id"] == by_upn["id"] == quoted["id"] == user.id
    assert set(by_id) >= {"displayName", "userPrincipalName", "mail", "businessPhones"}
    assert client.get(f"/v1.0/users/{user.id}", params={"$select": "id"}).json().keys() == {
        "@odata.context",
        "id",
    }
    missing = client.get("/v1.0/users/nobody@contoso.com")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"
    groups = client.get(f"/v1.0/users/{user.id}/transitiveMemberOf/microsoft.graph.group")
    ids = {g["id"] for g in groups.json()["value"]}
    assert _policy_for_user(demo, user.user_principal_name).assigned_group_ids[-1] in ids
    paged = client.get(
        f"/v1.0/users/{user.id}/transitiveMemberOf", params={"$top": "1", "$select": "id"}
    ).json()
    assert len(paged["value"]) == 1 and set(paged["value"][0]) <= {"@odata.type", "id"}
    if len(ids) > 1:
        assert "@odata.nextLink" in paged


def test_demo_users_resolve_to_their_devices_policies(demo: Scenario) -> None:
    # Intune: the lowest priorityMetaData.priority among policies assigned to the user.
    for device in demo.devices:
        assert device.policy_id is not None
        assert _policy_for_user(demo, device.user_principal_name).id == device.policy_id


def test_generated_users_belong_to_their_devices_policy_group() -> None:
    scenario = generate_scale_scenario(deployments=300, etg_members=600, audit_events=700)
    users = {u.user_principal_name: u.id for u in scenario.users}
    groups = {g.id: g for g in scenario.groups}
    policies = {p.id: p for p in scenario.policies}
    for device in scenario.devices:
        assert device.policy_id is not None
        policy = policies[device.policy_id]
        user_id = users[device.user_principal_name]
        assert any(user_id in groups[g].initial_members for g in policy.assigned_group_ids)


# ---------------------------------------------------------------- policies


def test_policy_priority_assignments_and_expand(
    client: httpx.Client, demo: Scenario, policy_named: Callable[[str], Policy]
) -> None:
    # resources/intune-deviceconfigv2-devicemanagementconfigurationpolicy.md,
    # api/intune-deviceconfigv2-devicemanagementconfigurationpolicyassignment-list.md
    finance = policy_named("Contoso - Finance")
    item = client.get(f"{BETA_POLICIES}/{finance.id}").json()
    assert item["priorityMetaData"] == {"priority": finance.priority}
    assert "assignments" not in item
    assignments = client.get(f"{BETA_POLICIES}/{finance.id}/assignments").json()["value"]
    assert [a["target"]["groupId"] for a in assignments] == finance.assigned_group_ids
    assert assignments[0]["source"] == "direct" and assignments[0]["sourceId"] == finance.id
    assert assignments[0]["target"] == {
        "@odata.type": "#microsoft.graph.groupAssignmentTarget",
        "deviceAndAppManagementAssignmentFilterId": None,
        "deviceAndAppManagementAssignmentFilterType": "none",
        "groupId": finance.assigned_group_ids[0],
    }
    expanded = client.get(
        f"{BETA_POLICIES}/{finance.id}", params={"$expand": "assignments,settings"}
    ).json()
    assert expanded["assignments"][0]["id"] == assignments[0]["id"] and expanded["settings"]
    listed = client.get(BETA_POLICIES, params={"$expand": "assignments", "$top": "100"}).json()
    assert all("assignments" in p for p in listed["value"])
    assert client.get(BETA_POLICIES, params={"$expand": "nonsense"}).status_code == 400
    assert (
        client.get(f"{BETA_POLICIES}/{'0' * 8}-0000-0000-0000-{'0' * 12}/assignments").status_code
        == 404
    )


def test_default_priority_is_the_policy_position(tenant: SimulatedTenant) -> None:
    policy = tenant.state.policies()[2]
    tenant.state.update_policy(policy.id, priority=None)
    assert tenant.state.policy_priority(policy.id) == 3


def test_settings_group_ids_are_served_as_given(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    policy = policy_named("Contoso - Frontline")
    tenant.state.update_policy(policy.id, settings_group_ids=[policy.etg_group_id])
    item = client.get(f"{BETA_POLICIES}/{policy.id}", params={"$expand": "settings"}).json()
    setting = next(
        s["settingInstance"]
        for s in item["settings"]
        if s["settingInstance"]["settingDefinitionId"]
        == "enrollment_autopilot_dpp_devicesecuritygroupids"
    )
    assert [v["value"] for v in setting["simpleSettingCollectionValue"]] == [policy.etg_group_id]


def test_unrouted_actions_answer_400_no_odata_route(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    # Intune's unrouted-action answer: docs-contrib issue #2014
    policy = policy_named("Contoso - Standard Laptops")
    tenant.state.update_policy(policy.id, etg_api="unrouted")
    for action in (
        "retrieveEnrollmentTimeDeviceMembershipTarget",
        "retrieveJustInTimeConfiguration",
    ):
        response = client.post(f"{BETA_POLICIES}('{policy.id}')/{action}")
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(
            "No OData route exists that match template"
        )


def test_jit_action_can_be_unrouted_for_every_policy(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    frontline = next(p for p in demo.policies if p.etg_api == "jit_only")
    url = f"{BETA_POLICIES}('{frontline.id}')/retrieveJustInTimeConfiguration"
    assert client.post(url).json()["value"]["target"] == [frontline.etg_group_id]
    tenant.state.set_jit_action_routed(False)
    for policy in demo.policies:
        response = client.post(f"{BETA_POLICIES}('{policy.id}')/retrieveJustInTimeConfiguration")
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith("No OData route exists")


def test_group_out_of_caller_scope_is_reported(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    # resources/intune-shared-enrollmenttimedevicemembershiptargetvalidationerrorcode.md
    policy = policy_named("Contoso - Standard Laptops")
    assert policy.etg_group_id is not None
    tenant.state.update_group(policy.etg_group_id, caller_in_scope=False)
    body = client.post(
        f"{BETA_POLICIES}/{policy.id}/retrieveEnrollmentTimeDeviceMembershipTarget"
    ).json()
    assert body["validationSucceeded"] is False
    status = body["enrollmentTimeDeviceMembershipTargetValidationStatuses"][0]
    assert status["validationSucceeded"] is False
    assert status["targetValidationErrorCode"] == "securityGroupNotInCallerScope"


# ---------------------------------------------------------------- owners


def test_v1_owners_can_omit_service_principals_while_beta_lists_them(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    # api/group-list-owners.md (v1.0): "due to the staged rollout"
    pc = demo.provisioning_client
    group = next(g for g in demo.groups if pc.object_id in g.owners)

    def kinds(version: str) -> set[str]:
        return {
            o["@odata.type"]
            for o in client.get(f"/{version}/groups/{group.id}/owners").json()["value"]
        }

    assert "#microsoft.graph.servicePrincipal" in kinds("v1.0")
    tenant.state.set_v1_owners_omit_service_principals(True)
    assert "#microsoft.graph.servicePrincipal" not in kinds("v1.0")
    assert "#microsoft.graph.servicePrincipal" in kinds("beta")


def test_service_principal_owned_objects(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    # api/serviceprincipal-list-ownedobjects.md
    pc = demo.provisioning_client
    owned = {g.id for g in demo.groups if pc.object_id in g.owners and not g.deleted}
    for version in ("v1.0", "beta"):
        body = client.get(f"/{version}/servicePrincipals/{pc.object_id}/ownedObjects").json()
        assert {o["id"] for o in body["value"]} == owned
        assert all(o["@odata.type"] == "#microsoft.graph.group" for o in body["value"])
    by_app = client.get(
        f"/v1.0/servicePrincipals(appId='{pc.app_id}')/ownedObjects/microsoft.graph.group",
        params={"$select": "id,displayName", "$top": "1"},
    ).json()
    assert len(by_app["value"]) == 1 and set(by_app["value"][0]) <= {
        "@odata.type",
        "id",
        "displayName",
    }
    assert "@odata.nextLink" in by_app
    rest = client.get(by_app["@odata.nextLink"]).json()
    assert by_app["value"][0]["id"] not in {o["id"] for o in rest["value"]}
    tenant.state.set_provisioning_client_present(False)
    assert client.get(f"/v1.0/servicePrincipals/{pc.object_id}/ownedObjects").status_code == 404


# ---------------------------------------------------------------- reports


def test_detailed_reports_have_their_documented_columns(client: httpx.Client) -> None:
    # memdocs intune/intune-service/fundamentals/reports-export-graph-available-reports.md
    expected = {
        "AutopilotV2DeploymentStatusDetailedAppInfo": [
            "ApplicationId",
            "ApplicationName",
            "AppType",
            "DeviceId",
            "IsAdminSelected",
            "PolicyInstallStatus",
        ],
        "AutopilotV2DeploymentStatusDetailedScriptInfo": [
            "DeviceId",
            "DisplayName",
            "PolicyId",
            "PolicyInstallStatus",
        ],
    }
    for report, columns in expected.items():
        job, archive = run_export(
            client,
            {"reportName": report, "format": "csv", "localizationType": "ReplaceLocalizableValues"},
        )
        assert list(read_csv(archive, job["id"])[0]) == columns
        chosen, archive = run_export(
            client, {"reportName": report, "format": "csv", "select": ["DeviceId"]}
        )
        assert list(read_csv(archive, chosen["id"])[0]) == ["DeviceId"]
        # memdocs reports-export-graph-apis.md: only valid column names are accepted
        refused = client.post(
            "/beta/deviceManagement/reports/exportJobs",
            json={"reportName": report, "select": ["AppName"]},
        )
        assert refused.status_code == 400


def test_json_export_uses_the_capitalised_layout(client: httpx.Client) -> None:
    # api/cloudpcreport-retrievecloudpcclientappusagereport.md (TotalRowCount, Schema, Values)
    job, archive = run_export(
        client,
        {
            "reportName": "AutopilotV2DeploymentStatusDetailedScriptInfo",
            "format": "json",
            "select": ["DeviceId", "PolicyInstallStatus"],
        },
    )
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        document = json.loads(zipped.read(f"{job['id']}.json"))
    assert list(document) == ["TotalRowCount", "Schema", "Values"]
    assert document["Schema"] == [
        {"Column": "DeviceId", "PropertyType": "String"},
        {"Column": "PolicyInstallStatus", "PropertyType": "String"},
        {"Column": "PolicyInstallStatus_loc", "PropertyType": "String"},
    ]
    assert document["TotalRowCount"] == len(document["Values"]) > 0
