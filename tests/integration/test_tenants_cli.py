"""`etg-monitor tenants add|list|remove|test`, driven as a user types them, on Azurite and a
simulated tenant."""

from __future__ import annotations

import json

import pytest

from devtools.simtenant.faults import FaultRule
from monitors import cli
from monitors.graph import permissions

pytestmark = pytest.mark.integration

CONTOSO = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
FABRIKAM = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
TEAMS_SECRET = "https://contoso.webhook.office.com/workflows/abc?sig=s3cr3tvalue"


def listed(capsys) -> list[dict]:
    assert cli.main(["tenants", "list", "--json"]) == cli.EXIT_OK
    rows: list[dict] = json.loads(capsys.readouterr().out)
    return rows


def add_simulated(tenant, *extra: str) -> int:
    name = ["--name", "Contoso", "--graph-endpoint", tenant.base_url]
    return cli.main(["tenants", "add", CONTOSO, *name, *extra])


def test_an_empty_registry_lists_as_a_single_tenant_install(app_env, capsys):
    assert cli.main(["tenants", "list"]) == cli.EXIT_OK
    assert "single-tenant install" in capsys.readouterr().out
    assert listed(capsys) == []


def test_add_then_list_shows_the_entry_with_references_and_overrides(app_env, capsys):
    code = cli.main(
        [
            "tenants",
            "add",
            CONTOSO.upper(),
            "--name",
            "Contoso",
            "--teams-webhook",
            "kv:contoso-teams",
            "--pagerduty-key",
            "env:CONTOSO_PD",
            "--routes",
            "critical=teams,pagerduty",
            "--schedule",
            "scan=0 */30 * * * *",
            "--lookback-hours",
            "48",
            "--remediation",
            "dry-run",
        ]
    )
    out = capsys.readouterr()
    assert code == cli.EXIT_OK
    assert f"tenant Contoso ({CONTOSO}) added" in out.out
    assert "ETG_MSP_APP_CLIENT_ID" in out.err  # a real tenant needs the app to be reached
    [row] = listed(capsys)
    assert row["tenant_id"] == CONTOSO and row["enabled"] is True
    assert row["secrets"] == {
        "teams_webhook_url": "kv:contoso-teams",
        "pagerduty_routing_key": "env:CONTOSO_PD",
    }
    assert row["alert_routes"] == "critical=teams,pagerduty"
    assert row["overrides"] == {
        "schedules": {"SCAN_SCHEDULE": "0 */30 * * * *"},
        "scan_lookback_hours": 48,
        "remediation": "dry-run",
    }
    assert cli.main(["tenants", "list"]) == cli.EXIT_OK
    text = capsys.readouterr().out
    assert "teams_webhook_url=kv:contoso-teams" in text and "look-back 48 h" in text


def test_add_on_an_existing_id_replaces_it_and_says_updated(app_env, capsys):
    assert cli.main(["tenants", "add", CONTOSO, "--name", "Contoso"]) == cli.EXIT_OK
    assert "added" in capsys.readouterr().out
    first = listed(capsys)[0]["added_at"]
    code = cli.main(["tenants", "add", CONTOSO, "--name", "Contoso Ltd", "--disabled"])
    assert code == cli.EXIT_OK
    assert "updated" in capsys.readouterr().out
    [row] = listed(capsys)
    assert (row["display_name"], row["enabled"], row["added_at"]) == ("Contoso Ltd", False, first)


