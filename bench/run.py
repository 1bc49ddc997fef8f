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


def minimum_requests(served: dict[str, int], lists: dict[str, dict[str, int]]) -> int:
    """The fewest Graph requests that could have fetched the data this scan needed.

    Every listing the scan started, read at Graph's largest page size; every per-item look-up
    it made, packed as densely as Graph allows; each report export created, polled once and
    downloaded once. The look-ups themselves are taken as needed: this measures the cost of
    fetching, not whether a smarter algorithm could ask fewer questions.
    """
    total = 3 * served.get("exportJobs.create", 0)
    for name, page in PAGE_MAX.items():
        if name in lists:
            got = lists[name]
            total += max(got["listings"], -(-got["items"] // page))
    lookups = 0
    for name, per_request in BATCHABLE.items():
        if name == "devices.list" and name in lists:
            lookups += -(-lists[name]["items"] // per_request)
        elif name != "devices.list":
            lookups += served.get(name, 0)
    return total + -(-lookups // 20)


def scan(sim: Sim, connection: str, prefix: str) -> dict[str, Any]:
    sim.control("stats/reset")
    env = {
        **os.environ,
        "ETG_GRAPH_ENDPOINT": sim.base_url,
        "ETG_GRAPH_CREDENTIAL": "none",
        "ETG_STORAGE_CONNECTION": connection,
        "ETG_TABLE_PREFIX": prefix,
        "ETG_LOG_FORMAT": "json",
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
    served, lists = sim.get("stats"), sim.get("stats/lists")
    result["sim_served"] = served
    result["minimum_requests"] = minimum_requests(served, lists)
    return result


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def bench_scans(
    deployments: int, runs: int, increments: int, new_per_increment: int
) -> dict[str, Any]:
    first: list[dict[str, Any]] = []
    incremental: list[dict[str, Any]] = []
    with Azurite() as azurite:
        for _ in range(runs):
            sim = Sim(f"scale:{deployments}", LATENCY_MS)
            try:
                prefix = "b" + uuid.uuid4().hex[:10]
                first.append(scan(sim, azurite.connection_string, prefix))
                for _ in range(increments):
                    sim.control("clock", {"advance_s": 600})
                    sim.control("deployments", {"count": new_per_increment})
                    # Let them finish provisioning and their audit events settle.
                    sim.control("clock", {"advance_s": 2 * 3600})
                    result = scan(sim, azurite.connection_string, prefix)
                    result["new"] = new_per_increment
                    incremental.append(result)
            finally:
                sim.close()
    return {"first": first, "incremental": incremental}


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
    return json.loads(out.stdout.strip().splitlines()[-1])


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


def targets(results: dict[str, Any]) -> list[str]:
    first = results["scans"]["first"]
    inc = results["scans"]["incremental"]
    hook = results["webhook"]
    rows = [
        ("first scan, wall time", median([r["wall_s"] for r in first]), 60, True, "s"),
        ("first scan, peak memory", median([r["peak_rss_mb"] for r in first]), 400, True, "MB"),
        ("incremental scan, wall time", median([r["wall_s"] for r in inc]), 5, True, "s"),
        (
            "incremental scan, requests per new deployment",
            median([sum(r["requests"].values()) / r["new"] for r in inc]),
            0.1,
            True,
            "",
        ),
        (
            "webhook, rate sustained for 60 s (offered, when every request was answered 202 "
            "and no backlog was left)",
            hook["target_rate_per_s"] if hook_kept_up(hook) else hook["achieved_rate_per_s"],
            200,
            False,
            "/ s",
        ),
        ("webhook, p99 latency", hook["p99_ms"], 100, True, "ms"),
        ("weekly summary of 100,000", results["summary"]["summary_s"], 10, True, "s"),
        ("cold import of function_app", results["import"]["function_app_s"], 2, True, "s"),
    ]
    out = ["| target | limit | measured | |", "|---|---|---|---|"]
    for name, value, limit, at_most, unit in rows:
        sign = "<=" if at_most else ">="
        out.append(
            f"| {name} | {sign} {limit} {unit} | {value} {unit} | "
            f"{verdict(value, limit, at_most=at_most)} |"
        )
    return out


def render(results: dict[str, Any], command: str) -> str:
    first = results["scans"]["first"]
    inc = results["scans"]["incremental"]
    f_wall = median([r["wall_s"] for r in first])
    f_rss = median([r["peak_rss_mb"] for r in first])
    f_req = median([sum(r["requests"].values()) for r in first])
    i_wall = median([r["wall_s"] for r in inc])
    i_req = median([sum(r["requests"].values()) for r in inc])
    i_per = median([sum(r["requests"].values()) / r["new"] for r in inc])
    f_min = median([r["minimum_requests"] for r in first])
    f_ratio = median([sum(r["requests"].values()) / r["minimum_requests"] for r in first])
    i_min = median([r["minimum_requests"] for r in inc])
    i_ratio = median([sum(r["requests"].values()) / r["minimum_requests"] for r in inc])
    imp = results["import"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {results['date']} on {results['machine']}.",
        f"Command: `{command}`. The simulated tenant runs in its own process and adds "
        f"{LATENCY_MS} ms to every request; Azurite runs in memory. Each scan runs in a fresh "
        "process; figures are medians.",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
        "A missed target is reported as a share of the target. The webhook counts as sustaining "
        "its offered rate when every request was answered 202, each notification was stored "
        "once, and the last answer came less than half a second after the last request "
        "started (no backlog). Azurite (Node) runs on the same two "
        "cores as the code under test, so storage-bound figures (webhook, summary, scans) carry "
        "its cost and its noise: it pauses for 50 to 100 ms every two seconds or so, and bare "
        "upserts offered at the webhook's rate show much of the webhook's tail (the reference "
        "rows below).",
        "",
        "## Enrollment scan",
        "",
        "| run | target | median | runs |",
        "|---|---|---|---|",
        f"| first scan, {first[0]['in_report']} deployments in the window, 100,000 ETG members, "
        f"200,000 audit events: wall time | < 60 s | {f_wall} s | {len(first)} |",
        f"| first scan: peak memory (RSS) | < 400 MB | {f_rss} MB | {len(first)} |",
        f"| first scan: Graph requests | | {f_req:.0f} | {len(first)} |",
        f"| first scan: fewest requests the data needs (reference) | | {f_min:.0f} | "
        f"{len(first)} |",
        f"| first scan: requests ÷ fewest (ratio) | close to 1 | {f_ratio:.2f} | {len(first)} |",
        f"| incremental scan, {inc[0]['new']} new deployments: wall time | < 5 s | {i_wall} s | "
        f"{len(inc)} |",
        f"| incremental scan: Graph requests per new deployment | <= 0.1 | {i_per} "
        f"({i_req:.0f} requests) | {len(inc)} |",
        f"| incremental scan: requests ÷ fewest the data needs ({i_min:.0f}) | close to 1 | "
        f"{i_ratio:.2f} | {len(inc)} |",
        "",
        "The fewest requests the data needs (`minimum_requests` in `bench/run.py`): every listing "
        "the scan started, read at Graph's largest page size (999 or 1,000 items); every "
        "per-item look-up it made, packed 20 to a `$batch` (devices 15 ids per look-up); each "
        "report export created, polled once and downloaded once. The simulated tenant counts "
        "the items it served. The look-ups themselves are taken as needed, so the ratio "
        "measures the cost of fetching, not whether fewer questions would do.",
        "",
        "Graph requests of the first scan, by endpoint (first run):",
        "",
        "| endpoint | requests |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(first[0]["requests"].items())]
    lines += [
        "",
        "Graph requests of an incremental scan, by endpoint (first increment):",
        "",
        "| endpoint | requests |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(inc[0]["requests"].items())]
    hook = results["webhook"]
    summ = results["summary"]
    lines += strict_section(results.get("strict"))
    lines += [
        "",
        "## Notification webhook",
        "",
        "The HTTP function invoked with `azure.functions.HttpRequest`, Azurite behind it, one "
        "notification per request started on a fixed schedule (open loop), every tenth an exact "
        "repeat of an earlier one, as Graph retries produce (`bench/webhook_load.py`).",
        "",
        "| figure | target | measured |",
        "|---|---|---|",
        f"| offered rate, open loop | 200 / s for 60 s | {hook['target_rate_per_s']:.0f} / s, "
        f"{hook['requests']} requests |",
        f"| served rate (all answered, last one included) | | "
        f"{hook['achieved_rate_per_s']} / s over {hook['seconds']} s |",
        f"| last answer after the last scheduled start (backlog) | < 0.5 s | "
        f"{hook.get('drain_s')} s |",
        f"| latency p50 | | {hook['p50_ms']} ms |",
        f"| bare Table upserts at the same rate, p50 (reference) | | "
        f"{hook['reference_upsert_p50_ms']} ms |",
        f"| p50 ÷ bare upsert p50 (ratio) | | {hook['p50_ratio_to_upsert']} |",
        f"| latency p99 | < 100 ms | {hook['p99_ms']} ms (max {hook['max_ms']} ms) |",
        f"| bare Table upserts at the same rate, p99 (reference) | | "
        f"{hook['reference_upsert_p99_ms']} ms |",
        f"| p99 ÷ bare upsert p99 (ratio) | | {hook['p99_ratio_to_upsert']} |",
        f"| answers | 202 | {hook['statuses']} |",
        f"| recorded exactly once | yes | {'yes' if hook['exactly_once'] else 'NO'}: "
        f"{hook['stored_in_inbox']} stored for {hook['unique_notifications']} distinct |",
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
        "",
        "Raw results of every run: `docs/benchmarks.json`.",
        "",
    ]
    return "\n".join(lines)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployments", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="first scans (fresh tenants)")
    parser.add_argument("--increments", type=int, default=3, help="incremental scans per run")
    parser.add_argument("--new", type=int, default=200, help="new deployments per increment")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    command = (
        "make bench" if sys.argv[1:] == [] else "python bench/run.py " + " ".join(sys.argv[1:])
    )
    started = time.strftime("%Y-%m-%d")
    results = {
        "date": started,
        "machine": machine(),
        "scans": bench_scans(args.deployments, args.runs, args.increments, args.new),
        "webhook": bench_script("webhook_load.py", "--rate", "200", "--seconds", "60"),
        "summary": bench_script("summary_load.py", "--deployments", "100000"),
        "import": bench_import(7),
        "strict": bench_script("strict_tenant.py"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, command))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
