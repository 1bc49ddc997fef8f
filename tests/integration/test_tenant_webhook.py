"""One webhook for many tenants: each notification routed by its tenantId to the tenant's own
inbox, with the tenant's own client state, through the real function on Azurite, with two
simulated tenants whose subscriptions the monitor created with each tenant's settings."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from devtools.simtenant.scenario import demo_scenario
from devtools.simtenant.server import SimulatedTenant
from monitors.jobs.subscriptions import sync_subscriptions
from monitors.tenants import webhook as tenant_webhook
from monitors.tenants.registry import Tenant, TenantRegistry
from monitors.tenants.scope import client_state_for, tenant_settings
from tests.helpers import call_route, in_store, notification_inbox, run_job, with_webhook

pytestmark = pytest.mark.integration
CLIENT_STATE = "kT7v2Q9xLm4pZr8sWb3nYc6h"
A = "aaaaaaaa-1111-4111-8111-00000000000a"
B = "bbbbbbbb-2222-4222-8222-00000000000b"
UNREGISTERED = "cccccccc-3333-4333-8333-00000000000c"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Side:
    """One registered tenant: its simulator, registry entry and settings."""

    sim: SimulatedTenant
    entry: Tenant
    settings: Any

    @property
    def state(self) -> str:
        return client_state_for(CLIENT_STATE, self.entry.tenant_id)

    def subscription(self) -> str:
        subs: list[str] = sorted(s["id"] for s in self.sim.subscriptions())
        return subs[0]


def register(settings: Any, *tenants: Tenant) -> None:
    async def put(store: Any) -> None:
        for tenant in tenants:
            await TenantRegistry(store).put(tenant, datetime.now(UTC))

    in_store(settings, put)


@pytest.fixture
def fresh_routes(monkeypatch):
    """The registry cache on a clock the test moves (it is per worker, 30 s)."""
    moments = [0.0]
    monkeypatch.setattr(tenant_webhook.routes_cache, "_monotonic", lambda: moments[0])
    monkeypatch.setattr(tenant_webhook.routes_cache, "_entries", {})
    return moments


@pytest.fixture
def base(settings, function_host, monkeypatch, fresh_routes):
    """The deployment: the function app's settings, with the webhook and its client state."""
    return with_webhook(monkeypatch, settings, function_host, CLIENT_STATE)


@pytest.fixture
def sides(base) -> Iterator[dict[str, Side]]:
    """Two simulated tenants of one scenario (only the tenant id differs), registered, each
    with the subscriptions the monitor created under that tenant's own settings."""
    out: dict[str, Side] = {}
    with contextlib.ExitStack() as stack:
        for tenant_id, name in ((A, "Contoso"), (B, "Fabrikam")):
            sim = stack.enter_context(
                SimulatedTenant(dataclasses.replace(demo_scenario(), tenant_id=tenant_id))
            )
            entry = Tenant(tenant_id, name, graph_endpoint=sim.base_url)
            out[tenant_id] = Side(sim, entry, tenant_settings(base, entry, {}))
        register(base, *(side.entry for side in out.values()))
        for side in out.values():
            report = run_job(side.settings, side.sim, sync_subscriptions)
            assert report.created and not report.unverified
        yield out


def post(body: Any, params: dict[str, str] | None = None) -> Any:
    return call_route(
        "graph_notifications",
        "POST",
        "graph/notifications",
        params=params,
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode() if not isinstance(body, bytes) else body,
    )


def item(tenant: str, sub: str, state: str, group: str = "00000000-0000-0000-0000-000000000001"):
    return {
        "subscriptionId": sub,
        "changeType": "updated",
        "clientState": state,
        "resource": f"Groups/{group}",
        "tenantId": tenant,
        "resourceData": {"id": group, "@odata.type": "#Microsoft.Graph.Group"},
    }


def tables_under(settings: Any, prefix: str) -> set[str]:
    service = TableServiceClient.from_connection_string(settings.storage_connection)
    return {t.name for t in service.list_tables() if t.name.startswith(prefix)}


def test_a_request_mixing_tenants_stores_each_item_in_its_own_tenants_inbox(base, sides):
    a, b = sides[A], sides[B]
    body = {
        "value": [
            item(A, a.subscription(), a.state),
            item(B, b.subscription(), b.state),
            item(
                B.upper(), b.subscription(), b.state, group="00000000-0000-0000-0000-000000000002"
            ),
        ]
    }
    assert post(body).status_code == 202
    assert [i.subscription_id for i in notification_inbox(a.settings)] == [a.subscription()]
    assert (
        sorted(i.subscription_id for i in notification_inbox(b.settings)) == [b.subscription()] * 2
    )
    assert notification_inbox(base) == []  # nothing in the deployment's own tables


@pytest.mark.parametrize(
    "forged",
    [
        "other tenant's state",
        "other tenant's subscription",
        "unregistered tenant",
        "deployment's state",
    ],
)
def test_an_item_not_its_tenants_own_is_refused_with_403_and_touches_no_tenant(base, sides, forged):
    a, b = sides[A], sides[B]
    before = {t: tables_under(base, s.settings.table_prefix) for t, s in sides.items()}
    body = {
        "other tenant's state": item(B, b.subscription(), a.state),
        "other tenant's subscription": item(A, b.subscription(), a.state),
        "unregistered tenant": item(UNREGISTERED, a.subscription(), a.state),
        "deployment's state": item(A, a.subscription(), CLIENT_STATE),
    }[forged]
    response = post({"value": [body]})
    assert response.status_code == 403
    assert response.get_body() == b"no acceptable notification"
    after = {t: tables_under(base, s.settings.table_prefix) for t, s in sides.items()}
    assert after == before  # not even a table was created for anyone
    assert notification_inbox(a.settings) == [] and notification_inbox(b.settings) == []


