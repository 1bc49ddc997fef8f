"""Table Storage going away in the middle of a scan. Azurite runs with persistence here, so
what was acknowledged before the outage is still there after it, as with a real account."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from azure.core.exceptions import AzureError

from monitors.settings import Settings
from tests.integration.test_faults import broken_at_write_then_rerun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def durable_azurite():
    from simtenant.azurite import Azurite

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
