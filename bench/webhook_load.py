"""Load on the notification webhook through its real HTTP function: azure.functions.HttpRequest
in, Azurite behind. Open loop: requests start on schedule whether or not earlier ones finished,
so queueing shows up in the latency. Prints one JSON line.

    python bench/webhook_load.py --rate 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.simtenant.azurite import Azurite

CLIENT_STATE = "load-test-client-state-" + uuid.uuid4().hex[:8]
SUBSCRIPTION = str(uuid.uuid4())
GROUP = str(uuid.uuid4())


def body(sequence: int) -> bytes:
    return json.dumps(
        {
            "value": [
                {
                    "subscriptionId": SUBSCRIPTION,
                    "subscriptionExpirationDateTime": "2026-12-20T08:00:00.0000000+00:00",
                    "changeType": "updated",
                    "resource": f"Groups/{GROUP}",
                    "clientState": CLIENT_STATE,
                    "tenantId": str(uuid.UUID(int=1)),
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Group",
                        "@odata.id": f"Groups/{GROUP}",
                        "id": GROUP,
                        "sequenceNumber": sequence,
                        "members@delta": [{"id": str(uuid.UUID(int=sequence))}],
                    },
                }
            ]
        }
    ).encode()


async def run(rate: float, seconds: float, duplicate_every: int) -> dict[str, object]:
    import azure.functions as func

    from monitors import entry
    from monitors.jobs.context import open_store
    from monitors.store.notifications import NotificationStore, SubscriptionState
    from tests.helpers import user_function

    handler = user_function("graph_notifications")
    now = datetime.now(UTC)
    async with open_store(entry.settings()) as store:
        await NotificationStore(store).save_subscription(
            SubscriptionState(GROUP, SUBSCRIPTION, now.replace(year=now.year + 1), now)
        )

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    unique: set[int] = set()

    async def one(sequence: int) -> None:
        request = func.HttpRequest(
            "POST",
            "/api/graph/notifications",
            body=body(sequence),
            headers={"content-type": "application/json"},
        )
        start = time.perf_counter()
        response = await handler(request)
        latencies.append((time.perf_counter() - start) * 1000)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    for n in range(20):  # warm the client and the subscription cache
        await one(10_000_000 + n)
    latencies.clear()
    statuses.clear()

    tasks = []
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # Graph retries deliveries: every so often send an exact repeat of an earlier one.
        sequence = i - 1 if duplicate_every and i % duplicate_every == 0 and i else i
        unique.add(sequence)
        tasks.append(asyncio.ensure_future(one(sequence)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start

    async with open_store(entry.settings()) as store:
        stored = await NotificationStore(store).inbox()
        reference = sorted(await upsert_latencies(store, rate, min(seconds, 30.0)))
    ordered = sorted(latencies)
    return {
        "requests": total,
        "target_rate_per_s": rate,
        "achieved_rate_per_s": round(total / elapsed, 1),
        "seconds": round(elapsed, 1),
        # How long after the last scheduled start the last answer came: a backlog that built
        # up during the run would show here.
        "drain_s": round(elapsed - (total - 1) / rate, 3),
        "statuses": statuses,
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2),
        "max_ms": round(ordered[-1], 2),
        "unique_notifications": len(unique) + 20,  # plus the warm-up ones
        "stored_in_inbox": len(stored),
        "reference_upsert_p50_ms": round(statistics.median(reference), 2),
        "reference_upsert_p99_ms": round(reference[int(len(reference) * 0.99) - 1], 2),
        "p50_ratio_to_upsert": round(statistics.median(ordered) / statistics.median(reference), 2),
        "p99_ratio_to_upsert": round(
            ordered[int(len(ordered) * 0.99) - 1] / reference[int(len(reference) * 0.99) - 1], 2
        ),
    }


async def upsert_latencies(store: Any, rate: float, seconds: float) -> list[float]:
    """The floor under any durable webhook: bare Table upserts of a notification-sized row on
    the same emulator and client stack, offered open loop at the same rate right after the
    load. Azurite's own pauses show up here as they do under the webhook."""
    table = await store.table("benchref")
    out: list[float] = []

    async def one(n: int) -> None:
        start = time.perf_counter()
        await table.upsert_entity(
            {"PartitionKey": f"{n % 256:02x}", "RowKey": str(n), "Body": "x" * 600}
        )
        out.append((time.perf_counter() - start) * 1000)

    for n in range(20):
        await one(-1 - n)
    out.clear()
    tasks = []
    begin = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = begin + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(n)))
    await asyncio.gather(*tasks)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--duplicate-every", type=int, default=10)
    args = parser.parse_args()
    with Azurite() as azurite:
        os.environ.update(
            {
                "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:9",
                "ETG_GRAPH_CREDENTIAL": "none",
                "ETG_STORAGE_CONNECTION": azurite.connection_string,
                "ETG_TABLE_PREFIX": "load" + uuid.uuid4().hex[:8],
                "ETG_NOTIFICATION_URL": "http://127.0.0.1:9/api/graph/notifications",
                "ETG_CLIENT_STATE": CLIENT_STATE,
                "ETG_LOG_FORMAT": "json",
            }
        )
        result = asyncio.run(run(args.rate, args.seconds, args.duplicate_every))
    result["exactly_once"] = result["stored_in_inbox"] == result["unique_notifications"]
    print(json.dumps(result))
    return 0 if result["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
