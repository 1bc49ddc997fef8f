"""The Bicep for many tenants agrees with the code: the job queue, the multi-tenant app
registration, its federated credential and the settings that name them (docs/msp.md)."""

from __future__ import annotations

import re
from pathlib import Path

from monitors.graph import permissions
from monitors.settings import SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = (INFRA / "main.bicep").read_text(encoding="utf-8")
MSP_APP = (INFRA / "app" / "msp-app.bicep").read_text(encoding="utf-8")
QUEUES = (INFRA / "app" / "queues.bicep").read_text(encoding="utf-8")
RBAC = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
API = (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def _module_block(text: str, name: str) -> str:
    """The body of `module <name> ... = ... {` up to its closing brace at column 0."""
    match = re.search(rf"^module {name} .*?^}}", text, re.MULTILINE | re.DOTALL)
    assert match, f"module {name} not found"
    return match.group(0)


def _app_setting(name: str) -> str:
    match = re.search(rf"^\s+{name}\s*:\s*(.*?)\s*$", MAIN, re.MULTILINE)
    assert match, f"{name} is not in main.bicep's app settings"
    return match.group(1)


def _code_permissions() -> set[str]:
    return {
        value
        for name, value in vars(permissions).items()
        if name.isupper() and isinstance(value, str) and " and " not in value
    }


def test_the_app_registration_requests_every_permission_the_code_reads_with():
    wanted = _code_permissions()
    assert "AuditLog.Read.All" in wanted, "the permission constants were not found"
    missing = sorted(p for p in wanted if f"'{p}'" not in MSP_APP)
    assert not missing, f"infra/app/msp-app.bicep does not request {missing}"


def test_the_app_registration_asks_for_application_permissions_of_any_organization():
    assert "signInAudience: 'AzureADMultipleOrgs'" in MSP_APP
    assert "type: 'Role'" in MSP_APP and "type: 'Scope'" not in MSP_APP
    assert "resourceAppId: graphAppId" in MSP_APP
    assert "var graphAppId = '00000003-0000-0000-c000-000000000000'" in MSP_APP


def test_the_federated_credential_trusts_the_managed_identity_as_documented():
    # Configure an application to trust a managed identity: issuer, subject, audience.
    assert "'api://AzureADTokenExchange'" in MSP_APP
    assert (
        "issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'"
        in MSP_APP
    )
    assert "subject: identityPrincipalId" in MSP_APP
    assert "'federatedIdentityCredentials@v1.0'" in MSP_APP
    assert re.search(r"^extension microsoftGraphV1$", MSP_APP, re.MULTILINE)


def test_the_credential_subject_and_the_identity_setting_name_the_same_identity():
    block = _module_block(MAIN, "mspApp")
    assert block.startswith("module mspApp './app/msp-app.bicep' = if (mspMode) {")
    subject = re.search(r"identityPrincipalId:\s*(\S+)\.outputs\.principalId", block)
    assert subject, "the federated credential's subject is not a managed identity's principal id"
    identity = subject.group(1)
    assert _app_setting("ETG_MSP_IDENTITY_CLIENT_ID") == (
        f"mspMode ? {identity}.outputs.clientId : ''"
    )
    assert _app_setting("ETG_MSP_APP_CLIENT_ID") == "mspAppClientId"
    assert "var mspAppClientId = mspMode ? mspApp!.outputs.appId : ''" in MAIN


def test_the_job_queue_is_the_codes_default_and_has_its_poison_queue():
    default = SETTINGS_BY_NAME["ETG_JOB_QUEUE"].default
    assert f"var jobQueueName = '{default}'" in MAIN
    assert _app_setting("ETG_JOB_QUEUE") == f"'{default}'"
    assert "jobQueueName: jobQueueName" in _module_block(MAIN, "jobQueues")
    assert "name: jobQueueName" in QUEUES
    assert "name: '${jobQueueName}-poison'" in QUEUES


def test_the_queue_is_reached_with_the_identity_and_a_queue_data_role():
    assert "enableQueue: true" in MAIN
    assert "AzureWebJobsStorage__queueServiceUri" in API
    # Storage Queue Data Contributor, granted under enableQueue.
    assert "'974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor" in RBAC
    assert "= if (enableQueue) {" in RBAC
    url = _app_setting("ETG_STORAGE_QUEUE_URL")
    assert url == "queueServiceUrl"
    assert (
        "var queueServiceUrl = 'https://${effectiveStorageAccountName}.queue."
        "${environment().suffixes.storage}'" in MAIN
    )


def test_the_key_vault_setting_names_the_templates_vault():
    assert _app_setting("ETG_KEY_VAULT_URL").startswith("keyVault.outputs.uri")
    keyvault = (INFRA / "app" / "keyvault.bicep").read_text(encoding="utf-8")
    assert "output uri string = vault.properties.vaultUri" in keyvault


def test_checkov_leaves_out_every_file_it_cannot_parse():
    # checkov 3.3.30 stops at the Microsoft Graph extension statement; such a file must hold
    # only Graph resources and be skipped by path, or the scan reports a parsing error.
    with_extension = sorted(
        path.relative_to(ROOT).as_posix()
        for path in INFRA.rglob("*.bicep")
        if re.search(r"^extension ", path.read_text(encoding="utf-8"), re.MULTILINE)
    )
    assert "infra/app/msp-app.bicep" in with_extension
    patterns = [re.compile(p) for p in re.findall(r"--skip-path '([^']+)'", MAKEFILE)]
    assert patterns, "make checkov has no --skip-path"
    unskipped = [path for path in with_extension if not any(p.search(path) for p in patterns)]
    assert not unskipped, f"add to make checkov's --skip-path: {unskipped}"