def test_a_forged_item_beside_a_genuine_one_is_dropped_and_the_genuine_one_kept(base, sides):
    a, b = sides[A], sides[B]
    body = {"value": [item(A, a.subscription(), a.state), item(B, b.subscription(), a.state)]}
    assert post(body).status_code == 202
    assert len(notification_inbox(a.settings)) == 1
    assert notification_inbox(b.settings) == []


def test_notifications_and_lifecycle_events_sent_by_each_tenant_reach_only_its_inbox(base, sides):
    a, b = sides[A], sides[B]
    a.sim.clock.advance(1)
    b.sim.clock.advance(1)
    group = a.sim.subscriptions()[0]["resource"].split("/")[1]
    a.sim.state.add_member_now(group, "0b5e0c3a-7d1f-4c2e-9a6b-000000000001")
    b.sim.send_lifecycle(b.subscription(), "reauthorizationRequired")
    a.sim.wait_for_deliveries()
    b.sim.wait_for_deliveries()
    sent = a.sim.notifications_sent() + b.sim.notifications_sent()
    assert sent and all(s["status"] == 202 for s in sent)
    assert {i["tenantId"] for s in a.sim.notifications_sent() for i in s["body"]["value"]} == {A}
    a_inbox, b_inbox = notification_inbox(a.settings), notification_inbox(b.settings)
    assert [(i.group_id, i.lifecycle_event) for i in a_inbox] == [(group, None)]
    assert [(i.subscription_id, i.lifecycle_event) for i in b_inbox] == [
        (b.subscription(), "reauthorizationRequired")
    ]


def test_a_disabled_tenant_is_refused_once_the_cache_has_expired(base, sides, fresh_routes):
    b = sides[B]
    genuine = {"value": [item(B, b.subscription(), b.state)]}
    assert post(genuine).status_code == 202
    register(base, dataclasses.replace(b.entry, enabled=False))
    fresh_routes[0] += tenant_webhook.RoutesCache.TTL + 1
    assert post(genuine).status_code == 403
    assert len(notification_inbox(b.settings)) == 1  # only the one taken while enabled


def test_a_tenant_added_is_routed_within_the_cache_time(base, sides, fresh_routes, tenant):
    third = Tenant(UNREGISTERED, "Tailspin", graph_endpoint=tenant.base_url)
    third_settings = tenant_settings(base, third, {})
    a = sides[A]
    assert post({"value": [item(A, a.subscription(), a.state)]}).status_code == 202
    register(base, third)
    # Within the cache time the worker still has the registry it read.
    assert run_job(third_settings, tenant, sync_subscriptions).created
    sub = tenant.subscriptions()[0]["id"]
    genuine = {"value": [item(UNREGISTERED, sub, client_state_for(CLIENT_STATE, UNREGISTERED))]}
    assert post(genuine).status_code == 403
    fresh_routes[0] += tenant_webhook.RoutesCache.TTL + 1
    assert post(genuine).status_code == 202
    assert [i.subscription_id for i in notification_inbox(third_settings)] == [sub]


def test_the_validation_handshake_is_unchanged_with_a_registry(base, sides):
    response = post(b"", params={"validationToken": "Validation: Testing client application"})
    assert response.status_code == 200
    assert response.get_body() == b"Validation: Testing client application"


def test_with_an_empty_registry_the_deployments_own_state_is_accepted_and_a_tenants_is_not(
    base, tenant
):
    report = run_job(base, tenant, sync_subscriptions)
    assert report.created
    sub = tenant.subscriptions()[0]["id"]
    own = tenant.scenario.tenant_id
    assert post({"value": [item(own, sub, client_state_for(CLIENT_STATE, own))]}).status_code == 403
    assert post({"value": [item(own, sub, CLIENT_STATE)]}).status_code == 202
    assert [i.subscription_id for i in notification_inbox(base)] == [sub]


def test_the_registry_is_read_once_per_cache_time_under_load(base, sides, monkeypatch):
    a = sides[A]
    reads = []
    original = TenantRegistry.all

    async def counted(self: TenantRegistry) -> list[Tenant]:
        reads.append(1)
        return await original(self)

    monkeypatch.setattr(TenantRegistry, "all", counted)
    body = {"value": [item(A, a.subscription(), a.state)]}
    answers = [post(body).status_code for _ in range(20)]
    assert answers == [202] * 20 and len(reads) <= 1


def test_the_simulator_serves_the_tenant_id_it_is_given():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "devtools.simtenant", "serve", "--tenant-id", A.upper()]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT, env=env, text=True
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["tenant_id"] == A and ready["base_url"].startswith("http://127.0.0.1:")
    finally:
        process.terminate()
        process.wait(timeout=15)
    refused = subprocess.run(
        [*command[:-1], "not-a-guid"], capture_output=True, cwd=REPO_ROOT, env=env, text=True
    )
    assert refused.returncode == 2 and "--tenant-id must be a GUID" in refused.stderr
