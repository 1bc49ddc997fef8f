"""Benchmarks for etg-monitor. `make bench` runs this and rewrites docs/benchmarks.md.

Each figure is the median of several runs on this machine, next to a reference measured in the
same run, because shared machines are noisy. The simulated tenant runs in its own process with
20 ms of latency added to every request; Azurite runs in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.simtenant.azurite import Azurite

LATENCY_MS = 20
# What each change bought, with its profile: kept by hand, included in docs/benchmarks.md.
HISTORY = ROOT / "bench" / "history.md"


class Sim:
    """The simulated tenant as a separate process, driven through its control API."""

    def __init__(self, scenario: str, latency_ms: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.simtenant",
                "serve",
                "--scenario",
                scenario,
                "--port",
                "0",
                "--latency-ms",
                str(latency_ms),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("simulated tenant did not start")
        self.base_url = json.loads(line)["base_url"]

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_sim/{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}/_sim/{path}", timeout=120) as response:
            return json.load(response)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# The largest page Graph serves for each listing the scan reads (documented $top maxima).
PAGE_MAX = {
    "configurationPolicies.list": 1000,
    "managedDevices.list": 1000,
    "directoryAudits.list": 999,
    "groups.members": 999,
    "groups.owners": 999,
    "servicePrincipals.list": 999,
}
# Listings whose first pages can travel together in a $batch (a GET with a query is a batch
# request like any other: json-batching.md).
BATCHED_LISTINGS = {"directoryAudits.list"}
# Per-item look-ups that Graph lets a client pack 20 to a $batch; devices are looked up by
# `deviceId in (...)`, which takes at most 15 ids per request.
BATCHABLE = {
    "devices.list": 15,
    "devices.get": 1,
    "devices.checkMemberGroups": 1,
    "groups.get": 1,
    "managedDevices.get": 1,
    "configurationPolicies.retrieveEnrollmentTimeDeviceMembershipTarget": 1,
    "configurationPolicies.retrieveJustInTimeConfiguration": 1,
    "configurationPolicies.assignments": 1,
    "users.checkMemberGroups": 1,
}


# The scale scenario keeps a report export in progress for one poll, whatever the client
# does (devtools/simtenant: ``export_polls_before_ready``).
EXPORT_POLLS_IN_PROGRESS = 1


def minimum_requests(served: dict[str, int], lists: dict[str, dict[str, int]]) -> int:
    """The fewest Graph requests that could have fetched the data this scan needed.

    Every listing the scan started, read at Graph's largest page size; every per-item look-up
    it made, packed as densely as Graph allows; each report export created, polled while the
    tenant keeps it in progress and once more, and downloaded once. The look-ups themselves
    are taken as needed: this measures the cost of fetching, not whether a smarter algorithm
    could ask fewer questions.
    """
    # Create, then polls while the tenant keeps the job in progress and one that finds it
    # done, then the download.
    total = (3 + EXPORT_POLLS_IN_PROGRESS) * served.get("exportJobs.create", 0)
    for name, page in PAGE_MAX.items():
        if name in lists:
            got = lists[name]
            # Each listing needs a request of its own, unless listings can start together in
            # a $batch (first pages, 20 to a batch); every page holds at most ``page`` items.
            starts = -(-got["listings"] // 20) if name in BATCHED_LISTINGS else got["listings"]
            total += max(starts, -(-got["items"] // page))
    lookups = 0
    for name, per_request in BATCHABLE.items():
        if name == "devices.list" and name in lists:
            lookups += -(-lists[name]["items"] // per_request)
        elif name != "devices.list":
            lookups += served.get(name, 0)
    return total + -(-lookups // 20)


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user and system) a process has used so far; 0 once it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scan(
    sim: Sim, connection: str, prefix: str, azurite_pid: int | None = None, **settings: str
) -> dict[str, Any]:
    """One scan in its own process; beside its own figures, the CPU Azurite and the simulated
    tenant spent meanwhile, since all three share the machine's cores."""
    sim.control("stats/reset")
    before = process_cpu(azurite_pid), process_cpu(sim.proc.pid)
    env = {
        **os.environ,
        "ETG_GRAPH_ENDPOINT": sim.base_url,
        "ETG_GRAPH_CREDENTIAL": "none",
        "ETG_STORAGE_CONNECTION": connection,
        "ETG_TABLE_PREFIX": prefix,
        "ETG_LOG_FORMAT": "json",
        **settings,
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scan_worker.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["azurite_cpu_s"] = round(process_cpu(azurite_pid) - before[0], 3)
    result["sim_cpu_s"] = round(process_cpu(sim.proc.pid) - before[1], 3)
    served, lists = sim.get("stats"), sim.get("stats/lists")
    result["sim_served"] = served
    result["minimum_requests"] = minimum_requests(served, lists)
    return result


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def floor(connection: str, records: int, days: int, path: str = "sdk") -> dict[str, Any]:
    """The same-run reference of a first scan: bare azure-data-tables writes of one ~1 KB
    record per deployment, in the scan's hour partitions (bench/table_floor.py), in an Azurite
    of its own."""
    return bench_script(
        "table_floor.py",
        *("--records", str(records), "--days", str(days), "--connection", connection),
        *("--path", path),
    )


def bench_transactions(records: int, runs: int) -> dict[str, Any]:
    """The SDK's transaction path against the store's own, alternating, each write in a fresh
    Azurite: what replacing the SDK's multipart encoding bought."""
    out: dict[str, list[dict[str, Any]]] = {"sdk": [], "store": []}
    for _ in range(runs):
        for path in ("sdk", "store"):
            with Azurite() as azurite:
                out[path].append(floor(azurite.connection_string, records, 7, path))
    return out


def bench_scans(
    deployments: int, runs: int, increments: int, new_per_increment: int
) -> dict[str, Any]:
    """Each run is independent of the others: its own Azurite (fresh, in memory) for the
    reference, then another for the scan, and its own simulated tenant. A shared Azurite
    carries every earlier run's tables in its heap, which slows its garbage collection and so
    every later run."""
    first: list[dict[str, Any]] = []
    incremental: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    for _ in range(runs):
        with Azurite() as azurite:
            floors.append(floor(azurite.connection_string, deployments, 7))
        with Azurite() as azurite:
            sim = Sim(f"scale:{deployments}", LATENCY_MS)
            try:
                prefix = "b" + uuid.uuid4().hex[:10]
                result = scan(sim, azurite.connection_string, prefix, azurite.table_pid)
                result["floor"] = floors[-1]
                first.append(result)
                for _ in range(increments):
                    sim.control("clock", {"advance_s": 600})
                    sim.control("deployments", {"count": new_per_increment})
                    # Let them finish provisioning and their audit events settle.
                    sim.control("clock", {"advance_s": 2 * 3600})
                    result = scan(sim, azurite.connection_string, prefix, azurite.table_pid)
                    result["new"] = new_per_increment
                    incremental.append(result)
            finally:
                sim.close()
    return {"first": first, "incremental": incremental, "floor": floors}


# The large tenant of target 2: a P1 tenant with a 30-day look-back.
LARGE_DAYS = 30


def bench_large(deployments: int, runs: int) -> dict[str, Any]:
    """First scans of the large tenant, each with its own Azurite and tenant, beside the bare
    cost of writing as many records (same run, own Azurite)."""
    scans: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    for _ in range(runs):
        with Azurite() as azurite:
            floors.append(floor(azurite.connection_string, deployments, LARGE_DAYS))
        with Azurite() as azurite:
            sim = Sim(f"scale:{deployments}:{LARGE_DAYS}", LATENCY_MS)
            try:
                prefix = "l" + uuid.uuid4().hex[:10]
                result = scan(
                    sim,
                    azurite.connection_string,
                    prefix,
                    azurite.table_pid,
                    ETG_SCAN_LOOKBACK_HOURS=str(LARGE_DAYS * 24),
                )
                result["floor"] = floors[-1]
                scans.append(result)
            finally:
                sim.close()
    return {"first": scans, "floor": floors}


def bench_import(runs: int) -> dict[str, float]:
    def timed(code: str) -> float:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip())

    app = [timed("import function_app") for _ in range(runs)]
    base = [timed("import azure.functions") for _ in range(runs)]
    return {
        "function_app_s": median(app),
        "azure_functions_s": median(base),
        "ratio": round(statistics.median(app) / statistics.median(base), 2),
    }


