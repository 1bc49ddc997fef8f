"""Graph change-notification subscriptions: handshake, CRUD rules, deliveries, lifecycle.

The webhook is a small FunctionApp served by FunctionHost, so Graph reaches it over
real HTTP with its function key in the query string, as it would in Azure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
import httpx
import pytest

from devtools.simtenant import FaultRule, Policy, Scenario, SimulatedTenant
from devtools.simtenant.funchost import FunctionHost
from devtools.simtenant.scenario import format_time

TENANT_ID = "15b83e29-0751-4852-ae59-b5985cdef571"
VALIDATION_FAILED = {
    "code": "InvalidRequest",
    "message": "Subscription validation request failed. Notification endpoint must respond "
    "with 200 OK to validation request.",
}


class Receiver:
    """What the webhook does (set by a test) and what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.validation = "echo"  # echo | wrong_body | status_500 | json | slow
        self.slow_s = 0.0
        self.statuses: list[int] = []  # answers to notifications, then 202
        self.notify_delay_s = 0.0
        self.tokens: list[str] = []
        self.received: list[tuple[str, Any]] = []  # (route, JSON body)

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 202


RECEIVER = Receiver()
hooks = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


async def _answer(route: str, req: func.HttpRequest) -> func.HttpResponse:
    token = req.params.get("validationToken")
    if token is not None:
        RECEIVER.tokens.append(token)
        mode = RECEIVER.validation
        if mode == "slow":
            await asyncio.sleep(RECEIVER.slow_s)
        if mode == "status_500":
            return func.HttpResponse(token, status_code=500, mimetype="text/plain")
        if mode == "wrong_body":
            return func.HttpResponse(token + "x", mimetype="text/plain")
        if mode == "json":
            return func.HttpResponse(f'"{token}"', mimetype="application/json")
        return func.HttpResponse(token, mimetype="text/plain")
    received = RECEIVER.received  # a slow answer outliving its test lands in that test's list
    if RECEIVER.notify_delay_s:
        await asyncio.sleep(RECEIVER.notify_delay_s)
    received.append((route, req.get_json()))
    return func.HttpResponse(status_code=RECEIVER.next_status())


