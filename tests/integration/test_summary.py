"""The weekly summary from real scan state, its HTTP route, its Teams card, and its rendering."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitors import service
from monitors.jobs.summary import keep_summary, stored_summary
from monitors.store.runs import RunRepository
from monitors.summary.compute import IsoWeek
from monitors.summary.html import render_html
from tests.helpers import (
    GROUND_TRUTH,
    browser_missing,
    call_route,
    in_store,
    outbox,
    run_timer,
    scan,
    system_chromium,
)

pytestmark = pytest.mark.integration
# The demo scenario's deployments all enrol in this week.
WEEK = IsoWeek(2026, 47)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def scanned(settings, tenant):
    scan(settings, tenant)
    tenant.clock.advance(2 * 3600)
    scan(settings, tenant)


def summarize(settings, tenant, week=WEEK):
    return in_store(settings, lambda store: keep_summary(store, week, tenant.clock.now()))


def ground_truth_figures(scenario):
    """WEEK's figures as the demo scenario defines them: each device's deployment outcome, and
    for the ETG of each deployment that succeeded its ground-truth anomaly (late or missing),
    no ETG when its policy has none, on time otherwise."""
    in_week = [d for d in scenario.devices if WEEK.start <= d.enrolled_at < WEEK.end]
    outcomes = Counter(d.deployment.outcome for d in in_week)
    succeeded = {d.device_name: d for d in in_week if d.deployment.outcome == "success"}
    anomalies = Counter(kind for kind, name in GROUND_TRUTH if name in succeeded)
    without_etg = {p.id for p in scenario.policies if p.etg_group_id is None}
    no_etg = sum(d.policy_id in without_etg for d in succeeded.values())
    late, missing = anomalies["etg_late"], anomalies["etg_missing"]
    on_time = len(succeeded) - late - missing - no_etg
    return {
        "deployments": {
            "total": len(in_week),
            "success": outcomes["success"],
            "failed": outcomes["failed"],
            "in_progress": outcomes["in_progress"],
            "unknown": 0,
        },
        "etg": {"on_time": on_time, "late": late, "missing": missing, "no_etg": no_etg},
        "rate": round(on_time / len(succeeded), 4),
        "opened": Counter(kind for kind, name in GROUND_TRUTH),
    }


@pytest.fixture
def demo_summary(scan_settings, tenant):
    scanned(scan_settings, tenant)
    return summarize(scan_settings, tenant)


def test_summary_figures_are_the_demo_scenarios_ground_truth(demo_summary, scenario):
    truth = ground_truth_figures(scenario)
    assert truth["deployments"]["total"] == len(scenario.devices)  # the week holds them all
    assert demo_summary["deployments"] == truth["deployments"]
    c = demo_summary["compliance"]
    assert {k: c[k] for k in truth["etg"]} == truth["etg"]
    assert c["rate"] == truth["rate"]
    assert demo_summary["lead_time_minutes"]["count"] == truth["etg"]["on_time"]
    opened = demo_summary["anomalies_opened"]["by_kind"]
    assert {k: opened.get(k, 0) for k in truth["opened"]} == truth["opened"]


def test_summary_is_kept_and_feeds_the_next_weeks_trend(scan_settings, tenant, demo_summary):
    later = summarize(scan_settings, tenant, IsoWeek(2026, 48))
    assert later["trend"][-2] == {"week": "2026-W47", "rate": demo_summary["compliance"]["rate"]}


def test_weekly_timer_queues_one_card_however_often_it_runs(alert_settings, tenant):
    scanned(alert_settings, tenant)
    tenant.clock.set(WEEK.end + timedelta(hours=7))  # the Monday after: WEEK is complete
    first = asyncio.run(service.weekly_summary(alert_settings, clock=tenant.clock))
    asyncio.run(service.weekly_summary(alert_settings, clock=tenant.clock))
    assert first.report is not None and first.report["week"] == str(WEEK)
    assert len([i for i in outbox(alert_settings) if i.change == "summary"]) == 1
    cards = [m.card for m in tenant.teams_messages() if "ETG compliance" in str(m.card)]
    assert len(cards) == 1 and cards[0]["body"][0]["text"] == f"ETG compliance, week {WEEK}"


def get_report(week):
    params = {"week": week} if week is not None else {}
    return call_route("weekly_report", "GET", "reports/weekly", params=params)


def test_report_route_serves_html_for_a_week(app_env, tenant):
    scanned(app_env, tenant)
    response = get_report(str(WEEK))
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert f"ETG compliance, week {WEEK}" in response.get_body().decode()


@pytest.mark.parametrize("week", ["2026-47", "2026-W99", "<script>", "9999-W01"])
def test_report_route_rejects_bad_weeks_with_a_short_reason(app_env, week):
    response = get_report(week)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert "<script>" not in response.get_body().decode()


def test_weekly_summary_timer_keeps_the_last_complete_week_queues_its_card_once_and_records_it(
    app_env,
):
    # The timer runs on the real clock: the week is the one before today's.
    weeks = {str(IsoWeek.last_complete(datetime.now(UTC)))}
    run_timer("weekly_summary")
    run_timer("weekly_summary")
    weeks.add(str(IsoWeek.last_complete(datetime.now(UTC))))

    async def read(store):
        run = (await RunRepository(store).all())["weekly_summary"]
        week = IsoWeek.parse(run.summary["week"])
        return week, await stored_summary(store, week), run

    week, kept, run = in_store(app_env, read)
    assert str(week) in weeks  # the same week, unless the two runs straddled a Monday
    assert kept is not None and kept["week"] == str(week)
    assert run.last_outcome == "ok" and run.last_success is not None
    cards = [i for i in outbox(app_env) if i.change == "summary"]
    assert [i.payload["title"] for i in cards] == [f"weekly summary {week}"]


def test_html_report_renders_in_chromium_with_headline_figures_visible(demo_summary, tmp_path):
    if system_chromium() is None or shutil.which("pdftotext") is None:
        browser_missing(
            "needs Debian packages chromium and poppler-utils (.ci/run installs them; "
            "`apt-get install chromium poppler-utils` to run it locally)"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    page = tmp_path / "weekly.html"
    page.write_text(render_html(demo_summary), encoding="utf-8")
    screenshot = ARTIFACTS / "weekly-report.png"
    pdf = ARTIFACTS / "weekly-report.pdf"
    flags = [
        system_chromium(),
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
