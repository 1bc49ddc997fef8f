"""A provider's alerts name their tenant, and its own views reach it: every Teams card,
PagerDuty event and webhook event of a registry tenant says whose it is (and a single-tenant
install's say nothing new); two tenants whose anomalies have the same key never fold into one
PagerDuty incident; the weekly timer sends the provider one roll-up card, and the alerts timer
retries it; the weekly report of one tenant and the roll-up report answer through the function
app, hostile input included."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from monitors.alerts.cards import tenant_label
from monitors.alerts.dispatch import plan_messages, plan_pagerduty, plan_webhook
from monitors.alerts.pagerduty import MAX_SUMMARY, PagerDutyTarget, dedup_key, pagerduty_event
from monitors.alerts.samples import sample_anomaly
from monitors.alerts.webhook import WebhookTarget, signature, signed, webhook_event
from monitors.models import json_list, json_object
from monitors.settings import Settings
from monitors.store.outbox import OutboxItem
from monitors.summary.compute import IsoWeek, headline
from monitors.tenants.registry import Tenant, TenantRegistry
from tests.helpers import call_route, in_store, provider_from_env, run_timer

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
CONTOSO = tenant_label("Contoso", "0b1e4a7c-2d3f-4e5a-8b6c-7d8e9f0a1b2c")
FABRIKAM = tenant_label("Fabrikam", "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f")
EVERYWHERE = "critical=teams,pagerduty,webhook;high=teams,pagerduty,webhook"
WEEK = IsoWeek(2026, 47)  # the demo scenario's deployments enrol in this week
PLAIN_REASON = re.compile(r"[A-Za-z0-9 ,.;:()/-]{1,100}")
MARKUP = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "</title><h1>x</h1>")


# --- pure: what each channel says --------------------------------------------------------------


def _rows(kind: str, change: str, count: int = 1) -> list[OutboxItem]:
    payload = sample_anomaly(kind).to_json()
    return [OutboxItem(kind, change, "run1", NOW, dict(payload)) for _ in range(count)]


def _cards(planned: list[Any]) -> list[dict[str, Any]]:
    return [json_object(json_list(m.payload["attachments"])[0])["content"] for m in planned]


@pytest.mark.parametrize(
    "change,count", [("opened", 1), ("resolved", 1), ("reminder", 1), ("opened", 7)]
)
def test_every_teams_card_of_a_tenant_names_it_first_and_a_single_tenant_card_does_not(
    change, count
):
    rows = _rows("etg_missing", change, count)
    labelled = _cards(plan_messages(rows, 5, "https://graph.microsoft.com", None, CONTOSO))
    plain = _cards(plan_messages(rows, 5, "https://graph.microsoft.com"))
    assert len(labelled) == len(plain) == (1 if count > 5 else count)
    for card, before in zip(labelled, plain, strict=True):
        assert card["body"][0]["text"] == f"Tenant: {CONTOSO}"
        assert card["body"][1:] == before["body"]  # the rest of the card is unchanged
        assert "Tenant:" not in json.dumps(before)


def test_a_tenants_pagerduty_trigger_names_it_in_the_summary_and_details():
    anomaly = sample_anomaly("etg_missing")
    key = anomaly.key
    event = pagerduty_event(anomaly.to_json(), key, "opened", "k" * 32, NOW, CONTOSO)
    plain = pagerduty_event(anomaly.to_json(), key, "opened", "k" * 32, NOW)
    assert event is not None and plain is not None
    payload, before = json_object(event["payload"]), json_object(plain["payload"])
    assert payload["summary"] == f"[{CONTOSO}] {before['summary']}"
    details = json_object(payload["custom_details"])
    assert details["tenant"] == {"id": CONTOSO.tenant_id, "name": "Contoso"}
    assert "tenant" not in json_object(before["custom_details"])
    assert plain["dedup_key"] == key and event["dedup_key"] == f"{CONTOSO.tenant_id}/{key}"


def test_two_tenants_with_the_same_anomaly_key_get_different_dedup_keys_within_the_limit():
    long_key = "device:" + "x" * 300
    keys = {dedup_key(long_key, CONTOSO), dedup_key(long_key, FABRIKAM), dedup_key(long_key)}
    assert len(keys) == 3 and all(len(k) <= 255 for k in keys)
    short = {dedup_key("tenant", CONTOSO), dedup_key("tenant", FABRIKAM), dedup_key("tenant")}
    assert short == {f"{CONTOSO.tenant_id}/tenant", f"{FABRIKAM.tenant_id}/tenant", "tenant"}


def test_a_tenants_long_pagerduty_summary_is_cut_at_the_end_never_losing_whose_it_is():
    payload = sample_anomaly("etg_missing").to_json() | {"explanation": "e" * 3000}
    event = pagerduty_event(payload, "device:1", "opened", "k" * 32, NOW, CONTOSO)
    assert event is not None
    summary = str(json_object(event["payload"])["summary"])
    assert len(summary) == MAX_SUMMARY and summary.startswith(f"[{CONTOSO}] ")
    assert summary.endswith("…")


def test_a_tenants_resolve_carries_only_its_own_dedup_key():
    resolve = pagerduty_event(
        {"kind": "etg_missing"}, "device:1", "resolved", "k" * 32, NOW, CONTOSO
    )
    assert resolve == {
        "routing_key": "k" * 32,
        "event_action": "resolve",
        "dedup_key": f"{CONTOSO.tenant_id}/device:1",
    }


def test_a_tenants_webhook_event_names_it_and_the_signature_covers_it():
    target = WebhookTarget("https://hooks.example.com/etg", "s" * 40)
    payload = sample_anomaly("etg_missing").to_json()
    event = webhook_event("row1", "opened", payload, NOW, CONTOSO)
    assert event["tenant"] == {"id": CONTOSO.tenant_id, "name": "Contoso"}
    assert "tenant" not in webhook_event("row1", "opened", payload, NOW)
    body, headers = signed(target, event, NOW)
    assert json.loads(body)["tenant"]["id"] == CONTOSO.tenant_id
    assert headers["X-Etg-Signature"] == signature(target.secret, headers["X-Etg-Timestamp"], body)


def test_the_other_channels_plans_label_every_row_of_a_tenant():
    rows = _rows("etg_missing", "opened", 3)
    pagerduty = plan_pagerduty(rows, PagerDutyTarget("k" * 32), NOW, FABRIKAM)
    webhook = plan_webhook(rows, WebhookTarget("https://h.example.com", "s" * 40), NOW, FABRIKAM)
    summaries = [str(json_object(m.payload["payload"])["summary"]) for m in pagerduty]
    assert len(summaries) == 3 and all(s.startswith(f"[{FABRIKAM}] ") for s in summaries)
    assert [json_object(m.payload["tenant"])["id"] for m in webhook] == [FABRIKAM.tenant_id] * 3


# --- the provider's deployment on Azurite --------------------------------------------------------


@pytest.fixture
def provider(monkeypatch, azurite_queues, table_prefix, tenant) -> Settings:
    """The provider's deployment: its own Teams channel, PagerDuty service and webhook receiver
    are the ``tenant`` simulator's (every customer tenant is routed to them too)."""
    return provider_from_env(
        monkeypatch,
        azurite_queues.connection_string,
        table_prefix,
        ("ETG_NOTIFICATION_URL", "ETG_CLIENT_STATE", "ETG_DETAILED_REPORTS"),
        ETG_TEAMS_WEBHOOK_URL=tenant.teams_url,
        ETG_PAGERDUTY_EVENTS_URL=tenant.pagerduty_url,
        TEST_PROVIDER_TEAMS=tenant.teams_url,
        TEST_PROVIDER_PAGERDUTY=tenant.pagerduty_routing_key,
        TEST_PROVIDER_HOOK=tenant.webhook_url,
        TEST_PROVIDER_HOOK_SECRET=tenant.webhook_secret,
        ETG_GRAPH_MAX_RETRIES="1",
        ETG_GRAPH_RETRY_BUDGET_SECONDS="2",
    )


