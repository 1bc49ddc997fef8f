"""Table Storage going away in the middle of a scan. Azurite runs with persistence here, so
what was acknowledged before the outage is still there after it, as with a real account."""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import pytest
from azure.core.exceptions import AzureError
from azure.data.tables.aio import TableClient

from monitors.settings import Settings
from tests.integration.test_faults import WRITES, assert_matches_a_clean_run, scan

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


def stop_storage_at_write(monkeypatch, azurite, write_no, restart_after=None):
    """Stop Azurite just before the given storage write of the run; optionally start it again
    from another thread a moment later, while the run is still retrying."""
    calls = {"n": 0}
    originals = {name: getattr(TableClient, name) for name in WRITES}

    def wrap(name):
        async def write(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == write_no:
                azurite.stop()
                if restart_after is not None:
                    threading.Timer(restart_after, azurite.start).start()
            return await originals[name](self, *args, **kwargs)

        return write

    for name in WRITES:
        monkeypatch.setattr(TableClient, name, wrap(name))

    def restore():
        for name, original in originals.items():
            monkeypatch.setattr(TableClient, name, original)
        assert calls["n"] >= write_no, "the outage never happened"

    return restore


@pytest.mark.parametrize("write_no", [2, 7, 12, 16])
def test_storage_down_for_the_rest_of_a_scan_then_back(
    outage_settings, durable_azurite, tenant, monkeypatch, write_no
):
    restore = stop_storage_at_write(monkeypatch, durable_azurite, write_no)
    with contextlib.suppress(AzureError):
        scan(outage_settings, tenant)  # the run fails loudly; nothing is half-believed
    restore()
    durable_azurite.start()
    tenant.clock.advance(16 * 60)  # the failed run's lease expires
    scan(outage_settings, tenant)
    assert_matches_a_clean_run(outage_settings)


@pytest.mark.parametrize("write_no", [5, 14])
def test_storage_restarted_while_a_scan_is_retrying(
    outage_settings, durable_azurite, tenant, monkeypatch, write_no
):
    restore = stop_storage_at_write(monkeypatch, durable_azurite, write_no, restart_after=1.0)
    with contextlib.suppress(AzureError):
        scan(outage_settings, tenant)
    restore()
    tenant.clock.advance(16 * 60)
    scan(outage_settings, tenant)
    assert_matches_a_clean_run(outage_settings)
