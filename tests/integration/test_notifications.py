"""Change notifications end to end: subscriptions created by the monitor, the handshake and
notifications sent by the simulated tenant over HTTP to the real function, delta processing,
and the scan using what was observed."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import function_app
from monitors import entry
from monitors.jobs.notifications import process_inbox
from monitors.jobs.subscriptions import sync_subscriptions
from monitors.scan.pipeline import run_scan
from monitors.store.notifications import NotificationStore
from monitors.store.scan_state import ScanState
from tests.helpers import (
    at_storage_write,
    call_route,
    etg_of,
    in_store,
    notification_inbox,
    run_job,
    scenario_device,
    trigger_of,
    with_webhook,
)

pytestmark = pytest.mark.integration
CLIENT_STATE = "kT7v2Q9xLm4pZr8sWb3nYc6h"


@pytest.fixture
def notif_settings(settings, function_host, monkeypatch):
    return with_webhook(monkeypatch, settings, function_host, CLIENT_STATE)


def observations(settings, group, since):
    return in_store(settings, lambda store: NotificationStore(store).observations(group, since))


def etgs(scenario):
    return sorted({p.etg_group_id for p in scenario.policies if p.etg_group_id})


def test_sync_creates_one_subscription_per_etg_after_the_handshake(
    notif_settings, tenant, scenario
):
    report = run_job(notif_settings, tenant, sync_subscriptions)
    assert sorted(report.created) == etgs(scenario)
    live = tenant.subscriptions()
    assert len(live) == len(etgs(scenario))
    assert all(s["clientState"] == CLIENT_STATE for s in live)
    expiry = min(s["expirationDateTime"] for s in live)
    assert expiry.startswith(str((tenant.clock.now() + timedelta(minutes=41_700)).date()))
    again = run_job(notif_settings, tenant, sync_subscriptions)
    assert again.created == [] and sorted(again.kept) == etgs(scenario)


def test_join_is_notified_recorded_with_its_time_and_used_by_the_scan(
    notif_settings, tenant, scenario
):
    from devtools.simtenant.generate import add_deployments

    run_job(notif_settings, tenant, sync_subscriptions)
    [device] = add_deployments(scenario, 1, at=tenant.clock.now())
    tenant.state.add_devices([device])
    tenant.clock.advance(300)  # the ETG join happens a minute or two into enrollment
    tenant.wait_for_deliveries()
    inbox = notification_inbox(notif_settings)
    assert inbox and all(i.group_id for i in inbox)
    processed_at = tenant.clock.now()
    report = run_job(notif_settings, tenant, process_inbox)
    assert report.observations >= 1
    group = etg_of(scenario, device)
    seen = observations(notif_settings, group, processed_at - timedelta(1))
    mine = [e for e in seen if e.device_object_id == device.object_id]
    assert [(e.op.value, e.at, e.exact) for e in mine] == [("add", processed_at, False)]
    assert notification_inbox(notif_settings) == []
    run_job(notif_settings, tenant, run_scan)

    async def record(store):
        pending = await ScanState(store).pending()
        key = next((k for k in pending if k.startswith(device.managed_device_id)), None)
        return (await ScanState(store).records_by_keys([key]))[key] if key else None

    judged = in_store(notif_settings, record)
    assert judged is not None and any(e.source == "delta" for e in judged.events)


def test_subscription_removed_by_graph_is_recreated(notif_settings, tenant, scenario):
    run_job(notif_settings, tenant, sync_subscriptions)
    victim = tenant.subscriptions()[0]
    tenant.drop_subscription(victim["id"])  # for groups Graph says nothing: only the list shows it
    again = run_job(notif_settings, tenant, sync_subscriptions)
    assert again.created == [victim["resource"].split("/")[1]]
    assert len(tenant.subscriptions()) == len(etgs(scenario))


def test_a_rotated_client_state_replaces_the_subscriptions_made_with_the_old_one(
    notif_settings, tenant, scenario
):
    first = run_job(notif_settings, tenant, sync_subscriptions)
    old_ids = {s["id"] for s in tenant.subscriptions()}
    rotated = dataclasses.replace(notif_settings, client_state="Zq8wN3vR6tY1uI4oP7aS2dF5")
    again = run_job(rotated, tenant, sync_subscriptions)
    live = tenant.subscriptions()
    assert sorted(again.created) == sorted(first.created) == etgs(scenario)
    assert {s["clientState"] for s in live} == {"Zq8wN3vR6tY1uI4oP7aS2dF5"}
    assert not old_ids & {s["id"] for s in live}
    steady = run_job(rotated, tenant, sync_subscriptions)
    assert steady.created == [] and sorted(steady.kept) == etgs(scenario)


def test_a_live_subscription_this_store_has_no_record_of_is_replaced(
    notif_settings, tenant, scenario
):
    run_job(notif_settings, tenant, sync_subscriptions)
    # Another deployment's tables (a registry tenant's, or a store that was reset) know none of
    # them: their client state cannot be known, so they are made again.
    other = dataclasses.replace(notif_settings, table_prefix=notif_settings.table_prefix + "x")
    report = run_job(other, tenant, sync_subscriptions)
    assert sorted(report.created) == etgs(scenario)
    assert len(tenant.subscriptions()) == len(etgs(scenario))


def test_reauthorization_required_is_answered_by_reauthorizing(
    notif_settings, tenant, function_host
):
    run_job(notif_settings, tenant, sync_subscriptions)
    sub = tenant.subscriptions()[0]
    tenant.send_lifecycle(sub["id"], "reauthorizationRequired")
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    assert (sent["kind"], sent["status"]) == ("lifecycle", 202)
    [row] = notification_inbox(notif_settings)
    assert (row.lifecycle_event, row.group_id) == ("reauthorizationRequired", None)
    report = run_job(notif_settings, tenant, process_inbox)
    assert report.lifecycle == ["reauthorizationRequired"] and not report.unverified
    assert report.groups == [sub["resource"].split("/")[1]]  # caught up on its group's delta
    [after] = [s for s in tenant.subscriptions() if s["id"] == sub["id"]]
    assert after["reauthorizationRequired"] is False
    assert notification_inbox(notif_settings) == []
    assert function_host.errors == []


def test_a_lifecycle_row_stays_queued_while_its_groups_delta_fails(notif_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    run_job(notif_settings, tenant, sync_subscriptions)
    sub = tenant.subscriptions()[0]
    tenant.send_lifecycle(sub["id"], "reauthorizationRequired")
    tenant.wait_for_deliveries()
    refused = FaultRule(endpoint="groups.delta", status=403, retry_after=None)
    tenant.faults.add(refused)
    failed = run_job(notif_settings, tenant, process_inbox)
    assert failed.processed == 0 and failed.unverified
    # The row names no group, yet it is kept: the catch-up it asks for has not happened.
    assert len(notification_inbox(notif_settings)) == 1
    tenant.faults.remove(refused)
    report = run_job(notif_settings, tenant, process_inbox)
    assert report.processed == 1 and report.groups == [sub["resource"].split("/")[1]]
    assert notification_inbox(notif_settings) == []


# --- batched deliveries -------------------------------------------------------------------------

JOINS_PER_ETG = 3


def batched_delivery(tenant, scenario):
    """Three joins in every ETG and a reauthorizationRequired for every subscription, all due
    at once: Graph posts them to the shared URL together. Returns the joined object ids."""
    subs = tenant.subscriptions()
    joined = {}
    with tenant.deliveries_held():
        for n, group in enumerate(etgs(scenario)):
            for k in range(JOINS_PER_ETG):
                member = f"0b5e0c3a-7d1f-4c2e-9a6b-{n:06x}{k:06x}"
                tenant.state.add_member_now(group, member)
                joined[member] = group
        for sub in subs:
            tenant.send_lifecycle(sub["id"], "reauthorizationRequired")
    return joined


def test_a_post_of_twenty_mixed_notifications_is_stored_once_each_and_processed(
    notif_settings, tenant, scenario, function_host
):
    run_job(notif_settings, tenant, sync_subscriptions)
    tenant.clock.advance(1)  # the simulator's delta watermark is time-based
    joined = batched_delivery(tenant, scenario)
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    items = sent["body"]["value"]
    assert (len(items), sent["kind"], sent["status"], sent["attempt"]) == (20, "mixed", 202, 1)
    assert len(sent["subscription_ids"]) == len(etgs(scenario))
    inbox = notification_inbox(notif_settings)
    assert len(inbox) == 20 == len({i.id for i in inbox})
    assert len({i.id[:2] for i in inbox}) > 1  # the batch did span partitions
    assert Counter(i.lifecycle_event for i in inbox) == {
        None: 15,
        "reauthorizationRequired": len(etgs(scenario)),
    }
    assert sorted(i.group_id for i in inbox if i.group_id) == sorted(joined.values())
    assert function_host.errors == []

    report = run_job(notif_settings, tenant, process_inbox)
    assert report.processed == 20 and not report.unverified
    assert sorted(report.groups) == etgs(scenario)
    assert report.lifecycle == ["reauthorizationRequired"] * len(etgs(scenario))
    assert not any(s["reauthorizationRequired"] for s in tenant.subscriptions())
    assert notification_inbox(notif_settings) == []
    since = tenant.clock.now() - timedelta(days=1)
    for group in etgs(scenario):
        seen = observations(notif_settings, group, since)
        mine = {e.device_object_id for e in seen if e.op.value == "add"}
        assert mine >= {m for m, g in joined.items() if g == group}


def test_a_repeated_batch_stores_nothing_new(notif_settings, tenant, scenario, function_host):
    run_job(notif_settings, tenant, sync_subscriptions)
    batched_delivery(tenant, scenario)
    tenant.wait_for_deliveries()
    [sent] = tenant.notifications_sent()
    before = notification_inbox(notif_settings)
    # Graph redelivers the same body when it missed the answer.
    response = httpx.post(function_host.url("graph/notifications"), json=sent["body"], timeout=10)
    assert response.status_code == 202
    after = notification_inbox(notif_settings)
    assert sorted(i.id for i in after) == sorted(i.id for i in before) and len(after) == 20
    assert function_host.errors == []


def test_a_storage_failure_mid_batch_answers_503_and_the_redelivery_stores_each_once(
    notif_settings, tenant, scenario, function_host, monkeypatch
):
    from azure.core.exceptions import ServiceRequestError

    run_job(notif_settings, tenant, sync_subscriptions)

    def refuse(_name):
        raise ServiceRequestError("connection reset by the storage account")

    restore = at_storage_write(monkeypatch, 5, refuse)
    batched_delivery(tenant, scenario)
    tenant.wait_for_deliveries()
    restore()
    attempts = tenant.notifications_sent()
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 503), (2, 202)]
    assert attempts[0]["body"] == attempts[1]["body"]
    inbox = notification_inbox(notif_settings)
    assert len(inbox) == 20 == len({i.id for i in inbox})
    assert function_host.errors == []  # the failure was an answer, not an exception


def test_renewal_across_simulated_days(notif_settings, tenant):
    run_job(notif_settings, tenant, sync_subscriptions)
    tenant.clock.advance(28.5 * 86400)
    report = run_job(notif_settings, tenant, sync_subscriptions)
    assert report.renewed and not report.created
    tenant.clock.advance(20 * 86400)  # past the renewed expiry only if renewal failed
    assert len(tenant.subscriptions()) == len(report.renewed)


def test_expired_delta_token_resyncs_without_losing_recorded_joins(
    notif_settings, tenant, scenario
):
    from devtools.simtenant.faults import FaultRule

    run_job(notif_settings, tenant, sync_subscriptions)
    spec = scenario_device(scenario, "CTSO-J5NB1GX")
    group = etg_of(scenario, spec)
    tenant.clock.advance(1)  # the simulator's delta watermark is time-based
    tenant.state.add_member_now(group, spec.object_id)
    tenant.wait_for_deliveries()
    run_job(notif_settings, tenant, process_inbox)
    tenant.faults.add(FaultRule(endpoint="groups.delta", kind="expire_delta", first_n=1))
    tenant.state.remove_member_now(group, spec.object_id)
    tenant.wait_for_deliveries()
    report = run_job(notif_settings, tenant, process_inbox)
    assert report.resynced == [group]
    seen = observations(notif_settings, group, tenant.clock.now() - timedelta(days=1))
    assert [e.op.value for e in seen if e.device_object_id == spec.object_id] == ["add"]


def test_a_refused_subscription_is_unverified_under_its_endpoint_then_created_next_run(
    notif_settings, tenant, scenario
):
    from devtools.simtenant.faults import FaultRule

    rule = FaultRule(endpoint="subscriptions.create", kind="status", status=403)
    tenant.faults.add(rule)
    report = run_job(notif_settings, tenant, sync_subscriptions)
    assert report.created == [] and tenant.subscriptions() == []
    assert {(u.source, u.reason.value, u.permission) for u in report.unverified} == {
        ("POST /v1.0/subscriptions", "forbidden", "Group.Read.All")
    }
    assert len(report.unverified) == len(etgs(scenario))
    tenant.faults.remove(rule)
    again = run_job(notif_settings, tenant, sync_subscriptions)
    assert sorted(again.created) == etgs(scenario) and again.unverified == []


def test_not_configured_sync_does_nothing(settings, tenant):
    report = run_job(settings, tenant, sync_subscriptions)
    assert not report.configured and tenant.subscriptions() == []


# --- the webhook as the internet sees it ------------------------------------------------------


def post(params=None, body=b"", content_type="application/json", headers=None):
    """The webhook function called as the host calls it for Graph's POST."""
    headers = {**(headers or {}), "content-type": content_type}
    return call_route(
        "graph_notifications",
        "POST",
        "graph/notifications",
        params=params,
        headers=headers,
        body=body,
    )


