"""Resolving a registry tenant's secret references when its job runs.

``env:<NAME>`` reads the process environment (local runs, the demo); ``kv:<name>`` reads the
secret from the Key Vault of ``ETG_KEY_VAULT_URL`` with the app's managed identity. Every value
resolved is registered for log redaction before anything can log it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from monitors.failures import SettingsError
from monitors.logs import register_secret
from monitors.settings import Settings
from monitors.tenants.registry import Tenant


async def resolve_secrets(
    settings: Settings,
    tenant: Tenant,
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
) -> dict[str, str]:
    """Settings field -> secret value, for each of the tenant's references. Raises
    SettingsError naming the references that did not resolve (never their values)."""
    found, problems = await resolve_available(settings, tenant, env=env, credential=credential)
    if problems:
        raise SettingsError(problems)
    return found


async def resolve_available(
    settings: Settings,
    tenant: Tenant,
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
) -> tuple[dict[str, str], list[str]]:
    """What resolved, and one line per reference that did not (`tenants test` reports both)."""
    environ = os.environ if env is None else env
    out: dict[str, str] = {}
    problems: list[str] = []
    vault: list[tuple[str, str]] = []
    for field, reference in tenant.secrets.items():
        scheme, _, name = reference.partition(":")
        if scheme == "env":
            value = environ.get(name, "").strip()
            if value:
                out[field] = value
            else:
                problems.append(f"tenant {tenant.display_name}: {field}: {name} is not set")
        else:
            vault.append((field, name))
    if vault:
        if not settings.key_vault_url:
            problems.append(f"tenant {tenant.display_name}: kv: references need ETG_KEY_VAULT_URL")
        else:
            found, failed = await _from_key_vault(settings.key_vault_url, vault, credential)
            out.update(found)
            problems.extend(
                f"tenant {tenant.display_name}: {field}: Key Vault secret {name} {why}"
                for field, name, why in failed
            )
    for value in out.values():
        register_secret(value)
    return out, problems


async def _from_key_vault(
    vault_url: str, wanted: list[tuple[str, str]], credential: Any
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
    from azure.keyvault.secrets.aio import SecretClient

    owned = None
    if credential is None:
        from azure.identity.aio import DefaultAzureCredential

        credential = owned = DefaultAzureCredential()
    found: dict[str, str] = {}
    failed: list[tuple[str, str, str]] = []
    try:
        async with SecretClient(vault_url, credential) as client:
            for field, name in wanted:
                try:
                    secret = await client.get_secret(name)
                except ResourceNotFoundError:
                    failed.append((field, name, "does not exist"))
                    continue
                except HttpResponseError as exc:
                    failed.append((field, name, f"could not be read ({exc.status_code})"))
                    continue
                except AzureError as exc:  # the identity was refused or is not available here
                    failed.append((field, name, f"could not be read ({type(exc).__name__})"))
                    continue
                if secret.value:
                    found[field] = secret.value
                else:
                    failed.append((field, name, "is empty"))
    finally:
        if owned is not None:
            await owned.close()
    return found, failed
