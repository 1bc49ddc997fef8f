"""The fan-out of many tenants: the time from the scan timer firing to the last tenant's verdicts.

``python bench/fanout.py [--tenants 50] [--deployments 2000] [--workers 1,2,4] [--runs 1]``
prints one JSON line (the ``fanout`` section of bench/run.py).

Every tenant is its own simulated tenant process (``python -m devtools.simtenant serve
--scenario scale:N --tenant-id ID --latency-ms 20``), registered in the registry with its
loopback Graph endpoint, as `etg-monitor tenants add --graph-endpoint` would. The simulator
serves one tenant per process, so there are as many processes as tenants; they are started once
and serve every run (a scan only reads Graph, and the simulated clock never moves).

Each measured run has a fresh Azurite with its Queue service. The clock starts when the timer
fires: ``entry.run_job(Job.SCAN)``, which enqueues one message per enabled tenant
(monitors/tenants/fanout.py). It stops when the last tenant's scan has recorded its verdicts,
each tenant's run record is then checked. A worker stands for one Functions instance: one
process, warm (function_app imported, settings read) before the timer fires, taking messages as
the host's queue listener does with host.json's ``batchSize`` and ``newBatchThreshold`` (a new
batch of ``batchSize`` whenever ``newBatchThreshold`` or fewer are running, so at most their sum
at once: QueuesOptions, Microsoft.Azure.WebJobs.Extensions.Storage.Queues) and running the
queue function's body (``entry.run_queued``, what function_app's ``tenant_job`` awaits) on the
simulated clock. Unlike the host it polls an empty queue every 0.1 s rather than backing off to
``maxPollingInterval``, so the figure is the work and not the polling interval.

The single-tenant reference is the same data scanned without the queue: every tenant's scan
(``run_tenant_job``, the same function the queue function calls) one after the other in one
warm process, in a fresh Azurite of its own. It is the sum of the same 50 scans, so the two
differ only by the queue and by running several at once; one tenant of 100,000 deployments
would be other data (one report of 100,000 rows, one audit log), measured by the ``large``
section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.environment import environment
from devtools.simtenant.azurite import Azurite

LATENCY_MS = 20
HOST_JSON = ROOT / "host.json"
IDLE_POLL_S = 0.1
# How long a received message stays invisible: longer than any scan here, so no message runs
# twice at once (the host renews its hold while a function runs).
HOLD_S = 600
# A run that has not finished by then has failed: reported, not waited for.
RUN_TIMEOUT_S = 1800


def host_queues() -> dict[str, Any]:
    queues: dict[str, Any] = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    return queues


def seconds(timespan: str) -> int:
    """host.json's ``hh:mm:ss``."""
    hours, minutes, secs = (int(part) for part in timespan.split(":"))
    return hours * 3600 + minutes * 60 + secs


# --- the simulated tenants ----------------------------------------------------------------------


class Sims:
    """``count`` simulated tenant processes, one tenant each, started together."""

    def __init__(self, count: int, deployments: int, latency_ms: int) -> None:
        started = time.perf_counter()
        self.procs: list[subprocess.Popen[str]] = []
        self.tenants: dict[str, str] = {}  # tenant id -> its Graph endpoint
        try:
            for _ in range(count):
                self.procs.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, "-m", "devtools.simtenant", "serve"),
                            *("--scenario", f"scale:{deployments}", "--port", "0"),
                            *("--latency-ms", str(latency_ms)),
                            *("--tenant-id", str(uuid.uuid4())),
                        ],
                        cwd=ROOT,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
            for proc in self.procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("a simulated tenant did not start")
                ready = json.loads(line)
                self.tenants[ready["tenant_id"]] = ready["base_url"]
        except BaseException:
            self.close()
            raise
        self.start_s = round(time.perf_counter() - started, 3)

    def now(self) -> str:
        """The simulated time (every scale scenario starts at the same instant)."""
        url = next(iter(self.tenants.values()))
        with urllib.request.urlopen(f"{url}/_sim/clock", timeout=30) as response:
            now: str = json.load(response)["now"]
        return now.replace("Z", "+00:00")

    def rss_mb(self) -> float:
        total = 0
        for proc in self.procs:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return round(total / 1024, 1)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- the deployment: settings, registry, timer --------------------------------------------------


