"""Routing a many-tenant webhook's notifications by tenantId: the pure decisions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitors.notifications.webhook import (
    Rejected,
    authentic_tenants,
    request_items,
    route_notifications,
)
from monitors.settings import Settings
from monitors.tenants.registry import Tenant
from monitors.tenants.scope import client_state_for
from monitors.tenants.webhook import routes_of

BASE_STATE = "kT7v2Q9xLm4pZr8sWb3nYc6h"
A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"
SUB_A = "5a5a5a5a-1111-4111-8111-111111111111"
SUB_B = "5b5b5b5b-2222-4222-8222-222222222222"
GROUP = "0e0e0e0e-3333-4333-8333-333333333333"
STATES = {A: client_state_for(BASE_STATE, A), B: client_state_for(BASE_STATE, B)}
KNOWN = {A: {SUB_A}, B: {SUB_B}}


def item(tenant, sub, state, *, event=None, change="updated"):
    out = {
        "subscriptionId": sub,
        "clientState": state,
        "tenantId": tenant,
        "subscriptionExpirationDateTime": "2026-12-20T00:00:00Z",
    }
    if event:
        out["lifecycleEvent"] = event
    else:
        out |= {"changeType": change, "resource": f"Groups/{GROUP}", "resourceData": {"id": GROUP}}
    return out


def base_settings(**changes):
    env = {
        "ETG_GRAPH_ENDPOINT": "http://127.0.0.1:1",
        "ETG_GRAPH_CREDENTIAL": "none",
        "ETG_STORAGE_CONNECTION": "UseDevelopmentStorage=true",
        "ETG_TABLE_PREFIX": "msp",
    }
    if changes.get("client_state", BASE_STATE):
        env["ETG_CLIENT_STATE"] = changes.get("client_state", BASE_STATE)
    return Settings.from_env(env)


def test_each_item_goes_to_the_tenant_it_names_with_that_tenants_own_state():
    items = [
        item(A, SUB_A, STATES[A]),
        item(B.upper(), SUB_B, STATES[B], change="deleted"),
        item(B, SUB_B, STATES[B], event="reauthorizationRequired"),
    ]
    routed, refused = route_notifications(items, STATES, KNOWN)
    assert refused == 0
    assert {t: sorted(n.subscription_id for n in found) for t, found in routed.items()} == {
        A: [SUB_A],
        B: [SUB_B, SUB_B],
    }
    assert all(n.tenant_id == t for t, found in routed.items() for n in found)
    lifecycle = [n for n in routed[B] if n.lifecycle_event]
    assert [(n.lifecycle_event, n.group_id) for n in lifecycle] == [
        ("reauthorizationRequired", None)
    ]


@pytest.mark.parametrize(
    "intruder",
    [
        item(B, SUB_B, STATES[A]),  # another tenant's client state
        item(A, SUB_B, STATES[A]),  # another tenant's subscription under its own name
        item(C, SUB_A, STATES[A]),  # an unregistered tenant
        item(C, SUB_A, BASE_STATE),  # the deployment's own state is no tenant's
        item(None, SUB_A, STATES[A]),  # no tenant named
        item(A, SUB_A, STATES[A][:-1]),  # nearly the state
    ],
)
def test_an_item_that_is_not_its_tenants_own_is_refused_and_the_rest_kept(intruder):
    routed, refused = route_notifications([item(A, SUB_A, STATES[A]), intruder], STATES, KNOWN)
    assert refused == 1
    assert list(routed) == [A] and [n.subscription_id for n in routed[A]] == [SUB_A]


def test_nothing_acceptable_is_refused_as_a_whole_like_a_wrong_client_state():
    intruders = [item(B, SUB_B, STATES[A]), item(C, SUB_A, BASE_STATE), "junk", None]
    with pytest.raises(Rejected) as refused:
        route_notifications(intruders, STATES, KNOWN)
    assert refused.value.status == 403


def test_only_tenants_named_with_their_own_state_may_be_touched():
    items = [
        item(A, SUB_A, STATES[A]),
        item(B, SUB_B, STATES[A]),
        item(C, SUB_A, STATES[A]),
        {"tenantId": B},
        7,
    ]
    assert authentic_tenants(items, STATES) == {A}
    assert authentic_tenants([*items, item(B, "not-a-guid", STATES[B])], STATES) == {A, B}


def test_a_redelivered_item_is_stored_once_per_tenant():
    again = [item(A, SUB_A, STATES[A])] * 3
    routed, refused = route_notifications(again, STATES, KNOWN)
    assert refused == 0 and len(routed[A]) == 1


@pytest.mark.parametrize(
    "body,ctype,status",
    [
        (b"{not json", "application/json", 400),
        (b'{"value": []}', "application/json", 400),
        (b'{"value": [1]}', "text/plain", 415),
        (b"x" * (300 * 1024), "application/json", 413),
        (json.dumps({"value": [1] * 1001}).encode(), "application/json", 413),
    ],
)
def test_a_request_wrong_as_a_whole_is_refused_before_any_tenant_is_looked_at(body, ctype, status):
    with pytest.raises(Rejected) as refused:
        request_items(body, ctype)
    assert refused.value.status == status


def test_routes_cover_enabled_tenants_each_with_its_own_tables_and_state():
    tenants = [Tenant(A, "Contoso"), Tenant(B, "Fabrikam"), Tenant(C, "Gone", enabled=False)]
    routes = routes_of(base_settings(), tenants)
    assert sorted(routes) == [A, B]
    assert routes[A].table_prefix == f"mspt{tenants[0].tag}"
    assert routes[A].table_prefix != routes[B].table_prefix
    states = {r.client_state for r in routes.values()}
    assert len(states) == 2 and BASE_STATE not in states
    assert routes[B].client_state == client_state_for(BASE_STATE, B)


def test_without_a_client_state_there_are_no_routes():
    assert routes_of(base_settings(client_state=""), [Tenant(A, "Contoso")]) == {}


@given(
    st.lists(
        st.builds(
            item,
            st.sampled_from([A, B, C, A.upper(), "", None]),
            st.sampled_from([SUB_A, SUB_B, "x"]),
            st.sampled_from([STATES[A], STATES[B], BASE_STATE, ""]),
        )
        | st.none()
        | st.integers(),
        min_size=1,
        max_size=8,
    )
)
def test_whatever_arrives_an_accepted_item_is_its_named_tenants_own(items):
    try:
        routed, refused = route_notifications(items, STATES, KNOWN)
    except Rejected as exc:
        assert exc.status == 403
        routed, refused = {}, len(items)
    genuine = [
        i
        for i in items
        if isinstance(i, dict)
        and (i["tenantId"] or "").lower() in STATES
        and i["clientState"] == STATES[i["tenantId"].lower()]
        and i["subscriptionId"] in KNOWN[i["tenantId"].lower()]
    ]
    assert refused == len(items) - len(genuine)
    for tenant, found in routed.items():
        assert all(n.subscription_id in KNOWN[tenant] and n.tenant_id == tenant for n in found)
    assert set(routed) == {i["tenantId"].lower() for i in genuine}
