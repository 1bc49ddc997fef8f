from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serve_prints_its_urls_and_stops_on_sigterm() -> None:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.simtenant",
            "serve",
            "--scenario",
            "demo",
            "--port",
            "0",
            "--latency-ms",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        urls = json.loads(process.stdout.readline())
        assert urls["base_url"].startswith("http://127.0.0.1:")
        assert "sig=" in urls["teams_url"]
        response = httpx.get(
            f"{urls['base_url']}/beta/deviceManagement/configurationPolicies", timeout=10
        )
        assert response.status_code == 200 and response.json()["value"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