@hooks.function_name("notify")
@hooks.route(route="graph/notify", methods=["POST"])
async def notify(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer("notify", req)


@hooks.function_name("lifecycle")
@hooks.route(route="graph/lifecycle", methods=["POST"])
async def lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer("lifecycle", req)


@pytest.fixture(scope="module")
def hook() -> Iterator[FunctionHost]:
    with FunctionHost(hooks) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_receiver() -> None:
    RECEIVER.reset()


@pytest.fixture
def group_id(policy_named: Callable[[str], Policy]) -> str:
    etg = policy_named("Contoso - Standard Laptops").etg_group_id
    assert etg is not None
    return etg


def iso(tenant: SimulatedTenant, **delta: float) -> str:
    return format_time(tenant.clock.now() + timedelta(**delta))


def subscribe(
    client: httpx.Client,
    tenant: SimulatedTenant,
    hook: FunctionHost,
    group_id: str,
    **overrides: Any,
) -> httpx.Response:
    body: dict[str, Any] = {
        "changeType": "updated,deleted",
        "notificationUrl": hook.url("graph/notify"),
        "lifecycleNotificationUrl": hook.url("graph/lifecycle"),
        "resource": f"groups/{group_id}",
        "expirationDateTime": iso(tenant, days=2),
        "clientState": "secret-client-state",
    }
    body.update(overrides)
    return client.post("/v1.0/subscriptions", json={k: v for k, v in body.items() if v != ...})


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()


# ---------------------------------------------------------------------- creation


def test_create_validates_both_endpoints_and_answers_the_subscription(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    expiration = iso(tenant, days=2)
    sub = created(subscribe(client, tenant, hook, group_id, expirationDateTime=expiration))
    # One handshake per URL; the token is URL-encoded by Graph and decoded by the host.
    assert len(RECEIVER.tokens) == 2
    assert all(t.startswith("Validation: Testing client application") for t in RECEIVER.tokens)
    assert sub["@odata.context"].endswith("/v1.0/$metadata#subscriptions/$entity")
    assert sub["resource"] == f"groups/{group_id}"
    assert sub["changeType"] == "updated,deleted"
    assert sub["clientState"] == "secret-client-state"
    assert sub["notificationUrl"] == hook.url("graph/notify")
    assert sub["lifecycleNotificationUrl"] == hook.url("graph/lifecycle")
    assert (
        sub["expirationDateTime"]
        == "2026-11-22T08:00:00.0000000Z"
        == expiration[:-1] + (".0000000Z")
    )
    assert sub["latestSupportedTlsVersion"] == "v1_2"
    assert sub["notificationQueryOptions"] is None
    assert sub["includeResourceData"] is False
    assert sub["encryptionCertificate"] is None
    assert len(sub["id"]) == 36 and len(sub["applicationId"]) == 36 and sub["creatorId"]
    listed = client.get("/v1.0/subscriptions").json()["value"]
    assert [s["id"] for s in listed] == [sub["id"]]
    fetched = client.get(f"/v1.0/subscriptions/{sub['id']}").json()
    assert fetched["id"] == sub["id"] and fetched["clientState"] == "secret-client-state"
    assert [s["id"] for s in tenant.subscriptions()] == [sub["id"]]
    assert tenant.stats()["subscriptions.create"] == 1


def test_members_resource_is_case_insensitive_and_lifecycle_url_optional(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    resource = f"/Groups/{group_id.upper()}/Members"
    sub = created(
        subscribe(
            client,
            tenant,
            hook,
            group_id,
            resource=resource,
            lifecycleNotificationUrl=...,
            clientState=...,
            changeType="updated",
        )
    )
    assert sub["resource"] == resource
    assert sub["lifecycleNotificationUrl"] is None and sub["clientState"] is None
    assert len(RECEIVER.tokens) == 1


@pytest.mark.parametrize("mode", ["wrong_body", "status_500", "json"])
def test_failed_handshake_refuses_the_subscription(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str, mode: str
) -> None:
    RECEIVER.validation = mode
    response = subscribe(client, tenant, hook, group_id)
    assert response.status_code == 400
    error = response.json()["error"]
    assert {"code": error["code"], "message": error["message"]} == VALIDATION_FAILED
    assert tenant.subscriptions() == []
    assert client.get("/v1.0/subscriptions").json()["value"] == []


def test_handshake_without_the_function_key_fails(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    url = hook.url("graph/notify", with_key=False)  # the host answers 401
    response = subscribe(client, tenant, hook, group_id, notificationUrl=url)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == VALIDATION_FAILED["message"]


def test_slow_handshake_times_out(demo: Scenario, hook: FunctionHost, group_id: str) -> None:
    RECEIVER.validation = "slow"
    RECEIVER.slow_s = 1.0
    with (
        SimulatedTenant(demo, validation_timeout=0.2) as tenant,
        httpx.Client(base_url=tenant.base_url, timeout=10) as client,
    ):
        started = time.monotonic()
        response = subscribe(client, tenant, hook, group_id)
        assert time.monotonic() - started < 0.9
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidRequest"
        assert tenant.subscription_service.validations()[-1]["ok"] is False


def test_expiration_rules(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    too_far = subscribe(
        client, tenant, hook, group_id, expirationDateTime=iso(tenant, minutes=41761)
    )
    assert too_far.status_code == 400
    assert too_far.json()["error"] == {
        **too_far.json()["error"],
        "code": "ExtensionError",
        "message": "Subscription expiration can only be 41760 minutes in the future.",
    }
    past = subscribe(client, tenant, hook, group_id, expirationDateTime=iso(tenant, minutes=-1))
    assert past.status_code == 400
    assert past.json()["error"]["code"] == "InvalidRequest"
    garbage = subscribe(client, tenant, hook, group_id, expirationDateTime="next tuesday")
    assert garbage.status_code == 400
    assert RECEIVER.tokens == []  # refused before any handshake
    created(
        subscribe(client, tenant, hook, group_id, expirationDateTime=iso(tenant, minutes=41760))
    )


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"notificationUrl": "http://example.com/hook"}, 400, "InvalidRequest"),
        ({"notificationUrl": "ftp://127.0.0.1/hook"}, 400, "InvalidRequest"),
        ({"lifecycleNotificationUrl": "http://example.com/life"}, 400, "InvalidRequest"),
        ({"clientState": "x" * 129}, 400, "InvalidRequest"),
        ({"changeType": "created"}, 400, "ExtensionError"),
        ({"changeType": "updated,bogus"}, 400, "InvalidRequest"),
        ({"resource": "devices"}, 400, "ExtensionError"),
        ({"resource": "groups/00000000-0000-4000-8000-000000000000"}, 404, "ExtensionError"),
        ({"resource": ...}, 400, "InvalidRequest"),
        ({"unknownProperty": 1}, 400, "InvalidRequest"),
    ],
)
def test_bad_creation_requests(
    client: httpx.Client,
    tenant: SimulatedTenant,
    hook: FunctionHost,
    group_id: str,
    overrides: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = subscribe(client, tenant, hook, group_id, **overrides)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert tenant.subscriptions() == []


def test_client_state_of_128_characters_is_fine(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    created(subscribe(client, tenant, hook, group_id, clientState="x" * 128))


def test_deleted_group_cannot_be_subscribed(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    tenant.state.update_group(group_id, deleted=True)
    assert subscribe(client, tenant, hook, group_id).status_code == 404


def test_quota_of_100_subscriptions(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    ids = [
        created(subscribe(client, tenant, hook, group_id, lifecycleNotificationUrl=...))["id"]
        for _ in range(100)
    ]
    over = subscribe(client, tenant, hook, group_id)
    assert over.status_code == 403
    assert over.json()["error"]["code"] == "ExtensionError"
    assert len(RECEIVER.tokens) == 100  # no handshake for a refused one
    assert client.delete(f"/v1.0/subscriptions/{ids[0]}").status_code == 204
    created(subscribe(client, tenant, hook, group_id))


# ---------------------------------------------------------------------- renew, delete, expiry


def test_renew_reauthorize_and_delete(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id))
    path = f"/v1.0/subscriptions/{sub['id']}"
    renewed = client.patch(path, json={"expirationDateTime": iso(tenant, days=20)})
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] == "2026-12-10T08:00:00.0000000Z"
    assert renewed.json()["clientState"] == "secret-client-state"
    too_far = client.patch(path, json={"expirationDateTime": iso(tenant, days=30)})
    assert too_far.status_code == 400
    assert too_far.json()["error"]["code"] == "ExtensionError"
    assert client.patch(path, json={"clientState": "other"}).status_code == 400
    assert client.get(path).json()["expirationDateTime"] == "2026-12-10T08:00:00.0000000Z"
    reauthorized = client.post(path + "/reauthorize")
    assert (reauthorized.status_code, reauthorized.content) == (204, b"")
    deleted = client.delete(path)
    assert (deleted.status_code, deleted.content) == (204, b"")
    for response in (
        client.get(path),
        client.delete(path),
        client.patch(path, json={"expirationDateTime": iso(tenant, days=1)}),
        client.post(path + "/reauthorize"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ResourceNotFound"


def test_subscription_expires_with_sim_time(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(
        subscribe(client, tenant, hook, group_id, expirationDateTime=iso(tenant, hours=1))
    )
    tenant.clock.advance(3599)
    assert client.get(f"/v1.0/subscriptions/{sub['id']}").status_code == 200
    tenant.clock.advance(1)
    assert client.get(f"/v1.0/subscriptions/{sub['id']}").status_code == 404
    assert client.get("/v1.0/subscriptions").json()["value"] == []
    assert tenant.subscriptions() == []
    renew = client.patch(
        f"/v1.0/subscriptions/{sub['id']}", json={"expirationDateTime": iso(tenant, hours=1)}
    )
    assert renew.status_code == 404
    tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
    tenant.wait_for_deliveries()
    assert tenant.notifications_sent() == []


def test_subscriptions_work_inside_batch(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    body = {
        "changeType": "updated",
        "notificationUrl": hook.url("graph/notify"),
        "resource": f"groups/{group_id}",
        "expirationDateTime": iso(tenant, days=1),
    }
    batch = client.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "POST",
                    "url": "/subscriptions",
                    "body": body,
                    "headers": {"Content-Type": "application/json"},
                },
                {"id": "2", "method": "GET", "url": "/subscriptions/unknown-id"},
            ]
        },
    )
    responses = {r["id"]: r for r in batch.json()["responses"]}
    assert responses["1"]["status"] == 201
    assert responses["2"]["status"] == 404
    sub_id = responses["1"]["body"]["id"]
    again = client.post(
        "/v1.0/$batch",
        json={"requests": [{"id": "a", "method": "DELETE", "url": f"/subscriptions/{sub_id}"}]},
    )
    assert again.json()["responses"][0]["status"] == 204
    assert tenant.subscriptions() == []


def test_fault_rule_on_create(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    tenant.faults.add(FaultRule("subscriptions.create", status=503, retry_after=2, first_n=1))
    throttled = subscribe(client, tenant, hook, group_id)
    assert throttled.status_code == 503
    assert throttled.headers["Retry-After"] == "2"
    assert RECEIVER.tokens == []  # the fault answered before any handshake
    created(subscribe(client, tenant, hook, group_id))
    tenant.faults.add(FaultRule("subscriptions.list", status=429))
    assert client.get("/v1.0/subscriptions").status_code == 429


# ---------------------------------------------------------------------- notifications


def test_notification_after_add_member_now(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id))
    member = "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb"
    tenant.state.add_member_now(group_id, member)
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    assert sent["url"] == hook.url("graph/notify", with_key=False)  # query (key) stripped
    assert (sent["status"], sent["attempt"], sent["kind"]) == (202, 1, "notification")
    assert sent["at"] == "2026-11-20T08:00:00Z"
    [item] = sent["body"]["value"]
    sequence = item["resourceData"].pop("sequenceNumber")
    assert isinstance(sequence, int)
    assert item == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": "2026-11-22T08:00:00.0000000+00:00",
        "changeType": "updated",
        "resource": f"Groups/{group_id}",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Group",
            "@odata.id": f"Groups/{group_id}",
            "id": group_id,
            "organizationId": TENANT_ID,
            "members@delta": [{"id": member}],
        },
        "clientState": "secret-client-state",
        "tenantId": TENANT_ID,
    }
    assert RECEIVER.received == [("notify", tenant.notifications_sent()[0]["body"])]


def test_removal_and_group_deletion(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    both = created(subscribe(client, tenant, hook, group_id))
    updated_only = created(subscribe(client, tenant, hook, group_id, changeType="updated"))
    member = "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb"
    tenant.state.remove_member_now(group_id, member)
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()  # both subscriptions notify the same URL: one POST
    removals = sent["body"]["value"]
    assert sorted(i["subscriptionId"] for i in removals) == sorted([both["id"], updated_only["id"]])
    assert sorted(sent["subscription_ids"]) == sorted([both["id"], updated_only["id"]])
    assert all(
        i["resourceData"]["members@delta"] == [{"id": member, "@removed": "deleted"}]
        for i in removals
    )
    tenant.clear_notifications()
    tenant.state.update_group(group_id, deleted=True)
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    [item] = sent["body"]["value"]
    assert item["subscriptionId"] == both["id"]
    assert item["changeType"] == "deleted"
    assert "members@delta" not in item["resourceData"]


def test_changes_become_effective_as_the_clock_passes_them(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, demo: Scenario
) -> None:
    groups = sorted({p.etg_group_id for p in demo.policies if p.etg_group_id})
    for gid in groups:
        created(subscribe(client, tenant, hook, gid))
    # Deployments enrolling in ten minutes join their ETG 20-90 s after enrolling.
    added = client.post(
        "/_sim/deployments", json={"count": 4, "at": iso(tenant, minutes=10), "seed": 3}
    ).json()
    new_ids = set(added["managed_device_ids"])
    objects = {d.object_id for d in tenant.state.deployments() if d.managed_device_id in new_ids}
    tenant.wait_for_deliveries()
    assert tenant.notifications_sent() == []  # nothing is effective yet
    tenant.clock.advance(600)
    tenant.wait_for_deliveries()
    assert tenant.notifications_sent() == []
    tenant.clock.advance(3600)
    tenant.wait_for_deliveries()
    joined = {
        m["id"]
        for n in tenant.notifications_sent()
        for item in n["body"]["value"]
        for m in item["resourceData"]["members@delta"]
    }
    assert joined == objects
    # Deployments whose joins are already in the past notify as soon as they are added.
    tenant.clear_notifications()
    late = client.post(
        "/_sim/deployments", json={"count": 3, "at": iso(tenant, hours=-2), "seed": 4}
    ).json()
    tenant.wait_for_deliveries()
    late_ids = set(late["managed_device_ids"])
    late_objects = {
        d.object_id for d in tenant.state.deployments() if d.managed_device_id in late_ids
    }
    notified = {
        m["id"]
        for n in tenant.notifications_sent()
        for item in n["body"]["value"]
        for m in item["resourceData"]["members@delta"]
    }
    assert notified == late_objects


def test_failed_delivery_is_retried(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    created(subscribe(client, tenant, hook, group_id))
    RECEIVER.statuses = [500]
    tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
    tenant.wait_for_deliveries()
    attempts = tenant.notifications_sent()
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 202)]
    assert attempts[0]["body"] == attempts[1]["body"]
    assert len(RECEIVER.received) == 2


def test_delivery_gives_up_after_the_last_attempt(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    created(subscribe(client, tenant, hook, group_id))
    RECEIVER.statuses = [503] * 10
    tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
    tenant.wait_for_deliveries()
    assert [(a["attempt"], a["status"]) for a in tenant.notifications_sent()] == [
        (1, 503),
        (2, 503),
        (3, 503),
        (4, 503),
    ]


def test_slow_receiver_never_blocks_the_tenant(
    demo: Scenario, hook: FunctionHost, group_id: str
) -> None:
    with (
        SimulatedTenant(demo, delivery_timeout=0.2, delivery_attempts=2) as tenant,
        httpx.Client(base_url=tenant.base_url, timeout=10) as client,
    ):
        created(subscribe(client, tenant, hook, group_id))
        RECEIVER.notify_delay_s = 0.5
        started = time.monotonic()
        tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
        tenant.clock.advance(60)
        assert client.get(f"/v1.0/groups/{group_id}").status_code == 200
        assert time.monotonic() - started < 0.15
        assert tenant.subscription_service.pending_deliveries() == 1
        with pytest.raises(TimeoutError):
            tenant.wait_for_deliveries(timeout=0.05)
        tenant.wait_for_deliveries()
        attempts = tenant.notifications_sent()
        assert [(a["attempt"], a["status"]) for a in attempts] == [(1, None), (2, None)]
        assert "no answer within 0.2 s" in str(attempts[0]["error"])


# ---------------------------------------------------------------------- lifecycle


def test_lifecycle_notification_carries_only_the_documented_fields(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id))
    tenant.send_lifecycle(sub["id"], "reauthorizationRequired")
    tenant.wait_for_deliveries()
    assert tenant.subscriptions()[0]["reauthorizationRequired"] is True
    [sent] = tenant.notifications_sent()
    assert sent["kind"] == "lifecycle"
    assert sent["url"] == hook.url("graph/lifecycle", with_key=False)
    # A lifecycle notification is about the subscription, not a resource: no resource at all.
    assert sent["body"] == {
        "value": [
            {
                "lifecycleEvent": "reauthorizationRequired",
                "subscriptionId": sub["id"],
                "subscriptionExpirationDateTime": "2026-11-22T08:00:00.0000000+00:00",
                "tenantId": TENANT_ID,
                "clientState": "secret-client-state",
            }
        ]
    }
    assert RECEIVER.received == [("lifecycle", sent["body"])]
    assert client.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize").status_code == 204
    assert tenant.subscriptions()[0]["reauthorizationRequired"] is False
    with pytest.raises(ValueError, match="unknown lifecycle event"):
        tenant.send_lifecycle(sub["id"], "bogus")
    with pytest.raises(KeyError):
        tenant.send_lifecycle("00000000-0000-4000-8000-000000000000", "reauthorizationRequired")


@pytest.mark.parametrize("event", ["missed", "subscriptionRemoved"])
def test_group_subscriptions_have_no_missed_or_removed_lifecycle_events(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str, event: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id))
    with pytest.raises(ValueError, match="group subscriptions"):
        tenant.send_lifecycle(sub["id"], event)
    refused = client.post(f"/_sim/subscriptions/{sub['id']}/lifecycle", json={"event": event})
    assert refused.status_code == 400
    tenant.wait_for_deliveries()
    assert tenant.notifications_sent() == []