def bench_script(name: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"bench/{name} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def verdict(measured: float, limit: float, *, at_most: bool) -> str:
    """ "met", or by how much the target was missed, as a share of the target."""
    ok = measured <= limit if at_most else measured >= limit
    if ok:
        return "met"
    return f"missed by {abs(measured - limit) / limit:.0%}"


def hook_kept_up(hook: dict[str, Any]) -> bool:
    answered = hook["statuses"].get("202", 0) == hook["requests"]
    return answered and hook["exactly_once"] and hook.get("drain_s", 1.0) < 0.5


def total(requests: dict[str, int]) -> int:
    return sum(requests.values())


def per_run_ratio(runs: list[dict[str, Any]]) -> float:
    """Scan wall time over its same-run storage floor, median over runs."""
    return median([r["wall_s"] / r["floor"]["wall_s"] for r in runs])


def cpu_figures(name: str, runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median CPU seconds of the scan's process, Azurite and the simulated tenant. Runs from
    before these were kept have none: 0."""
    return {
        f"{name}_{part}": median([r.get(key, 0.0) for r in runs])
        for part, key in (
            ("cpu", "cpu_s"),
            ("azurite_cpu", "azurite_cpu_s"),
            ("sim_cpu", "sim_cpu_s"),
        )
    }


def figures(results: dict[str, Any]) -> dict[str, float]:
    first, inc = results["scans"]["first"], results["scans"]["incremental"]
    large = results["large"]["first"]
    return {
        "first_wall": median([r["wall_s"] for r in first]),
        "first_floor": median([r["floor"]["wall_s"] for r in first]),
        "first_ratio": per_run_ratio(first),
        "first_rss": median([r["peak_rss_mb"] for r in first]),
        "first_req": median([total(r["requests"]) for r in first]),
        "first_min": median([r["minimum_requests"] for r in first]),
        "first_req_ratio": median([total(r["requests"]) / r["minimum_requests"] for r in first]),
        **cpu_figures("first", first),
        **cpu_figures("large", large),
        "large_wall": median([r["wall_s"] for r in large]),
        "large_floor": median([r["floor"]["wall_s"] for r in large]),
        "large_ratio": per_run_ratio(large),
        "large_rss": median([r["peak_rss_mb"] for r in large]),
        "large_req": median([total(r["requests"]) for r in large]),
        "large_min": median([r["minimum_requests"] for r in large]),
        "inc_wall": median([r["wall_s"] for r in inc]),
        "inc_req": median([total(r["requests"]) for r in inc]),
        "inc_per_new": median([total(r["requests"]) / r["new"] for r in inc]),
        "inc_min": median([r["minimum_requests"] for r in inc]),
        "inc_req_ratio": median([total(r["requests"]) / r["minimum_requests"] for r in inc]),
    }


def targets(results: dict[str, Any]) -> list[str]:
    f = figures(results)
    hook = results["webhook"]
    imp = results["import"]
    rows: list[tuple[str, float, float, bool, str]] = [
        ("first scan of 20,000: wall time", f["first_wall"], 10, True, "s"),
        (
            "first scan of 20,000 ÷ bare Table writes of its records",
            f["first_ratio"],
            1.5,
            True,
            "",
        ),
        ("first scan of 100,000 (30 days): wall time", f["large_wall"], 60, True, "s"),
        ("first scan of 100,000: peak memory", f["large_rss"], 400, True, "MB"),
        ("incremental scan, 200 new: wall time", f["inc_wall"], 2, True, "s"),
        ("incremental scan: Graph requests per new deployment", f["inc_per_new"], 0.1, True, ""),
        ("first scan: Graph requests ÷ fewest the data needs", f["first_req_ratio"], 1.1, True, ""),
        ("incremental scan: Graph requests ÷ fewest", f["inc_req_ratio"], 1.1, True, ""),
        (
            "webhook at 200 / s: p99 ÷ bare Table upserts' p99",
            hook["p99_ratio_to_upsert"],
            1.3,
            True,
            "",
        ),
        (
            "webhook: rate sustained for 60 s (every request answered 202, stored once, no "
            "backlog)",
            hook["target_rate_per_s"] if hook_kept_up(hook) else hook["achieved_rate_per_s"],
            200,
            False,
            "/ s",
        ),
        ("cold import of function_app ÷ azure.functions alone", imp["ratio"], 1.3, True, ""),
        ("weekly summary of 100,000", results["summary"]["summary_s"], 10, True, "s"),
    ]
    on = (results.get("day") or {}).get("modes", {}).get("on")
    if on:
        p95 = on["kinds"].get("etg_missing", {}).get("from_report_min", {}).get("p95")
        rows += [
            (
                "simulated day: etg_missing p95 after the row first appears in the report",
                p95 if p95 is not None else float("inf"),
                15,
                True,
                "min",
            ),
            (
                "simulated day: alerts the ground truth calls false alarms",
                on["false_alarms"],
                0,
                True,
                "",
            ),
            ("simulated day: second opening alerts", on["second_openings"], 0, True, ""),
        ]
    out = ["| target | limit | measured | |", "|---|---|---|---|"]
    for name, value, limit, at_most, unit in rows:
        sign = "<=" if at_most else ">="
        shown = f"{value:.2f}" if isinstance(value, float) and not unit else f"{value}"
        out.append(
            f"| {name} | {sign} {limit} {unit} | {shown} {unit} | "
            f"{verdict(value, limit, at_most=at_most)} |"
        )
    return out


def endpoint_table(title: str, requests: dict[str, int]) -> list[str]:
    return [
        "",
        title,
        "",
        "| endpoint | requests |",
        "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in sorted(requests.items())],
    ]


def scan_section(results: dict[str, Any]) -> list[str]:
    f = figures(results)
    first, inc = results["scans"]["first"], results["scans"]["incremental"]
    large = results["large"]["first"]
    n_first, n_inc, n_large = len(first), len(inc), len(large)
    lines = [
        "## Enrollment scan",
        "",
        "Every run has its own Azurite (fresh, in memory) and its own simulated tenant; the "
        "reference of each run, the bare cost of writing as many ~1 KB records with "
        "azure-data-tables (keyed as the scan keys them, a partition per enrollment hour; 100 "
        "upserts per transaction, 8 in flight: `bench/table_floor.py`), is measured in another "
        "fresh Azurite just before the scan. Ratios are taken per run, then the median.",
        "",
        "| run | median | runs |",
        "|---|---|---|",
        f"| first scan, {first[0]['in_report']} deployments (7 days), 100,000 ETG members, "
        f"200,000 audit events: wall time | {f['first_wall']} s | {n_first} |",
        f"| bare Table writes of {first[0]['floor']['records']} records (reference) | "
        f"{f['first_floor']} s | {n_first} |",
        f"| first scan ÷ bare writes (ratio) | {f['first_ratio']:.2f} | {n_first} |",
        f"| first scan: peak memory (RSS) | {f['first_rss']} MB | {n_first} |",
        f"| first scan: CPU of the scan, Azurite, the simulated tenant | {f['first_cpu']} s, "
        f"{f['first_azurite_cpu']} s, {f['first_sim_cpu']} s | {n_first} |",
        f"| first scan: Graph requests, fewest the data needs, ratio | {f['first_req']:.0f}, "
        f"{f['first_min']:.0f}, {f['first_req_ratio']:.2f} | {n_first} |",
        f"| first scan, {large[0]['in_report']} deployments (30 days), 500,000 ETG members, "
        f"1,000,000 audit events: wall time | {f['large_wall']} s | {n_large} |",
        f"| bare Table writes of {large[0]['floor']['records']} records (reference) | "
        f"{f['large_floor']} s | {n_large} |",
        f"| 100,000 first scan ÷ bare writes (ratio) | {f['large_ratio']:.2f} | {n_large} |",
        f"| 100,000 first scan: peak memory (RSS) | {f['large_rss']} MB | {n_large} |",
        f"| 100,000 first scan: CPU of the scan, Azurite, the simulated tenant | "
        f"{f['large_cpu']} s, {f['large_azurite_cpu']} s, {f['large_sim_cpu']} s | {n_large} |",
        f"| 100,000 first scan: Graph requests, fewest the data needs | {f['large_req']:.0f}, "
        f"{f['large_min']:.0f} | {n_large} |",
        f"| incremental scan, {inc[0]['new']} new deployments: wall time | {f['inc_wall']} s | "
        f"{n_inc} |",
        f"| incremental scan: Graph requests, per new deployment | {f['inc_req']:.0f}, "
        f"{f['inc_per_new']} | {n_inc} |",
        f"| incremental scan: fewest the data needs, ratio | {f['inc_min']:.0f}, "
        f"{f['inc_req_ratio']:.2f} | {n_inc} |",
        "",
        "Peak memory from 20,000 to 100,000 deployments: "
        f"{f['first_rss']} MB to {f['large_rss']} MB, "
        f"{(f['large_rss'] - f['first_rss']) / 80:.2f} KB per added deployment.",
        "",
        "The fewest requests the data needs (`minimum_requests` in `bench/run.py`): every listing "
        "the scan started, read at Graph's largest page size (999 or 1,000 items), the audit "
        "log's listings of several ETGs starting together in one `$batch`; every "
        "per-item look-up it made, packed 20 to a `$batch` (devices 15 ids per look-up); each "
        "report export created, polled as often as the tenant keeps it in progress and then "
        "once more, and downloaded once. The simulated tenant counts the items it served. The "
        "look-ups themselves are taken as needed, so the ratio measures the cost of fetching, "
        "not whether fewer questions would do.",
    ]
    lines += endpoint_table(
        "Graph requests of the first scan, by endpoint (first run):", first[0]["requests"]
    )
    lines += endpoint_table(
        "Graph requests of an incremental scan, by endpoint (first increment):", inc[0]["requests"]
    )
    profile = results.get("profile")
    if profile:
        lines += [
            "",
            "Where the first scan of 20,000 spends its time now (pyinstrument, one extra run "
            "outside the timed ones; `bench/profile_scan.py`):",
            "",
            "```",
            *profile["top"],
            "```",
        ]
    return lines


def transactions_section(tx: dict[str, Any] | None) -> list[str]:
    if not tx:
        return []
    rows = []
    for path, label in (
        ("sdk", "azure-data-tables `submit_transaction`"),
        ("store", "`monitors/store/transactions.submit`"),
    ):
        runs = tx[path]
        rows.append(
            f"| {label} | {median([r['wall_s'] for r in runs])} s | "
            f"{median([r['cpu_s'] for r in runs])} s | {len(runs)} |"
        )
    return [
        "",
        "## Table transactions",
        "",
        f"{tx['sdk'][0]['records']} records of about 1 KB over the hours of 7 days, 100 upserts "
        "per transaction, 8 in flight, each write in a fresh Azurite, the two paths alternating "
        "(`bench/table_floor.py --path sdk|store`).",
        "",
        "| path | wall (median) | Python CPU (median) | runs |",
        "|---|---|---|---|",
        *rows,
    ]


def graph_section(graph: dict[str, Any] | None) -> list[str]:
    if not graph:
        return []
    return [
        "",
        "## Graph $batch round trips",
        "",
        f"One `$batch` of {graph['sub_requests']} managed-device look-ups sent to the simulated "
        f"tenant without added latency, 8 in flight, {graph['requests_per_run']} per run, the "
        f"two paths alternating, {graph['runs']} runs; the client's own CPU "
        "(`bench/graph_request.py`). The scan sends its `$batch` requests the second way.",
        "",
        "| path | CPU per request (median) |",
        "|---|---|",
        f"| msgraph-sdk's request adapter, kiota's middleware, httpx over aiohttp | "
        f"{graph['sdk_cpu_ms']} ms |",
        f"| `GraphClient.post_json`, aiohttp alone | {graph['post_json_cpu_ms']} ms |",
        f"| ratio | {graph['ratio']} |",
    ]


def webhook_section(hook: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Notification webhook",
        "",
        "The HTTP function invoked with `azure.functions.HttpRequest`, Azurite behind it, one "
        "notification per request started on a fixed schedule (open loop), every tenth an exact "
        "repeat of an earlier one, as Graph retries produce (`bench/webhook_load.py`). The "
        f"reference, bare Table upserts of the inbox row offered at the same rate for as long, "
        f"and the webhook each run in a fresh process with a fresh Azurite, alternating; "
        f"{hook.get('runs', 1)} runs of each, medians.",
        "",
        "| figure | target | measured |",
        "|---|---|---|",
        f"| offered rate, open loop | 200 / s for 60 s | {hook['target_rate_per_s']:.0f} / s, "
        f"{hook['requests']} requests in all |",
        f"| served rate (slowest run) | | {hook['achieved_rate_per_s']} / s |",
        f"| last answer after the last scheduled start (worst run) | < 0.5 s | "
        f"{hook.get('drain_s')} s |",
        f"| latency p50 | | {hook['p50_ms']} ms |",
        f"| bare Table upserts at the same rate, p50 (reference) | | "
        f"{hook['reference_upsert_p50_ms']} ms |",
        f"| p50 ÷ bare upsert p50 (ratio per run, median) | | {hook['p50_ratio_to_upsert']} |",
        f"| latency p99 | | {hook['p99_ms']} ms (max {hook['max_ms']} ms) |",
        f"| bare Table upserts at the same rate, p99 (reference) | | "
        f"{hook['reference_upsert_p99_ms']} ms |",
        f"| p99 ÷ bare upsert p99 (ratio per run, median) | <= 1.3 | "
        f"{hook['p99_ratio_to_upsert']} |",
        f"| answers | 202 | {hook['statuses']} |",
        f"| recorded exactly once (every run) | yes | {'yes' if hook['exactly_once'] else 'NO'} |",
    ]


def day_section(day: dict[str, Any] | None) -> list[str]:
    if not day or not day.get("modes"):
        return []
    modes = day["modes"]
    mix = ", ".join(f"{k} {v}" for k, v in day.get("mix", {}).items())
    lines = [
        "",
        "## A simulated day: minutes from provisioning completed to the alert",
        "",
        f"{day['deployments']} deployments over {day['hours']:.0f} hours ({mix}), the monitor "
        f"running {day['tail_hours']:.0f} hours more, every job on its default schedule through "
        "`monitors.service`, the simulated tenant's report export a few minutes behind, audit "
        "events 2 to 60 minutes late, delta and change notifications within a minute "
        "(`bench/day.py`, `devtools/simtenant/day.py`). Each alert is timed when it leaves the "
        "outbox, from the event behind it (provisioning completed, or the removal) and from the "
        "first appearance of the deployment's completed row in the report. Early conclusion on, "
        "then off (the reference: today's behaviour, waiting for the audit log), on the same "
        "scenario in the same run.",
        "",
        "| kind | early conclusion | alerts | from the event: median / p95 / max (min) | "
        "from the row in the report: median / p95 / max (min) |",
        "|---|---|---|---|---|",
    ]
    for mode in ("on", "off"):
        figures_ = modes.get(mode)
        if not figures_:
            continue
        for kind, k in sorted(figures_["kinds"].items()):
            c, r = k.get("from_event_min", {}), k.get("from_report_min", {})
            lines.append(
                f"| {kind} | {mode} | {c.get('n', 0)} | "
                f"{c.get('median')} / {c.get('p95')} / {c.get('max')} | "
                f"{r.get('median')} / {r.get('p95')} / {r.get('max')} |"
            )
    lines += ["", "| figure | early on | early off (reference) |", "|---|---|---|"]
    for key, label in (
        ("false_alarms", "alerts the ground truth calls false alarms"),
        ("second_openings", "second opening alerts for one deployment"),
        ("missed", "anomalies of the ground truth never alerted"),
    ):
        lines.append(
            f"| {label} | {modes.get('on', {}).get(key)} | {modes.get('off', {}).get(key)} |"
        )
    return lines


def render(results: dict[str, Any]) -> str:
    summ = results["summary"]
    imp = results["import"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {results['machine']}. `make bench` measures every section; "
        "`python bench/run.py --only SECTION,...` measures some again and keeps the others "
        f"(below: when and how each was measured). The simulated tenant runs in its own process "
        f"and adds {LATENCY_MS} ms to every request; Azurite runs in memory. Each measured run "
        "has its own processes and its own Azurite; figures are medians.",
        "",
        "| section | measured | command |",
        "|---|---|---|",
        *[
            f"| {name} | {m['date']} | `{m['command']}` |"
            for name, m in results.get("measured", {}).items()
        ],
        "",
        "## Targets",
        "",
        *targets(results),
        "",
        "A missed target is reported as a share of the target. Azurite (Node) runs on the same "
        "two cores as the code under test, so storage-bound figures (webhook, summary, scans) "
        "carry its cost and its noise; that is why each sits beside a reference measured in "
        "the same run.",
        "",
        *scan_section(results),
        *transactions_section(results.get("transactions")),
        *graph_section(results.get("graph")),
        *strict_section(results.get("strict")),
        *webhook_section(results["webhook"]),
        "",
        "## Weekly summary",
        "",
        f"{summ['deployments']} deployments in one ISO week, read from Azurite and summarised "
        f"(`bench/summary_load.py`), median of {summ['runs']} runs.",
        "",
        "| figure | target | measured |",
        "|---|---|---|",
        f"| summary, end to end | < 10 s | {summ['summary_s']} s |",
        f"| reading the week's rows alone (reference) | | {summ['read_rows_s']} s |",
        f"| summary ÷ reading alone (ratio, per run) | close to 1 | {summ['ratio_to_read']} |",
        f"| computing alone, rows in memory | | {summ['compute_only_s']} s |",
        "",
        "## Cold import of the function app",
        "",
        "| what | median |",
        "|---|---|",
        f"| `import function_app` | {imp['function_app_s']} s |",
        f"| `import azure.functions` alone (reference) | {imp['azure_functions_s']} s |",
        f"| ratio | {imp['ratio']} |",
        *day_section(results.get("day")),
        *fanout_section(results.get("fanout")),
        "",
        HISTORY.read_text().rstrip() if HISTORY.exists() else "",
        "",
        "Raw results of every run: `docs/benchmarks.json`.",
        "",
    ]
    return "\n".join(lines)


def fanout_section(fan: dict[str, Any] | None) -> list[str]:
    """Many tenants on the job queue (`bench/fanout.py`): timer to the last tenant's verdicts
    with 1, 2 and 4 workers, beside the same scans run one after the other."""
    if not fan:
        return []
    host, n = fan["host"], fan["tenants"]
    seq = fan["sequential"]
    reference = median([r["wall_s"] for r in seq])
    rows = [
        f"| the same {n} scans one after the other, no queue (reference) | {reference} s | "
        f"1.00 | {median([r['scan_s_median'] for r in seq])} s | {len(seq)} |"
    ]
    runs_all = [r for runs in fan["fanout"].values() for r in runs]
    for workers, runs in sorted(fan["fanout"].items(), key=lambda item: int(item[0])):
        wall = median([r["wall_s"] for r in runs])
        rows.append(
            f"| {workers} worker{'s' if workers != '1' else ''} | {wall} s | "
            f"{wall / reference:.2f} | {median([r['scan_s_median'] for r in runs])} s | "
            f"{len(runs)} |"
        )
    complete = all(r["outcomes"] == {"ok": n} and r["scans"] == n for r in runs_all)
    complete = complete and all(r["outcomes"] == {"ok": n} for r in seq)
    retried = sum(r["failed_tries"] for r in runs_all)
    return [
        "",
        "## Fan-out of many tenants",
        "",
        f"{n} simulated tenants of {fan['deployments_per_tenant']} deployments each, each its "
        f"own simulator process adding {fan['latency_ms']} ms to every request "
        f"({fan['sim_processes']} processes, {fan['sim_rss_mb']} MB resident in all, started in "
        f"{fan['sim_start_s']} s, before any timing), registered in the tenant registry; a "
        "fresh Azurite with its Queue service for every run (`bench/fanout.py`). Timed from "
        "the scan timer firing (one message per tenant enqueued) to the last tenant's verdicts, "
        "each tenant's scan run record checked afterwards. A worker is one process standing "
        "for one Functions instance: warm before the timer fires, taking messages as the host "
        f"does with host.json's batchSize {host['batchSize']} and newBatchThreshold "
        f"{host['newBatchThreshold']} (at most {host['batchSize'] + host['newBatchThreshold']} "
        "at once), running the queue function's body; it polls an empty queue every 0.1 s "
        "where the host backs off up to maxPollingInterval. The reference is the same data "
        "without the queue: every tenant's scan in turn in one warm process, with its own "
        "fresh Azurite. Medians.",
        "",
        "| run | timer to the last tenant's verdicts | ÷ reference | one tenant's scan "
        "(median) | runs |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Every tenant's scan recorded `ok` in every run: {'yes' if complete else 'NO'}. "
        f"Failed tries, run again from the queue after host.json's visibilityTimeout: "
        f"{retried} in all. Enqueueing the {n} messages took "
        f"{median([r['enqueue_s'] for r in runs_all])} s (median). The whole section took "
        f"{fan['bench_s']} s"
        + (
            ": one run of each, to keep it near ten minutes (`python bench/fanout.py --runs 3` "
            "for medians)."
            if len(seq) == 1
            else "."
        ),
    ]


def strict_section(strict: dict[str, Any] | None) -> list[str]:
    if not strict:
        return []
    reasons = ", ".join(f"{k} {v}" for k, v in strict["unverified_by_reason"].items()) or "none"
    expected = ", ".join(f"{k} {v}" for k, v in strict["unverified_expected"].items()) or "none"
    return [
        "",
        "## Strict tenant: right where Graph is strict",
        "",
        "The tenant of `devtools/simtenant/strict.py` (26 ETG policies, profile names missing "
        "from list answers and unstamped on some devices, unrouted ETG actions, wrapped single "
        "objects, "
        "v1.0 owner lists without service principals, one ETG out of the monitor's scope), "
        "judged against its ground truth by `bench/strict_tenant.py`.",
        "",
        "| figure | required | measured |",
        "|---|---|---|",
        f"| anomalies found | {strict['required']} | {strict['found']} |",
        f"| false alarms | 0 | {len(strict['false_alarms'])} |",
        f"| unverified deployments by reason (of {strict['deployments']}) | {expected} | "
        f"{reasons} |",
        f"| Graph requests of the scan | | {strict['scan_requests']} |",
    ]


SECTIONS = (
    "scans",
    "large",
    "profile",
    "transactions",
    "graph",
    "webhook",
    "summary",
    "import",
    "strict",
    "day",
    "fanout",
)


def measure(section: str, args: argparse.Namespace) -> Any:
    if section == "scans":
        return bench_scans(args.deployments, args.runs, args.increments, args.new)
    if section == "large":
        return bench_large(args.large, args.large_runs)
    if section == "transactions":
        return bench_transactions(args.deployments, 3)
    if section == "profile":
        return bench_script("profile_scan.py", "--deployments", str(args.deployments))
    if section == "graph":
        return bench_script("graph_request.py")
    if section == "webhook":
        return bench_script("webhook_load.py", "--rate", "200", "--seconds", "60")
    if section == "summary":
        return bench_script("summary_load.py", "--deployments", "100000")
    if section == "import":
        return bench_import(7)
    if section == "strict":
        return bench_script("strict_tenant.py")
    if section == "fanout":
        return bench_script("fanout.py", "--tenants", "50", "--deployments", "2000")
    return bench_script("day.py", "--early", "both")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployments", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="first scans (fresh tenants)")
    parser.add_argument("--increments", type=int, default=3, help="incremental scans per run")
    parser.add_argument("--new", type=int, default=200, help="new deployments per increment")
    parser.add_argument("--large", type=int, default=100000, help="deployments of the large tenant")
    parser.add_argument("--large-runs", type=int, default=3)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections to measure again (" + ", ".join(SECTIONS) + "); the "
        "others are kept from docs/benchmarks.json",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    out = Path(args.out)
    wanted = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)}")
    command = (
        "make bench" if sys.argv[1:] == [] else "python bench/run.py " + " ".join(sys.argv[1:])
    )
    kept: dict[str, Any] = {}
    if args.only and out.with_suffix(".json").exists():
        kept = json.loads(out.with_suffix(".json").read_text())
    results: dict[str, Any] = {"machine": machine(), "measured": kept.get("measured", {})}
    results.update({k: v for k, v in kept.items() if k in SECTIONS})
    out.parent.mkdir(parents=True, exist_ok=True)
    for section in wanted:
        results[section] = measure(section, args)
        results["measured"][section] = {"date": time.strftime("%Y-%m-%d"), "command": command}
        # Kept as each section ends: a later section failing loses none measured before it.
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    missing = [s for s in SECTIONS if s not in results]
    if missing:
        print(
            f"kept in {out.with_suffix('.json')}; {out.name} is written once these are "
            f"measured too: {', '.join(missing)}"
        )
        return 0
    out.write_text(render(results))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
