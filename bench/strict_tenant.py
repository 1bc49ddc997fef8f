"""Score the monitor on the strict simulated tenant (simtenant.strict) against its ground truth.

Prints one JSON line: anomalies found against those required, false alarms, unverified
deployments by reason, and the Graph requests of the scan. `make bench` records it
in docs/benchmarks.md; `python bench/strict_tenant.py` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.simtenant.azurite import Azurite
from devtools.simtenant.server import SimulatedTenant
from devtools.simtenant.strict import strict_scenario
from monitors.jobs.config_check import check_config
from monitors.jobs.context import open_context, open_store
from monitors.models import Status
from monitors.scan.pipeline import run_scan
from monitors.settings import Settings


def score() -> dict[str, Any]:
    scenario, truth = strict_scenario()
    with Azurite() as azurite, SimulatedTenant(scenario) as tenant:
        settings = Settings.from_env(
            {
                "ETG_GRAPH_ENDPOINT": tenant.base_url,
                "ETG_GRAPH_CREDENTIAL": "none",
                "ETG_STORAGE_CONNECTION": azurite.connection_string,
                "ETG_TABLE_PREFIX": "s" + uuid.uuid4().hex[:12],
                "ETG_DETAILED_REPORTS": "true",
                "ETG_LOG_FORMAT": "json",
            }
        )

        async def go() -> tuple[Any, list[Any]]:
            async with open_context(settings, clock=tenant.clock) as ctx:
                await check_config(ctx)
            async with open_context(settings, clock=tenant.clock) as ctx:
                scan = await run_scan(ctx)
            async with open_store(settings) as store:
                found = [a async for a in store.anomalies.iter() if a.status is Status.OPEN]
            return scan, found

        scan, found = asyncio.run(go())
    devices = {(a.kind, a.subject.device_name) for a in found if a.subject.device_name}
    policies = {(a.kind, a.subject.policy_name) for a in found if not a.subject.device_name}
    required = truth.device_anomalies | truth.policy_anomalies
    got = devices | policies
    unverified = Counter(
        sorted({u.reason.value for u in j.unverified})[0] if j.unverified else "none"
        for j in scan.judgements
        if j.state == "unverified"
    )
    return {
        "required": len(required),
        "found": len(required & got),
        "missed": sorted(f"{k} {n}" for k, n in required - got),
        "false_alarms": sorted(f"{k} {n}" for k, n in got - required),
        "deployments": len(scan.judgements),
        "unverified_by_reason": dict(sorted(unverified.items())),
        "unverified_expected": dict(sorted(Counter(truth.unverified.values()).items())),
        "scan_requests": sum(scan.graph_requests.values()),
    }


if __name__ == "__main__":
    print(json.dumps(score()))
