"""The operator console end to end: the function app served over HTTP, a real headless
Chromium (Debian's, driven by Playwright), Azurite and the simulated tenant's scan results."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitors.console.ids import anomaly_id
from monitors.models import Status
from monitors.rules.kinds import KINDS
from monitors.rules.reminders import due_reminders
from tests.helpers import (
    GROUND_TRUTH,
    in_store,
    scan,
    send_alerts,
    stored_anomalies,
    system_browser,
)

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
OPERATOR = "oncall@contoso.com"
SECRET = "console-secret-for-the-end-to-end-tests-0123456789"
LATE_DEVICE = "CTSO-9968945"
OPERATORS_GROUP = "5b7c1f0e-2d4a-4e8b-9c3f-1a6d8e2b4f70"


def _off_the_browsers_loop(work: Any, *args: Any) -> Any:
    """Playwright's sync API keeps an event loop running in this thread, where the helpers'
    asyncio.run cannot start one: they run in a thread of their own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(work, *args).result()


def stored(settings) -> list[Any]:
    return _off_the_browsers_loop(stored_anomalies, settings)


def suppressions(settings) -> list[Any]:
    return _off_the_browsers_loop(in_store, settings, lambda store: store.suppressions.all())


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with system_browser() as browser:
        yield browser


@pytest.fixture
def console(app_env, tenant, monkeypatch, function_host) -> Any:
    """The scan's anomalies stored, and the app letting the development principal in."""
    from monitors import entry

    _off_the_browsers_loop(scan, app_env, tenant)
    monkeypatch.setenv("ETG_CONSOLE_DEV_PRINCIPAL", OPERATOR)
    monkeypatch.setenv("ETG_CONSOLE_SECRET", SECRET)
    monkeypatch.setattr(entry, "_settings", None)
    return function_host


@pytest.fixture
def page(chromium) -> Iterator[Any]:
    context = chromium.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def _late(settings) -> Any:
    return next(
        a for a in stored(settings) if (a.kind, a.subject.device_name) == ("etg_late", LATE_DEVICE)
    )


def _page_url(host, anomaly) -> str:
    return host.url(
        f"console/anomalies/{anomaly_id(anomaly.kind, anomaly.subject.key)}", with_key=False
    )


def test_console_lists_the_open_anomalies_and_filters_them_by_kind(console, page, app_env):
    response = page.goto(console.url("console/anomalies", with_key=False))
    assert response.status == 200
    rows = page.locator("tbody tr")
    assert rows.count() == len([a for a in stored(app_env) if a.status is Status.OPEN])
    assert rows.count() > 0 and page.locator(f"td:has-text('{LATE_DEVICE}')").count() == 1
    page.select_option("select[name=kind]", "etg_missing")
    page.click("button:has-text('Filter')")
    titles = page.locator("tbody tr td:first-child").all_inner_texts()
    expected = sum(1 for kind, _ in GROUND_TRUTH if kind == "etg_missing")
    assert titles == [KINDS["etg_missing"].title] * expected
    assert "kind=etg_missing" in page.url


def test_anomaly_page_shows_the_timeline_with_strict_headers(console, page, app_env):
    late = _late(app_env)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if m.type == "error" else None)
    response = page.goto(_page_url(console, late))
    assert response.status == 200
    # The nonce'd style sheet applies, and nothing on the page was blocked by the policy.
    assert (
        page.locator("pre#evidence").evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
    )
    assert refused == []
    headers = response.headers
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
    assert page.locator("h1").inner_text() == KINDS["etg_late"].title
    assert page.locator("#explanation").inner_text() == late.explanation
    timeline = page.locator("svg#timeline")
    assert "25 min after provisioning completed" in (timeline.text_content() or "")
    box = timeline.bounding_box()
    assert box is not None and box["width"] > 600  # drawn, not blocked by the policy
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "console-timeline.png"
    timeline.screenshot(path=str(shot))
    assert shot.stat().st_size > 2000


