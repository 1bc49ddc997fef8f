"""What each channel is sent: PagerDuty events, signed webhook events, the Teams reminder."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from monitors.alerts.cards import reminder_card
from monitors.alerts.dispatch import plan_messages, plan_pagerduty, plan_webhook
from monitors.alerts.pagerduty import PagerDutyTarget, dedup_key, pagerduty_event
from monitors.alerts.samples import sample_anomaly
from monitors.alerts.webhook import SCHEMA, WebhookTarget, signed, webhook_event
from monitors.rules.kinds import KINDS, Severity
from monitors.store.outbox import OutboxItem, payload_key

GLOBAL = "https://graph.microsoft.com"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
KEY = "k" * 32


def _item(kind: str, change: str = "opened", channel: str = "teams") -> OutboxItem:
    payload = sample_anomaly(kind).to_json()
    return OutboxItem(kind, change, "run-1", NOW, payload, channel=channel)


def test_an_opening_triggers_with_the_anomaly_key_as_dedup_key():
    anomaly = sample_anomaly("etg_missing")
    event = pagerduty_event(anomaly.to_json(), anomaly.key, "opened", KEY, NOW)
    assert event is not None
    assert event["event_action"] == "trigger" and event["routing_key"] == KEY
    assert event["dedup_key"] == anomaly.key
    payload = event["payload"]
    assert isinstance(payload, dict)
    assert payload["source"] == "etg-monitor" and payload["timestamp"] == NOW.isoformat()
    assert str(payload["summary"]).startswith(KINDS["etg_missing"].title)


def test_reopening_and_unsuppressing_trigger_again_and_resolution_resolves_the_same_key():
    anomaly = sample_anomaly("etg_missing")
    payload = anomaly.to_json()
    actions = {
        change: pagerduty_event(payload, anomaly.key, change, KEY, NOW)
        for change in ("reopened", "unsuppressed", "resolved")
    }
    assert {c: e and e["event_action"] for c, e in actions.items()} == {
        "reopened": "trigger",
        "unsuppressed": "trigger",
        "resolved": "resolve",
    }
    assert {e and e["dedup_key"] for e in actions.values()} == {anomaly.key}
    assert "payload" not in (actions["resolved"] or {})


def test_a_reminder_is_no_pagerduty_event():
    anomaly = sample_anomaly("etg_missing")
    assert pagerduty_event(anomaly.to_json(), anomaly.key, "reminder", KEY, NOW) is None


def test_severity_maps_critical_to_critical_and_high_to_error():
    seen = {}
    for kind in KINDS.values():
        anomaly = sample_anomaly(kind.name)
        event = pagerduty_event(anomaly.to_json(), anomaly.key, "opened", KEY, NOW) or {}
        seen[kind.severity] = event["payload"]["severity"]
    assert seen == {Severity.CRITICAL: "critical", Severity.HIGH: "error"}


def test_a_long_summary_is_cut_to_pagerdutys_limit_and_a_long_key_hashed():
    payload = {**sample_anomaly("etg_missing").to_json(), "explanation": "x" * 5000}
    event = pagerduty_event(payload, "key", "opened", KEY, NOW) or {}
    assert len(event["payload"]["summary"]) == 1024
    long_key = "a" * 300
    assert len(dedup_key(long_key)) <= 255 and dedup_key(long_key) != dedup_key("a" * 301)


def test_pagerduty_plans_one_event_per_row_keyed_by_its_anomaly():
    items = [_item("etg_missing", channel="pagerduty"), _item("etg_removed", channel="pagerduty")]
    target = PagerDutyTarget(KEY, "https://events.pagerduty.com/v2/enqueue")
    planned = plan_pagerduty(items, target, NOW)
    assert [len(p.items) for p in planned] == [1, 1]
    assert {p.payload["dedup_key"] for p in planned} == {payload_key(i.payload) for i in items}
    assert {p.url for p in planned} == {target.events_url}
    assert KEY not in repr(target)


def test_webhook_event_follows_schema_v1_with_the_row_id():
    item = _item("etg_missing", "reopened", "webhook")
    event = webhook_event(item.id, item.change, item.payload, NOW)
    assert event["schema"] == SCHEMA and event["event"] == "opened" and event["id"] == item.id
    assert event["sent_at"] == NOW.isoformat() and event["anomaly"] == item.payload
    assert webhook_event(item.id, "resolved", item.payload, NOW)["event"] == "resolved"
    assert webhook_event(item.id, "reminder", item.payload, NOW)["event"] == "reminder"


def test_webhook_signature_is_hmac_sha256_over_timestamp_dot_body():
    target = WebhookTarget("https://hooks.example.invalid/etg", "s" * 40)
    event = webhook_event("abc", "opened", sample_anomaly("etg_missing").to_json(), NOW)
    body, headers = signed(target, event, NOW)
    assert json.loads(body) == event
    timestamp = headers["X-Etg-Timestamp"]
    assert int(timestamp) == int(NOW.timestamp())
    expected = hmac.new(b"s" * 40, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Etg-Signature"] == f"v1={expected}"
    other, _ = signed(WebhookTarget(target.url, "t" * 40), event, NOW)
    assert other == body  # the body does not depend on the key; only the signature does
    assert signed(WebhookTarget(target.url, "t" * 40), event, NOW)[1] != headers


def test_a_retried_webhook_row_keeps_its_id():
    item = _item("etg_missing", channel="webhook")
    target = WebhookTarget("https://hooks.example.invalid/etg", "s" * 40)
    first = plan_webhook([item], target, NOW)[0]
    later = plan_webhook([item], target, NOW + timedelta(minutes=5))[0]
    assert first.payload["id"] == later.payload["id"] == item.id
    assert first.headers["X-Etg-Signature"] != later.headers["X-Etg-Signature"]


def test_the_teams_reminder_card_says_how_long_it_has_been_open():
    anomaly = sample_anomaly("etg_missing")
    anomaly.first_seen = NOW - timedelta(days=3, hours=2)
    card = reminder_card(anomaly.to_json(), NOW, GLOBAL)
    assert card["body"][0]["text"] == "Reminder: open for 3 days, not acknowledged"
    item = OutboxItem("etg_missing", "reminder", "r", NOW, anomaly.to_json())
    [message] = plan_messages([item], 5, GLOBAL)
    assert message.label == "reminder etg_missing"
    assert "Reminder: open for 3 days" in json.dumps(message.payload)


def test_a_stored_row_without_a_channel_is_a_teams_row():
    item = _item("etg_missing", channel="pagerduty")
    entity = item.to_entity()
    assert entity["Channel"] == "pagerduty"
    del entity["Channel"]
    assert OutboxItem.from_entity(entity).channel == "teams"
