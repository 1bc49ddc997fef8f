"""The provider's roll-up on Azurite: three registered tenants, each in its own tables, one of
them scanned from a simulated tenant, one disabled, one whose tables cannot be read. The CLI's
text and JSON, the weekly job's roll-up card in the provider's Teams channel, and the report."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from monitors import cli, service
from monitors.alerts.cards import tenant_label
from monitors.clock import SystemClock
from monitors.console.ids import anomaly_id
from monitors.console.routes import Action, Request, handle
from monitors.models import Deployment, DeploymentStatus
from monitors.store.scan_state import DeploymentRecord, ScanState
from monitors.store.summaries import SummaryRepository
from monitors.summary.compute import IsoWeek
from monitors.summary.html import render_html
from monitors.summary.rollup import TenantWeek, rollup
from monitors.summary.rollup_html import render_rollup_html
from monitors.tenants.registry import Tenant, TenantRegistry
from monitors.tenants.scope import tenant_settings
from tests.helpers import (
    in_store,
    scan,
    serve_webhook_from_env,
    stored_anomalies,
    system_browser,
)
from tests.unit.test_rollup import week_of

pytestmark = pytest.mark.integration
WEEK = IsoWeek(2026, 47)  # the demo scenario's deployments enrol in this week
FABRIKAM = "0b1e4a7c-2d3f-4e5a-8b6c-7d8e9f0a1b2c"
NORTHWIND = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"


def records(week: IsoWeek, outcomes: list[str], prefix: str) -> list[DeploymentRecord]:
    """Deployments of ``week`` that joined their ETG on time, late or never, as listed."""
    out = []
    for i, outcome in enumerate(outcomes):
        enrolled = week.start + timedelta(days=1, minutes=i)
        deployment = Deployment(
            f"{prefix}-{i}", enrolled, DeploymentStatus.SUCCESS, duration_seconds=1800
        )
        completed = enrolled + timedelta(seconds=1800)
        joined = completed - timedelta(minutes=4) if outcome == "on_time" else None
        out.append(DeploymentRecord(deployment, state="final", outcome=outcome, joined_at=joined))
    return out


def save(settings, work):
    return in_store(settings, work)


@pytest.fixture
def msp(settings, tenant, scenario):
    """The provider's deployment (``settings``) and its three tenants' settings."""
    contoso = Tenant(scenario.tenant_id, "Contoso", graph_endpoint=tenant.base_url)
    fabrikam = Tenant(FABRIKAM, "Fabrikam", enabled=False, graph_endpoint=tenant.base_url)
    northwind = Tenant(NORTHWIND, "Northwind", graph_endpoint=tenant.base_url)

    async def register(store):
        for t in (contoso, fabrikam, northwind):
            await TenantRegistry(store).put(t, tenant.clock.now())

    save(settings, register)
    mine = {
        t.display_name: tenant_settings(settings, t, {}) for t in (contoso, fabrikam, northwind)
    }
    # Contoso: this week from real scans of the simulated tenant, last week from stored
    # deployments (9 of 10 on time), never kept as a summary.
    scan(mine["Contoso"], tenant)
    tenant.clock.advance(2 * 3600)
    scan(mine["Contoso"], tenant)
    last_week = records(WEEK.previous(), ["on_time"] * 9 + ["missing"], "c")
    save(
        mine["Contoso"], lambda store: ScanState(store).save_records(last_week, tenant.clock.now())
    )

    # Fabrikam (disabled): 3 of 4 on time this week; last week kept at 50%.
    this_week = records(WEEK, ["on_time"] * 3 + ["late"], "f")

    async def fabrikam_state(store):
        await ScanState(store).save_records(this_week, tenant.clock.now())
        await SummaryRepository(store).put(str(WEEK.previous()), {}, 0.5, tenant.clock.now())

    save(mine["Fabrikam"], fabrikam_state)

    # Northwind: a stored deployment row the monitor cannot read back.
    async def broken(store):
        table = await store.table("deployments")
        await table.upsert_entity(
            {
                "PartitionKey": WEEK.start.strftime("%Y%m%d"),
                "RowKey": "broken",
                "Status": "success",
                "EtgOutcome": "on_time",
                "EnrolledAt": WEEK.start + timedelta(hours=3),
                "JoinedAt": "not a time",
                "CompletedAt": "",
            }
        )

    save(mine["Northwind"], broken)
    return mine


def contoso_rate(settings, tenant) -> float:
    from monitors.jobs.summary import keep_summary

    summary = in_store(settings, lambda store: keep_summary(store, WEEK, tenant.clock.now()))
    return summary["compliance"]["rate"]


def test_all_tenants_json_lists_each_tenant_worst_first_with_its_trend(
    msp, settings, tenant, monkeypatch, capsys
):
    serve_webhook_from_env(monkeypatch, settings)
    code = cli.main(["summary", "--all-tenants", "--week", str(WEEK), "--json"])
    assert code == cli.EXIT_UNVERIFIED  # Northwind could not be read
    data = json.loads(capsys.readouterr().out)
    lines = {t["display_name"]: t for t in data["tenants"]}
    assert set(lines) == {"Contoso", "Fabrikam", "Northwind"}

    fabrikam = lines["Fabrikam"]
    assert fabrikam["enabled"] is False and fabrikam["status"] == "ok"
    assert (fabrikam["judged"], fabrikam["on_time"], fabrikam["late"]) == (4, 3, 1)
    assert fabrikam["rate"] == 0.75 and fabrikam["previous_rate"] == 0.5
    assert (fabrikam["trend"], fabrikam["change_points"]) == ("up", 25.0)

    contoso = lines["Contoso"]
    expected = contoso_rate(msp["Contoso"], tenant)
    assert contoso["rate"] == expected and contoso["previous_rate"] == 0.9
    assert contoso["change_points"] == round((expected - 0.9) * 100, 1)
    assert contoso["judged"] > fabrikam["judged"]  # its own deployments, not Fabrikam's

    northwind = lines["Northwind"]
    assert northwind["status"] == "unavailable" and "ValueError" in northwind["problem"]
    assert "not a time" not in northwind["problem"]  # a stored value is never echoed

    order = [t["display_name"] for t in data["tenants"]]
    rated = sorted(["Contoso", "Fabrikam"], key=lambda n: lines[n]["rate"])
    assert order == [*rated, "Northwind"]
    assert data["totals"]["judged"] == contoso["judged"] + fabrikam["judged"]


def test_all_tenants_text_and_report_name_every_tenant_and_the_unavailable_one(
    msp, settings, tenant, monkeypatch, capsys, tmp_path
):
    serve_webhook_from_env(monkeypatch, settings)
    page = tmp_path / "rollup.html"
    code = cli.main(["summary", "--all-tenants", "--week", str(WEEK), "--html", str(page)])
    assert code == cli.EXIT_UNVERIFIED
    out = capsys.readouterr().out
    assert f"Fabrikam ({FABRIKAM}): 75.0% (up 25.0 pts from 50.0%)" in out
    assert f"Northwind ({NORTHWIND}): unavailable" in out
    [fabrikam] = [line for line in out.splitlines() if "Fabrikam" in line]
    assert fabrikam.endswith("[disabled]")
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "Content-Security-Policy" in html
    body = html[html.index("<tbody>") :]
    assert body.index("Fabrikam") < body.index("Northwind") and "Contoso" in body


def test_the_weekly_job_of_the_provider_sends_one_rollup_card_to_its_own_channel(
    msp, settings, tenant
):
    base = dataclasses.replace(settings, teams_webhook_url=tenant.teams_url)
    tenant.clock.set(WEEK.end + timedelta(days=1, hours=7))  # Tuesday after the week
    for _ in range(2):  # queued once a week however often it runs
        ran = _weekly(base, tenant)
        assert ran.report is not None and ran.report["week"] == str(WEEK)
    cards = [m.card for m in tenant.teams_messages() if m.card]
    assert len(cards) == 1
    texts = [b.get("text", "") for b in cards[0]["body"] if b["type"] == "TextBlock"]
    assert texts[0] == f"ETG compliance by tenant, week {WEEK}"
    assert "1 unavailable" in texts[1]
    [facts] = [b["facts"] for b in cards[0]["body"] if b["type"] == "FactSet"]
    titles = [f["title"] for f in facts]
    assert titles[-1] == str(tenant_label("Northwind", NORTHWIND))
    assert f"{tenant_label('Fabrikam', FABRIKAM)} [disabled]" in titles
    assert facts[-1]["value"] == "unavailable"
    # Nothing was written into a tenant's tables: the roll-up only reads them.
    kept = in_store(msp["Fabrikam"], lambda store: SummaryRepository(store).get(str(WEEK)))
    assert kept is None


def _weekly(base, tenant):
    return asyncio.run(service.weekly_summary(base, clock=tenant.clock))


def test_a_tenants_own_weekly_card_and_report_say_which_tenant(msp, tenant):
    contoso = dataclasses.replace(msp["Contoso"], teams_webhook_url=tenant.teams_url)
    tenant.clock.set(WEEK.end + timedelta(days=1, hours=7))
    ran = _weekly(contoso, tenant)
    assert ran.report is not None and ran.report["week"] == str(WEEK)
    [card] = [
        m.card for m in tenant.teams_messages() if m.card and "compliance, week" in str(m.card)
    ]
    label = tenant_label("Contoso", contoso.tenant_id)
    assert card["body"][0]["text"] == f"Tenant: {label}"
    assert f"Tenant: {label}" in render_html(ran.report, tenant=label)


def test_the_rollup_of_an_empty_registry_lists_no_tenant(settings, tenant):
    data = asyncio.run(service.rollup_of_week(settings, WEEK, clock=tenant.clock))
    assert data["tenants"] == [] and data["totals"]["tenants"] == 0
    assert "No tenant is registered" in render_rollup_html(data)


def test_the_rollup_report_renders_in_chromium_styled_with_hostile_names_inert(tmp_path):
    hostile = '<img src=x onerror="window.pwned=1">'
    weeks = [
        TenantWeek(FABRIKAM, hostile, True, week_of(9, 1), previous_rate=0.95),
        TenantWeek(NORTHWIND, "Northwind", True, None, problem="its tables could not be read"),
        TenantWeek("11111111-2222-4333-8444-555555555555", "Contoso", True, week_of(5, 0, 5)),
    ]
    path = tmp_path / "rollup.html"
    path.write_text(render_rollup_html(rollup(WEEK, weeks, datetime.now(UTC))), encoding="utf-8")
    with system_browser() as browser:
        page = browser.new_page()
        page.goto(path.as_uri())
        names = page.locator("#tenants tbody tr td:first-child").all_inner_texts()
        pwned = page.evaluate("() => window.pwned === undefined")
        collapse = page.evaluate(
            "() => getComputedStyle(document.querySelector('table')).borderCollapse"
        )
    assert names == ["Contoso", hostile, "Northwind"]  # worst first, the name shown as text
    assert pwned is True
    assert collapse == "collapse"  # the page's own style is allowed by its policy


OPERATOR = "oncall@contoso.com"


@pytest.fixture
def twins(settings, tenant, scenario):
    """Two registered tenants scanned from the same simulated tenant: the same device names,
    ids and anomaly ids in each one's own tables."""
    base = dataclasses.replace(settings, console_dev_principal=OPERATOR, console_secret="s" * 48)
    contoso = Tenant(scenario.tenant_id, "Contoso", graph_endpoint=tenant.base_url)
    fabrikam = Tenant(FABRIKAM, "Fabrikam", graph_endpoint=tenant.base_url)

    async def register(store):
        for t in (contoso, fabrikam):
            await TenantRegistry(store).put(t, tenant.clock.now())

    in_store(base, register)
    for t in (contoso, fabrikam):
        scan(tenant_settings(base, t, {}), tenant)
    return base, {t.display_name: tenant_settings(base, t, {}) for t in (contoso, fabrikam)}


