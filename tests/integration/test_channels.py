"""Alerts on several channels end to end: outbox rows per channel (same transaction as the
anomaly) -> dispatcher -> the simulated Teams, PagerDuty and webhook receivers, on Azurite."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from monitors.alerts.dispatch import dispatch
from monitors.alerts.routing import parse_routes
from monitors.jobs.config_check import check_config
from monitors.jobs.context import open_store
from monitors.jobs.dispatch import targets
from monitors.models import Status
from tests.helpers import in_store, outbox, run_job, send_alerts, stored_anomalies

pytestmark = pytest.mark.integration

EVERYWHERE = "critical=teams,pagerduty,webhook;high=teams,pagerduty,webhook"
CONFIG_FINDINGS = 4  # what check_config finds in the demo scenario


@pytest.fixture
def channel_settings(settings, tenant):
    return dataclasses.replace(
        settings,
        teams_webhook_url=tenant.teams_url,
        pagerduty_routing_key=tenant.pagerduty_routing_key,
        pagerduty_events_url=tenant.pagerduty_url,
        alert_webhook_url=tenant.webhook_url,
        alert_webhook_secret=tenant.webhook_secret,
        alert_routes=parse_routes(EVERYWHERE),
    )


def webhook_ids(tenant, event=None):
    return [e.id for e in tenant.webhook_events() if event is None or e.event == event]


def test_each_opening_is_sent_once_on_every_channel_it_is_routed_to(channel_settings, tenant):
    run_job(channel_settings, tenant, check_config)
    rows = outbox(channel_settings, "pending")
    assert sorted(r.channel for r in rows) == sorted(["teams", "pagerduty", "webhook"] * 4)
    result = send_alerts(channel_settings, tenant)
    assert result.by_channel == {"teams": 4, "pagerduty": 4, "webhook": 4}
    assert len(tenant.teams_messages()) == CONFIG_FINDINGS
    incidents = tenant.pagerduty_incidents()
    assert len(incidents) == CONFIG_FINDINGS
    assert {(i.status, i.triggers) for i in incidents} == {("triggered", 1)}
    ids = webhook_ids(tenant, "opened")
    assert len(ids) == len(set(ids)) == CONFIG_FINDINGS
    # Nothing is sent twice: the next round finds nothing due on any channel.
    assert send_alerts(channel_settings, tenant).items_sent == 0
    assert len(tenant.teams_messages()) == 4 and len(tenant.webhook_events()) == 4
    assert tenant.pagerduty.received == 4


def test_routes_send_a_kind_only_where_it_is_routed(channel_settings, tenant):
    routed = dataclasses.replace(channel_settings, alert_routes=parse_routes("high=webhook"))
    run_job(routed, tenant, check_config)
    send_alerts(routed, tenant)
    kinds = {str(e.body["anomaly"]["kind"]) for e in tenant.webhook_events()}
    from monitors.rules.kinds import KINDS, Severity

    assert all(KINDS[k].severity is Severity.HIGH for k in kinds)
    teams_rows = [r for r in outbox(routed) if r.channel == "teams"]
    assert all(KINDS[str(r.payload["kind"])].severity is Severity.CRITICAL for r in teams_rows)
    assert len(teams_rows) + len(kinds) == CONFIG_FINDINGS
    assert tenant.pagerduty_incidents() == []


def test_a_resolution_closes_the_incident_its_trigger_opened(channel_settings, tenant, scenario):
    run_job(channel_settings, tenant, check_config)
    send_alerts(channel_settings, tenant)
    finance = next(p for p in scenario.policies if "Finance" in p.name)
    tenant.state.add_group_owner(finance.etg_group_id, scenario.provisioning_client.object_id)
    tenant.clock.advance(600)
    run_job(channel_settings, tenant, check_config)
    send_alerts(channel_settings, tenant)
    resolved = [i for i in tenant.pagerduty_incidents() if i.status == "resolved"]
    assert len(resolved) == 1 and "Finance" in resolved[0].summary
    assert [e["event_action"] for e in resolved[0].events] == ["trigger", "resolve"]
    assert len(tenant.pagerduty_incidents()) == CONFIG_FINDINGS  # closed, not a new one
    [event] = [e for e in tenant.webhook_events() if e.event == "resolved"]
    assert event.body["anomaly"]["policy_name"] == finance.name


def test_a_failing_channel_retries_alone_and_teams_is_not_sent_twice(channel_settings, tenant):
    tenant.pagerduty.fail_next(500)
    run_job(channel_settings, tenant, check_config)
    first = send_alerts(channel_settings, tenant)
    assert first.by_channel == {"teams": 4, "pagerduty": 3, "webhook": 4}
    assert first.retry_scheduled == 1 and first.errors == [first.errors[0]]
    assert "HTTP 500" in first.errors[0] and first.errors[0].startswith("pagerduty")
    [waiting] = outbox(channel_settings, "pending")
    assert waiting.channel == "pagerduty" and waiting.attempts == 1
    tenant.clock.advance(31)
    second = send_alerts(channel_settings, tenant)
    assert second.by_channel == {"pagerduty": 1}
    assert len(tenant.teams_messages()) == 4 and len(tenant.webhook_events()) == 4
    assert len(tenant.pagerduty_incidents()) == 4 and outbox(channel_settings, "pending") == []


def test_pagerduty_throttling_waits_its_retry_after_without_holding_other_channels(
    channel_settings, tenant
):
    tenant.pagerduty.fail_next(429, retry_after=120)
    run_job(channel_settings, tenant, check_config)
    first = send_alerts(channel_settings, tenant)
    assert first.throttled and first.by_channel == {"teams": 4, "webhook": 4}
    waiting = outbox(channel_settings, "pending")
    assert {w.channel for w in waiting} == {"pagerduty"} and len(waiting) == 4
    assert {w.next_attempt_at for w in waiting} == {tenant.clock.now() + timedelta(seconds=120)}
    tenant.clock.advance(60)
    assert send_alerts(channel_settings, tenant).items_sent == 0
    tenant.clock.advance(61)
    assert send_alerts(channel_settings, tenant).by_channel == {"pagerduty": 4}


def test_a_refused_pagerduty_event_is_failed_not_retried(channel_settings, tenant):
    wrong = dataclasses.replace(channel_settings, pagerduty_routing_key="W" * 32)
    run_job(wrong, tenant, check_config)
    result = send_alerts(wrong, tenant)
    assert result.gave_up == 4 and result.by_channel == {"teams": 4, "webhook": 4}
    failed = outbox(wrong, "failed")
    assert {f.channel for f in failed} == {"pagerduty"}
    assert all(f.last_error == "refused: HTTP 400" for f in failed)


def test_two_dispatchers_at_once_send_each_event_once_per_channel(channel_settings, tenant):
    run_job(channel_settings, tenant, check_config)
    pagerduty, webhook = targets(channel_settings)

    async def both() -> list:
        async with open_store(channel_settings) as a, open_store(channel_settings) as b:
            now = tenant.clock.now()
            kwargs = {
                "graph_endpoint": channel_settings.graph_endpoint,
                "pagerduty": pagerduty,
                "webhook": webhook,
            }
            return await asyncio.gather(
                dispatch(a, tenant.teams_url, now, owner="first", **kwargs),
                dispatch(b, tenant.teams_url, now, owner="second", **kwargs),
            )

    first, second = asyncio.run(both())
    assert first.items_sent + second.items_sent == 12
    assert len(tenant.teams_messages()) == 4
    assert tenant.pagerduty.received == 4
    assert {i.triggers for i in tenant.pagerduty_incidents()} == {1}
    ids = webhook_ids(tenant)
    assert len(ids) == len(set(ids)) == 4


def test_a_webhook_receiver_with_another_secret_refuses_and_the_row_waits(channel_settings, tenant):
    wrong = dataclasses.replace(channel_settings, alert_webhook_secret="z" * 40)
    run_job(wrong, tenant, check_config)
    result = send_alerts(wrong, tenant)
    assert tenant.webhook_events() == [] and result.by_channel == {"teams": 4, "pagerduty": 4}
    assert {r.channel for r in outbox(wrong, "pending")} == {"webhook"}
    assert all(r.last_error == "HTTP 401" for r in outbox(wrong, "pending"))


# --- The receivers ------------------------------------------------------------------------------


def test_the_pagerduty_receiver_refuses_an_invalid_event_in_pagerdutys_shape(tenant):
    import httpx

    event = {"routing_key": tenant.pagerduty_routing_key, "event_action": "trigger"}
    response = httpx.post(tenant.pagerduty_url, json={**event, "payload": {"summary": "x"}})
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert any("payload.source" in e for e in body["errors"])
    assert any("payload.severity" in e for e in body["errors"])
    good = {
        **event,
        "dedup_key": "k1",
        "payload": {"summary": "s", "source": "h", "severity": "info"},
    }
    accepted = httpx.post(tenant.pagerduty_url, json=good)
    assert accepted.status_code == 202
    assert accepted.json() == {"status": "success", "message": "Event processed", "dedup_key": "k1"}
    assert httpx.post(tenant.pagerduty_url, json=good).status_code == 202
    [incident] = tenant.pagerduty_incidents()
    assert incident.triggers == 2 and incident.status == "triggered"


def test_the_webhook_receiver_refuses_a_bad_signature_or_a_stale_timestamp(tenant):
    import httpx

    from monitors.alerts.webhook import WebhookTarget, signed, webhook_event

    event = webhook_event("row1", "opened", {"kind": "etg_missing"}, tenant.clock.now())
    good = WebhookTarget(tenant.webhook_url, tenant.webhook_secret)
    body, headers = signed(good, event, tenant.clock.now())
    _, forged = signed(WebhookTarget(tenant.webhook_url, "f" * 40), event, tenant.clock.now())
    stale_body, stale = signed(good, event, tenant.clock.now() - timedelta(minutes=6))
    assert httpx.post(tenant.webhook_url, content=body, headers=forged).status_code == 401
    assert httpx.post(tenant.webhook_url, content=stale_body, headers=stale).status_code == 401
    assert httpx.post(tenant.webhook_url, content=body + b" ", headers=headers).status_code == 401
    assert tenant.webhook_events() == []
    assert httpx.post(tenant.webhook_url, content=body, headers=headers).status_code == 204
    assert webhook_ids(tenant) == ["row1"]


# --- Reminders ---------------------------------------------------------------------------------


def reminders(tenant):
    texts = [m.card["body"][0]["text"] for m in tenant.teams_messages()]
    return [t for t in texts if t.startswith("Reminder:")]


def test_an_open_unacknowledged_anomaly_is_reminded_after_the_delay_and_at_most_daily(
    channel_settings, tenant
):
    run_job(channel_settings, tenant, check_config)
    send_alerts(channel_settings, tenant)
    tenant.clock.advance(23 * 3600)
    send_alerts(channel_settings, tenant)
    assert reminders(tenant) == []  # not due yet
    tenant.clock.advance(3600)
    send_alerts(channel_settings, tenant)
    assert reminders(tenant) == ["Reminder: open for 24 hours, not acknowledged"] * 4
    assert len(webhook_ids(tenant, "reminder")) == 4
    assert tenant.pagerduty.received == 4  # PagerDuty's incident is still open: no reminder
    assert all(a.reminded_at == tenant.clock.now() for a in stored_anomalies(channel_settings))
    tenant.clock.advance(12 * 3600)
    send_alerts(channel_settings, tenant)
    assert len(reminders(tenant)) == 4  # at most daily
    tenant.clock.advance(12 * 3600)
    send_alerts(channel_settings, tenant)
    assert reminders(tenant)[-4:] == ["Reminder: open for 2 days, not acknowledged"] * 4


def test_an_acknowledged_anomaly_gets_no_reminder(channel_settings, tenant):
    run_job(channel_settings, tenant, check_config)
    send_alerts(channel_settings, tenant)
    [taken, *_] = stored_anomalies(channel_settings, Status.OPEN)

    async def acknowledge(store):
        taken.acknowledged_by, taken.acknowledged_at = "oncall@contoso.com", tenant.clock.now()
        await store.anomalies.save(taken)

    in_store(channel_settings, acknowledge)
    tenant.clock.advance(25 * 3600)
    send_alerts(channel_settings, tenant)
    reminded = [e.body["anomaly"] for e in tenant.webhook_events() if e.event == "reminder"]
    assert len(reminded) == 3
    assert all(
        (a["kind"], a["policy_id"]) != (taken.kind, taken.subject.policy_id) for a in reminded
    )


def test_a_reminder_is_queued_once_even_when_its_delivery_fails(channel_settings, tenant):
    run_job(channel_settings, tenant, check_config)
    send_alerts(channel_settings, tenant)
    tenant.clock.advance(25 * 3600)
    tenant.webhook.fail_next(500, times=4)
    send_alerts(channel_settings, tenant)
    waiting = outbox(channel_settings, "pending")
    assert {(w.channel, w.change) for w in waiting} == {("webhook", "reminder")}
    assert len(waiting) == 4
    tenant.clock.advance(31)
    send_alerts(channel_settings, tenant)
    assert len(webhook_ids(tenant, "reminder")) == 4 and len(reminders(tenant)) == 4
    queued = [r for r in outbox(channel_settings) if r.change == "reminder"]
    assert len(queued) == 8  # teams and webhook, once each per anomaly


# --- Secrets ------------------------------------------------------------------------------------


def test_the_channel_secrets_never_reach_logs_or_tables(channel_settings, tenant):
    tenant.pagerduty.fail_next(500, times=2)
    tenant.webhook.fail_next(500)
    secrets = [tenant.pagerduty_routing_key, tenant.webhook_secret]
    assert set(secrets) <= set(channel_settings.secrets())
    with capture_logs() as logs:
        run_job(channel_settings, tenant, check_config)
        send_alerts(channel_settings, tenant)
        tenant.clock.advance(31)
        send_alerts(channel_settings, tenant)
    assert logs and any(log["event"] == "alert.retry_scheduled" for log in logs)
    assert all(s not in repr(logs) for s in secrets)
    assert all(s not in repr(r.to_entity()) for r in outbox(channel_settings) for s in secrets)