@pytest.fixture
def customers(provider, tenant) -> Iterator[dict[str, Any]]:
    """Two customer tenants on their own simulators (the same scenario, other tenant ids),
    registered with the provider's channels as their alert routes."""
    from devtools.simtenant.scenario import demo_scenario
    from devtools.simtenant.server import SimulatedTenant

    ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    with (
        SimulatedTenant(dataclasses.replace(demo_scenario(), tenant_id=ids[0])) as one,
        SimulatedTenant(dataclasses.replace(demo_scenario(), tenant_id=ids[1])) as two,
    ):
        entries = {
            name: Tenant(
                sim.state.tenant_id,
                name,
                secrets={
                    "teams_webhook_url": "env:TEST_PROVIDER_TEAMS",
                    "pagerduty_routing_key": "env:TEST_PROVIDER_PAGERDUTY",
                    "alert_webhook_url": "env:TEST_PROVIDER_HOOK",
                    "alert_webhook_secret": "env:TEST_PROVIDER_HOOK_SECRET",
                },
                alert_routes=EVERYWHERE,
                graph_endpoint=sim.base_url,
            )
            for name, sim in (("Contoso", one), ("Fabrikam", two))
        }

        async def register(store: Any) -> None:
            for entry in entries.values():
                await TenantRegistry(store).put(entry, tenant.clock.now())

        in_store(provider, register)
        yield {"entries": entries, "sims": {"Contoso": one, "Fabrikam": two}}


