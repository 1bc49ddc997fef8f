"""The provider's roll-up (worst first, with trend) and the tenant label on every card, report
and console page, against figures known by construction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from monitors.alerts.cards import (
    TenantLabel,
    anomaly_card,
    digest_card,
    reminder_card,
    tenant_label,
)
from monitors.alerts.samples import sample_anomaly
from monitors.console.ids import anomaly_id
from monitors.console.pages import AnomalyView, Filters, anomaly_page, list_page, message_page
from monitors.store.scan_state import DeploymentRow
from monitors.summary.card import summary_card
from monitors.summary.compute import IsoWeek, compute_summary
from monitors.summary.html import render_html
from monitors.summary.rollup import (
    CARD_TENANTS,
    FLAT_POINTS,
    TenantWeek,
    rollup,
    rollup_card,
    rollup_text,
    trend,
)
from monitors.summary.rollup_html import render_rollup_html

WEEK = IsoWeek(2026, 47)
NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
GRAPH = "https://graph.microsoft.com"
HOSTILE = '<script>alert("x")</script>'


def tid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def week_of(on_time: int, late: int = 0, missing: int = 0) -> dict:
    """A computed summary whose deployments joined on time, late or never, as asked."""
    rows = []
    start = WEEK.start + timedelta(hours=1)
    for i, outcome in enumerate(["on_time"] * on_time + ["late"] * late + ["missing"] * missing):
        enrolled = start + timedelta(minutes=i)
        completed = enrolled + timedelta(minutes=30)
        joined = completed - timedelta(minutes=5) if outcome == "on_time" else None
        rows.append(DeploymentRow(f"k{i}", enrolled, "success", outcome, "P", joined, completed))
    return compute_summary(WEEK, rows, [], [], {}, NOW)


def card_texts(card: dict) -> list[str]:
    return [str(b.get("text", "")) for b in card["body"] if b.get("type") == "TextBlock"]


@pytest.mark.parametrize(
    ("rate", "previous", "direction"),
    [(0.95, 0.90, "up"), (0.80, 0.90, "down"), (0.901, 0.90, "flat"), (0.9, None, None)],
)
def test_trend_compares_the_week_with_the_one_before_in_points(rate, previous, direction):
    got, points = trend(rate, previous)
    assert got == direction
    if previous is None:
        assert points is None
    else:
        assert points == pytest.approx((rate - previous) * 100, abs=0.05)
        assert (abs(points) < FLAT_POINTS) == (direction == "flat")


def test_tenants_are_listed_worst_compliance_first_then_unjudged_then_unavailable():
    weeks = [
        TenantWeek(tid(1), "Alpha", True, week_of(9, 1), previous_rate=0.8),  # 90%
        TenantWeek(tid(2), "Bravo", True, None, problem="its tables could not be read"),
        TenantWeek(tid(3), "Charlie", False, week_of(5, 0, 5)),  # 50%, disabled
        TenantWeek(tid(4), "Delta", True, week_of(0)),  # nothing judged
        TenantWeek(tid(5), "Echo", True, week_of(9, 0, 1), previous_rate=0.95),  # 90%, 1 missing
    ]
    data = rollup(WEEK, weeks, NOW)
    assert [t["display_name"] for t in data["tenants"]] == [
        "Charlie",
        "Echo",  # the same rate as Alpha, but a device never joined
        "Alpha",
        "Delta",
        "Bravo",
    ]
    by_name = {t["display_name"]: t for t in data["tenants"]}
    assert by_name["Alpha"]["trend"] == "up" and by_name["Echo"]["trend"] == "down"
    assert by_name["Charlie"]["enabled"] is False and by_name["Bravo"]["status"] == "unavailable"
    totals = data["totals"]
    judged = 10 + 10 + 10  # Alpha, Charlie, Echo; Bravo could not be read
    assert totals["judged"] == judged and totals["unavailable"] == 1 and totals["disabled"] == 1
    assert totals["rate"] == round((9 + 5 + 9) / judged, 4)
    json.dumps(data)  # one JSON document, as `--json` prints it


def test_the_text_names_each_tenant_with_its_id_and_says_which_are_unavailable_or_disabled():
    weeks = [
        TenantWeek(tid(1), "Alpha", True, week_of(9, 1), previous_rate=0.8),
        TenantWeek(tid(2), "Bravo", False, None, problem="its tables could not be read"),
    ]
    lines = rollup_text(rollup(WEEK, weeks, NOW)).splitlines()
    assert "1 unavailable" in lines[0]
    assert lines[1].startswith(f"  Alpha ({tid(1)}): 90.0% (up 10.0 pts from 80.0%)")
    assert lines[2] == (
        f"  Bravo ({tid(2)}): unavailable (its tables could not be read) [disabled]"
    )


def test_the_rollup_card_lists_tenants_worst_first_and_trims_a_long_list():
    weeks = [
        TenantWeek(tid(n), f"Tenant {n:02d}", True, week_of(n, 30 - n))
        for n in range(1, CARD_TENANTS + 4)
    ]
    card = rollup_card(rollup(WEEK, weeks, NOW))
    [facts] = [b for b in card["body"] if b["type"] == "FactSet"]
    titles = [f["title"] for f in facts["facts"]]
    assert len(titles) == CARD_TENANTS
    assert titles[0] == str(tenant_label("Tenant 01", tid(1)))  # 1 of 30 on time: the worst
    assert any("3 more" in t for t in card_texts(card))


def test_the_rollup_report_is_self_contained_escaped_and_forbids_scripts():
    weeks = [
        TenantWeek(tid(1), HOSTILE, True, week_of(9, 1), previous_rate=0.9),
        TenantWeek(tid(2), "Bravo", True, None, problem="its tables could not be read"),
    ]
    page = render_rollup_html(rollup(WEEK, weeks, NOW))
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for external in ("http://", "https://", "<link", "src="):
        assert external not in page
    rows = page[page.index("<tbody>") :]
    assert rows.index("&lt;script&gt;") < rows.index("Bravo")  # rated before unavailable
    assert "unavailable: its tables could not be read" in rows


def test_an_empty_registry_rolls_up_to_no_tenants():
    data = rollup(WEEK, [], NOW)
    assert data["tenants"] == [] and data["totals"]["rate"] is None
    assert "No tenant is registered" in rollup_text(data)
    assert "No tenant is registered" in render_rollup_html(data)


LABEL = tenant_label("Contoso", tid(7))


def test_every_alert_card_opens_with_the_tenant_it_is_about():
    anomaly = sample_anomaly("etg_missing").to_json()
    cards = [
        anomaly_card(anomaly, "opened", GRAPH, tenant=LABEL),
        anomaly_card(anomaly, "resolved", GRAPH, tenant=LABEL),
        reminder_card(anomaly, NOW, GRAPH, tenant=LABEL),
        digest_card([anomaly] * 6, "opened", GRAPH, tenant=LABEL),
    ]
    for card in cards:
        assert card_texts(card)[0] == f"Tenant: Contoso ({tid(7)})"


def test_a_single_tenant_install_shows_no_tenant_anywhere():
    assert tenant_label(None, tid(7)) is None
    anomaly = sample_anomaly("etg_missing").to_json()
    cards = [
        anomaly_card(anomaly, "opened", GRAPH, tenant=None),
        reminder_card(anomaly, NOW, GRAPH),
        digest_card([anomaly] * 6, "opened", GRAPH),
    ]
    assert not any("Tenant:" in text for card in cards for text in card_texts(card))
    assert "Tenant:" not in render_html(week_of(3))
    page = list_page([sample_anomaly("etg_missing")], Filters(), "megan", "n")
    assert "Tenant:" not in page


def test_the_summary_report_and_console_pages_name_the_tenant_escaped():
    hostile = tenant_label(HOSTILE, tid(7))
    report = render_html(week_of(3), tenant=hostile)
    assert "<script" not in report and "Tenant: &lt;script&gt;" in report
    assert report.index('id="tenant"') < report.index('class="tiles"')
    a = sample_anomaly("etg_missing")
    view = AnomalyView(a, anomaly_id(a.kind, a.subject.key), "megan", None, tenant=LABEL)
    pages = [
        list_page([a], Filters(), "megan", "n", tenant=LABEL),
        anomaly_page(view, "n", NOW),
        message_page("Not found", "No anomaly has this id.", "n", LABEL),
    ]
    for page in pages:
        assert f'<p id="tenant"><strong>Tenant: Contoso ({tid(7)})</strong></p>' in page
        assert f"Contoso ({tid(7)}) - etg-monitor</title>" in page


def test_the_tenant_line_survives_trimming_of_a_card_too_large_for_teams():
    from monitors.alerts.cards import MAX_MESSAGE_BYTES, message, size_of, with_tenant

    card = summary_card(week_of(3))
    card["body"] += [{"type": "TextBlock", "text": "x" * 590} for _ in range(60)]
    labelled = with_tenant(card, LABEL)
    assert size_of(message(labelled)) <= MAX_MESSAGE_BYTES
    assert card_texts(labelled)[0] == f"Tenant: Contoso ({tid(7)})"


def test_a_tenants_console_links_forms_and_card_buttons_stay_within_that_tenant():
    a = sample_anomaly("etg_missing")
    aid = anomaly_id(a.kind, a.subject.key)
    scope = f"?tenant={tid(7)}"
    listing = list_page([a], Filters(), "megan", "n", tenant=LABEL)
    assert f'href="/api/console/anomalies/{aid}{scope}"' in listing
    assert f'<input type="hidden" name="tenant" value="{tid(7)}">' in listing
    page = anomaly_page(AnomalyView(a, aid, "megan", "1.token", tenant=LABEL), "n", NOW)
    assert f'action="/api/console/anomalies/{aid}/acknowledge{scope}"' in page
    assert f'action="/api/console/anomalies/{aid}/suppress{scope}"' in page
    assert f'href="/api/console/anomalies{scope}"' in page
    card = anomaly_card(a.to_json(), "opened", GRAPH, "https://etg.example", tenant=LABEL)
    [console] = [x["url"] for x in card["actions"] if x["title"] == "Open in console"]
    assert console == f"https://etg.example/api/console/anomalies/{aid}{scope}"


def test_the_console_lets_an_operator_choose_among_the_registered_tenants():
    others = [TenantLabel(tid(7), "Contoso"), TenantLabel(tid(8), HOSTILE)]
    page = list_page([], Filters(), "megan", "n", tenant=LABEL, tenants=others)
    assert f'<option value="{tid(7)}" selected>Contoso ({tid(7)})</option>' in page
    assert f'<option value="{tid(8)}">&lt;script&gt;' in page and "<script" not in page
    assert 'type="hidden" name="tenant"' not in page
