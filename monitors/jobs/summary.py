"""The weekly summary job: compute, keep, and queue the Teams card."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitors.models import JSON
from monitors.store.outbox import SUMMARY_PARTITION, OutboxItem, OutboxRepository
from monitors.store.scan_state import ScanState
from monitors.store.tables import TableStore, dumps_json, loads_json
from monitors.summary.card import summary_card
from monitors.summary.compute import IsoWeek, compute_summary

JOB = "weekly_summary"
SUMMARIES = "summaries"


async def stored_summary(store: TableStore, week: IsoWeek) -> dict[str, JSON] | None:
    table = await store.table(SUMMARIES)
    async for e in table.query_entities(
        "PartitionKey eq 'weekly' and RowKey eq @w", parameters={"w": str(week)}
    ):
        data = loads_json(e.get("Data"), None)
        return data if isinstance(data, dict) else None
    return None


async def _trend(store: TableStore, week: IsoWeek) -> dict[str, float | None]:
    table = await store.table(SUMMARIES)
    first = str(week.previous(7))
    out: dict[str, float | None] = {}
    async for e in table.query_entities(
        "PartitionKey eq 'weekly' and RowKey ge @a and RowKey lt @b",
        parameters={"a": first, "b": str(week)},
        select=["RowKey", "Rate"],
    ):
        rate = e.get("Rate")
        out[e["RowKey"]] = float(rate) if isinstance(rate, int | float) and rate >= 0 else None
    return out


async def weekly_summary(
    store: TableStore, week: IsoWeek, now: datetime, *, queue_card: bool, run_id: str = "cli"
) -> dict[str, Any]:
    """Compute the week's summary from stored state, keep it, and optionally queue its card.

    Kept summaries feed the trend of later weeks, so history survives anomalies ageing out.
    """
    rows = await ScanState(store).summary_rows(week.start, week.end)
    anomalies = [a async for a in store.anomalies.iter()]
    suppressions = await store.suppressions.all()
    summary = compute_summary(week, rows, anomalies, suppressions, await _trend(store, week), now)
    table = await store.table(SUMMARIES)
    rate = summary["compliance"]["rate"]
    await table.upsert_entity(
        {
            "PartitionKey": "weekly",
            "RowKey": str(week),
            "GeneratedAt": now,
            "Rate": rate if rate is not None else -1.0,
            "Data": dumps_json(summary),
        }
    )
    if queue_card:
        item = OutboxItem(
            SUMMARY_PARTITION,
            "summary",
            run_id,
            now,
            {"title": f"weekly summary {week}", "card": summary_card(summary)},
            row_key=f"outbox|summary|{week}",
        )
        await OutboxRepository(store).add(item)  # once per week, however often this runs
    await store.runs.record(
        JOB,
        {
            "LastFinished": now,
            "LastOutcome": "ok",
            "LastSuccess": now,
            "LastSummary": {"week": str(week), "rate": rate},
        },
    )
    return summary
