"""Weekly figures against data whose answers are known by construction."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from monitors.models import Anomaly, Scope, Status, Subject
from monitors.rules.suppression import Suppression, SuppressionScope
from monitors.store.scan_state import DeploymentRow
from monitors.summary.card import sparkline, summary_card
from monitors.summary.compute import IsoWeek, compute_summary
from monitors.summary.html import render_html, trend_svg

WEEK = IsoWeek(2026, 47)  # Monday 2026-11-16 to Monday 2026-11-23
NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


def rows():
    out = []
    start = WEEK.start + timedelta(hours=1)
    for i in range(100):  # 90 on time, joined i % 10 + 1 minutes before completion
        enrolled = start + timedelta(minutes=i)
        completed = enrolled + timedelta(minutes=30)
        if i < 90:
            out.append(
                DeploymentRow(
                    f"k{i}",
                    enrolled,
                    "success",
                    "on_time",
                    "Standard",
                    completed - timedelta(minutes=i % 10 + 1),
                    completed,
                )
            )
        elif i < 95:
            out.append(
                DeploymentRow(
                    f"k{i}",
                    enrolled,
                    "success",
                    "late",
                    "Standard",
                    completed + timedelta(minutes=5),
                    completed,
                )
            )
        elif i < 98:
            out.append(
                DeploymentRow(f"k{i}", enrolled, "success", "missing", "Finance", None, completed)
            )
        else:
            out.append(DeploymentRow(f"k{i}", enrolled, "failed", "failed", "Finance"))
    out.append(DeploymentRow("unverified", start, "success", "unverified", "Standard"))
    out.append(DeploymentRow("running", start, "in_progress", "in_progress", "Standard"))
    # Outside the week: must not count.
    out.append(
        DeploymentRow("before", WEEK.start - timedelta(seconds=1), "success", "missing", "X")
    )
    out.append(DeploymentRow("after", WEEK.end, "success", "missing", "X"))
    return out


def anomaly(
    kind, first_seen, status=Status.OPEN, resolved_at=None, scope=Scope.DEVICE, policy="Standard"
):
    return Anomaly(
        kind,
        Subject(scope, policy_id="p", policy_name=policy, device_name="PC"),
        status,
        first_seen,
        first_seen,
        "x",
        "y",
        {},
        resolved_at=resolved_at,
    )


def summary():
    t = WEEK.start + timedelta(days=2)
    anomalies = [
        anomaly("etg_missing", t),
        anomaly("etg_missing", t + timedelta(hours=1)),
        anomaly("etg_late", t, Status.RESOLVED, resolved_at=t + timedelta(days=1)),
        anomaly(
            "etg_owner_missing",
            WEEK.start - timedelta(days=3),
            scope=Scope.POLICY,
            policy="Finance",
        ),
    ]
    suppressions = [
        Suppression("s1", SuppressionScope.KIND, "etg_late", "known", t, None),
        Suppression(
            "s2",
            SuppressionScope.KIND,
            "etg_removed",
            "old",
            t - timedelta(days=30),
            t - timedelta(days=1),
        ),
    ]
    trend = {str(WEEK.previous(1)): 0.9, str(WEEK.previous(3)): 0.5}
    return compute_summary(WEEK, rows(), anomalies, suppressions, trend, NOW)


def test_deployments_by_outcome_count_only_the_week():
    d = summary()["deployments"]
    assert d == {"total": 102, "success": 99, "failed": 2, "in_progress": 1, "unknown": 0}


def test_compliance_is_on_time_share_of_judged_deployments():
    c = summary()["compliance"]
    assert (c["on_time"], c["late"], c["missing"], c["judged"]) == (90, 5, 3, 98)
    assert c["rate"] == round(90 / 98, 4)
    assert c["pending"] == 1 and c["unverified"] == 1


def test_lead_time_median_and_p95():
    lead = summary()["lead_time_minutes"]
    assert lead["count"] == 90
    assert lead["median"] == 5.5  # uniform 1..10 minutes
    assert lead["p95"] == 10.0


def test_anomalies_opened_resolved_and_still_open_with_age():
    s = summary()
    assert s["anomalies_opened"]["by_kind"] == {"etg_missing": 2, "etg_late": 1}
    assert s["anomalies_resolved"]["by_kind"] == {"etg_late": 1}
    assert s["open_anomalies"]["total"] == 3
    oldest = s["open_anomalies"]["oldest"][0]
    assert oldest["kind"] == "etg_owner_missing"
    assert oldest["age_hours"] == (NOW - (WEEK.start - timedelta(days=3))).total_seconds() / 3600
    assert s["policy_health"] == [{"policy": "Finance", "issues": ["etg_owner_missing"]}]


def test_only_suppressions_in_force_are_listed():
    assert [x["id"] for x in summary()["suppressions"]] == ["s1"]


def test_trend_covers_eight_weeks_with_gaps_for_missing_data():
    trend = summary()["trend"]
    assert [p["week"] for p in trend][-1] == "2026-W47" and len(trend) == 8
    assert [p["rate"] for p in trend[-4:-1]] == [0.5, None, 0.9]
    assert sparkline(trend)[-4:-1] == "▄·█"


def test_iso_week_parsing_and_bounds():
    assert IsoWeek.parse("2026-W01").start == datetime(2025, 12, 29, tzinfo=UTC)
    assert IsoWeek.last_complete(NOW) == WEEK
    for bad in ("2026-47", "2026-W54", "x", "2026-W00"):
        with pytest.raises(ValueError):
            IsoWeek.parse(bad)


def test_html_is_self_contained_and_carries_the_headline_figures():
    page = render_html(summary())
    assert "91.8%" in page and "ETG compliance, week 2026-W47" in page
    assert "<svg" in page and "@media print" in page
    for external in ("http://", "https://", "<script", "<link", "src="):
        assert external not in page.replace("http://www.w3.org/2000/svg", "")


def test_html_escapes_names_from_the_tenant():
    s = summary()
    s["policy_health"] = [{"policy": "<img src=x onerror=alert(1)>", "issues": ["x"]}]
    assert "<img src=x" not in render_html(s)


def test_summary_card_has_headline_trend_and_top_issues():
    card = summary_card(summary())
    text = str(card)
    assert card["version"] == "1.4"
    assert "91.8%" in text and "8-week trend" in text and "etg_missing (2)" in text


def test_card_and_report_list_the_most_severe_anomalies_first():
    s = summary()
    # One critical opening among more frequent device ones.
    s["anomalies_opened"]["by_kind"] = {"etg_missing": 5, "etg_late": 3, "etg_owner_missing": 1}
    # The oldest open anomalies with the critical one the youngest.
    s["open_anomalies"]["oldest"] = s["open_anomalies"]["oldest"][::-1]
    s["policy_health"] = [
        {"policy": "Alpha", "issues": ["monitor_job_failing"]},
        {"policy": "Zeta", "issues": ["etg_invalid_group", "monitor_job_failing"]},
    ]
    card_text = [b.get("text", "") for b in summary_card(s)["body"]]
    top = next(t for t in card_text if t.startswith("Top issues"))
    assert top == "Top issues: etg_owner_missing (1), etg_missing (5), etg_late (3)"
    policies = [t for t in card_text if t.startswith("Policy ")]
    assert policies == [
        "Policy Zeta: etg_invalid_group, monitor_job_failing",
        "Policy Alpha: monitor_job_failing",
    ]
    page = render_html(s)
    opened = page[page.index("Anomalies opened this week") :]
    assert (
        opened.index("etg_owner_missing") < opened.index("etg_missing") < opened.index("etg_late")
    )
    assert "<td>etg_owner_missing</td><td>critical</td>" in opened
    still_open = page[page.index("<h2>Still open</h2>") :]
    assert still_open.index("etg_owner_missing") < still_open.index("etg_missing")
    health = page[page.index("Policy configuration health") :]
    assert health.index("Zeta") < health.index("Alpha")


def test_severity_order_leaves_the_summary_json_as_computed():
    s = summary()
    s["anomalies_opened"]["by_kind"] = {"etg_missing": 5, "etg_owner_missing": 1}
    before = json.dumps(s)
    summary_card(s)
    render_html(s)
    assert json.dumps(s) == before


def test_trend_line_breaks_at_weeks_without_data_and_skips_a_lone_week():
    rates = [0.9, 0.95, None, 0.8, None, 0.7, 0.75, 0.8]
    svg = trend_svg([{"week": f"2026-W{40 + i}", "rate": r} for i, r in enumerate(rates)])
    lines = [part.split('points="')[1].split('"')[0] for part in svg.split("<polyline")[1:]]
    # Runs of weeks with data: [0.9, 0.95], [0.8] alone, [0.7, 0.75, 0.8].
    assert [len(points.split()) for points in lines] == [2, 3]
    assert svg.count("<circle") == sum(r is not None for r in rates)


def test_report_tables_show_each_outcome_count_of_the_summary():
    s = summary()
    page = render_html(s)
    c, d = s["compliance"], s["deployments"]
    for label, count in (
        ("joined late", c["late"]),
        ("unverified (monitor could not tell)", c["unverified"]),
        ("in progress", d["in_progress"]),
        ("unknown status", d["unknown"]),
    ):
        assert f'<tr><td>{label}</td><td class="n">{count}</td></tr>' in page
