"""The three latencies that decide how soon anything can be known: the report export's lag,
late audit events, and how long a membership change takes to reach delta and notifications."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import httpx
import pytest

from devtools.simtenant import Scenario, ScenarioError, SimulatedTenant, demo_scenario
from devtools.simtenant.day import (
    DELTA_DELAY_S,
    REPORT_DELAY_RANGE_S,
    generate_day_scenario,
)
from devtools.simtenant.funchost import FunctionHost
from devtools.simtenant.scenario import format_time

EXPORTS = "/beta/deviceManagement/reports/exportJobs"


def report(client: httpx.Client) -> dict[str, dict[str, str]]:
    """The deployment report's rows by managed device id, exported as the monitor does."""
    job = client.post(EXPORTS, json={"reportName": "AutopilotV2DeploymentStatus"}).json()
    done: dict[str, Any] = {}
    for _ in range(5):
        done = client.get(f"{EXPORTS}('{job['id']}')").json()
        if done["status"] == "completed":
            break
    assert done["status"] == "completed"
    with zipfile.ZipFile(io.BytesIO(httpx.get(done["url"]).content)) as archive:
        text = archive.read(f"{job['id']}.csv").decode("utf-8-sig")
    return {row["DeviceId"]: row for row in csv.DictReader(io.StringIO(text))}


@pytest.fixture
def lagged() -> Scenario:
    """The demo tenant with one successful deployment's report five minutes behind it."""
    scenario = demo_scenario()
    device = next(d for d in scenario.devices if d.deployment.outcome == "success")
    device.report_delay_s = 300.0
    return scenario


def test_report_row_appears_only_after_the_report_delay(lagged: Scenario) -> None:
    device = next(d for d in lagged.devices if d.report_delay_s)
    exact = next(d for d in lagged.devices if not d.report_delay_s)
    with SimulatedTenant(lagged) as tenant, httpx.Client(base_url=tenant.base_url) as client:
        tenant.clock.set(device.enrolled_at + timedelta(seconds=200))
        early = report(client)
        tenant.clock.set(device.enrolled_at + timedelta(seconds=301))
        later = report(client)
        tenant.clock.set(exact.enrolled_at + timedelta(seconds=1))
        exact_rows = report(client)
    assert device.managed_device_id not in early
    assert later[device.managed_device_id]["DeploymentStatus"] == "1"  # in progress
    assert later[device.managed_device_id]["DeploymentDurationTimeInSeconds"] == "1"
    # A deployment without a lag is in the report the second it enrolls.
    assert exact.managed_device_id in exact_rows


def test_completion_shows_in_the_report_only_the_delay_after_it_happened(
    lagged: Scenario,
) -> None:
    device = next(d for d in lagged.devices if d.report_delay_s)
    completed = device.enrolled_at + timedelta(seconds=device.deployment.duration_s)
    with SimulatedTenant(lagged) as tenant, httpx.Client(base_url=tenant.base_url) as client:
        tenant.clock.set(completed + timedelta(seconds=299))
        before = report(client)[device.managed_device_id]
        tenant.clock.set(completed + timedelta(seconds=300))
        after = report(client)[device.managed_device_id]
    assert before["DeploymentStatus"] == "1"
    assert int(before["DeploymentDurationTimeInSeconds"]) == int(device.deployment.duration_s) - 1
    assert after["DeploymentStatus"] == "2"  # success
    assert after["DeploymentDurationTimeInSeconds"] == str(int(device.deployment.duration_s))


def test_negative_latencies_are_refused() -> None:
    scenario = demo_scenario()
    scenario.devices[0].report_delay_s = -1.0
    scenario.delta_delay_s = -5.0
    with pytest.raises(ScenarioError) as refused:
        scenario.validate()
    assert "report_delay_s must be >= 0" in str(refused.value)
    assert "delta_delay_s must be >= 0" in str(refused.value)


# --- the day scenario's latencies --------------------------------------------------------------


@pytest.fixture(scope="module")
def day() -> Scenario:
    return generate_day_scenario(300, 6.0, seed=5)


def test_day_audit_events_arrive_two_to_sixty_minutes_late_most_within_five_to_fifteen(
    day: Scenario,
) -> None:
    delays = [e.audit_delay_s for d in day.devices for e in d.membership]
    assert delays and min(delays) >= 120 and max(delays) <= 3600
    within = sum(1 for s in delays if 300 <= s <= 900) / len(delays)
    tail = sum(1 for s in delays if s > 900) / len(delays)
    assert within > 0.6
    assert 0.05 < tail < 0.35