def test_no_lifecycle_notification_without_a_lifecycle_url(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id, lifecycleNotificationUrl=...))
    tenant.send_lifecycle(sub["id"], "reauthorizationRequired")
    tenant.wait_for_deliveries()
    assert RECEIVER.received == [] and tenant.notifications_sent() == []
    # Graph still wants the reauthorization; it just has nowhere to say so.
    assert tenant.subscriptions()[0]["reauthorizationRequired"] is True


def test_subscription_dropped_by_graph_is_gone_without_a_notification(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id))
    tenant.drop_subscription(sub["id"])
    assert client.get(f"/v1.0/subscriptions/{sub['id']}").status_code == 404
    assert client.get("/v1.0/subscriptions").json()["value"] == []
    tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
    tenant.wait_for_deliveries()
    assert tenant.notifications_sent() == []
    with pytest.raises(KeyError):
        tenant.drop_subscription(sub["id"])


# ---------------------------------------------------------------------- batched delivery


def members(sent: dict[str, Any]) -> list[str]:
    return [
        m["id"]
        for item in sent["body"]["value"]
        if "resourceData" in item
        for m in item["resourceData"].get("members@delta", [])
    ]


def test_changes_and_lifecycle_due_to_one_url_share_one_post_across_subscriptions(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, demo: Scenario
) -> None:
    url = hook.url("graph/notify")
    groups = sorted({p.etg_group_id for p in demo.policies if p.etg_group_id})[:3]
    subs = [
        created(subscribe(client, tenant, hook, gid, lifecycleNotificationUrl=url))
        for gid in groups
    ]
    joined = [f"a2e8f6e0-f878-4ccf-9dda-c46687d8b1{n:02x}" for n in range(len(groups))]
    with tenant.deliveries_held():
        for gid, member in zip(groups, joined, strict=True):
            tenant.state.add_member_now(gid, member)
        tenant.send_lifecycle(subs[0]["id"], "reauthorizationRequired")
        assert tenant.subscription_service.pending_deliveries() == 1  # one URL waiting
        assert tenant.notifications_sent() == []
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    assert sent["kind"] == "mixed" and sent["status"] == 202
    assert sorted(sent["subscription_ids"]) == sorted(s["id"] for s in subs)
    assert sorted(members(sent)) == sorted(joined)
    lifecycle = [i for i in sent["body"]["value"] if "lifecycleEvent" in i]
    assert [(i["lifecycleEvent"], i["subscriptionId"]) for i in lifecycle] == [
        ("reauthorizationRequired", subs[0]["id"])
    ]
    assert [route for route, _ in RECEIVER.received] == ["notify"]