def test_acknowledging_records_who_and_when_and_stops_reminders(console, page, app_env):
    late = _late(app_env)
    page.goto(_page_url(console, late))
    before = datetime.now(UTC)
    page.click("#acknowledge button")
    assert page.locator("#notice").inner_text() == "Acknowledged."
    assert f"Acknowledged by {OPERATOR}" in page.locator("#acknowledgement").inner_text()
    assert page.locator("#acknowledge").count() == 0
    stored = _late(app_env)
    assert stored.acknowledged_by == OPERATOR
    assert stored.acknowledged_at is not None and stored.acknowledged_at >= before - timedelta(
        seconds=1
    )
    assert stored.history[-1]["by"] == OPERATOR
    later = stored.first_seen + timedelta(days=3)
    assert stored not in due_reminders([stored], later, timedelta(hours=24))
    assert due_reminders([late], later, timedelta(hours=24)) == [late]  # as it was before


def test_suppressing_with_a_reason_uses_the_clis_suppressions(console, page, app_env):
    late = _late(app_env)
    page.goto(_page_url(console, late))
    page.select_option("select[name=scope]", "device")
    page.fill("input[name=reason]", "reimaged by the service desk")
    page.fill("input[name=expires_hours]", "12")
    page.click("#suppress button")
    assert page.locator("#notice").inner_text() == "Suppressed."
    [suppression] = suppressions(app_env)
    assert (suppression.scope.value, suppression.value) == (
        "device",
        late.subject.managed_device_id,
    )
    assert suppression.reason == "reimaged by the service desk"
    assert suppression.created_by == OPERATOR
    assert suppression.expires_at is not None
    assert (
        timedelta(hours=11, minutes=59)
        < suppression.expires_at - suppression.created_at
        <= timedelta(hours=12)
    )
    assert _late(app_env).status is Status.SUPPRESSED
    assert "reimaged by the service desk" in page.locator("#history").inner_text()


def _card_link(message: Any, title: str) -> str | None:
    card = message.card or {}
    return next((a["url"] for a in card.get("actions", []) if a.get("title") == title), None)


def test_a_reviewer_acknowledges_and_suppresses_from_the_teams_cards_link(
    console, page, app_env, tenant
):
    # The cards leave with the console's public address as the app in Azure would set it, and
    # one card per anomaly (no digest) so each carries its own link.
    alerting = dataclasses.replace(
        app_env,
        teams_webhook_url=tenant.teams_url,
        public_base_url=console.base_url,
        alert_digest_threshold=100,
    )
    _off_the_browsers_loop(send_alerts, alerting, tenant)
    late = _late(app_env)
    cards = [m for m in tenant.teams_messages() if LATE_DEVICE in json.dumps(m.card or {})]
    [link] = [u for u in (_card_link(m, "Open in console") for m in cards) if u]
    assert link == _page_url(console, late) and "code=" not in link

    page.goto(link)
    page.click("#acknowledge button")
    assert page.locator("#notice").inner_text() == "Acknowledged."
    page.select_option("select[name=scope]", "device")
    page.fill("input[name=reason]", "user is on leave until Friday")
    page.fill("input[name=expires_hours]", "72")
    page.click("#suppress button")
    assert page.locator("#notice").inner_text() == "Suppressed."
    after = _late(app_env)
    assert after.acknowledged_by == OPERATOR and after.status is Status.SUPPRESSED
    assert [s.reason for s in suppressions(app_env)] == ["user is on leave until Friday"]


def test_suppressing_without_a_reason_is_refused_and_changes_nothing(console, page, app_env):
    late = _late(app_env)
    page.goto(_page_url(console, late))
    # The browser enforces `required`; remove it to send what a hand-made post would.
    page.locator("input[name=reason]").evaluate("e => e.removeAttribute('required')")
    page.fill("input[name=reason]", "   ")
    page.click("#suppress button")
    assert "needs a reason" in page.locator("#error").inner_text()
    assert suppressions(app_env) == []


