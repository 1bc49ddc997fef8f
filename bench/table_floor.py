"""The storage floor of a scan: the bare cost of writing one record per deployment with
azure-data-tables, measured against the same Azurite the scan will use. Prints one JSON line.

The records are as large as the scan's own (``--record-bytes``, about 1 KB) and keyed as the
scan keys them, one partition per enrollment hour over the days the scan's records fall in,
written the way the SDK documents batching: 100 upserts per ``submit_transaction``, one
partition each, 8 transactions in flight.

    python bench/table_floor.py --records 20000 --connection "..." [--path sdk|store]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from monitors.store import transactions

IN_FLIGHT = 8
PER_TRANSACTION = 100


def records(
    count: int, days: int, record_bytes: int, partition: str = "hour"
) -> list[dict[str, Any]]:
    blob = "x" * max(0, record_bytes - 100)
    partitions = days * 24 if partition == "hour" else days
    return [
        {
            "PartitionKey": f"p{i % partitions:04d}",
            "RowKey": f"{uuid.UUID(int=i)}_{i:08d}",
            "State": "conclusive",
            "Status": "success",
            "Record": blob,
        }
        for i in range(count)
    ]


async def write(connection: str, entities: list[dict[str, Any]], path: str) -> float:
    async with TableServiceClient.from_connection_string(connection) as service:
        name = "floor" + uuid.uuid4().hex[:10]
        await service.create_table(name)
        table = service.get_table_client(name)
        by_day: dict[str, list[dict[str, Any]]] = {}
        for entity in entities:
            by_day.setdefault(entity["PartitionKey"], []).append(entity)
        chunks = [
            group[i : i + PER_TRANSACTION]
            for group in by_day.values()
            for i in range(0, len(group), PER_TRANSACTION)
        ]
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def send(chunk: list[dict[str, Any]]) -> None:
            ops = [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in chunk]
            async with slots:
                if path == "store":
                    await transactions.submit(table, ops)
                else:
                    await table.submit_transaction(ops)

        start = time.perf_counter()
        await asyncio.gather(*(send(chunk) for chunk in chunks))
        elapsed = time.perf_counter() - start
        await table.close()
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--connection", default=os.environ.get("ETG_STORAGE_CONNECTION", ""))
    parser.add_argument(
        "--path",
        choices=("sdk", "store"),
        default="sdk",
        help="sdk: azure-data-tables' submit_transaction (the reference); store: the store's "
        "own transaction path (monitors/store/transactions.py), to compare",
    )
    parser.add_argument(
        "--partition",
        choices=("hour", "day"),
        default="hour",
        help="hour: a partition per enrollment hour, as the scan keys its records; day: one "
        "per day, as it did before, to compare",
    )
    args = parser.parse_args()
    entities = records(args.records, args.days, args.record_bytes, args.partition)
    cpu = time.process_time()
    wall = asyncio.run(write(args.connection, entities, args.path))
    print(
        json.dumps(
            {
                "records": args.records,
                "path": args.path,
                "record_bytes": args.record_bytes,
                "partition": args.partition,
                "wall_s": round(wall, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
