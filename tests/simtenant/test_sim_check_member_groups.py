from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from devtools.simtenant import DeviceSpec, FaultRule, Scenario, SimulatedTenant

UNKNOWN_ID = "00000000-0000-0000-0000-00000000abcd"


def etg_of(demo: Scenario, device: DeviceSpec) -> str:
    policy = next(p for p in demo.policies if p.id == device.policy_id)
    assert policy.etg_group_id is not None
    return policy.etg_group_id


def group_named(demo: Scenario, name: str) -> str:
    return next(g.id for g in demo.groups if g.display_name == name)


def check(client: httpx.Client, object_id: str, group_ids: list[str]) -> httpx.Response:
    return client.post(f"/v1.0/devices/{object_id}/checkMemberGroups", json={"groupIds": group_ids})


def test_answers_the_subset_the_device_belongs_to(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    device = device_by_note("Healthy")
    etg = etg_of(demo, device)
    other = group_named(demo, "All Windows Devices")
    response = check(client, device.object_id.upper(), [other, etg.upper(), UNKNOWN_ID, etg])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"] == (f"{tenant.base_url}/v1.0/$metadata#Collection(Edm.String)")
    assert body["value"] == [etg]
    assert tenant.stats()["devices.checkMemberGroups"] == 1
    # The namespaced action name and the key-in-parentheses form route here too.
    aliased = client.post(
        f"/v1.0/devices('{device.object_id}')/microsoft.graph.checkMemberGroups",
        json={"groupIds": [etg]},
    )
    assert aliased.json()["value"] == [etg]
    assert check(client, device.object_id, []).json()["value"] == []


def test_missing_device_is_not_a_member_of_its_etg(
    client: httpx.Client, demo: Scenario, device_by_note: Callable[[str], DeviceSpec]
) -> None:
    device = device_by_note("Missing:")
    response = check(client, device.object_id, [etg_of(demo, device)])
    assert response.status_code == 200
    assert response.json()["value"] == []


def test_works_inside_batch_with_per_request_answers(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    member = device_by_note("Healthy")
    missing = device_by_note("Missing:")
    etg = etg_of(demo, member)
    requests: list[dict[str, Any]] = [
        {
            "id": str(i),
            "method": "POST",
            "url": f"/devices/{device.object_id}/checkMemberGroups",
            "headers": {"Content-Type": "application/json"},
            "body": {"groupIds": [etg]},
        }
        for i, device in enumerate((member, missing))
    ]
    requests.append(
        {
            "id": "gone",
            "method": "POST",
            "url": f"devices/{UNKNOWN_ID}/checkMemberGroups",
            "headers": {"Content-Type": "application/json"},
            "body": {"groupIds": [etg]},
        }
    )
    requests.append(
        {
            "id": "bad",
            "method": "POST",
            "url": f"devices/{member.object_id}/checkMemberGroups",
            "headers": {"Content-Type": "application/json"},
            "body": {"groupIds": [etg] * 21},
        }
    )
    response = client.post("/v1.0/$batch", json={"requests": requests})
    assert response.status_code == 200
    answers = {r["id"]: r for r in response.json()["responses"]}
    assert answers["0"]["status"] == 200 and answers["0"]["body"]["value"] == [etg]
    assert answers["1"]["status"] == 200 and answers["1"]["body"]["value"] == []
    assert answers["0"]["body"]["@odata.context"].endswith("$metadata#Collection(Edm.String)")
    assert answers["gone"]["status"] == 404
    assert answers["gone"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert answers["bad"]["status"] == 400
    assert answers["bad"]["body"]["error"]["code"] == "BadRequest"
    stats = tenant.stats()
    assert stats["$batch"] == 1 and stats["devices.checkMemberGroups"] == 4


def test_unknown_or_not_yet_enrolled_device_is_not_found(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    device = device_by_note("Healthy")
    etg = etg_of(demo, device)
    unknown = check(client, UNKNOWN_ID, [etg])
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["code"] == "Request_ResourceNotFound"
    assert UNKNOWN_ID in error["message"]
    assert "request-id" in error["innerError"]
    tenant.clock.set(device.enrolled_at - timedelta(seconds=1))
    early = check(client, device.object_id, [etg])
    assert early.status_code == 404
    assert early.json()["error"]["code"] == "Request_ResourceNotFound"
    tenant.clock.set(device.enrolled_at)
    assert check(client, device.object_id, [etg]).status_code == 200


def test_more_than_twenty_group_ids_is_rejected(
    client: httpx.Client, demo: Scenario, device_by_note: Callable[[str], DeviceSpec]
) -> None:
    device = device_by_note("Healthy")
    ids = [f"00000000-0000-0000-0000-{i:012x}" for i in range(21)]
    response = check(client, device.object_id, ids)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert "20" in error["message"]
    assert check(client, device.object_id, ids[:20]).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{not json",
        b"[]",
        b"{}",
        b'{"groupIds": "f7572dd8-8f18-4e53-a895-bc4380f485ea"}',
        b'{"groupIds": [42]}',
        b'{"groupIds": ["not-a-guid"]}',
    ],
)
def test_malformed_body_is_a_bad_request(
    client: httpx.Client, device_by_note: Callable[[str], DeviceSpec], payload: bytes
) -> None:
    device = device_by_note("Healthy")
    response = client.post(
        f"/v1.0/devices/{device.object_id}/checkMemberGroups",
        content=payload,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_get_is_not_allowed(
    client: httpx.Client, device_by_note: Callable[[str], DeviceSpec]
) -> None:
    device = device_by_note("Healthy")
    assert client.get(f"/v1.0/devices/{device.object_id}/checkMemberGroups").status_code == 405


def test_membership_follows_the_simulated_clock(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    device = device_by_note("Removed: joined on time")
    etg = etg_of(demo, device)
    added, removed = (e.offset_s for e in device.membership)

    def value() -> list[str]:
        response = check(client, device.object_id, [etg])
        assert response.status_code == 200, response.text
        return list(response.json()["value"])

    tenant.clock.set(device.enrolled_at + timedelta(seconds=added - 1))
    assert value() == []
    tenant.clock.advance(1)  # the add takes effect at exactly enrolled_at + offset_s
    assert value() == [etg]
    tenant.clock.advance(removed - added - 1)
    assert value() == [etg]
    tenant.clock.advance(1)
    assert value() == []
    # A change scheduled for later shows only once the clock passes it.
    elapsed = (tenant.clock.now() - device.enrolled_at).total_seconds()
    tenant.state.add_membership_event(device.managed_device_id, "add", elapsed + 600)
    assert value() == []
    tenant.clock.advance(600)
    assert value() == [etg]


def test_membership_through_a_nested_group_is_transitive(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    device = device_by_note("Healthy")
    etg = etg_of(demo, device)
    outer = group_named(demo, "All Windows Devices")
    assert check(client, device.object_id, [outer]).json()["value"] == []
    tenant.state.add_member_now(outer, etg, actor="admin")
    assert check(client, device.object_id, [outer, etg]).json()["value"] == [outer, etg]
    tenant.state.update_group(etg, deleted=True)
    assert check(client, device.object_id, [outer, etg]).json()["value"] == []


def test_injected_throttling_applies_to_the_endpoint(
    client: httpx.Client,
    tenant: SimulatedTenant,
    demo: Scenario,
    device_by_note: Callable[[str], DeviceSpec],
) -> None:
    device = device_by_note("Healthy")
    etg = etg_of(demo, device)
    tenant.faults.add(FaultRule("devices.checkMemberGroups", status=429, retry_after=2, first_n=2))
    throttled = check(client, device.object_id, [etg])
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    # Other device endpoints are untouched by the rule.
    assert client.get(f"/v1.0/devices/{device.object_id}").status_code == 200
    batch = client.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "POST",
                    "url": f"/devices/{device.object_id}/checkMemberGroups",
                    "headers": {"Content-Type": "application/json"},
                    "body": {"groupIds": [etg]},
                }
            ]
        },
    )
    assert batch.status_code == 200
    inner = batch.json()["responses"][0]
    assert inner["status"] == 429 and inner["headers"]["Retry-After"] == "2"
    assert inner["body"]["error"]["code"] == "TooManyRequests"
    recovered = check(client, device.object_id, [etg])
    assert recovered.status_code == 200 and recovered.json()["value"] == [etg]