def test_a_post_without_the_pages_csrf_token_or_from_another_origin_is_refused(
    console, page, app_env
):
    late = _late(app_env)
    url = _page_url(console, late)
    page.goto(url)
    token = page.locator("#acknowledge input[name=csrf]").get_attribute("value")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    forged = page.request.post(f"{url}/acknowledge", headers=form, data="csrf=1700000000.x")
    assert forged.status == 403 and "Form refused" in forged.text()
    other_site = page.request.post(
        f"{url}/acknowledge",
        headers={**form, "Origin": "https://evil.example"},
        data=f"csrf={token}",
    )
    assert other_site.status == 403
    # A token is bound to its anomaly: this one does not acknowledge another.
    other = next(a for a in stored(app_env) if a.kind == "etg_missing")
    elsewhere = page.request.post(
        f"{_page_url(console, other)}/acknowledge", headers=form, data=f"csrf={token}"
    )
    assert elsewhere.status == 403
    assert page.request.get(f"{url}/acknowledge").status == 405  # state changes only by POST
    assert all(a.acknowledged_by is None for a in stored(app_env))


def test_console_refuses_a_request_without_a_principal_or_outside_the_operators_group(
    console, page, monkeypatch
):
    from monitors import entry

    monkeypatch.delenv("ETG_CONSOLE_DEV_PRINCIPAL")
    monkeypatch.setenv("ETG_CONSOLE_OPERATORS_GROUP", OPERATORS_GROUP)
    monkeypatch.setattr(entry, "_settings", None)
    response = page.goto(console.url("console/anomalies", with_key=False))
    assert response.status == 401
    assert page.locator("h1").inner_text() == "Sign-in required"
    assert "<table" not in page.content()
    forged = {
        "X-MS-CLIENT-PRINCIPAL-NAME": "mallory@contoso.com",
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(
            json.dumps({"claims": [{"typ": "groups", "val": OPERATORS_GROUP}]}).encode()
        ).decode(),
    }
    # Without App Service Authentication in front, principal headers are anyone's to send.
    page.set_extra_http_headers(forged)
    assert page.goto(console.url("console/anomalies", with_key=False)).status == 401
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    page.set_extra_http_headers(
        {
            "X-MS-CLIENT-PRINCIPAL-NAME": "adele@contoso.com",
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(
                json.dumps({"claims": [{"typ": "groups", "val": "not-the-operators"}]}).encode()
            ).decode(),
        }
    )
    assert page.goto(console.url("console/anomalies", with_key=False)).status == 403
    # Behind the platform, the same operator's headers are believed.
    page.set_extra_http_headers(forged)
    assert page.goto(console.url("console/anomalies", with_key=False)).status == 200


@pytest.mark.parametrize(
    "route",
    [
        "console/anomalies/not-an-id",
        "console/anomalies/etg_missing.dGVuYW50",  # well formed, absent
        "console/anomalies/no_such_kind.dGVuYW50",
        "console/anomalies?kind=%3Cscript%3E",
        "console/anomalies?status=everything",
    ],
)
def test_hostile_ids_and_filters_get_a_short_page_and_no_trace(console, page, route):
    response = page.goto(console.url(route, with_key=False))
    assert response.status in (400, 404)
    assert "Traceback" not in page.content() and "<script" not in page.content()
    assert console.errors == []


def test_a_post_that_is_not_a_small_form_is_refused(console, page, app_env):
    late = _late(app_env)
    url = _page_url(console, late)
    page.goto(url)
    token = page.locator("#acknowledge input[name=csrf]").get_attribute("value")
    as_text = page.request.post(
        f"{url}/acknowledge", headers={"Content-Type": "text/plain"}, data=f"csrf={token}"
    )
    oversized = page.request.post(
        f"{url}/acknowledge",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=f"csrf={token}&pad={'x' * 9000}",
    )
    assert (as_text.status, oversized.status) == (400, 400)
    assert _late(app_env).acknowledged_by is None
