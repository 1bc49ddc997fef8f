"""Command line.

``python -m simtenant serve --scenario demo|scale[:N[:DAYS]]|PATH [--port 0] [--latency-ms 20]
[--tenant-id GUID]``
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import signal
import sys
import threading
from types import FrameType

from devtools.simtenant.generate import generate_scale_scenario
from devtools.simtenant.scenario import Scenario, ScenarioError, demo_scenario, load_scenario
from devtools.simtenant.server import SimulatedTenant


def scenario_from_arg(value: str) -> Scenario:
    """``demo``, ``scale`` / ``scale:DEPLOYMENTS`` / ``scale:DEPLOYMENTS:DAYS`` (the days the
    deployments are spread over, 7 unless given), or a path to a scenario JSON file."""
    if value == "demo":
        return demo_scenario()
    if value == "scale" or value.startswith("scale:"):
        _, _, rest = value.partition(":")
        count, _, days = rest.partition(":")
        deployments = int(count) if count else 20000
        window_days = float(days) if days else 7.0
        if deployments < 0 or not 0 < window_days <= 30:
            # Entra keeps the directory audit log 30 days at most, with P1/P2 (the retention
            # azure-ad-auditlog-overview.md refers to): a longer spread would have no audit trail.
            raise ValueError(f"scale scenario {value!r}: DEPLOYMENTS >= 0, DAYS in (0, 30]")
        return generate_scale_scenario(
            deployments=deployments,
            etg_members=max(deployments, deployments * 5),
            audit_events=deployments * 10,
            window_days=window_days,
        )
    return load_scenario(value)


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def tenant_id_arg(value: str) -> str:
    """A directory (tenant) id: a GUID, as Graph's changenotification.md types tenantId."""
    text = value.strip().lower()
    if not _GUID.match(text):
        raise argparse.ArgumentTypeError(f"--tenant-id must be a GUID, got {value!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.simtenant", description="Serve a simulated tenant on loopback."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve until SIGTERM/SIGINT")
    serve.add_argument(
        "--scenario",
        default="demo",
        help="demo, scale, scale:DEPLOYMENTS[:DAYS] or a scenario JSON path",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument(
        "--latency-ms", type=float, default=0.0, help="latency added to every Graph request"
    )
    serve.add_argument(
        "--tenant-id",
        type=tenant_id_arg,
        default=None,
        help="the simulated directory's id (default: the scenario's); several simulated "
        "tenants of one scenario differ by it",
    )
    args = parser.parse_args(argv)

    try:
        scenario = scenario_from_arg(args.scenario)
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"simtenant: {exc}", file=sys.stderr)
        return 2
    if args.tenant_id is not None:
        # The scenario's tenant id is the one every answer names: the tenantId and
        # resourceData.organizationId of each change notification (changenotification.md:
        # "The unique identifier of the tenant from which the change notification
        # originated"), the monitor app's ids, the audit log's ids.
        scenario = dataclasses.replace(scenario, tenant_id=args.tenant_id)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    tenant = SimulatedTenant(scenario, host=args.host, port=args.port, latency_ms=args.latency_ms)
    tenant.start()
    # The scenario objects live for the whole process; keeping them out of the
    # cyclic collector avoids multi-hundred-millisecond pauses at scale.
    gc.freeze()
    # The export builder is a thread: with the default 5 ms switch interval it held the GIL
    # from the event loop for that long at a time, and a report poll answered meanwhile took
    # ten times its latency. Graph builds exports on its own machines.
    sys.setswitchinterval(0.0005)
    ready = {"base_url": tenant.base_url, "teams_url": tenant.teams_url}
    ready["tenant_id"] = scenario.tenant_id
    print(json.dumps(ready), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        tenant.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