def test_remove_deletes_the_entry_and_a_second_remove_is_a_usage_error(app_env, capsys):
    cli.main(["tenants", "add", CONTOSO, "--name", "Contoso"])
    cli.main(["tenants", "add", FABRIKAM, "--name", "Fabrikam"])
    capsys.readouterr()
    assert cli.main(["tenants", "remove", CONTOSO]) == cli.EXIT_OK
    assert "removed" in capsys.readouterr().out
    assert [r["tenant_id"] for r in listed(capsys)] == [FABRIKAM]
    assert cli.main(["tenants", "remove", CONTOSO]) == cli.EXIT_USAGE
    assert f"no tenant {CONTOSO}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, says",
    [
        (["add", "contoso.onmicrosoft.com", "--name", "Contoso"], "GUID"),
        (["add", CONTOSO, "--name", "Contoso", "--teams-webhook", TEAMS_SECRET], "reference"),
        (["add", CONTOSO, "--name", "C", "--graph-endpoint", "https://x.example"], "loopback"),
        (["add", CONTOSO, "--name", "C", "--schedule", "nightly=0 0 2 * * *"], "unknown schedule"),
        (["add", CONTOSO, "--name", "C", "--schedule", "scan=*/5 * * * *"], "SCAN_SCHEDULE"),
        (["add", CONTOSO, "--name", "C", "--schedule", "scan"], "NAME=NCRONTAB"),
        (["add", CONTOSO, "--name", "C", "--lookback-hours", "0"], "look-back"),
        (["add", CONTOSO, "--name", "C", "--lookback-hours", "two"], "whole number"),
        (["add", CONTOSO, "--name", "C", "--routes", "critical=fax"], "alert routes"),
        (["add", CONTOSO, "--name", "C", "--alert-webhook", "env:HOOK"], "go together"),
        (["remove", "not-a-guid"], "GUID"),
        (["test", "not-a-guid"], "GUID"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_usage_exit(app_env, capsys, args, says):
    assert cli.main(["tenants", *args]) == cli.EXIT_USAGE
    out = capsys.readouterr()
    assert says in out.err
    assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err
    assert "s3cr3tvalue" not in out.err + out.out
    assert listed(capsys) == []


def test_an_unknown_remediation_mode_is_refused_by_the_parser(app_env, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["tenants", "add", CONTOSO, "--name", "C", "--remediation", "yes"])
    assert raised.value.code == cli.EXIT_USAGE


def test_testing_a_tenant_that_is_not_registered_is_a_usage_error(app_env, capsys):
    assert cli.main(["tenants", "test", CONTOSO]) == cli.EXIT_USAGE
    assert "no tenant" in capsys.readouterr().err


def test_a_simulated_tenant_with_every_permission_passes(app_env, tenant, capsys):
    assert add_simulated(tenant) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["tenants", "test", CONTOSO]) == cli.EXIT_OK
    text = capsys.readouterr().out
    assert "permissions: 9 of 9 granted" in text and "all checks passed" in text


def test_a_permission_refused_with_403_is_printed_as_missing(app_env, tenant, capsys):
    add_simulated(tenant)
    tenant.faults.add(FaultRule(endpoint="mobileApps.get", kind="status", status=403))
    tenant.faults.add(FaultRule(endpoint="directoryAudits.list", kind="status", status=403))
    capsys.readouterr()
    assert cli.main(["tenants", "test", CONTOSO]) == cli.EXIT_UNVERIFIED
    text = capsys.readouterr().out
    assert f"MISSING: {permissions.APPS}: Graph refused" in text
    assert f"MISSING: {permissions.AUDIT_LOGS}" in text
    assert "permissions: 7 of 9 granted" in text and "not ready" in text
    assert cli.main(["tenants", "test", CONTOSO, "--json"]) == cli.EXIT_UNVERIFIED
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["consent"]["state"] == "not_needed"
    assert sorted(data["missing_permissions"]) == sorted([permissions.APPS, permissions.AUDIT_LOGS])


def test_a_throttled_probe_is_unverified_not_granted(app_env, tenant, capsys):
    add_simulated(tenant)
    tenant.faults.add(FaultRule(endpoint="devices.list", kind="status", status=503, retry_after=0))
    capsys.readouterr()
    assert cli.main(["tenants", "test", CONTOSO, "--json"]) == cli.EXIT_UNVERIFIED
    data = json.loads(capsys.readouterr().out)
    states = {p["permission"]: p["state"] for p in data["permissions"]}
    assert states[permissions.DEVICES] == "unverified"
    assert data["missing_permissions"] == []


def test_unresolved_secret_references_are_reported_by_name(app_env, tenant, capsys, monkeypatch):
    monkeypatch.setenv("CONTOSO_PD", "0123456789abcdef0123456789abcdef")
    monkeypatch.delenv("CONTOSO_TEAMS", raising=False)
    add_simulated(
        tenant, "--teams-webhook", "env:CONTOSO_TEAMS", "--pagerduty-key", "env:CONTOSO_PD"
    )
    capsys.readouterr()
    assert cli.main(["tenants", "test", CONTOSO]) == cli.EXIT_UNVERIFIED
    text = capsys.readouterr().out
    assert "secrets: 1 of 2 resolved" in text
    assert "teams_webhook_url: CONTOSO_TEAMS is not set" in text
    assert "0123456789abcdef" not in text
    assert "permissions: 9 of 9 granted" in text  # the rest is still checked


def test_a_real_tenant_without_the_msp_app_says_what_to_set(app_env, capsys):
    cli.main(["tenants", "add", CONTOSO, "--name", "Contoso"])
    capsys.readouterr()
    assert cli.main(["tenants", "test", CONTOSO]) == cli.EXIT_UNVERIFIED
    assert "ETG_MSP_APP_CLIENT_ID" in capsys.readouterr().out