def _label(entry: Tenant) -> str:
    return str(tenant_label(entry.display_name, entry.tenant_id))


def _tenant_job(provider: Settings, entry: Tenant, job: str, clock: Any) -> dict[str, Any]:
    from monitors.tenants.run import run_tenant_job

    return asyncio.run(run_tenant_job(provider, entry.tenant_id, job, clock=clock))


def _first_lines(tenant: Any) -> list[str]:
    return [str(m.card["body"][0].get("text")) for m in tenant.teams_messages() if m.card]


def test_two_tenants_with_the_same_findings_page_apart_and_one_resolving_leaves_the_other_open(
    provider, customers, tenant, scenario
):
    contoso, fabrikam = customers["entries"].values()
    for entry in (contoso, fabrikam):
        ran = _tenant_job(provider, entry, "config_check", tenant.clock)
        assert ran.get("failed") is None and not ran.get("skipped"), ran
    incidents = tenant.pagerduty_incidents()
    by_tenant = {
        entry.tenant_id: [i for i in incidents if i.summary.startswith(f"[{_label(entry)}] ")]
        for entry in (contoso, fabrikam)
    }
    # The same policies in both tenants: the same anomaly keys, yet one incident each.
    assert len(by_tenant[contoso.tenant_id]) == len(by_tenant[fabrikam.tenant_id]) > 0
    assert len(incidents) == 2 * len(by_tenant[contoso.tenant_id])
    assert {(i.status, i.triggers) for i in incidents} == {("triggered", 1)}
    events = tenant.webhook_events()
    assert sorted(e.body["tenant"]["id"] for e in events) == sorted(
        [contoso.tenant_id, fabrikam.tenant_id] * len(by_tenant[contoso.tenant_id])
    )
    lines = _first_lines(tenant)
    assert sorted(lines) == sorted(
        f"Tenant: {_label(e)}" for e in (contoso, fabrikam) for _ in by_tenant[e.tenant_id]
    )

    # Contoso's administrator fixes its Finance policy; Fabrikam's stays broken.
    finance = next(p for p in scenario.policies if "Finance" in p.name)
    customers["sims"]["Contoso"].state.add_group_owner(
        finance.etg_group_id, scenario.provisioning_client.object_id
    )
    _tenant_job(provider, contoso, "config_check", tenant.clock)
    after = tenant.pagerduty_incidents()
    resolved = [i for i in after if i.status == "resolved"]
    assert resolved and all(i.summary.startswith(f"[{_label(contoso)}] ") for i in resolved)
    assert all(
        i.status == "triggered" for i in after if i.summary.startswith(f"[{_label(fabrikam)}] ")
    )


def test_the_weekly_timer_sends_the_provider_one_rollup_and_each_tenant_its_labelled_card(
    provider, customers, tenant
):
    from tests.integration.test_fanout import drain, queued

    contoso, fabrikam = customers["entries"].values()
    run_timer("weekly_summary")
    run_timer("weekly_summary")  # the roll-up is queued once a week however often this runs
    week = IsoWeek.last_complete(datetime.now(UTC))
    rollups = [m.card for m in tenant.teams_messages() if m.card and "by tenant" in str(m.card)]
    assert len(rollups) == 1
    assert rollups[0]["body"][0]["text"] == f"ETG compliance by tenant, week {week}"
    [facts] = [b["facts"] for b in rollups[0]["body"] if b["type"] == "FactSet"]
    assert sorted(f["title"] for f in facts) == sorted(_label(e) for e in (contoso, fabrikam))
    messages = queued(provider)
    assert sorted(m["tenant"] for m in messages) == sorted(
        [contoso.tenant_id, fabrikam.tenant_id] * 2
    )
    assert {m["job"] for m in messages} == {"weekly_summary"}

    assert drain(provider)["succeeded"] == 4
    cards = [m.card for m in tenant.teams_messages() if m.card]
    own = [c for c in cards if "by tenant" not in str(c)]
    assert sorted(c["body"][0]["text"] for c in own) == sorted(
        f"Tenant: {_label(e)}" for e in (contoso, fabrikam)
    )
    assert all("compliance, week" in str(c) for c in own)