def notification(sub_id, state=CLIENT_STATE, group="00000000-0000-0000-0000-000000000001"):
    return {
        "subscriptionId": sub_id,
        "changeType": "updated",
        "clientState": state,
        "resource": f"Groups/{group}",
        "tenantId": "t",
        "resourceData": {"id": group, "@odata.type": "#Microsoft.Graph.Group"},
    }


@pytest.fixture
def known_sub(notif_settings, tenant):
    run_job(notif_settings, tenant, sync_subscriptions)
    return tenant.subscriptions()[0]["id"]


def inbox_size(settings):
    return len(notification_inbox(settings))


def test_validation_token_is_echoed_decoded_as_plain_text(notif_settings):
    response = post({"validationToken": "Validation: Testing client application reachability"})
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert response.get_body() == b"Validation: Testing client application reachability"


@pytest.mark.parametrize("token", ["", "x" * 5000, "bad\x00token", "line\nbreak"])
def test_hostile_validation_tokens_are_refused(notif_settings, token):
    assert post({"validationToken": token}).status_code == 400


@pytest.mark.parametrize(
    "body,ctype,status",
    [
        (b"{not json", "application/json", 400),
        (b'{"value": []}', "application/json", 400),
        (b'{"value": {}}', "application/json", 400),
        (b"[1,2,3]", "application/json", 400),
        (b'{"value": [1]}', "text/plain", 415),
        (b"x" * (300 * 1024), "application/json", 413),
    ],
)
def test_malformed_wrong_or_oversized_bodies_store_nothing(
    notif_settings, known_sub, body, ctype, status
):
    assert post(body=body, content_type=ctype).status_code == status
    assert inbox_size(notif_settings) == 0


