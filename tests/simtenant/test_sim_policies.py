from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from devtools.simtenant import Policy, Scenario, SimulatedTenant

POLICIES = "/beta/deviceManagement/configurationPolicies"
APV2_FILTER = (
    "templateReference/templateFamily eq 'enrollmentConfiguration' "
    "and technologies has 'enrollment'"
)


def etg(client: httpx.Client, policy_id: str, key_form: str = "slash") -> httpx.Response:
    path = f"{POLICIES}/{policy_id}" if key_form == "slash" else f"{POLICIES}('{policy_id}')"
    return client.post(f"{path}/retrieveEnrollmentTimeDeviceMembershipTarget")


def test_policy_list_filters_device_preparation_policies(
    client: httpx.Client, demo: Scenario
) -> None:
    everything = client.get(POLICIES).json()["value"]
    assert len(everything) == len(demo.policies) + demo.other_configuration_policies
    response = client.get(POLICIES, params={"$filter": APV2_FILTER})
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"].endswith("$metadata#deviceManagement/configurationPolicies")
    assert {p["name"] for p in body["value"]} == {p.name for p in demo.policies}
    item = body["value"][0]
    assert item["platforms"] == "windows10" and item["technologies"] == "enrollment"
    assert item["roleScopeTagIds"] == ["0"]
    assert item["templateReference"]["templateFamily"] == "enrollmentConfiguration"
    assert item["templateReference"]["templateId"].split("_")[0] in {
        "80d33118-b7b4-40d8-b15f-81be745e053f",
        "a6157a7f-aa00-42d9-ac82-7d2479f545db",
    }
    assert "settings" not in item


def test_policy_filter_accepts_the_parenthesised_form_tools_send(
    client: httpx.Client, demo: Scenario
) -> None:
    expression = (
        "(technologies has 'enrollment') and (platforms eq 'windows10') and "
        "(TemplateReference/templateId eq '80d33118-b7b4-40d8-b15f-81be745e053f_1') and "
        "(Templatereference/templateFamily eq 'enrollmentConfiguration')"
    )
    body = client.get(POLICIES, params={"$filter": expression}).json()
    assert {p["name"] for p in body["value"]} == {
        p.name for p in demo.policies if p.template == "user-driven"
    }


