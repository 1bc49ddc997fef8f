"""CPU per $batch round trip: the SDK's path against the one the scan takes.

The same $batch of 20 managed-device look-ups is sent to the simulated tenant (no added
latency), 8 at a time, through ``GraphClient.request`` (msgraph-sdk's request adapter, kiota's
middleware, httpx over aiohttp) and through ``GraphClient.post_json`` (aiohttp alone), the two
alternating. The client's process CPU is measured, so the tenant's own work is not counted.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Sim

from monitors.graph.client import GraphClient
from monitors.settings import Settings

IN_FLIGHT = 8


def device_ids(base_url: str) -> list[str]:
    listing = f"{base_url}/v1.0/deviceManagement/managedDevices?$top=20&$select=id"
    with urllib.request.urlopen(listing, timeout=10) as response:
        return [d["id"] for d in json.load(response)["value"]]


async def measure(base_url: str, ids: list[str], rounds: int, runs: int) -> dict[str, Any]:
    settings = Settings.from_env(
        {
            "ETG_GRAPH_ENDPOINT": base_url,
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true",
        }
    )
    body = {
        "requests": [
            {"id": str(n), "method": "GET", "url": f"/deviceManagement/managedDevices/{d}"}
            for n, d in enumerate(ids)
        ]
    }
    cpu: dict[str, list[float]] = {"sdk": [], "post_json": []}
    async with GraphClient(settings) as graph:
        url = graph.v1("$batch")
        paths = {
            "sdk": lambda: graph.request("POST", url, body),
            "post_json": lambda: graph.post_json(url, body),
        }
        for send in paths.values():  # connections open and code warm before timing
            await asyncio.gather(*(send() for _ in range(IN_FLIGHT)))
        for _ in range(runs):
            for name, send in paths.items():
                start = time.process_time()
                for _ in range(rounds):
                    answers = await asyncio.gather(*(send() for _ in range(IN_FLIGHT)))
                    assert all(len(a["responses"]) == len(ids) for a in answers)
                cpu[name].append((time.process_time() - start) / (rounds * IN_FLIGHT) * 1000)
    sdk, lean = statistics.median(cpu["sdk"]), statistics.median(cpu["post_json"])
    return {
        "requests_per_run": rounds * IN_FLIGHT,
        "runs": runs,
        "sub_requests": len(ids),
        "sdk_cpu_ms": round(sdk, 3),
        "post_json_cpu_ms": round(lean, 3),
        "ratio": round(sdk / lean, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sim = Sim("scale:2000", 0)
    try:
        print(
            json.dumps(
                asyncio.run(measure(sim.base_url, device_ids(sim.base_url), args.rounds, args.runs))
            )
        )
    finally:
        sim.close()


if __name__ == "__main__":
    main()