def test_wrong_client_state_or_unknown_subscription_is_refused(notif_settings, known_sub):
    wrong_state = {"value": [notification(known_sub, state="guess-" + "x" * 20)]}
    unknown = {"value": [notification("11111111-2222-3333-4444-555555555555")]}
    for body in (wrong_state, unknown):
        assert post(body=json.dumps(body).encode()).status_code == 403
    assert inbox_size(notif_settings) == 0


def test_only_valid_items_of_a_mixed_batch_are_kept(notif_settings, known_sub):
    body = {
        "value": [notification(known_sub), notification(known_sub, state="nope" * 5), "junk", None]
    }
    assert post(body=json.dumps(body).encode()).status_code == 202
    assert inbox_size(notif_settings) == 1


def test_a_burst_of_duplicate_deliveries_is_stored_once(notif_settings, known_sub):
    body = json.dumps({"value": [notification(known_sub)] * 5}).encode()
    assert all(post(body=body).status_code == 202 for _ in range(10))
    assert inbox_size(notif_settings) == 1


def test_function_route_and_auth(notif_settings):
    trigger = trigger_of("graph_notifications")
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (
        "graph/notifications",
        ["POST"],
        "FUNCTION",
    )
    assert function_app.app is not None


# --- hostile requests through the real function ------------------------------------------------

