"""The fan-out's pure parts: which tenants a timer firing enqueues, the message, its parsing,
and the wiring that makes the host deliver and give up on it as the code expects."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitors.settings import JOB_SCHEDULES, SCHEDULE_SETTINGS, Settings
from monitors.tenants.fanout import (
    BadMessage,
    JobMessage,
    firing_window,
    is_due,
    messages_for,
    parse_message,
)
from monitors.tenants.registry import Overrides, Tenant

ROOT = Path(__file__).resolve().parents[2]
A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"
C = "33333333-3333-4333-8333-333333333333"
AT = datetime(2026, 3, 2, 11, 0, 0, 250_000, tzinfo=UTC)


def tenant(tenant_id: str, *, enabled: bool = True, scan: str | None = None) -> Tenant:
    schedules = {"SCAN_SCHEDULE": scan} if scan else {}
    return Tenant(tenant_id, f"T {tenant_id[:4]}", enabled, overrides=Overrides(schedules))


def test_a_message_round_trips_through_its_bytes():
    message = JobMessage(A, "scan", AT)
    body = message.to_bytes()
    assert json.loads(body) == {"v": 1, "tenant": A, "job": "scan", "at": AT.isoformat()}
    assert parse_message(body) == message
    assert parse_message(body.decode()) == message  # the host may hand the body as text


def test_a_tenant_id_in_capitals_is_read_as_the_same_tenant():
    body = json.dumps({"v": 1, "tenant": A.upper(), "job": "scan", "at": AT.isoformat()})
    assert parse_message(body).tenant_id == A


@pytest.mark.parametrize(
    "body,why",
    [
        (b"", "not UTF-8 JSON"),
        (b"\xff\xfe\x00", "not UTF-8 JSON"),
        (b"{", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"scan"', "not a JSON object"),
        (b'{"tenant": "x"}', "version"),
        (json.dumps({"v": True, "tenant": A, "job": "scan", "at": AT.isoformat()}), "version"),
        (json.dumps({"v": 2, "tenant": A, "job": "scan", "at": AT.isoformat()}), "version"),
        (json.dumps({"v": 1, "tenant": A, "job": "remediation", "at": "x"}), "unknown job"),
        (json.dumps({"v": 1, "tenant": A, "job": ["scan"], "at": "x"}), "unknown job"),
        (json.dumps({"v": 1, "tenant": 7, "job": "scan", "at": AT.isoformat()}), "tenant"),
        (json.dumps({"v": 1, "tenant": "contoso", "job": "scan", "at": "x"}), "GUID"),
        (json.dumps({"v": 1, "tenant": A, "job": "scan", "at": "yesterday"}), "ISO time"),
        (json.dumps({"v": 1, "tenant": A, "job": "scan", "at": 5}), "ISO time"),
        (json.dumps({"v": 1, "tenant": A, "job": "scan", "at": "2026-03-02T11:00"}), "offset"),
        (b'{"v": 1, "pad": "' + b"x" * 5000 + b'"}', "bytes"),
    ],
)
def test_anything_but_a_timers_message_is_refused_saying_why(body, why):
    with pytest.raises(BadMessage, match=why):
        parse_message(body)


def test_every_timer_job_can_be_queued_under_its_own_schedule_setting():
    from tests.helpers import trigger_of

    for job, setting in JOB_SCHEDULES.items():
        assert trigger_of(job)["schedule"] == f"%{setting}%"
    assert set(JOB_SCHEDULES.values()) <= set(SCHEDULE_SETTINGS)


def test_the_firing_window_is_the_previous_and_this_firing_of_the_schedule():
    assert firing_window("0 */10 * * * *", AT) == (
        datetime(2026, 3, 2, 10, 50, tzinfo=UTC),
        datetime(2026, 3, 2, 11, 0, tzinfo=UTC),
    )
    # Weekly (Mondays 07:00): 2026-03-02 is a Monday.
    assert firing_window("0 0 7 * * 1", AT) == (
        datetime(2026, 2, 23, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 2, 7, 0, tzinfo=UTC),
    )


def test_without_an_override_every_enabled_tenant_is_due_and_a_disabled_one_never():
    window = firing_window("0 */10 * * * *", AT)
    assert is_due(tenant(A), "scan", window)
    assert not is_due(tenant(B, enabled=False), "scan", window)


def test_an_override_is_due_only_when_its_own_schedule_fires_since_the_previous_firing():
    hourly = tenant(A, scan="0 0 * * * *")
    at_the_hour = firing_window("0 */10 * * * *", AT)
    ten_past = firing_window("0 */10 * * * *", AT + timedelta(minutes=10))
    assert is_due(hourly, "scan", at_the_hour)
    assert not is_due(hourly, "scan", ten_past)
    # Its override of the scan says nothing about its other jobs.
    assert is_due(hourly, "alerts", ten_past)


def test_a_firing_enqueues_one_message_per_due_tenant_stamped_with_the_firing():
    tenants = [tenant(A), tenant(B, enabled=False), tenant(C, scan="0 0 * * * *")]
    at_the_hour = messages_for(tenants, "scan", SCHEDULE_SETTINGS, AT)
    ten_past = messages_for(tenants, "scan", SCHEDULE_SETTINGS, AT + timedelta(minutes=10))
    assert [(m.tenant_id, m.job, m.at) for m in at_the_hour] == [
        (A, "scan", AT),
        (C, "scan", AT),
    ]
    assert [m.tenant_id for m in ten_past] == [A]


def test_the_queue_endpoint_follows_the_table_endpoints_account():
    from monitors.store.queues import queue_service_url

    base = Settings.from_env(
        {
            "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:9",
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net",
        }
    )
    assert queue_service_url(base) == "https://acct.queue.core.windows.net"
    explicit = Settings.from_env(
        {
            "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:9",
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_TABLE_URL": "https://acct.table.core.windows.net",
            "ETG_STORAGE_QUEUE_URL": "https://other.queue.core.windows.net",
        }
    )
    assert queue_service_url(explicit) == "https://other.queue.core.windows.net"


def test_the_host_gives_up_after_five_tries_and_decodes_messages_as_they_are_sent():
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 5
    # monitors.store.queues sends base64 (BinaryBase64EncodePolicy).
    assert queues["messageEncoding"] == "base64"


@pytest.mark.parametrize(
    "name,queue",
    [("tenant_job", "%ETG_JOB_QUEUE%"), ("tenant_job_poison", "%ETG_JOB_QUEUE%-poison")],
)
def test_the_queue_functions_read_the_job_queue_and_its_poison_queue(name, queue):
    from monitors.store.queues import poison_queue
    from tests.helpers import trigger_of

    trigger = trigger_of(name)
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == queue
    assert trigger["connection"] == "AzureWebJobsStorage"
    assert poison_queue("%ETG_JOB_QUEUE%") == trigger_of("tenant_job_poison")["queueName"]


def test_the_development_storage_shorthand_reaches_azurites_default_queue_port():
    import asyncio

    from monitors.store.queues import JobQueue

    local = Settings.from_env(
        {
            "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:9",
            "ETG_GRAPH_CREDENTIAL": "none",
            "ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true",
        }
    )

    async def url() -> str:
        async with JobQueue(local, local.job_queue) as queue:
            return str(queue._client.url)

    assert asyncio.run(url()) == "http://127.0.0.1:10001/devstoreaccount1/etg-jobs"
