"""Where a first scan spends its time: one scan of the scale tenant under pyinstrument, outside
the timed runs (a profiler slows what it watches). Prints one JSON line whose ``top`` holds the
profile's lines that carry at least 2% of the time.

    python bench/profile_scan.py --deployments 20000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import LATENCY_MS, Sim

from devtools.simtenant.azurite import Azurite

SHARE = 0.02
_TIME = re.compile(r"^[\s│├└─]*(\d+\.\d+)\s")


def top_lines(text: str) -> list[str]:
    """The call tree's lines worth reading: at least SHARE of the root's time."""
    lines = [line.rstrip() for line in text.splitlines()]
    tree = [line for line in lines if _TIME.match(line)]
    if not tree:
        return lines[:40]
    match = _TIME.match(tree[0])
    root = float(match.group(1)) if match else 0.0
    out = []
    for line in tree:
        found = _TIME.match(line)
        if found and float(found.group(1)) >= SHARE * root:
            out.append(line)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployments", type=int, default=20000)
    args = parser.parse_args()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        sim = Sim(f"scale:{args.deployments}", LATENCY_MS)
        try:
            env = {
                **os.environ,
                "ETG_GRAPH_ENDPOINT": sim.base_url,
                "ETG_GRAPH_CREDENTIAL": "none",
                "ETG_STORAGE_CONNECTION": azurite.connection_string,
                "ETG_TABLE_PREFIX": "p" + uuid.uuid4().hex[:10],
                "ETG_LOG_FORMAT": "json",
            }
            report = Path(tmp) / "profile.txt"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pyinstrument",
                    "--renderer",
                    "text",
                    "--no-color",
                    "--outfile",
                    str(report),
                    str(ROOT / "bench" / "scan_worker.py"),
                ],
                env=env,
                capture_output=True,
                check=True,
                timeout=900,
                cwd=ROOT,
            )
            text = report.read_text()
        finally:
            sim.close()
    print(json.dumps({"deployments": args.deployments, "top": top_lines(text)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