def test_day_deployments_lag_in_the_report_and_delta_within_a_minute(day: Scenario) -> None:
    low, high = REPORT_DELAY_RANGE_S
    lags = [d.report_delay_s for d in day.devices]
    assert all(low <= lag <= high for lag in lags)
    assert len(set(lags)) > len(lags) // 2  # each deployment draws its own
    assert 0 < day.delta_delay_s == DELTA_DELAY_S < 60
    enrolled = [d.enrolled_at for d in day.devices]
    assert min(enrolled) >= day.start
    assert max(enrolled) <= day.start + timedelta(hours=6)


def test_day_audit_event_is_listed_only_once_its_delay_has_passed(day: Scenario) -> None:
    device, event = max(
        ((d, e) for d in day.devices for e in d.membership), key=lambda pair: pair[1].audit_delay_s
    )
    at = device.enrolled_at + timedelta(seconds=event.offset_s)
    query = {"$filter": f"targetResources/any(t:t/id eq '{device.object_id}')"}
    with SimulatedTenant(day) as tenant, httpx.Client(base_url=tenant.base_url) as client:
        tenant.clock.set(at + timedelta(seconds=event.audit_delay_s - 60))
        hidden = client.get("/v1.0/auditLogs/directoryAudits", params=query).json()["value"]
        tenant.clock.set(at + timedelta(seconds=event.audit_delay_s + 1))
        shown = client.get("/v1.0/auditLogs/directoryAudits", params=query).json()["value"]
    assert event.audit_delay_s > 900
    assert hidden == []
    assert [e["activityDateTime"][:19] for e in shown] == [format_time(at)[:19]]


# --- delta and change notifications --------------------------------------------------------------

hooks = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@hooks.function_name("notify")
@hooks.route(route="graph/notify", methods=["POST"])
async def notify(req: func.HttpRequest) -> func.HttpResponse:
    token = req.params.get("validationToken")
    if token is not None:
        return func.HttpResponse(token, mimetype="text/plain")
    return func.HttpResponse(status_code=202)


@pytest.fixture(scope="module")
def hook() -> Iterator[FunctionHost]:
    with FunctionHost(hooks) as running:
        yield running


@pytest.fixture
def slow_delta() -> Iterator[tuple[SimulatedTenant, httpx.Client, str]]:
    scenario = demo_scenario()
    scenario.delta_delay_s = 30.0
    etg = next(p.etg_group_id for p in scenario.policies if p.etg_group_id)
    assert etg is not None
    with SimulatedTenant(scenario) as tenant, httpx.Client(base_url=tenant.base_url) as client:
        yield tenant, client, etg


JOINER = "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb"


def test_delta_shows_a_change_only_the_delta_delay_after_it(
    slow_delta: tuple[SimulatedTenant, httpx.Client, str],
) -> None:
    tenant, client, etg = slow_delta
    latest = client.get(
        "/v1.0/groups/delta", params={"$filter": f"id eq '{etg}'", "$deltatoken": "latest"}
    ).json()["@odata.deltaLink"]
    tenant.state.add_member_now(etg, JOINER)
    # Members show the change at once; delta does not yet.
    members = client.get(f"/v1.0/groups/{etg}/members?$top=999").json()["value"]
    assert JOINER in {m["id"] for m in members}
    tenant.clock.advance(10)
    early = client.get(latest).json()
    assert early["value"] == []
    tenant.clock.advance(25)
    later = client.get(early["@odata.deltaLink"]).json()
    [group] = later["value"]
    assert [m["id"] for m in group["members@delta"]] == [JOINER]
    # Shown once: the next round has nothing new.
    assert client.get(later["@odata.deltaLink"]).json()["value"] == []


def test_change_notification_leaves_only_the_delta_delay_after_the_change(
    slow_delta: tuple[SimulatedTenant, httpx.Client, str], hook: FunctionHost
) -> None:
    tenant, client, etg = slow_delta
    created = client.post(
        "/v1.0/subscriptions",
        json={
            "changeType": "updated",
            "notificationUrl": hook.url("graph/notify"),
            "resource": f"groups/{etg}/members",
            "expirationDateTime": format_time(tenant.clock.now() + timedelta(days=2)),
            "clientState": "latency-test",
        },
    )
    assert created.status_code == 201, created.text
    changed_at = tenant.clock.now()
    tenant.state.add_member_now(etg, JOINER)
    tenant.clock.advance(29)
    tenant.wait_for_deliveries()
    assert tenant.notifications_sent() == []
    tenant.clock.advance(2)
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    [item] = sent["body"]["value"]
    assert item["resourceData"]["members@delta"] == [{"id": JOINER}]
    assert sent["at"] == format_time(changed_at + timedelta(seconds=31))
