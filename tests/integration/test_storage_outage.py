"""Table Storage going away in the middle of a scan or of a webhook request. Azurite runs with
persistence here, so what was acknowledged before the outage is still there after it, as with a
real account."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from azure.core.exceptions import AzureError
from azure.core.pipeline.transport import AioHttpTransport

from monitors.jobs.subscriptions import sync_subscriptions
from monitors.store.notifications import NotificationStore
from tests.helpers import (
    DEMO_FIRST_SCAN_WRITES,
    assert_matches_a_clean_run,
    at_storage_write,
    in_store,
    run_job,
    scan,
    scan_broken_at_write_then_rerun,
    serve_webhook_from_env,
    settings_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def durable_azurite():
    from devtools.simtenant.azurite import Azurite

    with Azurite(persistent=True) as emulator:
        yield emulator


@pytest.fixture
def outage_settings(durable_azurite, tenant, table_prefix):
    durable_azurite.start()  # a previous test may have left it stopped
    base = settings_for(tenant.base_url, durable_azurite.connection_string, table_prefix)
    return dataclasses.replace(base, detailed_reports=True)


def stop_storage(azurite):
    """An action for a storage write: stop Azurite there, for the rest of the run."""

    def outage(_name):
        azurite.stop()

    return outage


@pytest.mark.parametrize("write_no", [1, 2, 7, 30, DEMO_FIRST_SCAN_WRITES])
def test_storage_down_for_the_rest_of_a_scan_then_back(
    outage_settings, durable_azurite, tenant, monkeypatch, write_no
):
    # The broken run fails loudly (AzureError); nothing it could not store is believed.
    scan_broken_at_write_then_rerun(
        outage_settings,
        tenant,
        monkeypatch,
        write_no,
        stop_storage(durable_azurite),
        AzureError,
        durable_azurite.start,
    )
    assert_matches_a_clean_run(outage_settings)


def storage_back_after_a_failed_attempt(monkeypatch, azurite):
    """Start Azurite again as soon as an HTTP attempt to it has failed, before the storage
    client retries: the restart lands inside the retrying, whatever the timing. Returns the
    failed attempts."""
    failed: list[str] = []
    send = AioHttpTransport.send

    async def send_or_restart(self, request, **kwargs):
        try:
            return await send(self, request, **kwargs)
        except AzureError:
            failed.append(f"{request.method} {request.url}")
            azurite.start()  # does nothing once it runs
            raise

    monkeypatch.setattr(AioHttpTransport, "send", send_or_restart)
    return failed


# The storage client retries a request that never reached the server only when it is a GET,
# PUT or DELETE (azure-core's retry policy): of a first scan's writes, the checkpoint upserts
# and the lease's release. An insert, a transaction or a merge fails the run at once, and the
# next run recovers (test_storage_down_for_the_rest_of_a_scan_then_back).
RETRIED_WRITES = [39, 44, DEMO_FIRST_SCAN_WRITES]


@pytest.mark.parametrize("write_no", RETRIED_WRITES)
def test_storage_restarted_while_a_write_is_retrying_lets_that_same_scan_finish(
    outage_settings, durable_azurite, tenant, monkeypatch, write_no
):
    failed = storage_back_after_a_failed_attempt(monkeypatch, durable_azurite)
    restore = at_storage_write(monkeypatch, write_no, stop_storage(durable_azurite))
    report = scan(outage_settings, tenant)  # raises if no retry had found storage back
    restore()
    # The write met stopped storage (its first attempt failed), storage came back before the
    # retry, and the retry succeeded: the run went on to the end.
    assert failed and failed[0].startswith("PUT "), failed
    assert report.outcome == "ok"
    assert_matches_a_clean_run(outage_settings)  # that one scan, no rerun


# --- the webhook -------------------------------------------------------------------------------

CLIENT_STATE = "Zq4w8Ny2Rk6tLm0pXc3vBj7s"


@pytest.fixture
def webhook_settings(outage_settings, function_host, monkeypatch):
    s = dataclasses.replace(
        outage_settings,
        notification_url=function_host.url("graph/notifications"),
        client_state=CLIENT_STATE,
    )
    serve_webhook_from_env(monkeypatch, s)
    return s


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
    async def read(store):
        return [i.id for i in await NotificationStore(store).inbox()]

    return in_store(settings, read)


def test_storage_down_mid_batch_answers_503_and_the_redelivery_stores_each_item_once(
    webhook_settings, function_host, durable_azurite, tenant, monkeypatch
):
    settings, host = webhook_settings, function_host
    assert run_job(settings, tenant, sync_subscriptions).created
    body = graph_batch(tenant.subscriptions(), tenant.scenario.tenant_id)
    assert len(body["value"]) == 20
    restore = at_storage_write(monkeypatch, 4, stop_storage(durable_azurite))
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
