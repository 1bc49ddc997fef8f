"""A registry tenant's settings, its secrets, its credential, and how `tenants test` judges."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json

import pytest

from monitors.alerts.routing import parse_routes
from monitors.failures import SettingsError
from monitors.graph import permissions
from monitors.logs import scrub
from monitors.settings import SCHEDULE_SETTINGS, Settings
from monitors.tenants.credential import EXCHANGE_SCOPE, federated_credential
from monitors.tenants.probe import (
    PROBES,
    Answer,
    consent_refused,
    consent_url,
    judge_permissions,
    required_permissions,
    token_roles,
)
from monitors.tenants.registry import Overrides, Tenant
from monitors.tenants.scope import client_state_for, table_prefix_for, tenant_settings
from monitors.tenants.secrets import resolve_available, resolve_secrets

CONTOSO = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
FABRIKAM = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
APP = "11111111-2222-4333-8444-555555555555"
TEAMS = "https://contoso.webhook.office.com/workflows/abc?sig=s3cr3tvalue"


def base(**env: str) -> Settings:
    return Settings.from_env(
        {
            "ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true",
            "ETG_TABLE_PREFIX": "msp",
            "ETG_CLIENT_STATE": "deployment-client-state-secret",
            **env,
        }
    )


MSP = {"ETG_MSP_APP_CLIENT_ID": APP}


# --- tenant_settings ----------------------------------------------------------------------


def test_each_tenant_gets_its_own_tables_under_the_deployment_prefix():
    contoso = tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {})
    fabrikam = tenant_settings(base(**MSP), Tenant(FABRIKAM, "Fabrikam"), {})
    assert contoso.table_prefix.startswith("msp") and fabrikam.table_prefix.startswith("msp")
    assert contoso.table_prefix != fabrikam.table_prefix != "msp"
    assert contoso.table_prefix == table_prefix_for("msp", Tenant(CONTOSO, "Contoso"))


def test_a_tenant_settings_name_the_tenant_and_sign_in_federated():
    settings = tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {})
    assert settings.tenant_id == CONTOSO and settings.tenant_name == "Contoso"
    assert settings.graph_credential == "federated"
    assert settings.graph_endpoint == "https://graph.microsoft.com"


def test_client_state_differs_per_tenant_and_is_stable():
    first = client_state_for("deployment-client-state-secret", CONTOSO)
    assert first == client_state_for("deployment-client-state-secret", CONTOSO)
    assert first != client_state_for("deployment-client-state-secret", FABRIKAM)
    assert first != client_state_for("another-deployment-secret", CONTOSO)
    assert 20 < len(first) <= 128 and "deployment-client-state-secret" not in first
    settings = tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {})
    assert settings.client_state == first


def test_no_client_state_without_the_deployments():
    settings = tenant_settings(
        Settings.from_env({"ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true", **MSP}),
        Tenant(CONTOSO, "Contoso"),
        {},
    )
    assert settings.client_state is None


def test_resolved_secrets_fill_the_alert_fields():
    tenant = Tenant(
        CONTOSO,
        "Contoso",
        secrets={"teams_webhook_url": "kv:contoso-teams", "pagerduty_routing_key": "env:PD"},
    )
    settings = tenant_settings(
        base(**MSP),
        tenant,
        {"teams_webhook_url": TEAMS, "pagerduty_routing_key": "0123456789abcdef0123456789abcdef"},
    )
    assert settings.teams_webhook_url == TEAMS
    assert settings.pagerduty_routing_key == "0123456789abcdef0123456789abcdef"


def test_a_reference_that_did_not_resolve_is_a_settings_error_naming_it():
    tenant = Tenant(CONTOSO, "Contoso", secrets={"teams_webhook_url": "kv:contoso-teams"})
    with pytest.raises(SettingsError, match="kv:contoso-teams did not resolve"):
        tenant_settings(base(**MSP), tenant, {})


def test_a_resolved_value_is_checked_as_its_setting_without_quoting_it():
    tenant = Tenant(CONTOSO, "Contoso", secrets={"teams_webhook_url": "kv:contoso-teams"})
    with pytest.raises(SettingsError) as raised:
        tenant_settings(base(**MSP), tenant, {"teams_webhook_url": "ftp://s3cr3t.example/hook"})
    assert "ETG_TEAMS_WEBHOOK_URL" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_the_alert_webhook_needs_its_secret_too():
    tenant = Tenant(CONTOSO, "Contoso", secrets={"alert_webhook_url": "env:HOOK"})
    with pytest.raises(SettingsError, match="both its URL and its secret"):
        tenant_settings(base(**MSP), tenant, {"alert_webhook_url": "https://hooks.example/in"})


def test_overrides_replace_the_deployments_values():
    overrides = Overrides({"SCAN_SCHEDULE": "0 */30 * * * *"}, 48, "dry-run")
    settings = tenant_settings(
        base(**MSP),
        Tenant(CONTOSO, "Contoso", alert_routes="critical=pagerduty", overrides=overrides),
        {},
    )
    assert settings.schedules["SCAN_SCHEDULE"] == "0 */30 * * * *"
    assert settings.schedules["ALERTS_SCHEDULE"] == SCHEDULE_SETTINGS["ALERTS_SCHEDULE"]
    assert settings.scan_lookback_hours == 48
    assert settings.remediation == "dry-run"
    assert settings.alert_routes == parse_routes("critical=pagerduty")


def test_without_overrides_the_deployments_values_stay():
    deployment = base(**MSP, ETG_SCAN_LOOKBACK_HOURS="36")
    settings = tenant_settings(deployment, Tenant(CONTOSO, "Contoso"), {})
    assert settings.scan_lookback_hours == deployment.scan_lookback_hours == 36
    assert settings.schedules == deployment.schedules
    assert settings.alert_routes == deployment.alert_routes


def test_routes_that_no_longer_parse_are_a_settings_error():
    tenant = Tenant(CONTOSO, "Contoso")
    object.__setattr__(tenant, "alert_routes", "critical=carrier-pigeon")  # stored by hand
    with pytest.raises(SettingsError, match="alert routes"):
        tenant_settings(base(**MSP), tenant, {})


def test_a_real_tenant_needs_the_msp_app_client_id():
    with pytest.raises(SettingsError, match="ETG_MSP_APP_CLIENT_ID"):
        tenant_settings(base(), Tenant(CONTOSO, "Contoso"), {})


def test_a_simulated_tenant_needs_no_app_and_no_credential():
    tenant = Tenant(CONTOSO, "Sim", graph_endpoint="http://127.0.0.1:8555")
    settings = tenant_settings(base(), tenant, {})
    assert settings.graph_credential == "none"
    assert settings.graph_endpoint == "http://127.0.0.1:8555"


# --- resolve_secrets ----------------------------------------------------------------------


def test_env_references_resolve_and_are_registered_for_redaction():
    tenant = Tenant(CONTOSO, "Contoso", secrets={"teams_webhook_url": "env:CONTOSO_TEAMS"})
    found = asyncio.run(resolve_secrets(base(), tenant, env={"CONTOSO_TEAMS": TEAMS}))
    assert found == {"teams_webhook_url": TEAMS}
    assert "s3cr3tvalue" not in scrub(f"posting to {TEAMS}")


def test_an_unset_variable_is_named_and_no_value_is_quoted():
    tenant = Tenant(
        CONTOSO,
        "Contoso",
        secrets={"teams_webhook_url": "env:CONTOSO_TEAMS", "pagerduty_routing_key": "env:PD"},
    )
    with pytest.raises(SettingsError) as raised:
        asyncio.run(resolve_secrets(base(), tenant, env={"PD": "pd-routing-key-s3cr3t"}))
    assert "CONTOSO_TEAMS is not set" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_resolve_available_answers_what_resolved_and_what_did_not():
    tenant = Tenant(
        CONTOSO,
        "Contoso",
        secrets={"teams_webhook_url": "env:MISSING", "pagerduty_routing_key": "env:PD"},
    )
    found, problems = asyncio.run(resolve_available(base(), tenant, env={"PD": "pd-key-12345"}))
    assert found == {"pagerduty_routing_key": "pd-key-12345"}
    assert problems == ["tenant Contoso: teams_webhook_url: MISSING is not set"]


def test_key_vault_references_need_the_vault_setting():
    tenant = Tenant(CONTOSO, "Contoso", secrets={"teams_webhook_url": "kv:contoso-teams"})
    with pytest.raises(SettingsError, match="ETG_KEY_VAULT_URL"):
        asyncio.run(resolve_secrets(base(), tenant, env={}))


# --- the federated credential -------------------------------------------------------------


def _without_app(settings: Settings) -> Settings:
    return dataclasses.replace(settings, msp_app_client_id=None)


def test_the_federated_credential_needs_the_app_client_id():
    settings = _without_app(tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {}))
    with pytest.raises(SettingsError, match="ETG_MSP_APP_CLIENT_ID"):
        federated_credential(settings)


def test_the_federated_credential_signs_the_app_in_to_the_tenant():
    settings = tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {})
    asked: list[str] = []

    def assertion() -> str:
        asked.append("assertion")
        return "header.payload.signature"

    credential = federated_credential(settings, assertion=assertion)
    try:
        assert credential._client._tenant_id == CONTOSO  # type: ignore[attr-defined]
        assert credential._client._client_id == APP  # type: ignore[attr-defined]
    finally:
        asyncio.run(credential.close())
    assert asked == []  # the managed identity is asked only when a token is needed


def test_the_token_exchange_scope_is_the_documented_audience():
    assert EXCHANGE_SCOPE == "api://AzureADTokenExchange/.default"


def test_federation_is_refused_outside_the_global_cloud():
    settings = tenant_settings(
        base(**MSP, ETG_GRAPH_ENDPOINT="https://graph.microsoft.us"), Tenant(CONTOSO, "C"), {}
    )
    with pytest.raises(SettingsError, match="global Graph endpoint"):
        federated_credential(settings)


def test_the_graph_client_builds_the_federated_credential_for_a_registry_tenant():
    from monitors.graph.client import GraphClient

    settings = tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {})

    async def build():
        async with GraphClient(settings) as graph:
            return type(graph._owned_credential).__name__

    assert asyncio.run(build()) == "ClientAssertionCredential"


def test_the_graph_client_surfaces_a_missing_app_as_a_settings_error():
    from monitors.graph.client import GraphClient

    settings = _without_app(tenant_settings(base(**MSP), Tenant(CONTOSO, "Contoso"), {}))
    with pytest.raises(SettingsError, match="ETG_MSP_APP_CLIENT_ID"):
        GraphClient(settings)


# --- how `tenants test` judges ------------------------------------------------------------


def jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_roles_claim_is_read_from_an_app_only_token():
    token = jwt({"tid": CONTOSO, "roles": ["Device.Read.All", "AuditLog.Read.All"]})
    assert token_roles(token) == {"Device.Read.All", "AuditLog.Read.All"}
    assert token_roles(jwt({"tid": CONTOSO})) == frozenset()
    assert token_roles("not a token") is None


@pytest.mark.parametrize(
    "message, refused",
    [
        ("AADSTS65001: The user or administrator has not consented to use the application", True),
        ("AADSTS700016: Application with identifier 'x' was not found in the directory", True),
        ("AADSTS7000215: Invalid client secret provided.", False),
        ("ManagedIdentityCredential authentication unavailable", False),
    ],
)
def test_consent_errors_are_told_from_other_sign_in_failures(message, refused):
    assert consent_refused(message) is refused


def test_the_consent_url_is_the_tenant_wide_admin_consent_endpoint():
    assert consent_url(CONTOSO, APP) == (
        f"https://login.microsoftonline.com/{CONTOSO}/adminconsent?client_id={APP}"
    )


def answers(**status_by_permission: int | None) -> dict:
    out = {}
    for probe in PROBES:
        status = status_by_permission.get(probe.permission, 200)
        out[probe.permission] = (probe, Answer(status))
    return out


def test_every_needed_permission_has_a_probe_except_the_subscription_one():
    assert {p.permission for p in PROBES} == set(required_permissions(base()))
    with_notifications = required_permissions(
        base(ETG_NOTIFICATION_URL="https://etg.example/api/graph/notifications")
    )
    assert permissions.GROUP_SUBSCRIPTIONS in with_notifications


def test_a_403_on_a_probe_makes_its_permission_missing():
    checks = judge_permissions(
        required_permissions(base()), None, answers(**{permissions.APPS: 403})
    )
    by_name = {c.permission: c for c in checks}
    assert by_name[permissions.APPS].state == "missing"
    assert "403" in by_name[permissions.APPS].detail
    assert all(c.state == "granted" for n, c in by_name.items() if n != permissions.APPS)


def test_a_404_on_the_nil_id_means_the_call_was_allowed():
    checks = judge_permissions([permissions.USERS], None, answers(**{permissions.USERS: 404}))
    assert [c.state for c in checks] == ["granted"]


def test_a_throttled_or_failed_probe_is_unverified_not_granted():
    checks = judge_permissions(
        [permissions.DEVICES, permissions.AUDIT_LOGS],
        None,
        answers(**{permissions.DEVICES: 429, permissions.AUDIT_LOGS: None}),
    )
    assert [c.state for c in checks] == ["unverified", "unverified"]


def test_a_permission_absent_from_the_roles_is_missing_even_when_its_probe_answered():
    required = required_permissions(base())
    roles = frozenset(required) - {permissions.AUDIT_LOGS}
    checks = {c.permission: c.state for c in judge_permissions(required, roles, answers())}
    assert checks[permissions.AUDIT_LOGS] == "missing"
    assert sum(1 for s in checks.values() if s == "granted") == len(required) - 1


def test_the_subscription_permission_is_judged_from_the_roles_alone():
    required = [permissions.GROUP_SUBSCRIPTIONS]
    assert judge_permissions(required, frozenset(required), {})[0].state == "granted"
    assert judge_permissions(required, frozenset(), {})[0].state == "missing"
    assert judge_permissions(required, None, {})[0].state == "unverified"


class RefusingCredential:
    """A token request answered as Entra ID answers it (the error azure-identity raises)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.asked: list[str] = []

    async def get_token(self, *scopes: str, **_: object) -> object:
        self.asked.extend(scopes)
        raise self.error