def console(base, action, params, anomaly=None, form=None):
    headers = {"host": "127.0.0.1"}
    if form is not None:
        headers |= {
            "content-type": "application/x-www-form-urlencoded",
            "sec-fetch-site": "same-origin",
        }
    request = Request(
        "POST" if form is not None else "GET",
        "http://127.0.0.1/api/console/anomalies",
        headers,
        params,
        anomaly,
        urlencode(form or {}).encode(),
    )
    now = SystemClock().now()
    return in_store(base, lambda store: handle(Action(action), request, base, store, now))


def test_the_console_shows_and_changes_only_the_tenant_the_request_names(twins):
    base, mine = twins
    contoso_id, fabrikam_id = mine["Contoso"].tenant_id, mine["Fabrikam"].tenant_id
    own = console(base, "list", {})
    assert own.status == 200 and 'id="empty"' in own.body  # the deployment's own tables
    assert f'<option value="{contoso_id}">Contoso ({contoso_id})</option>' in own.body

    listed = console(base, "list", {"tenant": contoso_id})
    open_here = [a for a in stored_anomalies(mine["Contoso"]) if a.status.value == "open"]
    assert listed.status == 200 and f"<p>{len(open_here)} shown</p>" in listed.body
    assert f"<strong>Tenant: Contoso ({contoso_id})</strong>" in listed.body

    target = open_here[0]
    aid = anomaly_id(target.kind, target.subject.key)
    shown = console(base, "show", {"tenant": contoso_id}, aid)
    [token] = re.findall(r'name="csrf" value="([^"]+)"', shown.body)[:1]
    # Contoso's form, sent to Fabrikam's anomaly of the same id: refused, nothing changes.
    replayed = console(base, "acknowledge", {"tenant": fabrikam_id}, aid, {"csrf": token})
    assert replayed.status == 403
    done = console(base, "acknowledge", {"tenant": contoso_id}, aid, {"csrf": token})
    assert done.status == 303
    assert (
        done.headers["Location"]
        == f"/api/console/anomalies/{aid}?tenant={contoso_id}&done=acknowledged"
    )

    def acknowledged(settings):
        [a] = [a for a in stored_anomalies(settings) if anomaly_id(a.kind, a.subject.key) == aid]
        return a.acknowledged_by

    assert acknowledged(mine["Contoso"]) == OPERATOR
    assert acknowledged(mine["Fabrikam"]) is None

    unknown = "99999999-9999-4999-8999-999999999999"
    for bad in (unknown, "not-a-tenant", "<script>"):
        refused = console(base, "list", {"tenant": bad})
        assert refused.status == 404 and "<script>" not in refused.body