def test_lifecycle_items_go_to_the_lifecycle_url_not_into_the_change_post(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    first = created(subscribe(client, tenant, hook, group_id))
    second = created(subscribe(client, tenant, hook, group_id))
    with tenant.deliveries_held():
        tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
        tenant.send_lifecycle(first["id"], "reauthorizationRequired")
        tenant.send_lifecycle(second["id"], "reauthorizationRequired")
    tenant.wait_for_deliveries()
    by_kind = {n["kind"]: n for n in tenant.notifications_sent()}
    assert sorted(by_kind) == ["lifecycle", "notification"]
    assert len(by_kind["notification"]["body"]["value"]) == 2  # one per subscription
    assert [i["subscriptionId"] for i in by_kind["lifecycle"]["body"]["value"]] == [
        first["id"],
        second["id"],
    ]
    assert by_kind["lifecycle"]["url"] == hook.url("graph/lifecycle", with_key=False)
    assert sorted(route for route, _ in RECEIVER.received) == ["lifecycle", "notify"]


def test_changes_due_at_once_are_posted_together(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, demo: Scenario
) -> None:
    for gid in sorted({p.etg_group_id for p in demo.policies if p.etg_group_id}):
        created(subscribe(client, tenant, hook, gid))
    # Joins that are already in the past become due in one step: one POST carries them all.
    added = client.post(
        "/_sim/deployments", json={"count": 6, "at": iso(tenant, hours=-2), "seed": 5}
    ).json()
    tenant.wait_for_deliveries()
    ids = set(added["managed_device_ids"])
    objects = {d.object_id for d in tenant.state.deployments() if d.managed_device_id in ids}
    sent = tenant.notifications_sent()
    assert len(sent) < len(objects)
    assert {m for n in sent for m in members(n)} == objects


def test_more_items_than_one_post_carries_are_split(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    from devtools.simtenant.subscriptions import MAX_ITEMS_PER_POST

    created(subscribe(client, tenant, hook, group_id))
    joined = [f"a2e8f6e0-f878-4ccf-9dda-{n:012x}" for n in range(MAX_ITEMS_PER_POST + 1)]
    with tenant.deliveries_held():
        for member in joined:
            tenant.state.add_member_now(group_id, member)
    tenant.wait_for_deliveries()
    sizes = [len(n["body"]["value"]) for n in tenant.notifications_sent()]
    assert sorted(sizes) == [1, MAX_ITEMS_PER_POST]
    assert sorted(m for n in tenant.notifications_sent() for m in members(n)) == sorted(joined)


def test_a_refused_batch_is_retried_whole(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id, lifecycleNotificationUrl=...))
    RECEIVER.statuses = [503]
    with tenant.deliveries_held():
        tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
        tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1ec")
    tenant.wait_for_deliveries()
    attempts = tenant.notifications_sent()
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 503), (2, 202)]
    assert attempts[0]["body"] == attempts[1]["body"]
    assert len(attempts[0]["body"]["value"]) == 2
    assert attempts[1]["subscription_ids"] == [sub["id"]]