def deployment_env(connection: str) -> dict[str, str]:
    """The deployment's settings, fresh tables and queue each run."""
    return {
        "ETG_STORAGE_CONNECTION": connection,
        "ETG_TABLE_PREFIX": "f" + uuid.uuid4().hex[:10],
        "ETG_JOB_QUEUE": "etg-bench-" + uuid.uuid4().hex[:8],
        "ETG_LOG_FORMAT": "json",
    }


def load(env: dict[str, str]) -> Any:
    import logging

    from monitors import entry, service

    # What a warm Functions worker holds once it has read its settings.
    entry._settings = service.load_settings(env, log_level=logging.WARNING)
    return entry._settings


def register(env: dict[str, str], tenants: dict[str, str]) -> None:
    """Every tenant as `etg-monitor tenants add ID --name ... --graph-endpoint URL` adds it."""
    from monitors import service
    from monitors.clock import SystemClock
    from monitors.tenants.registry import Tenant, TenantRegistry

    async def put(store: Any) -> None:
        registry = TenantRegistry(store)
        for i, (tenant_id, url) in enumerate(tenants.items()):
            tenant = Tenant(tenant_id, f"Tenant {i + 1:02d}", graph_endpoint=url)
            await registry.put(tenant, SystemClock().now())

    asyncio.run(service.read_store(load(env), put))


def fire_timer(clock_iso: str) -> dict[str, Any]:
    """What the scan timer does with enabled tenants in the registry: enqueue, run nothing."""
    from monitors import entry, service
    from monitors.clock import FixedClock

    clock = FixedClock(datetime.fromisoformat(clock_iso))
    answer: dict[str, Any] = asyncio.run(entry.run_job(service.Job.SCAN, clock=clock))
    return answer


def recorded(env: dict[str, str], tenants: dict[str, str]) -> dict[str, Any]:
    """Each tenant's scan run record, read from its own tables: did all of them finish?"""
    import dataclasses

    from monitors import service
    from monitors.store.runs import RunRepository
    from monitors.tenants.registry import Tenant
    from monitors.tenants.scope import table_prefix_for

    base = load(env)

    async def one(tenant_id: str) -> str:
        prefix = table_prefix_for(base.table_prefix, Tenant(tenant_id, tenant_id))
        settings = dataclasses.replace(base, table_prefix=prefix)

        async def read(store: Any) -> str:
            run = (await RunRepository(store).all()).get("scan")
            return run.last_outcome if run is not None else "never ran"

        outcome: str = await service.read_store(settings, read)
        return outcome

    async def every() -> list[str]:
        return [await one(t) for t in tenants]

    outcomes = asyncio.run(every())
    return {o: outcomes.count(o) for o in sorted(set(outcomes))}


# --- a worker: one Functions instance ------------------------------------------------------------


