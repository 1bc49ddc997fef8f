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
import subprocess
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
        "p99_ms": round(p99(ordered), 2),
        "max_ms": round(ordered[-1], 2),
        "unique_notifications": len(unique) + 20,  # plus the warm-up ones
        "stored_in_inbox": len(stored),
    }


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1]


async def reference(rate: float, seconds: float) -> dict[str, object]:
    from monitors import entry
    from monitors.jobs.context import open_store

    async with open_store(entry.settings()) as store:
        out = await upsert_latencies(store, rate, seconds)
    return {
        "requests": len(out),
        "p50_ms": round(statistics.median(out), 2),
        "p99_ms": round(p99(out), 2),
        "max_ms": round(max(out), 2),
    }


async def upsert_latencies(store: Any, rate: float, seconds: float) -> list[float]:
    """The floor under any durable webhook: bare Table upserts of a notification-sized row
    (the inbox row's properties) on the same emulator and client stack, offered open loop at
    the same rate for as long. Azurite's own pauses show up here as they do under the
    webhook."""
    table = await store.table("benchref")
    out: list[float] = []

    async def one(n: int) -> None:
        start = time.perf_counter()
        await table.upsert_entity(
            {
                "PartitionKey": f"{n % 256:02x}",
                "RowKey": f"{n:032x}",
                "SubscriptionId": SUBSCRIPTION,
                "GroupId": GROUP,
                "ChangeType": "updated",
                "LifecycleEvent": "",
                "ReceivedAt": datetime.now(UTC),
            }
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


def one_run(mode: str, rate: float, seconds: float, duplicate_every: int) -> dict[str, Any]:
    """One measurement in this process, against an Azurite of its own."""
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
        if mode == "reference":
            return asyncio.run(reference(rate, seconds))
        result = asyncio.run(run(rate, seconds, duplicate_every))
    result["exactly_once"] = result["stored_in_inbox"] == result["unique_notifications"]
    return result


def spawn(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--mode",
            mode,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
            "--duplicate-every",
            str(args.duplicate_every),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--duplicate-every", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=["both", "webhook", "reference"], default="both")
    args = parser.parse_args()
    if args.mode != "both":
        print(json.dumps(one_run(args.mode, args.rate, args.seconds, args.duplicate_every)))
        return 0
    # Each measurement in a fresh process and a fresh Azurite, the reference and the webhook
    # alternating, so neither inherits the other's heap, rows or warm caches.
    runs = []
    for _ in range(args.runs):
        ref = spawn("reference", args)
        hook = spawn("webhook", args)
        hook["reference"] = ref
        hook["p50_ratio_to_upsert"] = round(hook["p50_ms"] / ref["p50_ms"], 2)
        hook["p99_ratio_to_upsert"] = round(hook["p99_ms"] / ref["p99_ms"], 2)
        runs.append(hook)

    def mid(key: str) -> float:
        return round(statistics.median(float(r[key]) for r in runs), 2)

    result = dict(runs[len(runs) // 2])
    result.update(
        {
            "runs": len(runs),
            "per_run": runs,
            "p50_ms": mid("p50_ms"),
            "p99_ms": mid("p99_ms"),
            "max_ms": max(r["max_ms"] for r in runs),
            "drain_s": max(r["drain_s"] for r in runs),
            "achieved_rate_per_s": min(r["achieved_rate_per_s"] for r in runs),
            "reference_upsert_p50_ms": round(
                statistics.median(r["reference"]["p50_ms"] for r in runs), 2
            ),
            "reference_upsert_p99_ms": round(
                statistics.median(r["reference"]["p99_ms"] for r in runs), 2
            ),
            "p50_ratio_to_upsert": mid("p50_ratio_to_upsert"),
            "p99_ratio_to_upsert": mid("p99_ratio_to_upsert"),
            "exactly_once": all(r["exactly_once"] for r in runs),
            "statuses": {
                k: sum(r["statuses"].get(k, 0) for r in runs)
                for k in {k for r in runs for k in r["statuses"]}
            },
            "requests": sum(r["requests"] for r in runs),
        }
    )
    print(json.dumps(result))
    return 0 if result["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
