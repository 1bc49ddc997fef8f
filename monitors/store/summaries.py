"""Kept weekly summaries (PK "weekly", RK the ISO week): the HTML report of a finished week and
the trend of later weeks read them, so history survives anomalies ageing out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitors.store.tables import TableStore, dumps_json, loads_json

SUMMARIES = "summaries"
_PARTITION = "weekly"


class SummaryRepository:
    def __init__(self, store: TableStore) -> None:
        self._store = store

    async def get(self, week: str) -> dict[str, Any] | None:
        table = await self._store.table(SUMMARIES)
        async for e in table.query_entities(
            "PartitionKey eq @p and RowKey eq @w", parameters={"p": _PARTITION, "w": week}
        ):
            data = loads_json(e.get("Data"), None)
            return data if isinstance(data, dict) else None
        return None

    async def rates(self, first: str, before: str) -> dict[str, float | None]:
        """Each kept week's compliance rate, for weeks ``first`` <= week < ``before``."""
        table = await self._store.table(SUMMARIES)
        out: dict[str, float | None] = {}
        async for e in table.query_entities(
            "PartitionKey eq @p and RowKey ge @a and RowKey lt @b",
            parameters={"p": _PARTITION, "a": first, "b": before},
            select=["RowKey", "Rate"],
        ):
            rate = e.get("Rate")
            out[e["RowKey"]] = float(rate) if isinstance(rate, int | float) and rate >= 0 else None
        return out

    async def put(
        self, week: str, summary: dict[str, Any], rate: float | None, now: datetime
    ) -> None:
        table = await self._store.table(SUMMARIES)
        await table.upsert_entity(
            {
                "PartitionKey": _PARTITION,
                "RowKey": week,
                "GeneratedAt": now,
                "Rate": rate if rate is not None else -1.0,
                "Data": dumps_json(summary),
            }
        )