def test_a_rollup_card_teams_refused_is_sent_by_the_next_alerts_timer(provider, customers, tenant):
    from devtools.simtenant.faults import FaultRule
    from monitors import entry
    from monitors.clock import FixedClock
    from monitors.service import Job

    tenant.faults.add(FaultRule(endpoint="teams", kind="status", status=500, first_n=1))
    run_timer("weekly_summary")
    assert not [m for m in tenant.teams_messages() if m.card]
    later = FixedClock(datetime.now(UTC) + timedelta(minutes=2))  # past the 30 s back-off
    answer = asyncio.run(entry.run_job(Job.ALERTS, clock=later))
    assert answer["enqueued"] == 2 and answer["deployment"]["items_sent"] == 1
    [card] = [m.card for m in tenant.teams_messages() if m.card]
    assert card["body"][0]["text"].startswith("ETG compliance by tenant, week ")


# --- the report routes -------------------------------------------------------------------------


def _get(name: str, route: str, params: dict[str, str]) -> Any:
    response = call_route(name, "GET", route, params=params)
    return response.status_code, response.mimetype, response.get_body().decode()


def test_a_tenants_weekly_report_shows_its_own_figures_under_its_name(provider, customers):
    from monitors import service
    from monitors.tenants.scope import storage_settings

    contoso, fabrikam = customers["entries"].values()
    _tenant_job(provider, contoso, "scan", customers["sims"]["Contoso"].clock)
    pages = {}
    for entry in (contoso, fabrikam):
        status, mimetype, body = _get(
            "weekly_report", "reports/weekly", {"week": str(WEEK), "tenant": entry.tenant_id}
        )
        assert (status, mimetype) == (200, "text/html")
        summary = asyncio.run(service.summary_of_week(storage_settings(provider, entry), WEEK))
        assert f"Tenant: {_label(entry)}" in body
        assert escape(headline(summary)) in body
        pages[entry.display_name] = (body, summary)
    assert "Fabrikam" not in pages["Contoso"][0] and "Contoso" not in pages["Fabrikam"][0]
    totals = {name: summary["deployments"]["total"] for name, (_, summary) in pages.items()}
    assert totals["Contoso"] > totals["Fabrikam"] == 0
    # Without ?tenant= the deployment's own report, naming no tenant, as before.
    status, _, own = _get("weekly_report", "reports/weekly", {"week": str(WEEK)})
    assert status == 200 and "Tenant:" not in own


@pytest.mark.parametrize(
    "tenant_text",
    ["99999999-9999-4999-8999-999999999999", "not-a-tenant", "../../x", *MARKUP, "\x00"],
)
def test_the_weekly_report_of_an_unknown_or_malformed_tenant_is_a_short_404(
    provider, customers, tenant_text
):
    status, mimetype, body = _get(
        "weekly_report", "reports/weekly", {"week": str(WEEK), "tenant": tenant_text}
    )
    assert (status, mimetype) == (404, "text/plain")
    assert PLAIN_REASON.fullmatch(body) and tenant_text not in body


def test_the_rollup_report_lists_every_tenant_worst_first(provider, customers):
    contoso, fabrikam = customers["entries"].values()
    _tenant_job(provider, fabrikam, "scan", customers["sims"]["Fabrikam"].clock)
    status, mimetype, body = _get("rollup_report", "reports/rollup", {"week": str(WEEK)})
    assert (status, mimetype) == (200, "text/html")
    rows = body[body.index("<tbody>") :]
    # Fabrikam was scanned and has a rate; Contoso judged nothing, so it comes after.
    assert rows.index(fabrikam.tenant_id) < rows.index(contoso.tenant_id)
    assert "Content-Security-Policy" in body and "<script" not in body


def test_the_rollup_report_of_an_empty_registry_is_a_404(provider):
    status, mimetype, body = _get("rollup_report", "reports/rollup", {})
    assert (status, mimetype, body) == (404, "text/plain", "no tenants registered")


def test_the_rollup_report_answers_any_query_with_a_page_or_a_short_reason(provider, customers):
    weeks = st.one_of(
        st.builds(lambda y, w: f"{y:04d}-W{w:02d}", st.integers(0, 9999), st.integers(0, 99)),
        st.sampled_from(["0001-W01", "9999-W52", "2026-W47", " 2026-W47\n", "٢٠٢٦-W47", *MARKUP]),
        st.text(max_size=40),
    )

    @hypothesis_settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(params=st.dictionaries(st.sampled_from(["week", "tenant", "x"]), weeks, max_size=2))
    @example(params={"week": "2026-W47"})
    @example(params={"week": "2026-W99"})
    def check(params: dict[str, str]) -> None:
        status, mimetype, body = _get("rollup_report", "reports/rollup", params)
        seen.add(status)
        if status == 200:
            assert mimetype == "text/html" and "<script" not in body
        else:
            assert status == 400 and mimetype == "text/plain"
            assert PLAIN_REASON.fullmatch(body)
        for text in params.values():
            if any(marker in text for marker in ("<script", "onerror=", "<h1>")):
                assert text not in body

    seen: set[int] = set()
    check()
    assert seen == {200, 400}