async def worker_loop(clock_iso: str) -> None:
    """Take messages as the host's queue listener does, run the queue function on each, print
    one JSON line per message handled. Runs until stopped."""
    from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    import function_app  # noqa: F401  (a warm instance has imported the app)
    from monitors import entry
    from monitors.clock import FixedClock

    settings = load(dict(os.environ))
    clock = FixedClock(datetime.fromisoformat(clock_iso))
    host = host_queues()
    batch_size, threshold = int(host["batchSize"]), int(host["newBatchThreshold"])
    retry_after, tries = seconds(host["visibilityTimeout"]), int(host["maxDequeueCount"])
    running: set[asyncio.Task[None]] = set()
    async with QueueClient.from_connection_string(
        settings.storage_connection,
        settings.job_queue,
        message_encode_policy=BinaryBase64EncodePolicy(),
        message_decode_policy=BinaryBase64DecodePolicy(),
    ) as client:

        async def handle(message: Any) -> None:
            started = time.time()
            try:
                answer = await entry.run_queued(message.content, message.dequeue_count, clock=clock)
            except Exception as exc:
                # The host makes a failed message visible again after host.json's
                # visibilityTimeout, for another try, until maxDequeueCount tries have failed.
                line = {"failed": type(exc).__name__, "at": time.time()}
                if (message.dequeue_count or 1) >= tries:
                    await client.delete_message(message)  # the host would poison it
                    line["poisoned"] = True
                else:
                    await client.update_message(message, visibility_timeout=retry_after)
            else:
                await client.delete_message(message)
                deployments = answer.get("deployments") or {}
                line = {
                    "tenant": answer.get("tenant"),
                    "outcome": answer.get("outcome"),
                    "evaluated": deployments.get("evaluated"),
                    "in_report": deployments.get("in_report"),
                    "started": started,
                    "at": time.time(),
                }
            print(json.dumps(line), flush=True)

        print(json.dumps({"ready": True}), flush=True)
        while True:
            if len(running) > threshold:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                # Held invisible while it runs, as the host holds (and renews) its messages.
                batch = [
                    m
                    async for m in client.receive_messages(
                        max_messages=batch_size, visibility_timeout=HOLD_S
                    )
                ]
            except Exception as exc:  # the queue is not there yet: the timer creates it
                if type(exc).__name__ != "ResourceNotFoundError":
                    raise
                batch = []
            for message in batch:
                task = asyncio.create_task(handle(message))
                running.add(task)
                task.add_done_callback(running.discard)
            if not batch:
                await asyncio.sleep(IDLE_POLL_S)


class Worker:
    def __init__(self, env: dict[str, str], clock_iso: str, log: Path) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "worker", "--clock", clock_iso],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.lines: list[dict[str, Any]] = []
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError(f"a worker did not start: see {log}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def done(workers: list[Worker]) -> list[dict[str, Any]]:
    """Messages finished with: run, or given up on."""
    return [
        line for w in workers for line in list(w.lines) if "tenant" in line or "poisoned" in line
    ]


def fanned_run(sims: Sims, workers: int, clock_iso: str, log: Path) -> dict[str, Any]:
    """One measured fan-out: fresh Azurite, registry, warm workers, then the timer."""
    with Azurite(queues=True) as azurite:
        env = deployment_env(azurite.connection_string)
        with environment(env):
            register(env, sims.tenants)
            pool = [Worker(env, clock_iso, log) for _ in range(workers)]
            try:
                fired = time.time()
                timer = fire_timer(clock_iso)
                enqueued = time.time()
                deadline = time.monotonic() + RUN_TIMEOUT_S
                while len(done(pool)) < len(sims.tenants) and time.monotonic() < deadline:
                    time.sleep(0.05)
                lines = [line for line in done(pool) if "tenant" in line]
                failures = sum(1 for w in pool for line in list(w.lines) if "failed" in line)
            finally:
                for w in pool:
                    w.stop()
            outcomes = recorded(env, sims.tenants)
    last = max((line["at"] for line in lines), default=fired)
    per_scan = [line["at"] - line["started"] for line in lines]
    return {
        "workers": workers,
        "wall_s": round(last - fired, 3),
        "enqueue_s": round(enqueued - fired, 3),
        "enqueued": timer.get("enqueued"),
        "scans": len(lines),
        "failed_tries": failures,
        "scan_s_median": round(statistics.median(per_scan), 3) if per_scan else None,
        "evaluated": sum(int(line["evaluated"] or 0) for line in lines),
        "in_report": sum(int(line["in_report"] or 0) for line in lines),
        "outcomes": outcomes,
        "per_worker": [sum(1 for line in w.lines if "tenant" in line) for w in pool],
    }


# --- the reference: the same scans, one after the other, no queue -------------------------------


async def sequential_scans(clock_iso: str, tenant_ids: list[str]) -> dict[str, Any]:
    from monitors.clock import FixedClock
    from monitors.tenants.run import run_tenant_job

    base = load(dict(os.environ))
    clock = FixedClock(datetime.fromisoformat(clock_iso))
    started = time.perf_counter()
    scans: list[float] = []
    evaluated = 0
    outcomes: dict[str, int] = {}
    for tenant_id in tenant_ids:
        t = time.perf_counter()
        answer = await run_tenant_job(base, tenant_id, "scan", clock=clock)
        scans.append(time.perf_counter() - t)
        evaluated += int((answer.get("deployments") or {}).get("evaluated") or 0)
        outcome = str(answer.get("outcome", answer.get("failed", "?")))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "wall_s": round(time.perf_counter() - started, 3),
        "scan_s_median": round(statistics.median(scans), 3),
        "scans": len(scans),
        "evaluated": evaluated,
        "outcomes": outcomes,
    }


