"""The function app's wiring: which triggers exist, on what schedule, route and auth level."""

import subprocess
import sys
import textwrap
from pathlib import Path

import azure.functions as func
import pytest

import function_app
from tests.helpers import app_functions, trigger_of

ROOT = Path(__file__).resolve().parents[1]
TIMERS = {
    "config_check": "CONFIG_CHECK_SCHEDULE",
    "scan": "SCAN_SCHEDULE",
    "alerts": "ALERTS_SCHEDULE",
    "weekly_summary": "SUMMARY_SCHEDULE",
    "subscriptions": "SUBSCRIPTIONS_SCHEDULE",
    "notifications": "NOTIFICATIONS_SCHEDULE",
}
ROUTES = {
    "health": ("health", ["GET"]),
    "weekly_report": ("reports/weekly", ["GET"]),
    "rollup_report": ("reports/rollup", ["GET"]),
    "graph_notifications": ("graph/notifications", ["POST"]),
}
# Queue triggers: one registry tenant's job per message, and its poison queue.
QUEUES = {"tenant_job": "%ETG_JOB_QUEUE%", "tenant_job_poison": "%ETG_JOB_QUEUE%-poison"}
# Anonymous for the host: App Service Authentication signs operators in before the app.
CONSOLE_ROUTES = {
    "console_anomalies": ("console/anomalies", ["GET"]),
    "console_anomaly": ("console/anomalies/{id}", ["GET"]),
    "console_acknowledge": ("console/anomalies/{id}/acknowledge", ["POST"]),
    "console_suppress": ("console/anomalies/{id}/suppress", ["POST"]),
}


def test_app_declares_exactly_the_documented_functions():
    assert set(app_functions()) == set(TIMERS) | set(ROUTES) | set(CONSOLE_ROUTES) | set(QUEUES)


def test_queue_functions_read_the_job_queue_and_its_poison_queue():
    for name, queue in QUEUES.items():
        trigger = trigger_of(name)
        assert trigger["type"] == "queueTrigger"
        assert trigger["queueName"] == queue
        assert trigger["connection"] == "AzureWebJobsStorage"


@pytest.mark.parametrize("name", sorted(CONSOLE_ROUTES))
def test_console_routes_need_no_function_key_and_change_state_only_by_post(name):
    trigger = trigger_of(name)
    assert trigger["type"] == "httpTrigger"
    assert (trigger["route"], trigger["methods"]) == CONSOLE_ROUTES[name]
    assert trigger["authLevel"] == "ANONYMOUS"


@pytest.mark.parametrize("name,setting", sorted(TIMERS.items()))
def test_timers_take_their_schedule_from_a_documented_setting_and_never_run_on_startup(
    name, setting
):
    from monitors.settings import SCHEDULE_SETTINGS

    trigger = trigger_of(name)
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == f"%{setting}%"
    assert setting in SCHEDULE_SETTINGS
    assert trigger.get("runOnStartup", False) is False


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_routes_answer_only_their_methods_and_only_with_a_function_key(name):
    trigger = trigger_of(name)
    assert trigger["type"] == "httpTrigger"
    assert (trigger["route"], trigger["methods"]) == ROUTES[name]
    assert trigger["authLevel"] == "FUNCTION"


def test_app_default_auth_level_is_function_so_new_routes_are_never_anonymous():
    assert function_app.app.auth_level == func.AuthLevel.FUNCTION


def test_import_does_no_network_io_and_loads_no_heavy_clients():
    # Sockets are made to explode; importing must still succeed, quickly, with Graph and
    # Table clients left unloaded until a function actually runs.
    probe = textwrap.dedent("""
        import socket, sys, time
        def refuse(*a, **k):
            raise RuntimeError("network used at import time")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        start = time.perf_counter()
        import function_app
        elapsed = time.perf_counter() - start
        heavy = [m for m in ("msgraph", "azure.data.tables", "azure.identity", "httpx")
                 if m in sys.modules]
        print(elapsed, ",".join(heavy))
    """)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    elapsed, heavy = (
        out.stdout.strip().split(" ", 1) if " " in out.stdout.strip() else (out.stdout.strip(), "")
    )
    assert heavy == ""
    assert float(elapsed) < 2.0
