from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from devtools.simtenant import (
    PROVISIONING_CLIENT_APP_ID,
    DeviceSpec,
    FaultRule,
    Policy,
    Scenario,
    SimulatedTenant,
    generate_scale_scenario,
)

AUDITS = "/v1.0/auditLogs/directoryAudits"
EXPORTS = "/beta/deviceManagement/reports/exportJobs"


def collect(client: httpx.Client, url: str, base_url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["value"]
        next_url = body.get("@odata.nextLink")
        if next_url:
            assert next_url.startswith(base_url + "/")
    return items


# ---------------------------------------------------------------- managed devices


def test_managed_devices_page_through_every_visible_deployment(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    items = collect(client, "/v1.0/deviceManagement/managedDevices?$top=5", tenant.base_url)
    assert sorted(i["id"] for i in items) == sorted(d.managed_device_id for d in demo.devices)
    enrolled = [i["enrolledDateTime"] for i in items]
    assert enrolled == sorted(enrolled)


def test_managed_devices_filter_on_enrollment_time(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    since = demo.start - timedelta(hours=12)
    url = (
        "/v1.0/deviceManagement/managedDevices"
        f"?$filter=enrolledDateTime ge {since:%Y-%m-%dT%H:%M:%SZ}&$top=3"
    )
    items = collect(client, url, tenant.base_url)
    assert {i["id"] for i in items} == {
        d.managed_device_id for d in demo.devices if d.enrolled_at >= since
    }


def test_managed_device_fields_and_unstamped_profile(
    client: httpx.Client,
    device_by_note: Callable[[str], DeviceSpec],
    policy_named: Callable[[str], Policy],
) -> None:
    stamped = device_by_note("Healthy")
    body = client.get(f"/v1.0/deviceManagement/managedDevices/{stamped.managed_device_id}").json()
    assert body["azureADDeviceId"] == stamped.entra_device_id
    assert body["enrollmentProfileName"] == "Contoso - Standard Laptops"
    assert (
        body["serialNumber"] == stamped.serial_number
        and body["userPrincipalName"] == stamped.user_principal_name
    )
    assert body["operatingSystem"] == "Windows" and body["managementAgent"] == "mdm"
    unstamped = device_by_note("Profile name not stamped")
    body = client.get(
        f"/v1.0/deviceManagement/managedDevices('{unstamped.managed_device_id}')"
    ).json()
    assert body["enrollmentProfileName"] is None


def test_devices_enrolled_in_the_future_are_invisible_until_then(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    template = demo.devices[0]
    future = DeviceSpec(
        managed_device_id="0f0f0f0f-0000-4000-8000-000000000001",
        entra_device_id="0f0f0f0f-0000-4000-8000-000000000002",
        object_id="0f0f0f0f-0000-4000-8000-000000000003",
        device_name="CTSO-FUTURE1",
        serial_number="PFFUTURE1",
        user_principal_name=template.user_principal_name,
        enrolled_at=demo.start + timedelta(minutes=10),
        policy_id=template.policy_id,
    )
    tenant.state.add_device(future)
    assert (
        client.get(f"/v1.0/deviceManagement/managedDevices/{future.managed_device_id}").status_code
        == 404
    )
    assert client.get(f"/v1.0/devices(deviceId='{future.entra_device_id}')").status_code == 404
    tenant.clock.advance(600)
    assert (
        client.get(f"/v1.0/deviceManagement/managedDevices/{future.managed_device_id}").status_code
        == 200
    )
    assert (
        client.get(f"/v1.0/devices(deviceId='{future.entra_device_id}')").json()["id"]
        == future.object_id
    )


# ---------------------------------------------------------------- Entra devices


def test_devices_map_entra_device_ids_to_object_ids(client: httpx.Client, demo: Scenario) -> None:
    first, second = demo.devices[0], demo.devices[1]
    one = client.get(
        "/v1.0/devices", params={"$filter": f"deviceId eq '{first.entra_device_id}'"}
    ).json()
    assert [(d["id"], d["deviceId"]) for d in one["value"]] == [
        (first.object_id, first.entra_device_id)
    ]
    assert one["value"][0]["trustType"] == "AzureAd"
    assert one["value"][0]["registrationDateTime"] < first.enrolled_at.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    both = client.get(
        "/v1.0/devices",
        params={"$filter": f"deviceId in ('{first.entra_device_id}', '{second.entra_device_id}')"},
    ).json()
    assert {d["id"] for d in both["value"]} == {first.object_id, second.object_id}
    by_object = client.get(f"/v1.0/devices/{second.object_id}").json()
    assert by_object["deviceId"] == second.entra_device_id
    by_key = client.get(f"/v1.0/devices(deviceId='{second.entra_device_id}')").json()
    assert by_key["id"] == second.object_id


def test_devices_in_filter_is_limited_to_fifteen_values(client: httpx.Client) -> None:
    values = ", ".join(f"'{i:08d}-0000-0000-0000-000000000000'" for i in range(16))
    response = client.get("/v1.0/devices", params={"$filter": f"deviceId in ({values})"})
    assert response.status_code == 400


def test_unknown_device_is_not_found(client: httpx.Client) -> None:
    assert client.get("/v1.0/devices/00000000-0000-0000-0000-000000000000").status_code == 404


# ---------------------------------------------------------------- audit log


def audit_query(client: httpx.Client, expression: str, top: int = 999) -> list[dict[str, Any]]:
    response = client.get(AUDITS, params={"$filter": expression, "$top": str(top)})
    assert response.status_code == 200, response.text
    return response.json()["value"]


def test_audit_event_shape_matches_graph(
    client: httpx.Client, device_by_note: Callable[[str], DeviceSpec], demo: Scenario
) -> None:
    device = device_by_note("Healthy")
    [event] = audit_query(client, f"targetResources/any(t:t/id eq '{device.object_id}')")
    policy = demo.policy(device.policy_id or "")
    group = demo.group(policy.etg_group_id or "")
    assert event["category"] == "GroupManagement" and event["result"] == "success"
    assert (
        event["activityDisplayName"] == "Add member to group" and event["operationType"] == "Assign"
    )
    assert event["loggedByService"] == "Core Directory"
    assert (
        event["activityDateTime"].endswith("Z")
        and len(event["activityDateTime"].split(".")[1]) == 8
    )
    assert event["initiatedBy"]["app"]["appId"] == PROVISIONING_CLIENT_APP_ID
    assert event["initiatedBy"]["app"]["displayName"] == "Intune Provisioning Client"
    assert event["initiatedBy"]["user"] is None
    target, group_entry = event["targetResources"]
    assert (target["id"], target["type"], target["displayName"]) == (
        device.object_id,
        "Device",
        device.device_name,
    )
    props = {p["displayName"]: p for p in target["modifiedProperties"]}
    assert props["Group.ObjectID"] == {
        "displayName": "Group.ObjectID",
        "oldValue": None,
        "newValue": f'"{group.id}"',
    }
    assert props["Group.DisplayName"]["newValue"] == f'"{group.display_name}"'
    assert (group_entry["id"], group_entry["type"]) == (group.id, "Group")


def test_audit_events_become_visible_only_after_their_delay(
    client: httpx.Client, tenant: SimulatedTenant, device_by_note: Callable[[str], DeviceSpec]
) -> None:
    device = device_by_note("Slow audit")
    expression = (
        "activityDisplayName eq 'Add member to group' and "
        f"targetResources/any(t:t/id eq '{device.object_id}')"
    )
    assert audit_query(client, expression) == []
    tenant.clock.advance(25 * 60)
    [event] = audit_query(client, expression)
    joined_at = device.enrolled_at + timedelta(seconds=device.membership[0].offset_s)
    assert event["activityDateTime"].startswith(joined_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_audit_filters_combine_time_target_activity_and_app(
    client: httpx.Client,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
    policy_named: Callable[[str], Policy],
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    since = demo.start - timedelta(days=3)
    base = (
        f"activityDateTime ge {since:%Y-%m-%dT%H:%M:%SZ} and "
        f"targetResources/any(t:t/id eq '{group_id}')"
    )
    adds = audit_query(client, f"activityDisplayName eq 'Add member to group' and {base}")
    removes = audit_query(client, f"activityDisplayName eq 'Remove member from group' and {base}")
    assert adds and removes
    assert all(e["targetResources"][1]["id"] == group_id for e in adds + removes)
    removal = removes[0]["targetResources"][0]["modifiedProperties"][0]
    assert removal["oldValue"] == f'"{group_id}"' and removal["newValue"] is None
    times = [e["activityDateTime"] for e in adds]
    assert times == sorted(times, reverse=True)

    by_app = audit_query(
        client, f"{base} and initiatedBy/app/appId eq '{PROVISIONING_CLIENT_APP_ID}'"
    )
    display_only = device_by_note("displayName only")
    admin_join = device_by_note("Joined by an admin")
    ids = {e["targetResources"][0]["id"] for e in by_app}
    assert display_only.object_id not in ids and admin_join.object_id not in ids
    [admin_event] = audit_query(client, f"targetResources/any(t:t/id eq '{admin_join.object_id}')")
    assert admin_event["initiatedBy"]["app"] is None
    assert (
        admin_event["initiatedBy"]["user"]["userPrincipalName"] == demo.users[0].user_principal_name
    )
    [app_only] = audit_query(
        client, f"targetResources/any(t:t/id eq '{device_by_note('appId only').object_id}')"
    )
    assert app_only["initiatedBy"]["app"]["displayName"] is None

    later = demo.start - timedelta(hours=12)
    recent = audit_query(client, f"{base} and activityDateTime ge {later.isoformat()}")
    assert recent and all(
        e["activityDateTime"] >= later.strftime("%Y-%m-%dT%H:%M:%S") for e in recent
    )


def test_audit_paging_is_stable_and_absolute(client: httpx.Client, tenant: SimulatedTenant) -> None:
    everything = audit_query(client, "activityDisplayName eq 'Add member to group'")
    paged = collect(
        client,
        f"{AUDITS}?$filter=activityDisplayName eq 'Add member to group'&$top=4",
        tenant.base_url,
    )
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    assert len({e["id"] for e in paged}) == len(paged)


def test_audit_retention_drops_old_events(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    before = audit_query(client, "activityDisplayName eq 'Add member to group'")
    tenant.state.set_audit_retention_days(1)
    old = demo.start - timedelta(days=5)
    after = audit_query(client, f"activityDateTime ge {old:%Y-%m-%dT%H:%M:%SZ}")
    assert 0 < len(after) < len(before)
    horizon = (demo.start - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert all(e["activityDateTime"] >= horizon for e in after)


def test_audit_rejects_unknown_filters_and_oversized_pages(client: httpx.Client) -> None:
    assert client.get(AUDITS, params={"$filter": "userAgent eq 'x'"}).status_code == 400
    assert client.get(AUDITS, params={"$top": "1000"}).status_code == 400


# ---------------------------------------------------------------- members and delta


def test_members_reflect_joins_and_removals_at_now(
    client: httpx.Client,
    tenant: SimulatedTenant,
    device_by_note: Callable[[str], DeviceSpec],
    policy_named: Callable[[str], Policy],
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    url = (
        f"/v1.0/groups/{group_id}/members/microsoft.graph.device"
        "?$select=id,deviceId,displayName&$top=5"
    )
    members = collect(client, url, tenant.base_url)
    ids = {m["id"] for m in members}
    assert set(members[0]) == {"@odata.type", "id", "deviceId", "displayName"}
    assert device_by_note("Healthy").object_id in ids
    assert device_by_note("Removed: joined on time").object_id not in ids
    assert device_by_note("Flapping").object_id in ids
    assert device_by_note("Missing: deployment succeeded").object_id not in ids
    in_flight = device_by_note("In progress within the timeout")
    assert in_flight.object_id in ids
    assert (
        client.get(f"/v1.0/groups/{group_id}/members", params={"$top": "1000"}).status_code == 400
    )


def test_delta_full_then_incremental_then_expired(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    policy_named: Callable[[str], Policy],
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    assert group_id is not None
    first = client.get(
        "/v1.0/groups/delta", params={"$filter": f"id eq '{group_id}'", "$select": "members"}
    ).json()
    [group] = first["value"]
    initial = {m["id"] for m in group["members@delta"]}
    assert initial == {
        m["id"]
        for m in collect(client, f"/v1.0/groups/{group_id}/members?$top=999", tenant.base_url)
    }
    delta_link = first["@odata.deltaLink"]
    assert delta_link.startswith(tenant.base_url + "/v1.0/groups/delta?$deltatoken=")

    assert client.get(delta_link).json()["value"] == []

    leaver = next(iter(sorted(initial)))
    joiner = next(d.object_id for d in demo.devices if d.object_id not in initial)
    tenant.clock.advance(60)
    tenant.state.remove_member_now(group_id, leaver)
    tenant.state.add_member_now(group_id, joiner)
    changes = client.get(delta_link).json()
    entries = {m["id"]: m for m in changes["value"][0]["members@delta"]}
    assert entries[joiner] == {"@odata.type": "#microsoft.graph.device", "id": joiner}
    assert entries[leaver]["@removed"] == {"reason": "changed"}
    next_link = changes["@odata.deltaLink"]
    assert client.get(next_link).json()["value"] == []

    tenant.clock.advance(8 * 86400)
    expired = client.get(next_link)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "syncStateNotFound"


def test_delta_pages_large_groups_and_supports_latest(demo: Scenario) -> None:
    scenario = generate_scale_scenario(
        deployments=300, etg_members=2500, audit_events=400, policies=1, seed=3
    )
    group_id = scenario.policies[0].etg_group_id
    with SimulatedTenant(scenario) as tenant, httpx.Client(timeout=10) as http:
        url: str | None = (
            f"{tenant.base_url}/v1.0/groups/delta?$filter=id eq '{group_id}'&$select=members"
        )
        seen: list[str] = []
        pages = 0
        body: dict[str, Any] = {}
        while url:
            body = http.get(url).json()
            pages += 1
            for item in body["value"]:
                seen += [m["id"] for m in item["members@delta"]]
            url = body.get("@odata.nextLink")
        assert pages == 3 and len(seen) == len(set(seen)) == tenant.state.member_count(
            group_id or "", tenant.state.now_ts()
        )
        assert "@odata.deltaLink" in body
        latest = http.get(
            f"{tenant.base_url}/v1.0/groups/delta?$filter=id eq '{group_id}'&$deltatoken=latest"
        ).json()
        assert latest["value"] == [] and latest["@odata.deltaLink"]


def test_expire_delta_rule_forces_a_resync(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Frontline").etg_group_id
    first = client.get(
        "/v1.0/groups/delta", params={"$filter": f"id eq '{group_id}'", "$select": "members"}
    ).json()
    tenant.faults.add(FaultRule("groups.delta", kind="expire_delta", first_n=1))
    assert (
        client.get("/v1.0/groups/delta", params={"$filter": f"id eq '{group_id}'"}).status_code
        == 200
    )
    assert client.get(first["@odata.deltaLink"]).status_code == 410
    assert client.get(first["@odata.deltaLink"]).status_code == 200


# ---------------------------------------------------------------- $batch


def test_batch_dispatches_inner_requests_with_their_own_faults(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    devices = demo.devices[:3]
    tenant.faults.add(FaultRule("devices.list", status=429, retry_after=5, first_n=1))
    requests = [
        {
            "id": str(i),
            "method": "GET",
            "url": f"/devices?$filter=deviceId eq '{d.entra_device_id}'&$select=id,deviceId",
        }
        for i, d in enumerate(devices)
    ]
    requests.append({"id": "x", "method": "GET", "url": f"devices/{devices[0].object_id}"})
    response = client.post("/v1.0/$batch", json={"requests": requests})
    assert response.status_code == 200
    answers = {r["id"]: r for r in response.json()["responses"]}
    statuses = sorted(r["status"] for k, r in answers.items() if k != "x")
    assert statuses == [200, 200, 429]
    throttled = next(r for r in answers.values() if r["status"] == 429)
    assert throttled["headers"]["Retry-After"] == "5"
    assert throttled["body"]["error"]["code"] == "TooManyRequests"
    ok = next(r for k, r in answers.items() if k != "x" and r["status"] == 200)
    assert set(ok["body"]["value"][0]) == {"@odata.type", "id", "deviceId"}
    assert answers["x"]["body"]["id"] == devices[0].object_id
    stats = tenant.stats()
    assert stats["$batch"] == 1 and stats["devices.list"] == 3 and stats["devices.get"] == 1


def test_batch_rejects_more_than_twenty_requests(client: httpx.Client) -> None:
    requests = [{"id": str(i), "method": "GET", "url": "/devices"} for i in range(21)]
    response = client.post("/v1.0/$batch", json={"requests": requests})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


# ---------------------------------------------------------------- report export


def run_export(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    created = client.post(EXPORTS, json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "notStarted" and job["url"] is None
    assert job["id"].startswith(body["reportName"] + "_")
    polled = client.get(f"{EXPORTS}('{job['id']}')").json()
    assert polled["status"] == "inProgress"
    done = client.get(f"{EXPORTS}('{job['id']}')").json()
    assert done["status"] == "completed"
    download = httpx.get(done["url"])
    assert download.status_code == 200
    return done, download.content


def read_csv(archive: bytes, job_id: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert zipped.namelist() == [f"{job_id}.csv"]
        raw = zipped.read(f"{job_id}.csv")
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert text.splitlines()[1].startswith('"')
    return list(csv.DictReader(io.StringIO(text)))


def test_deployment_export_lifecycle_and_csv_contents(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    job, archive = run_export(
        client,
        {
            "reportName": "AutopilotV2DeploymentStatus",
            "format": "csv",
            "select": [],
            "localizationType": "LocalizedValuesAsAdditionalColumn",
        },
    )
    assert job["url"].startswith(tenant.base_url + "/_download/")
    rows = {r["DeviceId"]: r for r in read_csv(archive, job["id"])}
    assert set(rows) == {d.managed_device_id for d in demo.devices}
    healthy = rows[device_by_note("Healthy").managed_device_id]
    assert (
        healthy["DeploymentStatus"],
        healthy["DeploymentStatus_loc"],
        healthy["ResultCode"],
    ) == ("2", "Success", "0")
    assert (
        len(healthy["EnrollmentTimeInUtc"].split(".")[1]) == 7
        and "T" not in healthy["EnrollmentTimeInUtc"]
    )
    failed = rows[
        device_by_note("Failed deployment (ResultCode -2147023436) and never").managed_device_id
    ]
    assert (
        failed["DeploymentStatus_loc"],
        failed["ResultCode"],
        failed["CurrentProvisioningPhase"],
        failed["Phase"],
    ) == (
        "Failed",
        "-2147023436",
        "2",
        "1796",
    )
    running = rows[device_by_note("In progress within the timeout").managed_device_id]
    assert running["DeploymentStatus"] == "1" and running["DeploymentStatus_loc"] == "In progress"
    assert 0 < int(running["DeploymentDurationTimeInSeconds"]) < 1200
    stuck = rows[device_by_note("Stuck").managed_device_id]
    assert (
        stuck["DeploymentStatus_loc"] == "In progress"
        and int(stuck["DeploymentDurationTimeInSeconds"]) > 3600
    )


def test_export_snapshot_follows_the_clock_and_filter(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    tenant.clock.advance(3600)
    since = demo.start - timedelta(hours=6)
    job, archive = run_export(
        client,
        {
            "reportName": "AutopilotV2DeploymentStatus",
            "format": "csv",
            "filter": f"(EnrollmentTimeInUtc ge '{since:%Y-%m-%dT%H:%M:%SZ}')",
            "select": ["DeviceId", "DeploymentStatus"],
        },
    )
    rows = read_csv(archive, job["id"])
    assert set(rows[0]) == {"DeviceId", "DeploymentStatus", "DeploymentStatus_loc"}
    assert {r["DeviceId"] for r in rows} == {
        d.managed_device_id for d in demo.devices if d.enrolled_at >= since
    }
    finished = next(
        r
        for r in rows
        if r["DeviceId"] == device_by_note("In progress within the timeout").managed_device_id
    )
    assert finished["DeploymentStatus_loc"] == "Success"


def test_app_and_script_reports_show_install_statuses(
    client: httpx.Client, device_by_note: Callable[[str], DeviceSpec]
) -> None:
    job, archive = run_export(
        client, {"reportName": "AutopilotV2DeploymentStatusDetailedAppInfo", "format": "csv"}
    )
    rows = read_csv(archive, job["id"])
    # The documented columns (memdocs reports-export-graph-available-reports.md).
    assert list(rows[0]) == [
        "ApplicationId",
        "ApplicationName",
        "AppType",
        "DeviceId",
        "IsAdminSelected",
        "PolicyInstallStatus",
        "PolicyInstallStatus_loc",
    ]
    skipped = device_by_note("Apps skipped").managed_device_id
    assert any(r["DeviceId"] == skipped and r["PolicyInstallStatus_loc"] == "Skipped" for r in rows)
    job, archive = run_export(
        client, {"reportName": "AutopilotV2DeploymentStatusDetailedScriptInfo", "format": "csv"}
    )
    rows = read_csv(archive, job["id"])
    failed = device_by_note("Script failed").managed_device_id
    assert any(
        r["DeviceId"] == failed
        and r["DisplayName"] == "Install-CorporateFonts.ps1"
        and r["PolicyInstallStatus_loc"] == "Failed"
        for r in rows
    )


def test_json_export_holds_one_json_file(client: httpx.Client, demo: Scenario) -> None:
    job, archive = run_export(
        client, {"reportName": "AutopilotV2DeploymentStatus", "format": "json"}
    )
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert zipped.namelist() == [f"{job['id']}.json"]
        document = json.loads(zipped.read(f"{job['id']}.json"))
    assert document["TotalRowCount"] == len(demo.devices)
    assert all(isinstance(v, str) for row in document["Values"] for v in row)


def test_export_can_fail_and_reject_bad_requests(
    client: httpx.Client, tenant: SimulatedTenant
) -> None:
    assert client.post(EXPORTS, json={"reportName": "NoSuchReport"}).status_code == 400
    assert (
        client.post(
            EXPORTS, json={"reportName": "AutopilotV2DeploymentStatus", "select": ["Nope"]}
        ).status_code
        == 400
    )
    tenant.state.set_export_jobs_fail(True)
    tenant.state.set_export_polls_before_ready(0)
    job = client.post(EXPORTS, json={"reportName": "AutopilotV2DeploymentStatus"}).json()
    polled = client.get(f"{EXPORTS}/{job['id']}").json()
    assert polled["status"] == "failed" and polled["url"] is None
    assert client.get(f"{EXPORTS}('missing')").status_code == 404


def test_export_endpoints_take_their_own_fault_rules(
    client: httpx.Client, tenant: SimulatedTenant
) -> None:
    tenant.state.set_export_polls_before_ready(0)
    tenant.faults.add(FaultRule("exportJobs.download", status=503, first_n=1))
    job = client.post(EXPORTS, json={"reportName": "AutopilotV2DeploymentStatus"}).json()
    url = client.get(f"{EXPORTS}('{job['id']}')").json()["url"]
    assert httpx.get(url).status_code == 503
    assert httpx.get(url).status_code == 200
    assert tenant.stats()["exportJobs.download"] == 2


@pytest.mark.parametrize("version", ["v1.0", "beta"])
def test_directory_endpoints_answer_on_both_versions(
    client: httpx.Client, demo: Scenario, version: str
) -> None:
    device = demo.devices[0]
    assert client.get(f"/{version}/devices/{device.object_id}").status_code == 200
    assert (
        client.get(
            f"/{version}/deviceManagement/managedDevices/{device.managed_device_id}"
        ).status_code
        == 200
    )
