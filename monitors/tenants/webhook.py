"""Where the one webhook of a many-tenant deployment sends each notification.

Every registered, enabled tenant's subscriptions carry that tenant's own client state
(``monitors.tenants.scope.client_state_for``) and its notifications are stored in that tenant's
tables. The webhook answers Graph within 3 seconds at hundreds of requests a second, so the
registry is read at most once per ``RoutesCache.TTL`` seconds per worker (a tenant added or
disabled is seen within that time) and each tenant's Table client is kept for the event loop.
Nothing here resolves a tenant's secrets: the webhook needs only the tenant's tables and its
client state, both derived from the deployment's settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from monitors.settings import Settings
from monitors.store.tables import TableStore
from monitors.tenants.registry import Tenant, TenantRegistry
from monitors.tenants.scope import client_state_for, table_prefix_for


@dataclass(frozen=True, slots=True)
class TenantRoute:
    """What the webhook needs of one tenant: where its rows go and the state it must carry."""

    tenant_id: str
    table_prefix: str
    client_state: str


def routes_of(settings: Settings, tenants: Iterable[Tenant]) -> dict[str, TenantRoute]:
    """Tenant id -> route, for the enabled tenants only. Empty when the deployment has no
    client state (then no subscription exists, and the webhook answers "not configured")."""
    if not settings.client_state:
        return {}
    return {
        t.tenant_id: TenantRoute(
            t.tenant_id,
            table_prefix_for(settings.table_prefix, t),
            client_state_for(settings.client_state, t.tenant_id),
        )
        for t in tenants
        if t.enabled
    }


class RoutesCache:
    """The registry's routes per deployment (storage account and table prefix), read at most
    once per TTL. Timed with the process's monotonic clock: this is caching, not a decision."""

    TTL = 30.0

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._entries: dict[tuple[str, str], tuple[float, dict[str, TenantRoute]]] = {}

    async def get(self, store: TableStore, settings: Settings) -> dict[str, TenantRoute]:
        """The routes of the registry's enabled tenants; empty when it has none, and then the
        webhook is the single-tenant one, as the timers then run the deployment's own jobs."""
        key = (_account(settings), settings.table_prefix)
        now = self._monotonic()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] <= self.TTL:
            return cached[1]
        routes = routes_of(settings, await TenantRegistry(store).all())
        self._entries[key] = (now, routes)
        return routes


def _account(settings: Settings) -> str:
    return settings.storage_connection or settings.storage_table_url or ""


class TenantStores:
    """One Table client per tenant and event loop: a new connection per request would cost
    most of Graph's 3-second budget under load. A client cannot outlive its loop, so a new
    loop starts afresh."""

    def __init__(self) -> None:
        self._loop: int | None = None
        self._stores: dict[tuple[str, str], TableStore] = {}

    def get(self, settings: Settings, table_prefix: str) -> TableStore:
        loop = id(asyncio.get_running_loop())
        if loop != self._loop:
            self._loop, self._stores = loop, {}
        key = (_account(settings), table_prefix)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = TableStore(
                dataclasses.replace(settings, table_prefix=table_prefix)
            )
        return store


routes_cache = RoutesCache()
tenant_stores = TenantStores()


def client_states(routes: Mapping[str, TenantRoute]) -> dict[str, str]:
    return {tenant: route.client_state for tenant, route in routes.items()}
