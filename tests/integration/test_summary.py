"""The weekly summary from real scan state, its HTTP route, its Teams card, and its rendering."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from monitors.jobs.context import open_context, open_store
from monitors.jobs.dispatch import dispatch_alerts
from monitors.jobs.scan import run_scan
from monitors.jobs.summary import weekly_summary
from monitors.store.outbox import OutboxRepository
from monitors.summary.compute import IsoWeek
from monitors.summary.html import render_html
from tests.helpers import user_function

pytestmark = pytest.mark.integration
WEEK = IsoWeek(2026, 47)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def scanned(settings, tenant):
    async def go():
        async with open_context(settings, clock=tenant.clock) as ctx:
            await run_scan(ctx)

    asyncio.run(go())
    tenant.clock.advance(2 * 3600)
    asyncio.run(go())


def summarize(settings, tenant, queue_card=False):
    async def go():
        async with open_store(settings) as store:
            return await weekly_summary(store, WEEK, tenant.clock.now(), queue_card=queue_card)

    return asyncio.run(go())


@pytest.fixture
def demo_summary(settings, tenant):
    scanned(settings, tenant)
    return summarize(settings, tenant)


def test_summary_figures_match_the_demo_ground_truth(demo_summary):
    d, c = demo_summary["deployments"], demo_summary["compliance"]
    assert d == {"total": 36, "success": 33, "failed": 2, "in_progress": 1, "unknown": 0}
    assert (c["on_time"], c["late"], c["missing"], c["no_etg"]) == (25, 1, 5, 2)
    assert c["rate"] == round(25 / 33, 4)
    assert demo_summary["lead_time_minutes"]["count"] == 25
    assert demo_summary["anomalies_opened"]["by_kind"]["etg_missing"] == 5


def test_summary_is_kept_and_feeds_the_next_weeks_trend(settings, tenant, demo_summary):
    async def next_week():
        async with open_store(settings) as store:
            return await weekly_summary(
                store, IsoWeek(2026, 48), tenant.clock.now(), queue_card=False
            )

    later = asyncio.run(next_week())
    assert later["trend"][-2] == {"week": "2026-W47", "rate": demo_summary["compliance"]["rate"]}


def test_weekly_timer_queues_one_card_however_often_it_runs(settings, tenant, monkeypatch):
    scanned(settings, tenant)
    alert_settings = dataclasses.replace(settings, teams_webhook_url=tenant.teams_url)
    summarize(alert_settings, tenant, queue_card=True)
    summarize(alert_settings, tenant, queue_card=True)

    async def sent():
        async with open_store(alert_settings) as store:
            items = [i for i in await OutboxRepository(store).items() if i.change == "summary"]
            await dispatch_alerts(store, alert_settings, tenant.clock.now())
            return items

    assert len(asyncio.run(sent())) == 1
    cards = [m.card for m in tenant.teams_messages() if "ETG compliance" in str(m.card)]
    assert len(cards) == 1 and cards[0]["body"][0]["text"] == "ETG compliance, week 2026-W47"


def get_report(week):
    params = {"week": week} if week is not None else {}
    request = func.HttpRequest("GET", "/api/reports/weekly", params=params, body=b"")
    return asyncio.run(user_function("weekly_report")(request))


def test_report_route_serves_html_for_a_week(app_env, tenant):
    scanned(app_env, tenant)
    response = get_report("2026-W47")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "ETG compliance, week 2026-W47" in response.get_body().decode()


@pytest.mark.parametrize("week", ["2026-47", "2026-W99", "<script>", "9999-W01"])
def test_report_route_rejects_bad_weeks_with_a_short_reason(app_env, week):
    response = get_report(week)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert "<script>" not in response.get_body().decode()


def test_weekly_summary_timer_runs_end_to_end(app_env):
    asyncio.run(user_function("weekly_summary")(TimerRequest(past_due=False)))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_renders_in_chromium_with_headline_figures_visible(demo_summary, tmp_path):
    if _chromium() is None or shutil.which("pdftotext") is None:
        reason = (
            "needs Debian packages chromium and poppler-utils (.ci/run installs them; "
            "`apt-get install chromium poppler-utils` to run it locally)"
        )
        if os.environ.get("ETG_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    ARTIFACTS.mkdir(exist_ok=True)
    page = tmp_path / "weekly.html"
    page.write_text(render_html(demo_summary), encoding="utf-8")
    screenshot = ARTIFACTS / "weekly-report.png"
    pdf = ARTIFACTS / "weekly-report.pdf"
    flags = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,1600",
    ]
    for extra in (
        [f"--screenshot={screenshot}"],
        [f"--print-to-pdf={pdf}", "--no-pdf-header-footer"],
    ):
        subprocess.run(
            [*flags, *extra, page.as_uri()], check=True, capture_output=True, timeout=120
        )
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    # Text that survives printing is text a reader can see.
    printed = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    rate = f"{demo_summary['compliance']['rate'] * 100:.1f}%"
    assert rate in printed
    assert "ETG compliance, week 2026-W47" in printed
    assert f"{demo_summary['deployments']['total']}" in printed
    (ARTIFACTS / "weekly-report.json").write_text(json.dumps(demo_summary, indent=1))