def test_unknown_policy_filter_is_a_bad_request(client: httpx.Client) -> None:
    response = client.get(POLICIES, params={"$filter": "assignments/any(a:a/id eq 'x')"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_policy_list_pages_with_absolute_next_links(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    seen: list[str] = []
    url: str | None = f"{POLICIES}?$top=2"
    pages = 0
    while url:
        body = client.get(url).json()
        seen += [p["id"] for p in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert url.startswith(tenant.base_url + "/beta/deviceManagement/configurationPolicies?")
        pages += 1
    assert len(seen) == len(set(seen)) == len(demo.policies) + demo.other_configuration_policies
    assert pages == -(-len(seen) // 2)


def test_expand_settings_carries_timeout_apps_scripts_and_an_unreliable_group_setting(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    policy = policy_named("Contoso - Standard Laptops")
    body = client.get(f"{POLICIES}('{policy.id}')", params={"$expand": "settings"}).json()
    settings = {
        s["settingInstance"]["settingDefinitionId"]: s["settingInstance"] for s in body["settings"]
    }
    assert body["settingCount"] == len(body["settings"])
    for suffix in (
        "deploymentmode",
        "deploymenttype",
        "jointype",
        "accountype",
        "timeout",
        "allowedappids",
        "allowedscriptids",
    ):
        assert f"enrollment_autopilot_dpp_{suffix}" in settings
    timeout = settings["enrollment_autopilot_dpp_timeout"]
    assert (
        timeout["@odata.type"]
        == "#microsoft.graph.deviceManagementConfigurationSimpleSettingInstance"
    )
    assert timeout["simpleSettingValue"]["value"] == policy.timeout_minutes
    apps = settings["enrollment_autopilot_dpp_allowedappids"]["simpleSettingCollectionValue"]
    assert [json.loads(a["value"])["id"] for a in apps] == policy.allowed_app_ids
    scripts = settings["enrollment_autopilot_dpp_allowedscriptids"]["simpleSettingCollectionValue"]
    assert [s["value"] for s in scripts] == policy.allowed_script_ids
    stale = settings["enrollment_autopilot_dpp_devicesecuritygroupids"][
        "simpleSettingCollectionValue"
    ]
    assert policy.etg_group_id not in [s["value"] for s in stale]


def test_configuration_policies_are_beta_only(client: httpx.Client) -> None:
    response = client.get("/v1.0/deviceManagement/configurationPolicies")
    assert response.status_code == 404
    assert response.json()["error"]["code"] in {"BadRequest", "Request_ResourceNotFound"}


def test_documented_etg_shape_reports_success(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    policy = policy_named("Contoso - Standard Laptops")
    for form in ("slash", "quoted"):
        body = etg(client, policy.id, form).json()
        assert body["validationSucceeded"] is True
        assert body["enrollmentTimeDeviceMembershipTargetValidationStatuses"] == [
            {
                "targetId": policy.etg_group_id,
                "validationSucceeded": True,
                "targetValidationErrorCode": "unknown",
            }
        ]


def test_documented_shape_for_a_policy_without_etg_is_empty(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    body = etg(client, policy_named("Contoso - Kiosk").id).json()
    assert body["enrollmentTimeDeviceMembershipTargetValidationStatuses"] == []


def test_targets_shape_and_wrapped_shape(
    client: httpx.Client, policy_named: Callable[[str], Policy], demo: Scenario
) -> None:
    finance = policy_named("Contoso - Finance")
    body = etg(client, finance.id).json()
    assert body["enrollmentTimeDeviceMembershipTargets"] == [
        {"targetType": "staticSecurityGroup", "targetId": finance.etg_group_id}
    ]
    wrapped = next(p for p in demo.policies if p.etg_api == "targets_wrapped")
    body = etg(client, wrapped.id).json()
    assert (
        body["value"]["enrollmentTimeDeviceMembershipTargets"][0]["targetId"]
        == wrapped.etg_group_id
    )


def test_jit_only_policy_rejects_the_new_action_and_answers_the_old_one(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    frontline = policy_named("Contoso - Frontline")
    response = etg(client, frontline.id)
    assert response.status_code == 400
    # Intune's unrouted-action answer (microsoft-graph-docs-contrib issue #2014).
    error = response.json()["error"]
    assert error["code"] == "No method match route template"
    assert error["message"].startswith("No OData route exists that match template")
    assert f"configurationPolicies('{frontline.id}')" in error["message"]
    for method, path in (
        ("POST", f"{POLICIES}('{frontline.id}')/retrieveJustInTimeConfiguration"),
        ("GET", f"{POLICIES}/{frontline.id}/retrieveJustInTimeConfiguration"),
    ):
        body = client.request(method, path).json()
        assert body["value"] == {
            "targetType": "entraSecurityGroup",
            "target": [frontline.etg_group_id],
        }
    kiosk = policy_named("Contoso - Kiosk")
    body = client.post(f"{POLICIES}('{kiosk.id}')/retrieveJustInTimeConfiguration").json()
    assert body["value"]["target"] == []


def test_error_shape_is_a_server_error(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    policy = policy_named("Contoso - Standard Laptops")
    tenant.state.update_policy(policy.id, etg_api="error")
    response = etg(client, policy.id)
    assert response.status_code == 500
    assert set(response.json()["error"]["innerError"]) == {
        "date",
        "request-id",
        "client-request-id",
    }


@pytest.mark.parametrize(
    ("mutation", "code"),
    [
        ({"deleted": True}, "securityGroupNotFound"),
        ({"security_enabled": False}, "notSecurityGroup"),
        ({"group_types": ["DynamicMembership"]}, "notStaticSecurityGroup"),
    ],
)
def test_validation_code_follows_group_mutations(
    client: httpx.Client,
    tenant: SimulatedTenant,
    policy_named: Callable[[str], Policy],
    mutation: dict[str, object],
    code: str,
) -> None:
    policy = policy_named("Contoso - Standard Laptops")
    assert policy.etg_group_id is not None
    tenant.state.update_group(policy.etg_group_id, **mutation)
    status = etg(client, policy.id).json()[
        "enrollmentTimeDeviceMembershipTargetValidationStatuses"
    ][0]
    assert status == {
        "targetId": policy.etg_group_id,
        "validationSucceeded": False,
        "targetValidationErrorCode": code,
    }


def test_validation_code_follows_owner_and_service_principal_changes(
    client: httpx.Client,
    tenant: SimulatedTenant,
    policy_named: Callable[[str], Policy],
    demo: Scenario,
) -> None:
    policy = policy_named("Contoso - Standard Laptops")
    assert policy.etg_group_id is not None
    pc = demo.provisioning_client.object_id

    def code() -> str:
        return etg(client, policy.id).json()[
            "enrollmentTimeDeviceMembershipTargetValidationStatuses"
        ][0]["targetValidationErrorCode"]

    tenant.state.remove_group_owner(policy.etg_group_id, pc)
    assert code() == "firstPartyAppNotAnOwner"
    tenant.state.add_group_owner(policy.etg_group_id, pc)
    assert code() == "unknown"
    tenant.state.set_provisioning_client_present(False)
    assert code() == "firstPartyAppNotAnOwner"
    tenant.state.set_provisioning_client_present(True)
    tenant.state.set_policy_etg(policy.id, None)
    assert (
        etg(client, policy.id).json()["enrollmentTimeDeviceMembershipTargetValidationStatuses"]
        == []
    )


def test_demo_finance_and_engineering_etgs_are_broken_out_of_the_box(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    engineering = policy_named("Contoso - Engineering")
    status = etg(client, engineering.id).json()[
        "enrollmentTimeDeviceMembershipTargetValidationStatuses"
    ][0]
    assert status["targetValidationErrorCode"] == "notStaticSecurityGroup"
    finance = policy_named("Contoso - Finance")
    owners = client.get(f"/v1.0/groups/{finance.etg_group_id}/owners").json()["value"]
    assert all(o["@odata.type"] == "#microsoft.graph.user" for o in owners)


def test_unknown_policy_is_not_found(client: httpx.Client) -> None:
    response = etg(client, "7a1c0000-0000-0000-0000-000000000000")
    assert response.status_code == 404
