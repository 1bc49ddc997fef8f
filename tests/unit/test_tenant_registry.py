"""The tenant registry: what an entry may hold, and its round trip through Table Storage."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from monitors.settings import Settings
from monitors.store.tables import TableStore
from monitors.store.tenants import TenantRows
from monitors.tenants.registry import (
    LOOKBACK_HOURS,
    Overrides,
    Tenant,
    TenantError,
    TenantRegistry,
    checked_overrides,
    normalize_tenant_id,
    tenant_tag,
)

CONTOSO = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
FABRIKAM = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def store_settings(azurite) -> Settings:
    return Settings.from_env(
        {
            "ETG_STORAGE_CONNECTION": azurite.connection_string,
            "ETG_TABLE_PREFIX": "r" + uuid.uuid4().hex[:12],
        }
    )


def on_registry(azurite, work):
    settings = store_settings(azurite)

    async def go():
        async with TableStore(settings) as store:
            return await work(TenantRegistry(store), store)

    return asyncio.run(go())


# --- validation ---------------------------------------------------------------------------


def test_a_tenant_id_is_normalized_to_a_lower_case_guid():
    assert normalize_tenant_id(f"  {CONTOSO.upper()} ") == CONTOSO
    assert Tenant(CONTOSO.upper(), "Contoso").tenant_id == CONTOSO


@pytest.mark.parametrize("bad", ["contoso.onmicrosoft.com", "", "1234", CONTOSO + "0"])
def test_a_tenant_id_that_is_not_a_guid_is_refused(bad):
    with pytest.raises(TenantError, match="GUID"):
        Tenant(bad, "Contoso")


@pytest.mark.parametrize("name", ["", "   ", "x" * 81, "tab\there"])
def test_a_display_name_must_be_short_printable_text(name):
    with pytest.raises(TenantError, match="display name"):
        Tenant(CONTOSO, name)


@pytest.mark.parametrize(
    "value",
    [
        "https://contoso.webhook.office.com/workflows/abc?sig=s3cr3t",
        "R0UT1NGK3Yabcdef0123456789abcdef",
        "kv:https://contoso.webhook.office.com/workflows/abc?sig=s3cr3t",
    ],
)
def test_a_secret_given_instead_of_a_reference_is_refused_without_echoing_it(value):
    with pytest.raises(TenantError) as raised:
        Tenant(CONTOSO, "Contoso", secrets={"teams_webhook_url": value})
    assert "reference" in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "R0UT1NG" not in str(raised.value)


@pytest.mark.parametrize(
    "value", ["kv:", "kv:name with spaces", "env:1STARTS_WITH_DIGIT", "vault:teams", "env:"]
)
def test_a_malformed_reference_is_refused(value):
    with pytest.raises(TenantError, match="must be a reference"):
        Tenant(CONTOSO, "Contoso", secrets={"pagerduty_routing_key": value})


def test_references_to_key_vault_and_the_environment_are_accepted():
    tenant = Tenant(
        CONTOSO,
        "Contoso",
        secrets={"teams_webhook_url": "kv:contoso-teams", "pagerduty_routing_key": "env:PD_KEY"},
    )
    assert tenant.secrets["teams_webhook_url"] == "kv:contoso-teams"


def test_an_unknown_secret_field_is_refused():
    with pytest.raises(TenantError, match="unknown alert secret"):
        Tenant(CONTOSO, "Contoso", secrets={"client_secret": "kv:app"})


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://graph.microsoft.com",
        "https://evil.example/graph",
        "http://10.0.0.5:8080",
        "ftp://127.0.0.1:21",
        "http://127.0.0.1:notaport",
    ],
)
def test_a_tenant_graph_endpoint_must_be_loopback(endpoint):
    with pytest.raises(TenantError, match="loopback"):
        Tenant(CONTOSO, "Contoso", graph_endpoint=endpoint)


def test_a_loopback_graph_endpoint_is_kept_without_its_trailing_slash():
    tenant = Tenant(CONTOSO, "Contoso", graph_endpoint="http://127.0.0.1:8123/")
    assert tenant.graph_endpoint == "http://127.0.0.1:8123"


def test_alert_routes_that_do_not_parse_are_refused():
    with pytest.raises(TenantError, match="alert routes"):
        Tenant(CONTOSO, "Contoso", alert_routes="critical=carrier-pigeon")


def test_an_unknown_schedule_name_is_refused():
    with pytest.raises(TenantError, match="unknown schedule 'SCANS_SCHEDULE'"):
        checked_overrides({"SCANS_SCHEDULE": "0 */5 * * * *"}, None, None)


def test_a_bad_ncrontab_expression_is_refused_naming_the_schedule():
    with pytest.raises(TenantError, match="SCAN_SCHEDULE"):
        checked_overrides({"SCAN_SCHEDULE": "*/5 * * * *"}, None, None)


def test_a_schedule_is_stored_in_the_form_the_host_reads():
    overrides = checked_overrides({"SCAN_SCHEDULE": "0 */30 * * * *"}, None, None)
    assert overrides.schedules == {"SCAN_SCHEDULE": "0 */30 * * * *"}


@pytest.mark.parametrize("hours", [0, -1, LOOKBACK_HOURS[1] + 1, 1.5, True, "24"])
def test_the_lookback_must_be_whole_hours_within_bounds(hours):
    with pytest.raises(TenantError, match="look-back"):
        checked_overrides({}, hours, None)


@pytest.mark.parametrize("hours", list(LOOKBACK_HOURS))
def test_the_lookback_bounds_themselves_are_accepted(hours):
    assert checked_overrides({}, hours, None).scan_lookback_hours == hours


def test_an_unknown_remediation_mode_is_refused():
    with pytest.raises(TenantError, match="remediation"):
        checked_overrides({}, None, "yes-please")


def test_the_tag_is_eight_hex_digits_and_differs_between_tenants():
    assert len(tenant_tag(CONTOSO)) == 8 and int(tenant_tag(CONTOSO), 16) >= 0
    assert tenant_tag(CONTOSO) != tenant_tag(FABRIKAM)


# --- the table ----------------------------------------------------------------------------


def full_tenant(**changes) -> Tenant:
    tenant = Tenant(
        CONTOSO,
        "Contoso",
        enabled=False,
        secrets={"teams_webhook_url": "kv:contoso-teams", "pagerduty_routing_key": "env:PD"},
        alert_routes="critical=teams,pagerduty",
        overrides=Overrides({"SCAN_SCHEDULE": "0 */30 * * * *"}, 48, "dry-run"),
        graph_endpoint="http://127.0.0.1:9",
    )
    return dataclasses.replace(tenant, **changes)


def test_an_entry_round_trips_through_the_table(azurite):
    tenant = full_tenant()

    async def work(registry, _store):
        replaced = await registry.put(tenant, T0)
        return replaced, await registry.get(CONTOSO.upper())

    replaced, read = on_registry(azurite, work)
    assert replaced is False
    assert read == dataclasses.replace(tenant, added_at=read.added_at)
    assert read.added_at == T0


def test_all_lists_by_name_and_enabled_leaves_out_disabled_tenants(azurite):
    async def work(registry, _store):
        await registry.put(Tenant(FABRIKAM, "Fabrikam"), T0)
        await registry.put(Tenant(CONTOSO, "contoso", enabled=False), T0)
        return await registry.all(), await registry.enabled()

    every, enabled = on_registry(azurite, work)
    assert [t.display_name for t in every] == ["contoso", "Fabrikam"]
    assert [t.tenant_id for t in enabled] == [FABRIKAM]


def test_replacing_an_entry_keeps_when_it_was_first_added(azurite):
    async def work(registry, _store):
        await registry.put(Tenant(CONTOSO, "Contoso"), T0)
        replaced = await registry.put(Tenant(CONTOSO, "Contoso Ltd"), T0 + timedelta(days=3))
        return replaced, await registry.all()

    replaced, every = on_registry(azurite, work)
    assert replaced is True
    assert [(t.display_name, t.added_at) for t in every] == [("Contoso Ltd", T0)]


def test_remove_deletes_the_entry_and_says_whether_there_was_one(azurite):
    async def work(registry, _store):
        await registry.put(Tenant(CONTOSO, "Contoso"), T0)
        first = await registry.remove(CONTOSO)
        second = await registry.remove(CONTOSO)
        return first, second, await registry.get(CONTOSO)

    assert on_registry(azurite, work) == (True, False, None)


def colliding_ids() -> tuple[str, str]:
    """Two tenant ids whose tags collide (a birthday search over 32 bits: ~10^5 ids)."""
    seen: dict[str, str] = {}
    for n in itertools.count():
        tenant_id = str(uuid.UUID(int=n * 0x9E3779B97F4A7C15 % (1 << 128), version=4))
        tag = tenant_tag(tenant_id)
        if tag in seen:
            return seen[tag], tenant_id
        seen[tag] = tenant_id
    raise AssertionError("unreachable")


def test_a_second_tenant_with_the_same_table_tag_is_refused(azurite):
    first, second = colliding_ids()
    assert first != second and tenant_tag(first) == tenant_tag(second)

    async def work(registry, _store):
        await registry.put(Tenant(first, "First"), T0)
        with pytest.raises(TenantError, match="table tag"):
            await registry.put(Tenant(second, "Second"), T0)
        return await registry.all()

    assert [t.tenant_id for t in on_registry(azurite, work)] == [first]


def test_an_entry_that_no_longer_validates_is_left_out_not_fatal(azurite):
    async def work(registry, store):
        await registry.put(Tenant(FABRIKAM, "Fabrikam"), T0)
        broken = dataclasses.replace(
            Tenant(CONTOSO, "Contoso").to_row(), entry={"graph_endpoint": "https://evil.example"}
        )
        await TenantRows(store).put(broken, T0)
        return await registry.all()

    assert [t.tenant_id for t in on_registry(azurite, work)] == [FABRIKAM]
