"""One registry tenant's job: the single-tenant job, run with that tenant's settings.

Its tables, lease, Graph client and retry budget, client state and alert channels all follow
from ``tenant_settings`` (monitors.tenants.scope), so nothing here can reach another tenant's
data. A tenant whose settings cannot be built (a secret reference that does not resolve, no
app registration configured) has a failing job: it is recorded as that tenant's
``monitor_job_failing``, in its own tables, not raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitors import service
from monitors.failures import SettingsError
from monitors.tenants.registry import Tenant, TenantRegistry
from monitors.tenants.scope import storage_settings, tenant_settings
from monitors.tenants.secrets import resolve_secrets

if TYPE_CHECKING:
    from monitors.clock import Clock
    from monitors.settings import Settings
    from monitors.store.tables import TableStore


def _log() -> Any:
    import structlog

    return structlog.get_logger("etg_monitor")


async def registered(base: Settings, tenant_id: str) -> Tenant | None:
    """The tenant's registry entry, when it is registered and enabled."""

    async def read(store: TableStore) -> Tenant | None:
        return await TenantRegistry(store).get(tenant_id)

    tenant = await service.read_store(base, read)
    return tenant if tenant is not None and tenant.enabled else None


async def settings_of(base: Settings, tenant_id: str, store: TableStore) -> Settings | None:
    """The tenant's settings (registry entry, its secrets resolved, narrowed from ``base``);
    None when it is not registered or disabled. Raises SettingsError."""
    tenant = await TenantRegistry(store).get(tenant_id)
    if tenant is None or not tenant.enabled:
        return None
    return tenant_settings(base, tenant, await resolve_secrets(base, tenant))


async def settings_or_failure(
    base: Settings, tenant: Tenant, job: str, clock: Clock | None
) -> tuple[Settings | None, str | None]:
    """(the tenant's settings, None), or (None, the problem) after recording it as the
    tenant's failing ``job``."""
    try:
        return tenant_settings(base, tenant, await resolve_secrets(base, tenant)), None
    except SettingsError as exc:
        problem = "; ".join(exc.problems)
    _log().error("tenant_job.misconfigured", tenant=tenant.tenant_id, job=job, problem=problem)
    await record_failure(storage_settings(base, tenant), job, problem, clock)
    return None, problem


async def record_failure(settings: Settings, job: str, error: str, clock: Clock | None) -> None:
    """``job`` failed for this tenant outside its runner: its monitor_job_failing opens (and
    alerts through its outbox) as if the runner had seen it fail. Raises Unavailable."""
    from monitors.failures import dependency_failures_as_unavailable
    from monitors.jobs.context import record_job_failure

    with dependency_failures_as_unavailable(settings):
        await record_job_failure(settings, job, error, clock=clock)


async def run_tenant_job(
    base: Settings, tenant_id: str, job: str, clock: Clock | None = None
) -> dict[str, Any]:
    """Run ``job`` for one registry tenant, then the dispatch after it, as a timer would.
    Dropped (nothing run) when the tenant is not registered or is disabled; a settings problem
    is recorded as the tenant's failing job. A failing job raises (Unavailable for a
    dependency), so the queue's host retries it."""
    tenant = await registered(base, tenant_id)
    if tenant is None:
        _log().warning("tenant_job.dropped", tenant=tenant_id, job=job, reason="not registered")
        return {"tenant": tenant_id, "job": job, "dropped": "not registered or disabled"}
    settings, problem = await settings_or_failure(base, tenant, job, clock)
    if settings is None:
        return {"tenant": tenant_id, "job": job, "failed": problem}
    ran = await service.TIMER_JOBS[service.Job(job)](settings, clock=clock)
    return {"tenant": tenant_id, "job": job, **service.outcome(ran)}


async def give_up(
    base: Settings, tenant_id: str, job: str, error: str, clock: Clock | None = None
) -> dict[str, Any]:
    """A queued job the host gave up on (its message reached the poison queue): that tenant's
    ``monitor_job_failing`` opens, alerted through its own outbox."""
    tenant = await registered(base, tenant_id)
    if tenant is None:
        _log().warning("tenant_job.poison_dropped", tenant=tenant_id, job=job)
        return {"tenant": tenant_id, "job": job, "dropped": "not registered or disabled"}
    try:
        settings = tenant_settings(base, tenant, await resolve_secrets(base, tenant))
    except SettingsError:
        settings = storage_settings(base, tenant)
    await record_failure(settings, job, error, clock)
    _log().error("tenant_job.gave_up", tenant=tenant_id, job=job, error=error)
    return {"tenant": tenant_id, "job": job, "recorded": "monitor_job_failing"}
