"""The monitor's identity in a customer tenant: the multi-tenant app registration, signing in
with the function app's managed identity instead of a secret.

Workload identity federation with a managed identity as the app's credential (Entra's
"Configure an application to trust a managed identity",
workload-identities-federation-config-app-trust-managed-identity.md): the app registration
holds a federated identity credential whose issuer is the deployment's own tenant, whose
subject is the user-assigned managed identity's object id and whose audience is
``api://AzureADTokenExchange``. At run time the managed identity's token for that audience is
the client assertion of a client-credentials request to the customer's tenant (azure-identity's
``ClientAssertionCredential``); the customer's administrator has consented to the app once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitors.failures import SettingsError
from monitors.settings import GLOBAL_GRAPH

if TYPE_CHECKING:
    from azure.identity.aio import ClientAssertionCredential

    from monitors.settings import Settings

# The audience the federated identity credential names, and so the scope of the managed
# identity's token (workload-identities-federation-config-app-trust-managed-identity.md).
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
EXCHANGE_SCOPE = f"{EXCHANGE_AUDIENCE}/.default"


def federated_credential(
    settings: Settings, *, assertion: Callable[[], str] | None = None
) -> ClientAssertionCredential:
    """The app registration (ETG_MSP_APP_CLIENT_ID) in ``settings.tenant_id``. ``assertion``
    replaces the managed identity's token (tests). Raises SettingsError when the settings do
    not describe a usable federation."""
    problems = federation_problems(settings)
    if problems:
        raise SettingsError(problems)
    from azure.identity.aio import ClientAssertionCredential

    return ClientAssertionCredential(
        tenant_id=str(settings.tenant_id),
        client_id=str(settings.msp_app_client_id),
        func=assertion or managed_identity_assertion(settings.msp_identity_client_id),
    )


def federation_problems(settings: Settings) -> list[str]:
    problems = []
    if not settings.msp_app_client_id:
        problems.append(
            "set ETG_MSP_APP_CLIENT_ID: the multi-tenant app registration is the monitor's "
            "identity in a registry tenant"
        )
    if not settings.tenant_id:
        problems.append("a registry tenant's settings name its tenant id")
    if settings.graph_endpoint != GLOBAL_GRAPH:
        # The token-exchange audience above is the global cloud's; a national cloud has its own
        # authority and audience, which this deployment does not configure.
        problems.append(
            "federated sign-in to registry tenants is supported on the global Graph endpoint "
            f"({GLOBAL_GRAPH}) only"
        )
    return problems


def managed_identity_assertion(client_id: str | None) -> Callable[[], str]:
    """The managed identity's token for the token-exchange audience, as the assertion.

    The aio ClientAssertionCredential calls its ``func`` synchronously, so this is the sync
    ManagedIdentityCredential. It caches the token (valid for hours) and the app's credential
    caches its own, so the identity endpoint is asked rarely. Federation accepts only a
    user-assigned identity (the same article): ``client_id`` None falls back to AZURE_CLIENT_ID,
    the user-assigned identity the function app already signs in with (infra/main.bicep); a
    bare ManagedIdentityCredential would take the system-assigned one."""
    holder: dict[str, Any] = {}

    def assertion() -> str:
        if "credential" not in holder:
            from azure.identity import ManagedIdentityCredential

            identity = client_id or os.environ.get("AZURE_CLIENT_ID") or None
            holder["credential"] = ManagedIdentityCredential(client_id=identity)
        token: str = holder["credential"].get_token(EXCHANGE_SCOPE).token
        return token

    return assertion
