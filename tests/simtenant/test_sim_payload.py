"""The simulated apps and scripts a policy selects, over HTTP, in the documented shapes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from devtools.simtenant import Policy, Scenario, SimulatedTenant
from devtools.simtenant.generate import generate_scale_scenario
from devtools.simtenant.scenario import PayloadAssignment, ScenarioError

APPS = "/v1.0/deviceAppManagement/mobileApps"
SCRIPTS = "/beta/deviceManagement/deviceManagementScripts"
VPN = "f201da49-cac8-48bb-8cca-838c6e2d3c61"


def test_an_app_answers_with_its_derived_type_and_honours_select(client: httpx.Client) -> None:
    response = client.get(f"{APPS}/{VPN}", params={"$select": "id,displayName"})
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.type"] == "#microsoft.graph.win32LobApp"
    assert {k for k in body if not k.startswith("@")} == {"id", "displayName"}
    assert body["displayName"] == "Contoso VPN Client"


def test_app_assignments_carry_intent_and_a_typed_target(client: httpx.Client) -> None:
    [assignment] = client.get(f"{APPS}/{VPN}/assignments").json()["value"]
    assert assignment["@odata.type"] == "#microsoft.graph.mobileAppAssignment"
    assert assignment["intent"] == "available"
    assert assignment["target"]["@odata.type"] == "#microsoft.graph.groupAssignmentTarget"
    assert assignment["target"]["groupId"] == "c4806bd0-e15b-42c2-9e6a-1947d75762ef"


def test_expand_assignments_is_served_and_other_expands_are_rejected(
    client: httpx.Client,
) -> None:
    expanded = client.get(f"{APPS}/{VPN}", params={"$expand": "assignments"}).json()
    assert [a["intent"] for a in expanded["assignments"]] == ["available"]
    rejected = client.get(f"{APPS}/{VPN}", params={"$expand": "categoriesx"})
    assert rejected.status_code == 400


def test_a_selected_app_the_scenario_does_not_describe_is_assigned_to_the_etg(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    finance = policy_named("Contoso - Finance")
    app_id = finance.allowed_app_ids[-1]
    targets = client.get(f"{APPS}/{app_id}/assignments").json()["value"]
    assert {(a["intent"], a["target"].get("groupId")) for a in targets} == {
        ("required", finance.etg_group_id)
    }


def test_unknown_app_or_script_is_404(client: httpx.Client) -> None:
    missing = "00000000-0000-0000-0000-00000000dead"
    for path in (f"{APPS}/{missing}", f"{APPS}/{missing}/assignments", f"{SCRIPTS}/{missing}"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["message"]


def test_scripts_are_beta_only_and_say_their_run_as_account(
    client: httpx.Client, policy_named: Callable[[str], Policy]
) -> None:
    script_id = policy_named("Contoso - Standard Laptops").allowed_script_ids[0]
    script = client.get(f"{SCRIPTS}/{script_id}", params={"$select": "id,runAsAccount"}).json()
    assert script["runAsAccount"] == "system" and "scriptContent" not in script
    assignments = client.get(f"{SCRIPTS}/{script_id}/assignments").json()["value"]
    # Shared by three policies: assigned to each of their ETGs.
    assert len(assignments) == 3
    for assignment in assignments:
        assert assignment["@odata.type"] == "#microsoft.graph.deviceManagementScriptAssignment"
        assert "intent" not in assignment
    v1 = client.get(f"/v1.0/deviceManagement/deviceManagementScripts/{script_id}")
    assert v1.status_code == 404


def test_changed_assignments_and_deletions_show_at_once(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    group = demo.policies[0].etg_group_id
    tenant.state.payload.set_assignments(
        VPN, [PayloadAssignment("exclusionGroup", group), PayloadAssignment("allDevices")]
    )
    types = [
        a["target"]["@odata.type"] for a in client.get(f"{APPS}/{VPN}/assignments").json()["value"]
    ]
    assert types == [
        "#microsoft.graph.exclusionGroupAssignmentTarget",
        "#microsoft.graph.allDevicesAssignmentTarget",
    ]
    tenant.state.payload.delete(VPN)
    assert client.get(f"{APPS}/{VPN}").status_code == 404


def test_generated_scenarios_describe_every_selected_app_and_script_assigned_to_the_etg() -> None:
    scenario = generate_scale_scenario(
        deployments=5, etg_members=10, audit_events=10, policies=2, users=10, other_groups=2
    )
    apps = {a.id: a for a in scenario.apps}
    scripts = {s.id: s for s in scenario.scripts}
    for policy in scenario.policies:
        for item in [apps[a] for a in policy.allowed_app_ids] + [
            scripts[s] for s in policy.allowed_script_ids
        ]:
            assert [(a.target, a.group_id, a.intent) for a in item.assignments] == [
                ("group", policy.etg_group_id, "required")
            ]


def test_scenario_rejects_an_assignment_to_an_unknown_group(demo: Scenario) -> None:
    data = demo.to_dict()
    data["apps"][0]["assignments"][0]["group_id"] = "00000000-0000-0000-0000-0000000000ff"
    with pytest.raises(ScenarioError, match="unknown group id"):
        Scenario.from_dict(data)
