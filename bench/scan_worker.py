"""One scan in its own process, so its peak memory is its own. Prints one JSON line.

Settings come from the environment, like the CLI; the clock is the simulated tenant's.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitors.clock import FixedClock
from monitors.jobs.context import open_context
from monitors.scan.pipeline import run_scan
from monitors.service import load_settings


def sim_now(base_url: str) -> datetime:
    with urllib.request.urlopen(f"{base_url}/_sim/clock", timeout=10) as response:
        return datetime.fromisoformat(json.load(response)["now"].replace("Z", "+00:00"))


async def main() -> None:
    # As the function app and the CLI do: settings validated and logging configured from them
    # (ETG_LOG_FORMAT=json, as in Azure), so the scan's log lines cost what they cost there.
    settings = load_settings(os.environ)
    clock = FixedClock(sim_now(settings.graph_endpoint))
    start, cpu = time.perf_counter(), time.process_time()
    async with open_context(settings, clock=clock) as ctx:
        report = await run_scan(ctx)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    data = report.to_json(devices_limit=0)
    print(
        json.dumps(
            {
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "evaluated": data["deployments"]["evaluated"],
                "in_report": data["deployments"]["in_report"],
                "outcome": data["outcome"],
                "findings": data["findings"],
                "requests": data["graph_requests"],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
