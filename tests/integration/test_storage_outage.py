"""Table Storage going away in the middle of a scan or of a webhook request. Azurite runs with
persistence here, so what was acknowledged before the outage is still there after it, as with a
real account."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import httpx
import pytest
from azure.core.exceptions import AzureError

from monitors.jobs.context import open_context, open_store
from monitors.jobs.subscriptions import sync_subscriptions
from monitors.settings import Settings
from monitors.store.notifications import NotificationStore
from tests.helpers import app_functions, serve_webhook_from_env
from tests.integration.test_faults import at_storage_write, broken_at_write_then_rerun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def durable_azurite():
    from devtools.simtenant.azurite import Azurite

    with Azurite(persistent=True) as emulator:
        yield emulator


@pytest.fixture
def outage_settings(durable_azurite, tenant, table_prefix):
    durable_azurite.start()  # a previous test may have left it stopped
    base = Settings.from_env(
        {
            "ETG_GRAPH_ENDPOINT": tenant.base_url,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": durable_azurite.connection_string,
            "ETG_TABLE_PREFIX": table_prefix,
        }
    )
    return dataclasses.replace(base, detailed_reports=True)


def stop_storage_at(azurite, restart_after=None):
    """An action for a storage write: stop Azurite there; optionally start it again from
    another thread a moment later, while the run is still retrying."""

    def outage(_name):
        azurite.stop()
        if restart_after is not None:
            threading.Timer(restart_after, azurite.start).start()

    return outage


@pytest.mark.parametrize("write_no", [2, 7, 12, 16])
def test_storage_down_for_the_rest_of_a_scan_then_back(
    outage_settings, durable_azurite, tenant, monkeypatch, write_no
):
    # The broken run fails loudly (AzureError); nothing it could not store is believed.
    outage = stop_storage_at(durable_azurite)
    broken_at_write_then_rerun(
        outage_settings, tenant, monkeypatch, write_no, outage, AzureError, durable_azurite.start
    )


@pytest.mark.parametrize("write_no", [5, 14])
def test_storage_restarted_while_a_scan_is_retrying(
    outage_settings, durable_azurite, tenant, monkeypatch, write_no
):
    outage = stop_storage_at(durable_azurite, restart_after=1.0)
    broken_at_write_then_rerun(outage_settings, tenant, monkeypatch, write_no, outage, AzureError)


# --- the webhook -------------------------------------------------------------------------------

CLIENT_STATE = "Zq4w8Ny2Rk6tLm0pXc3vBj7s"


@pytest.fixture
def webhook_settings(outage_settings, monkeypatch):
    from devtools.simtenant.funchost import FunctionHost

    with FunctionHost(list(app_functions().values())) as host:
        s = dataclasses.replace(
            outage_settings,
            notification_url=host.url("graph/notifications"),
            client_state=CLIENT_STATE,
        )
        serve_webhook_from_env(monkeypatch, s)
        yield s, host


def graph_batch(subscriptions, tenant_id):
    """What Graph posts when changes pile up: for each subscription three membership changes
    and a reauthorizationRequired, in one collection (concepts/change-notifications-*.md)."""
    value = []
    for sub in subscriptions:
        group = sub["resource"].split("/")[1]
        common = {
            "subscriptionId": sub["id"],
            "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "clientState": sub["clientState"],
            "tenantId": tenant_id,
        }
        for k in range(3):
            member = f"5c1d7e2a-0f3b-4a6c-8d9e-{k:012x}"
            value.append(
                {
                    **common,
                    "changeType": "updated",
                    "resource": f"Groups/{group}",
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Group",
                        "@odata.id": f"Groups/{group}",
                        "id": group,
                        "members@delta": [{"id": member}],
                    },
                }
            )
        value.append({**common, "lifecycleEvent": "reauthorizationRequired"})
    return {"value": value}


def inbox_ids(settings):
    async def go():
        async with open_store(settings) as store:
            return [i.id for i in await NotificationStore(store).inbox()]

    return asyncio.run(go())


def test_storage_down_mid_batch_answers_503_and_the_redelivery_stores_each_item_once(
    webhook_settings, durable_azurite, tenant, monkeypatch
):
    settings, host = webhook_settings

    async def sync():
        async with open_context(settings, clock=tenant.clock) as ctx:
            return await sync_subscriptions(ctx)

    assert asyncio.run(sync()).created
    body = graph_batch(tenant.subscriptions(), tenant.scenario.tenant_id)
    assert len(body["value"]) == 20
    restore = at_storage_write(monkeypatch, 4, stop_storage_at(durable_azurite))
    refused = httpx.post(host.url("graph/notifications"), json=body, timeout=60)
    restore()
    assert refused.status_code == 503
    assert host.errors == []  # an answer, not an exception out of the handler
    durable_azurite.start()
    stored_before = set(inbox_ids(settings))
    assert len(stored_before) < 20  # the outage did cut the batch
    redelivered = httpx.post(host.url("graph/notifications"), json=body, timeout=60)
    assert redelivered.status_code == 202
    ids = inbox_ids(settings)
    assert len(ids) == len(set(ids)) == 20
    assert stored_before <= set(ids)
