"""The console's pages and timeline picture: what on-call sees, escaped, with strict headers."""

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from monitors.alerts.samples import sample_anomaly
from monitors.console.ids import anomaly_id
from monitors.console.pages import AnomalyView, Filters, anomaly_page, headers, list_page
from monitors.console.timeline import Timeline, gap_text, render_svg, timeline_of
from monitors.rules.kinds import KINDS

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
NONCE = "n0nce-value"
HOSTILE = '<script>alert("x")</script>'


def view(anomaly, csrf="1.token", **kw):
    return AnomalyView(anomaly, anomaly_id(anomaly.kind, anomaly.subject.key), "megan", csrf, **kw)


def test_late_join_timeline_reads_the_evidence_and_labels_the_gap():
    timeline = timeline_of(sample_anomaly("etg_late").evidence)
    assert timeline is not None
    assert timeline.joined - timeline.completed == timedelta(minutes=25)
    assert gap_text(timeline) == "joined 25 min after provisioning completed (late)"


def test_missing_join_is_drawn_as_none():
    timeline = timeline_of(sample_anomaly("etg_missing").evidence)
    assert timeline is not None and timeline.joined is None
    svg = render_svg(timeline)
    assert "ETG join: none" in svg and "no ETG join recorded" in svg


def test_on_time_join_states_how_long_before_completion_it_came():
    start = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    timeline = Timeline(start, start + timedelta(minutes=3), start + timedelta(minutes=40))
    assert gap_text(timeline) == "joined 37 min before provisioning completed"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kinds_timeline_is_well_formed_svg_or_absent_for_policy_level(kind):
    anomaly = sample_anomaly(kind)
    timeline = timeline_of(anomaly.evidence)
    if anomaly.subject.managed_device_id is None:
        assert timeline is None
        return
    assert timeline is not None
    root = ET.fromstring(render_svg(timeline))  # noqa: S314 - markup this test just made
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Enrolled" in labels


@pytest.mark.parametrize(
    "evidence",
    [
        {},
        {"enrolled_at": "2026-11-20T07:00:00+00:00"},  # a string, not {"value": ...}
        {"enrolled_at": {"value": "yesterday"}},
        {"enrolled_at": {"value": "2026-11-20T07:00:00"}},  # no zone
        {"enrolled_at": {"value": "9" * 500}},
    ],
)
def test_evidence_without_a_usable_enrollment_time_has_no_timeline(evidence):
    assert timeline_of(evidence) is None


def test_hostile_evidence_join_source_never_reaches_the_svg_unescaped():
    evidence = {
        "enrolled_at": {"value": "2026-11-20T07:00:00+00:00"},
        "join": {"at": "2026-11-20T07:05:00+00:00", "source": HOSTILE},
        "provisioning_completed_at": "2026-11-20T07:30:00+00:00",
    }
    timeline = timeline_of(evidence)
    assert timeline is not None and "<script" not in render_svg(timeline)


def test_anomaly_page_shows_title_explanation_fix_runbook_timeline_evidence_and_history():
    anomaly = sample_anomaly("etg_late")
    anomaly.history = [{"at": "2026-11-20T08:10:00+00:00", "status": "open", "why": "opened"}]
    page = anomaly_page(view(anomaly), NONCE, NOW)
    assert f"<h1>{KINDS['etg_late'].title}</h1>" in page
    assert "docs/runbook.md#etg_late" in page
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page and "25 min after" in page
    assert 'id="evidence"' in page and "AutopilotV2DeploymentStatus.EnrollmentTimeInUtc" in page
    assert "opened</li>" in page
    assert 'name="csrf" value="1.token"' in page
    assert 'action="/api/console/anomalies/' in page and 'method="post"' in page


def test_every_value_from_the_store_is_escaped():
    anomaly = sample_anomaly("etg_missing")
    anomaly.explanation = HOSTILE
    anomaly.fix = HOSTILE
    anomaly.evidence = {**anomaly.evidence, HOSTILE: HOSTILE}
    anomaly.history = [{"at": HOSTILE, "status": HOSTILE, "why": HOSTILE, "by": HOSTILE}]
    anomaly.acknowledged_by = HOSTILE
    anomaly.acknowledged_at = NOW
    page = anomaly_page(view(anomaly), NONCE, NOW)
    listing = list_page([anomaly], Filters(policy=HOSTILE), HOSTILE, NONCE)
    for html in (page, listing):
        assert "<script" not in html and "&lt;script&gt;" in html


def test_acknowledged_anomaly_shows_who_and_when_and_offers_no_acknowledge_form():
    anomaly = sample_anomaly("etg_missing")
    anomaly.acknowledged_by, anomaly.acknowledged_at = "megan@contoso.com", NOW
    page = anomaly_page(view(anomaly), NONCE, NOW)
    assert "Acknowledged by megan@contoso.com at 2026-11-21 08:00 UTC" in page
    assert 'id="acknowledge"' not in page and 'id="suppress"' in page


def test_without_a_secret_the_page_is_read_only():
    page = anomaly_page(view(sample_anomaly("etg_missing"), csrf=None), NONCE, NOW)
    assert '<form method="post"' not in page and "read-only" in page


def test_suppress_form_offers_only_the_subjects_this_anomaly_has():
    policy_level = anomaly_page(view(sample_anomaly("etg_not_configured")), NONCE, NOW)
    device = anomaly_page(view(sample_anomaly("etg_missing")), NONCE, NOW)
    assert 'value="device"' not in policy_level and 'value="policy"' in policy_level
    assert 'value="device"' in device


def test_list_links_each_anomaly_by_its_id_and_keeps_the_filters():
    a, b = sample_anomaly("etg_missing"), sample_anomaly("etg_late")
    page = list_page([a, b], Filters(kind="etg_late", status="all"), "megan", NONCE)
    for anomaly in (a, b):
        assert (
            f'href="/api/console/anomalies/{anomaly_id(anomaly.kind, anomaly.subject.key)}"' in page
        )
    assert '<option value="etg_late" selected>' in page and "<option selected>all</option>" in page
    assert "2 shown" in page


def test_headers_forbid_every_external_source_framing_sniffing_caching_and_referrers():
    h = headers(NONCE)
    csp = dict(part.strip().split(" ", 1) for part in h["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["style-src"] == f"'nonce-{NONCE}'"
    assert csp["form-action"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "script-src" not in csp  # default-src 'none' forbids every script
    assert h["X-Content-Type-Options"] == "nosniff" and h["Referrer-Policy"] == "no-referrer"
    assert h["Cache-Control"] == "no-store"


def test_the_only_style_carries_the_nonce_and_no_page_has_a_script_or_external_asset():
    page = anomaly_page(view(sample_anomaly("etg_late")), NONCE, NOW)
    assert re.findall(r"<style[^>]*>", page) == [f'<style nonce="{NONCE}">']
    assert "<script" not in page and "style=" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