def test_a_token_refused_for_lack_of_consent_gives_the_consent_url():
    from azure.core.exceptions import ClientAuthenticationError

    from monitors.tenants.probe import check_tenant

    refusal = RefusingCredential(
        ClientAuthenticationError(
            "AADSTS700016: Application with identifier '11111111-2222-4333-8444-555555555555' "
            "was not found in the directory 'Contoso'."
        )
    )
    result = asyncio.run(
        check_tenant(base(**MSP), Tenant(CONTOSO, "Contoso"), env={}, credential=refusal)
    )
    assert refusal.asked == ["https://graph.microsoft.com/.default"]
    assert result.consent == "missing" and not result.ok
    assert result.consent_url == consent_url(CONTOSO, APP)
    assert result.permissions == ()  # nothing else can be asked without a token


def test_a_sign_in_that_fails_otherwise_is_unverified_not_missing_consent():
    from azure.identity import CredentialUnavailableError

    from monitors.tenants.probe import check_tenant

    refusal = RefusingCredential(CredentialUnavailableError("no managed identity endpoint"))
    result = asyncio.run(
        check_tenant(base(**MSP), Tenant(CONTOSO, "Contoso"), env={}, credential=refusal)
    )
    assert result.consent == "unverified" and result.consent_url is None
    assert "no managed identity endpoint" in (result.consent_detail or "")
    assert not result.ok


def test_remediation_auto_adds_the_write_permissions_judged_from_the_roles():
    from monitors.tenants.probe import WRITE_PERMISSIONS

    tenant = Tenant(CONTOSO, "Contoso", overrides=Overrides(remediation="auto"))
    settings = tenant_settings(base(**MSP), tenant, {})
    required = required_permissions(settings)
    assert set(WRITE_PERMISSIONS) <= set(required)
    assert not set(WRITE_PERMISSIONS) & set(required_permissions(base()))
    roles = frozenset(required) - {"Group.ReadWrite.All"}
    states = {c.permission: c.state for c in judge_permissions(required, roles, answers())}
    assert states["Group.ReadWrite.All"] == "missing"
    assert states["GroupMember.ReadWrite.All"] == "granted"