def sequential_run(sims: Sims, clock_iso: str, log: Path) -> dict[str, Any]:
    """The reference, in a process of its own (warm before the clock starts, as a worker)."""
    with Azurite(queues=True) as azurite:
        env = deployment_env(azurite.connection_string)
        with environment(env):
            register(env, sims.tenants)
        with log.open("ab") as err:
            out = subprocess.run(
                [
                    *(sys.executable, str(Path(__file__).resolve()), "sequential"),
                    *("--clock", clock_iso, *sims.tenants),
                ],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                check=True,
                timeout=RUN_TIMEOUT_S,
            )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- the whole measurement ----------------------------------------------------------------------


def measure(tenants: int, deployments: int, workers: list[int], runs: int) -> dict[str, Any]:
    import tempfile

    # The timer's process is warm too: what it imports is not part of the figure.
    import monitors.store.queues
    import monitors.tenants.fanout  # noqa: F401

    log = Path(tempfile.gettempdir()) / f"etg-bench-fanout-{os.getpid()}.log"
    started = time.perf_counter()
    sims = Sims(tenants, deployments, LATENCY_MS)
    try:
        clock_iso = sims.now()
        results: dict[str, Any] = {
            "tenants": tenants,
            "deployments_per_tenant": deployments,
            "latency_ms": LATENCY_MS,
            "host": {k: host_queues()[k] for k in ("batchSize", "newBatchThreshold")},
            "sim_processes": len(sims.procs),
            "sim_start_s": sims.start_s,
            "sim_rss_mb": sims.rss_mb(),
            "sequential": [],
            "fanout": {str(w): [] for w in workers},
        }
        for _ in range(runs):
            results["sequential"].append(sequential_run(sims, clock_iso, log))
            for count in workers:
                results["fanout"][str(count)].append(fanned_run(sims, count, clock_iso, log))
        results["sim_rss_mb_after"] = sims.rss_mb()
    finally:
        sims.close()
    results["bench_s"] = round(time.perf_counter() - started, 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    worker = sub.add_parser("worker", help="(internal) one Functions instance")
    worker.add_argument("--clock", required=True)
    sequential = sub.add_parser("sequential", help="(internal) the reference scans")
    sequential.add_argument("--clock", required=True)
    sequential.add_argument("tenant_ids", nargs="+")
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--runs", type=int, default=1, help="measured runs of each")
    args = parser.parse_args()
    if args.mode == "worker":
        asyncio.run(worker_loop(args.clock))
        return 0
    if args.mode == "sequential":
        print(json.dumps(asyncio.run(sequential_scans(args.clock, args.tenant_ids))))
        return 0
    counts = [int(w) for w in args.workers.split(",") if w]
    print(json.dumps(measure(args.tenants, args.deployments, counts, args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
