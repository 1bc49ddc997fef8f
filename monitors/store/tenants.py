"""The tenant registry's table: ``<prefix>tenants``, PK "tenant", RK the tenant id.

Rows are plain records here; what an entry means (and what makes it valid) is
monitors.tenants.registry's business. The registry lives in the deployment's own prefix, never
in a tenant's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from monitors.store.tables import TableStore, _as_datetime, dumps_json, loads_json

TENANTS = "tenants"
_PARTITION = "tenant"


@dataclass(frozen=True, slots=True)
class TenantRow:
    tenant_id: str
    display_name: str
    enabled: bool
    tag: str
    # The entry's remaining fields (references, routes, overrides), as JSON-ready values.
    entry: Mapping[str, Any]
    added_at: datetime | None = None
    updated_at: datetime | None = None


def _entity(row: TenantRow, now: datetime) -> dict[str, Any]:
    return {
        "PartitionKey": _PARTITION,
        "RowKey": row.tenant_id,
        "DisplayName": row.display_name,
        "Enabled": row.enabled,
        "Tag": row.tag,
        "Entry": dumps_json(dict(row.entry)),
        "AddedAt": row.added_at or now,
        "UpdatedAt": now,
    }


def _row(entity: Mapping[str, Any]) -> TenantRow:
    entry = loads_json(entity.get("Entry"), {})
    return TenantRow(
        tenant_id=str(entity["RowKey"]),
        display_name=str(entity.get("DisplayName") or entity["RowKey"]),
        enabled=bool(entity.get("Enabled", True)),
        tag=str(entity.get("Tag") or ""),
        entry=entry if isinstance(entry, dict) else {},
        added_at=_as_datetime(entity.get("AddedAt")),
        updated_at=_as_datetime(entity.get("UpdatedAt")),
    )


class TenantRows:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    async def all(self) -> list[TenantRow]:
        # Read without creating: every timer asks, and a single-tenant install never gets a
        # registry table of its own until a tenant is added.
        table = self._store.existing_table(TENANTS)
        try:
            return [
                _row(e)
                async for e in table.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": _PARTITION}
                )
            ]
        except ResourceNotFoundError:
            return []

    async def get(self, tenant_id: str) -> TenantRow | None:
        table = self._store.existing_table(TENANTS)
        try:
            return _row(await table.get_entity(_PARTITION, tenant_id))
        except ResourceNotFoundError:
            return None

    async def put(self, row: TenantRow, now: datetime) -> None:
        table = await self._store.table(TENANTS)
        await table.upsert_entity(_entity(row, now), mode=UpdateMode.REPLACE)

    async def delete(self, tenant_id: str) -> bool:
        table = await self._store.table(TENANTS)
        try:
            await table.get_entity(_PARTITION, tenant_id)
        except ResourceNotFoundError:
            return False
        await table.delete_entity(_PARTITION, tenant_id)
        return True
