"""Weekly summary over 100,000 deployments in one ISO week: the stored rows are written straight
into the deployments table (Azurite), then the summary job reads and computes them. Prints one
JSON line with the median of several runs, and the pure computation alone for reference.

    python bench/summary_load.py --deployments 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.data.tables import UpdateMode

from devtools.simtenant.azurite import Azurite
from monitors.settings import Settings

OUTCOMES = ["on_time"] * 90 + ["late"] * 3 + ["missing"] * 3 + ["failed"] * 2 + ["pending"] * 2


async def populate(settings: Settings, week: Any, n: int) -> None:
    from monitors.jobs.context import open_store
    from monitors.store.scan_state import DEPLOYMENTS, day_of

    async with open_store(settings) as store:
        table = await store.table(DEPLOYMENTS)
        per_day: dict[str, list[Any]] = {}
        for i in range(n):
            enrolled = week.start + timedelta(seconds=i * (7 * 86400 / n))
            completed = enrolled + timedelta(minutes=30)
            outcome = OUTCOMES[i % len(OUTCOMES)]
            joined = completed - timedelta(minutes=i % 25 + 1)
            per_day.setdefault(day_of(enrolled), []).append(
                (
                    "upsert",
                    {
                        "PartitionKey": day_of(enrolled),
                        "RowKey": f"{uuid.UUID(int=i)}_{i}",
                        "Status": "failed" if outcome == "failed" else "success",
                        "EtgOutcome": outcome,
                        "PolicyName": f"Policy {i % 4}",
                        "EnrolledAt": enrolled,
                        "CompletedAt": completed.isoformat(),
                        "JoinedAt": joined.isoformat() if outcome == "on_time" else "",
                    },
                    {"mode": UpdateMode.REPLACE},
                )
            )
        sem = asyncio.Semaphore(8)

        async def send(ops: list[Any]) -> None:
            async with sem:
                await table.submit_transaction(ops)

        await asyncio.gather(
            *(send(ops[i : i + 100]) for ops in per_day.values() for i in range(0, len(ops), 100))
        )


async def measure(settings: Settings, week: Any, runs: int) -> dict[str, Any]:
    from monitors.jobs.context import open_store
    from monitors.jobs.summary import keep_summary
    from monitors.store.scan_state import ScanState
    from monitors.summary.compute import compute_summary

    totals, loads, computes = [], [], []
    summary: dict[str, Any] = {}
    for _ in range(runs):
        async with open_store(settings) as store:
            start = time.perf_counter()
            summary = await keep_summary(store, week, week.end + timedelta(hours=7))
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            rows = await ScanState(store).summary_rows(week.start, week.end)
            loads.append(time.perf_counter() - start)
        start = time.perf_counter()
        compute_summary(week, rows, [], [], {}, week.end)
        computes.append(time.perf_counter() - start)
    return {
        "deployments": summary["deployments"]["total"],
        "summary_s": round(statistics.median(totals), 3),
        "read_rows_s": round(statistics.median(loads), 3),
        "compute_only_s": round(statistics.median(computes), 3),
        # Same-run reference: the summary against reading its rows alone, the I/O it cannot
        # avoid. Close to 1 means the summary costs little beyond the read.
        "ratio_to_read": round(
            statistics.median(t / r for t, r in zip(totals, loads, strict=True)), 2
        ),
        "runs": runs,
        "compliance_rate": summary["compliance"]["rate"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from monitors.summary.compute import IsoWeek

    week = IsoWeek.of(datetime(2026, 11, 18, tzinfo=UTC))
    with Azurite() as azurite:
        settings = Settings.from_env(
            {
                "ETG_STORAGE_CONNECTION": azurite.connection_string,
                "ETG_TABLE_PREFIX": "sum" + uuid.uuid4().hex[:8],
            }
        )
        start = time.perf_counter()
        asyncio.run(populate(settings, week, args.deployments))
        populate_s = time.perf_counter() - start
        result = asyncio.run(measure(settings, week, args.runs))
    result["populate_s"] = round(populate_s, 1)
    print(json.dumps(result))
    return 0 if result["deployments"] == args.deployments else 1


if __name__ == "__main__":
    raise SystemExit(main())