def test_held_items_are_pending_until_released(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    created(subscribe(client, tenant, hook, group_id))
    assert client.post("/_sim/notifications/hold").json() == {"held": True}
    tenant.state.add_member_now(group_id, "a2e8f6e0-f878-4ccf-9dda-c46687d8b1eb")
    with pytest.raises(TimeoutError):
        tenant.wait_for_deliveries(timeout=0.2)
    assert client.get("/_sim/notifications").json()["pending"] == 1
    assert RECEIVER.received == []
    assert client.post("/_sim/notifications/release").json() == {"held": False}
    tenant.wait_for_deliveries()
    assert [route for route, _ in RECEIVER.received] == ["notify"]


def test_control_api(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    sub = created(subscribe(client, tenant, hook, group_id))
    listed = client.get("/_sim/subscriptions").json()["subscriptions"]
    assert [s["id"] for s in listed] == [sub["id"]]
    sent = client.post(
        f"/_sim/subscriptions/{sub['id']}/lifecycle", json={"event": "reauthorizationRequired"}
    )
    assert sent.status_code == 202
    assert client.post(f"/_sim/subscriptions/{sub['id']}/lifecycle", json={}).status_code == 400
    assert client.delete(f"/_sim/subscriptions/{sub['id']}").status_code == 200
    assert client.delete(f"/_sim/subscriptions/{sub['id']}").status_code == 404
    tenant.wait_for_deliveries()
    report = client.get("/_sim/notifications").json()
    assert report["pending"] == 0
    assert [n["body"]["value"][0]["lifecycleEvent"] for n in report["notifications"]] == [
        "reauthorizationRequired"
    ]
    assert [v["ok"] for v in report["validations"]] == [True, True]
    assert client.delete("/_sim/notifications").json() == {"notifications": []}
    assert tenant.notifications_sent() == []


def test_expiration_date_format_is_parsed_leniently(
    client: httpx.Client, tenant: SimulatedTenant, hook: FunctionHost, group_id: str
) -> None:
    when = tenant.clock.now() + timedelta(hours=5, microseconds=123456)
    sub = created(
        subscribe(
            client,
            tenant,
            hook,
            group_id,
            expirationDateTime=when.isoformat(),  # "+00:00" offset, microseconds
        )
    )
    assert sub["expirationDateTime"] == "2026-11-20T13:00:00.1234560Z"
    assert datetime.fromisoformat(sub["expirationDateTime"][:26] + "+00:00") == when
