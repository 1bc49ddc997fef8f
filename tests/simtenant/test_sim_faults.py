from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from devtools.simtenant import FaultPlan, FaultRule, Policy, SimulatedTenant


def test_first_n_fires_only_for_the_first_matching_requests() -> None:
    plan = FaultPlan()
    plan.add(FaultRule("groups.get", first_n=2))
    fired = [plan.decide("groups.get", "/v1.0/groups/x").fault is not None for _ in range(4)]
    assert fired == [True, True, False, False]
    assert plan.decide("groups.owners", "/v1.0/groups/x/owners").fault is None


def test_every_nth_fires_on_multiples() -> None:
    plan = FaultPlan()
    plan.add(FaultRule("devices.list", every_nth=3))
    fired = [plan.decide("devices.list", "/v1.0/devices").fault is not None for _ in range(7)]
    assert fired == [False, False, True, False, False, True, False]


def test_probability_is_reproducible_for_a_seed() -> None:
    def outcomes(seed: int) -> list[bool]:
        plan = FaultPlan()
        plan.add(FaultRule("devices.list", probability=0.3, seed=seed))
        return [plan.decide("devices.list", "/v1.0/devices").fault is not None for _ in range(200)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert first != outcomes(8)
    assert 30 <= sum(first) <= 90


def test_endpoint_can_be_a_path_regex() -> None:
    plan = FaultPlan()
    plan.add(FaultRule(r"/members/microsoft\.graph\.device$", kind="status", status=503))
    assert (
        plan.decide("groups.members", "/v1.0/groups/g/members/microsoft.graph.device").fault
        is not None
    )
    assert plan.decide("groups.members", "/v1.0/groups/g/members").fault is None


def test_query_narrows_a_rule_to_requests_naming_a_value() -> None:
    rule = FaultRule(endpoint="directoryAudits.list", query="group-b")
    assert rule.matches("directoryAudits.list", "/v1.0/auditLogs/directoryAudits", "x eq 'group-b'")
    assert not rule.matches("directoryAudits.list", "/v1.0/auditLogs/directoryAudits", "group-a")
    fields = {k: v for k, v in rule.to_dict().items() if k not in ("matched", "fired")}
    assert FaultRule.from_dict(fields).query == "group-b"  # survives the control API


def test_status_fault_answers_a_graph_error_with_retry_after(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    tenant.faults.add(FaultRule("groups.get", status=429, retry_after=3, first_n=1))
    throttled = client.get(f"/v1.0/groups/{group_id}", headers={"client-request-id": "abc-123"})
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert error["innerError"]["client-request-id"] == "abc-123"
    assert error["innerError"]["date"] == "2026-11-20T08:00:00"
    assert client.get(f"/v1.0/groups/{group_id}").status_code == 200


def test_forbidden_rule_simulates_a_missing_permission(
    client: httpx.Client, tenant: SimulatedTenant
) -> None:
    tenant.faults.add(FaultRule("directoryAudits.list", status=403, retry_after=None))
    response = client.get("/v1.0/auditLogs/directoryAudits")
    assert response.status_code == 403
    assert "Retry-After" not in response.headers
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"


def test_service_unavailable_rule(client: httpx.Client, tenant: SimulatedTenant) -> None:
    tenant.faults.add(FaultRule("managedDevices.list", status=503, retry_after=2))
    response = client.get("/v1.0/deviceManagement/managedDevices")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ServiceUnavailable"


def test_reset_closes_the_connection_without_a_response(
    client: httpx.Client, tenant: SimulatedTenant
) -> None:
    tenant.faults.add(FaultRule("devices.list", kind="reset", first_n=1))
    with pytest.raises(httpx.TransportError):
        client.get("/v1.0/devices")
    assert client.get("/v1.0/devices").status_code == 200


def test_hang_outlasts_the_client_timeout_and_stops_with_the_server(
    tenant: SimulatedTenant,
) -> None:
    tenant.faults.add(FaultRule("devices.list", kind="hang"))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{tenant.base_url}/v1.0/devices", timeout=0.3)
    assert time.monotonic() - started < 5


def test_latency_rules_and_global_latency_delay_requests(
    client: httpx.Client, tenant: SimulatedTenant
) -> None:
    tenant.faults.latency_ms = 50
    started = time.monotonic()
    client.get("/v1.0/devices")
    assert time.monotonic() - started >= 0.05
    tenant.faults.latency_ms = 0
    tenant.faults.add(FaultRule("devices.list", kind="latency", latency_ms=120))
    started = time.monotonic()
    assert client.get("/v1.0/devices").status_code == 200
    assert time.monotonic() - started >= 0.12


def test_faults_clock_and_stats_are_controllable_over_http(client: httpx.Client) -> None:
    created = client.post(
        "/_sim/faults", json={"endpoint": "devices.list", "status": 429, "first_n": 1}
    )
    assert created.status_code == 201
    assert client.get("/v1.0/devices").status_code == 429
    assert client.get("/v1.0/devices").status_code == 200
    assert client.get("/_sim/faults").json()["rules"][0]["fired"] == 1
    assert client.delete("/_sim/faults").json() == {"rules": 0}
    assert client.post("/_sim/faults", json={"endpoint": "x", "kind": "explode"}).status_code == 400

    assert client.get("/_sim/clock").json() == {"now": "2026-11-20T08:00:00Z"}
    assert client.post("/_sim/clock", json={"advance_s": 90}).json() == {
        "now": "2026-11-20T08:01:30Z"
    }
    assert client.post("/_sim/clock", json={"set": "2026-11-21T00:00:00Z"}).json() == {
        "now": "2026-11-21T00:00:00Z"
    }

    stats = client.get("/_sim/stats").json()
    assert stats["devices.list"] == 2
    client.post("/_sim/stats/reset")
    assert client.get("/_sim/stats").json() == {}


def test_stats_count_requests_by_endpoint(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    client.get(f"/v1.0/groups/{group_id}")
    client.get(f"/v1.0/groups/{group_id}/owners")
    client.get(f"/v1.0/groups/{group_id}/owners")
    assert tenant.stats() == {"groups.get": 1, "groups.owners": 2}
    tenant.reset_stats()
    assert tenant.stats() == {}


def test_every_answer_carries_its_own_version_4_request_id(
    client: httpx.Client, tenant: SimulatedTenant, policy_named: Callable[[str], Policy]
) -> None:
    group_id = policy_named("Contoso - Standard Laptops").etg_group_id
    steps = [{"id": str(n), "method": "GET", "url": f"/groups/{group_id}"} for n in range(5)]
    answer = client.post("/v1.0/$batch", json={"requests": steps})
    assert answer.status_code == 200
    ids = [answer.headers["request-id"]]
    ids += [client.get(f"/v1.0/groups/{group_id}").headers["request-id"] for _ in range(5)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
