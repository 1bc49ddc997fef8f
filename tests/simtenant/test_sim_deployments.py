"""``POST /_sim/deployments``: new healthy deployments added to a running tenant over HTTP."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.simtenant import Scenario, SimulatedTenant
from devtools.simtenant.scenario import format_time

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = "/_sim/deployments"
EXPORTS = "/beta/deviceManagement/reports/exportJobs"
DEPLOYMENT_REPORT = "AutopilotV2DeploymentStatus"


def add(client: httpx.Client, body: Any) -> list[str]:
    response = client.post(DEPLOYMENTS, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"added", "managed_device_ids"}
    assert answer["added"] == len(answer["managed_device_ids"]) == body["count"]
    return answer["managed_device_ids"]


def collect(client: httpx.Client, url: str, params: dict[str, str] | None = None) -> list[Any]:
    items: list[Any] = []
    response = client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["value"]
        if "@odata.nextLink" not in body:
            return items
        response = client.get(body["@odata.nextLink"])


def export_rows(client: httpx.Client) -> dict[str, dict[str, str]]:
    created = client.post(EXPORTS, json={"reportName": DEPLOYMENT_REPORT, "format": "csv"})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    for _ in range(10):
        job = client.get(f"{EXPORTS}('{job_id}')").json()
        if job["status"] == "completed":
            break
    assert job["status"] == "completed"
    archive = client.get(job["url"]).content
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        text = zipped.read(f"{job_id}.csv").decode("utf-8-sig")
    return {row["DeviceId"]: row for row in csv.DictReader(io.StringIO(text))}


def managed_devices(client: httpx.Client) -> dict[str, dict[str, Any]]:
    items = collect(client, "/v1.0/deviceManagement/managedDevices", {"$top": "1000"})
    return {item["id"]: item for item in items}


def test_added_deployments_show_on_every_endpoint(
    client: httpx.Client, tenant: SimulatedTenant, demo: Scenario
) -> None:
    before_report = export_rows(client)
    before_managed = managed_devices(client)
    ids = add(client, {"count": 12})
    assert len(set(ids)) == 12 and not set(ids) & set(before_managed)

    # Enrolled "now": visible at once, still in progress.
    report = export_rows(client)
    assert set(report) == set(before_report) | set(ids)
    assert {report[i]["DeploymentStatus_loc"] for i in ids} == {"In progress"}
    managed = managed_devices(client)
    assert set(managed) == set(before_managed) | set(ids)
    now = format_time(tenant.clock.now())
    assert {managed[i]["enrolledDateTime"][:19] for i in ids} == {now[:19]}

    delta_links = {
        group_id: client.get(
            "/v1.0/groups/delta", params={"$filter": f"id eq '{group_id}'", "$select": "members"}
        ).json()["@odata.deltaLink"]
        for group_id in {p.etg_group_id for p in demo.policies if p.etg_group_id}
    }

    tenant.clock.advance(4 * 3600)  # past every deployment, join and audit delay
    report = export_rows(client)
    assert {report[i]["DeploymentStatus_loc"] for i in ids} == {"Success"}
    object_ids = set()
    for managed_id in ids:
        device = client.get(f"/v1.0/deviceManagement/managedDevices('{managed_id}')")
        assert device.status_code == 200
        entra_id = device.json()["azureADDeviceId"]
        [entra] = collect(client, "/v1.0/devices", {"$filter": f"deviceId eq '{entra_id}'"})
        object_id = entra["id"]
        object_ids.add(object_id)
        assert client.get(f"/v1.0/devices(deviceId='{entra_id}')").json()["id"] == object_id

        # Healthy: one audited join by the provisioning client, into a policy's ETG.
        [event] = collect(
            client,
            "/v1.0/auditLogs/directoryAudits",
            {"$filter": f"targetResources/any(t:t/id eq '{object_id}')"},
        )
        assert event["activityDisplayName"] == "Add member to group"
        group_id = event["targetResources"][1]["id"]
        assert group_id in delta_links
        members = collect(
            client, f"/v1.0/groups/{group_id}/members/microsoft.graph.device", {"$top": "999"}
        )
        assert object_id in {m["id"] for m in members}
        profile = device.json()["enrollmentProfileName"]
        assert next(p for p in demo.policies if p.name == profile).etg_group_id == group_id

    changes = [
        member
        for link in delta_links.values()
        for group in client.get(link).json()["value"]
        for member in group["members@delta"]
    ]
    joined = {m["id"] for m in changes if "@removed" not in m}
    assert len(object_ids) == 12 and object_ids <= joined

    # The session's scenario object is untouched; only the running tenant changed.
    assert not {d.managed_device_id for d in demo.devices} & set(ids)


def test_successive_calls_never_collide(client: httpx.Client, tenant: SimulatedTenant) -> None:
    first = add(client, {"count": 50})
    second = add(client, {"count": 50})
    at = format_time(tenant.clock.now() - timedelta(hours=1))
    third = add(client, {"count": 50, "at": at, "spread_s": 1800})
    assert len(set(first) | set(second) | set(third)) == 150
    assert set(first + second + third) <= set(managed_devices(client))


def test_an_explicit_seed_is_reproducible(demo: Scenario) -> None:
    answers = []
    for _ in range(2):
        with SimulatedTenant(demo) as tenant, httpx.Client(base_url=tenant.base_url) as client:
            answers.append(add(client, {"count": 5, "seed": 7}))
            # The same seed later on is fine: the tenant has grown, so the ids differ.
            assert set(add(client, {"count": 5, "seed": 7})).isdisjoint(answers[-1])
    assert answers[0] == answers[1]


def test_future_deployments_appear_at_their_time(
    client: httpx.Client, tenant: SimulatedTenant
) -> None:
    at = tenant.clock.now() + timedelta(hours=1)
    ids = add(client, {"count": 3, "at": format_time(at)})
    assert not set(ids) & set(managed_devices(client))
    assert client.get(f"/v1.0/deviceManagement/managedDevices/{ids[0]}").status_code == 404
    tenant.clock.advance(3600)
    assert set(ids) <= set(managed_devices(client))
    assert set(ids) <= set(export_rows(client))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"count": 0},
        {"count": 100001},
        {"count": -3},
        {"count": "5"},
        {"count": 2.5},
        {"count": True},
        {"count": 1, "at": "yesterday"},
        {"count": 1, "at": "2026-11-20T08:00:00"},
        {"count": 1, "at": 1700000000},
        {"count": 1, "seed": "x"},
        {"count": 1, "seed": 1.5},
        {"count": 1, "spread_s": -1},
        {"count": 1, "spread_s": "60"},
        {"count": 1, "spread_s": 1e300},
        {"count": 1, "n": 3},
        [1],
        "five",
    ],
)
def test_bad_input_is_rejected(client: httpx.Client, body: Any) -> None:
    response = client.post(DEPLOYMENTS, json=body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_malformed_json_is_rejected_and_nothing_is_added(client: httpx.Client) -> None:
    before = managed_devices(client)
    response = client.post(
        DEPLOYMENTS, content=b"{count: 3}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json() == {"error": "body must be JSON"}
    assert client.post(DEPLOYMENTS, json={"count": 0}).status_code == 400
    assert managed_devices(client) == before


def test_served_scale_scenario_takes_deployments() -> None:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    command = [sys.executable, "-m", "devtools.simtenant", "serve", "--scenario", "scale:300"]
    process = subprocess.Popen(
        [*command, "--port", "0", "--latency-ms", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = json.loads(process.stdout.readline())["base_url"]
        with httpx.Client(base_url=base_url, timeout=30) as client:
            before = managed_devices(client)
            assert len(before) == 300
            first = add(client, {"count": 40})
            second = add(client, {"count": 40, "spread_s": 600})
            assert len(set(first) | set(second)) == 80
            client.post("/_sim/clock", json={"advance_s": 7200})
            assert set(managed_devices(client)) == set(before) | set(first) | set(second)
            report = export_rows(client)
            assert set(first + second) <= set(report)
            assert {report[i]["DeploymentStatus_loc"] for i in first + second} == {"Success"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_explicit_seed_that_reproduces_existing_ids_is_a_conflict(
    client: httpx.Client, demo: Scenario
) -> None:
    # The generator draws from seed + device count: 7 + n and then 2 + (n + 5) coincide.
    first = add(client, {"count": 5, "seed": 7})
    response = client.post(DEPLOYMENTS, json={"count": 5, "seed": 2})
    assert response.status_code == 409
    assert "duplicate managed_device_id" in response.json()["error"]
    assert set(first) <= set(managed_devices(client))
    assert len(managed_devices(client)) == len(demo.devices) + 5