ANSWERS = {200, 202, 400, 403, 413, 415}
header_text = st.text(st.characters(codec="latin-1", exclude_categories=["Cs"]), max_size=60)


def hostile_bodies(sub_id):
    items = st.one_of(
        st.builds(
            notification,
            # weighted towards the real values so acceptance is reached, not only refusal
            st.sampled_from([sub_id, sub_id, sub_id, "", "x" * 80, sub_id.upper()]),
            st.sampled_from([CLIENT_STATE] * 3 + ["", CLIENT_STATE[:-1], CLIENT_STATE + " ", None]),
        ),
        st.none() | st.integers() | st.text(max_size=20),
        st.dictionaries(st.text(max_size=12), st.text(max_size=12) | st.none(), max_size=5),
    )
    as_json = st.builds(
        lambda value, wrap: json.dumps({"value": value} if wrap else value).encode(),
        st.lists(items, max_size=6),
        st.booleans(),
    )
    return as_json | st.binary(max_size=2048)


@pytest.mark.hostile
def test_any_request_gets_a_short_4xx_or_an_accept_and_never_leaks_the_secret(
    notif_settings, known_sub, capsys
):
    @settings(
        max_examples=max(100, settings.default.max_examples // 10),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        params=st.sampled_from([{}, {}, {"code": "function-key"}])
        | st.dictionaries(
            st.sampled_from(["validationToken", "validationtoken", "code", "x"]) | header_text,
            header_text,
            max_size=3,
        ),
        headers=st.dictionaries(
            st.sampled_from(["x-ms-client-request-id", "Content-Length"])
            | header_text.filter(lambda k: k.strip() != ""),
            header_text,
            max_size=3,
        ),
        content_type=st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"]
        )
        | header_text,
        body=hostile_bodies(known_sub),
    )
    # One of each answer for sure, whatever the random examples turn out to be.
    @example({}, {}, "application/json", json.dumps({"value": [notification(known_sub)]}).encode())
    @example({"validationToken": "abc"}, {}, "text/plain", b"")
    @example({}, {}, "application/json", b"{broken")
    @example({}, {}, "application/json", json.dumps({"value": [notification("x" * 36)]}).encode())
    def check(params, headers, content_type, body):
        response = post(params, body, content_type, headers)
        answer = response.get_body()
        seen[response.status_code] += 1
        assert response.status_code in ANSWERS, (response.status_code, answer)
        if response.status_code == 200:
            assert response.mimetype == "text/plain" and answer.decode() in params.values()
        else:
            assert len(answer) < 100 and CLIENT_STATE.encode() not in answer
        out = capsys.readouterr()
        assert CLIENT_STATE not in out.out + out.err

    seen: Counter[int] = Counter()
    check()
    # every branch was reached: acceptance, the handshake and refusals
    assert {200, 202, 400, 403} <= set(seen), seen


def test_store_outage_answers_503_so_graph_redelivers(notif_settings, known_sub, monkeypatch):
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + (
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    )
    monkeypatch.setenv(
        "ETG_STORAGE_CONNECTION", dead + ";TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    monkeypatch.setattr(entry, "_settings", None)
    body = json.dumps({"value": [notification(known_sub)]}).encode()
    response = post(body=body)
    assert response.status_code == 503
    assert b"retry" in response.get_body()
