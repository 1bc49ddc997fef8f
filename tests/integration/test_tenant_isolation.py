"""Two customer tenants of one deployment never see each other's data.

Both simulated tenants serve the same scenario (the same device names, ids, groups and
policies) with only the tenant id changed, and one difference: in the second, one healthy
device never joined its ETG. Both are registered; each tenant's jobs run as the queue runs
them (``run_tenant_job``: the tenant's settings, its tables, its Teams channel through an
``env:`` reference); both simulators send their change notifications to the one webhook. Then
every row of every table, every card, every summary line and every stored notification is
checked to belong to its own tenant.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.data.tables import TableServiceClient

from devtools.simtenant.funchost import FunctionHost
from devtools.simtenant.scenario import demo_scenario
from devtools.simtenant.server import SimulatedTenant
from monitors import service
from monitors.summary.compute import IsoWeek
from monitors.summary.rollup import rollup_text
from monitors.tenants import webhook as tenant_webhook
from monitors.tenants.registry import Tenant, TenantRegistry
from monitors.tenants.run import run_tenant_job, settings_of
from monitors.tenants.scope import client_state_for
from tests.helpers import (
    GROUND_TRUTH,
    app_functions,
    call_route,
    device_anomalies,
    in_store,
    notification_inbox,
    pairs,
    serve_webhook_from_env,
    settings_for,
)

pytestmark = pytest.mark.integration
CLIENT_STATE = "kT7v2Q9xLm4pZr8sWb3nYc6h"
WEEK = IsoWeek(2026, 47)  # the demo scenario's week
ONLY_IN_B = "CTSO-FYBK4XE"  # healthy in the first tenant; never joined its ETG in the second


@dataclasses.dataclass
class Side:
    name: str
    tenant_id: str
    member: str  # the object the test adds to an ETG in this tenant only
    sim: SimulatedTenant
    settings: Any = None
    subscriptions: list[str] = dataclasses.field(default_factory=list)
    runs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.tenant_id})"

    def markers(self) -> dict[str, str]:
        """Strings that only this tenant's data can contain."""
        return {
            "graph endpoint": urlsplit(self.sim.base_url).netloc,
            "tenant id": self.tenant_id,
            "display name": self.name,
            "joined member": self.member,
            **{f"subscription {n}": sub for n, sub in enumerate(self.subscriptions)},
        }


SIDES = (
    (
        "Northwind Traders",
        "a1a1a1a1-0000-4000-8000-00000000000a",
        "0b5e0c3a-7d1f-4c2e-9a6b-0000000000aa",
    ),
    (
        "Tailspin Toys",
        "b2b2b2b2-0000-4000-8000-00000000000b",
        "0b5e0c3a-7d1f-4c2e-9a6b-0000000000bb",
    ),
)


def _scenario(tenant_id: str, broken: bool) -> Any:
    scenario = copy.deepcopy(demo_scenario())
    scenario.tenant_id = tenant_id
    if broken:
        device = next(d for d in scenario.devices if d.device_name == ONLY_IN_B)
        device.membership = []
    return scenario


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _post(body: dict[str, Any]) -> int:
    response = call_route(
        "graph_notifications",
        "POST",
        "graph/notifications",
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode(),
    )
    return int(response.status_code)


def _rows_by_prefix(connection: str, base_prefix: str) -> dict[str, dict[str, list[str]]]:
    """Every table under the deployment's prefix, each row as its JSON text."""
    service_client = TableServiceClient.from_connection_string(connection)
    out: dict[str, dict[str, list[str]]] = {}
    for table in service_client.list_tables():
        if table.name.startswith(base_prefix):
            client = service_client.get_table_client(table.name)
            out[table.name] = [json.dumps(e, default=str) for e in client.list_entities()]
    return out


def _start(stack: Any, mp: pytest.MonkeyPatch, azurite: Any) -> tuple[Any, dict[str, Side]]:
    host = stack.enter_context(FunctionHost(list(app_functions().values())))
    prefix = "iso" + uuid.uuid4().hex[:10]
    # The deployment's own Graph is a closed port: nothing of a tenant may reach it.
    own = settings_for("http://127.0.0.1:9", azurite.connection_string, prefix)
    base = dataclasses.replace(
        own,
        detailed_reports=True,
        notification_url=host.url("graph/notifications"),
        client_state=CLIENT_STATE,
    )
    serve_webhook_from_env(mp, base)
    mp.setattr(tenant_webhook.routes_cache, "_entries", {})
    sides: dict[str, Side] = {}
    for n, (name, tenant_id, member) in enumerate(SIDES):
        sim = stack.enter_context(SimulatedTenant(_scenario(tenant_id, broken=n == 1)))
        mp.setenv(f"ISOLATION_TEAMS_{n}", sim.teams_url)
        sides[tenant_id] = Side(name, tenant_id, member, sim)

    async def register(store: Any) -> None:
        for n, side in enumerate(sides.values()):
            entry = Tenant(
                side.tenant_id,
                side.name,
                secrets={"teams_webhook_url": f"env:ISOLATION_TEAMS_{n}"},
                graph_endpoint=side.sim.base_url,
            )
            await TenantRegistry(store).put(entry, datetime.now(UTC))
        for side in sides.values():
            side.settings = await settings_of(base, side.tenant_id, store)

    in_store(base, register)
    return base, sides


def _work(base: Any, sides: dict[str, Side]) -> dict[str, Any]:
    """Each tenant's jobs as its queue messages run them, and both tenants' notifications."""
    for side in sides.values():
        for job in ("subscriptions", "scan"):
            side.runs[job] = _run(run_tenant_job(base, side.tenant_id, job, clock=side.sim.clock))
        side.subscriptions = sorted(s["id"] for s in side.sim.subscriptions())
    for side in sides.values():
        side.sim.clock.advance(1)  # the simulator's delta watermark is time-based
        etg = side.sim.subscriptions()[0]["resource"].split("/")[1]
        side.sim.state.add_member_now(etg, side.member)
    for side in sides.values():
        side.sim.wait_for_deliveries()
    a, b = sides.values()
    inboxes = {t: notification_inbox(s.settings) for t, s in sides.items()}
    forged = {
        # B's name and subscription, A's client state; then A's name with B's state.
        "b with a's state": _post(
            {"value": [_item(b.tenant_id, b.subscriptions[0], _state(a.tenant_id))]}
        ),
        "a with b's state": _post(
            {"value": [_item(a.tenant_id, a.subscriptions[0], _state(b.tenant_id))]}
        ),
    }
    for side in sides.values():
        side.runs["notifications"] = _run(
            run_tenant_job(base, side.tenant_id, "notifications", clock=side.sim.clock)
        )
        side.runs["weekly_summary"] = _run(
            run_tenant_job(base, side.tenant_id, "weekly_summary", clock=side.sim.clock)
        )
    return {"inboxes": inboxes, "forged": forged}


def _state(tenant_id: str) -> str:
    return client_state_for(CLIENT_STATE, tenant_id)


def _item(tenant_id: str, sub: str, state: str) -> dict[str, Any]:
    group = "00000000-0000-0000-0000-000000000001"
    return {
        "subscriptionId": sub,
        "changeType": "updated",
        "clientState": state,
        "resource": f"Groups/{group}",
        "tenantId": tenant_id,
        "resourceData": {"id": group},
    }


@pytest.fixture(scope="module")
def world(azurite) -> Iterator[dict[str, Any]]:
    import contextlib

    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        base, sides = _start(stack, mp, azurite)
        done = _work(base, sides)
        yield {
            "base": base,
            "sides": sides,
            "rows": _rows_by_prefix(base.storage_connection, base.table_prefix),
            **done,
        }


def _other(world: dict[str, Any], side: Side) -> Side:
    return next(s for s in world["sides"].values() if s is not side)


def test_every_job_of_both_tenants_ran_on_its_own_graph(world):
    for side in world["sides"].values():
        assert side.runs["scan"].get("failed") is None, side.runs["scan"]
        assert not side.runs["scan"].get("skipped")
        assert side.subscriptions, "the subscriptions job created none"
        assert side.sim.stats()  # the tenant's own simulator was read


def test_each_tenants_verdicts_are_its_own(world):
    a, b = world["sides"].values()
    assert pairs(device_anomalies(a.settings)) == GROUND_TRUTH
    assert pairs(device_anomalies(b.settings)) == GROUND_TRUTH | {("etg_missing", ONLY_IN_B)}


def test_no_row_of_one_tenant_names_anything_of_the_other(world):
    rows = world["rows"]
    for side in world["sides"].values():
        mine = {name: r for name, r in rows.items() if name.startswith(side.settings.table_prefix)}
        assert mine, f"no table of {side.name}"
        text = "\n".join(row for table in mine.values() for row in table)
        other = _other(world, side)
        leaked = {what: m for what, m in other.markers().items() if m in text}
        assert leaked == {}, f"{side.name}'s rows name {other.name}'s {sorted(leaked)}"
        # The check has teeth: the tenant's own rows do carry its own markers.
        for what in ("graph endpoint", "joined member", "subscription 0", "display name"):
            assert side.markers()[what] in text, f"{side.name}'s rows lack its own {what}"
    only_b = [
        name
        for name, table in rows.items()
        for row in table
        if ONLY_IN_B in row and '"etg_missing"' in row
    ]
    b_prefix = list(world["sides"].values())[1].settings.table_prefix
    assert only_b and all(name.startswith(b_prefix) for name in only_b)


def test_the_deployments_own_tables_hold_only_the_registry(world):
    base, sides = world["base"], world["sides"].values()
    prefixes = tuple(side.settings.table_prefix for side in sides)
    own = {name for name in world["rows"] if not name.startswith(prefixes)}
    assert own == {f"{base.table_prefix}tenants"}
    assert len(world["rows"][f"{base.table_prefix}tenants"]) == 2


def test_each_tenants_cards_reach_only_its_channel_and_never_name_the_other(world):
    for side in world["sides"].values():
        messages = side.sim.teams_messages()
        assert messages, f"{side.name} received no card"
        other = _other(world, side)
        for message in messages:
            text = json.dumps(message.body)
            assert other.tenant_id not in text and other.name not in text
    a, b = world["sides"].values()
    # The device only the second tenant has a finding for is never on the first one's cards;
    # the second's digest counts it (a digest lists a few devices, not necessarily this one).
    assert not any(ONLY_IN_B in json.dumps(m.body) for m in a.sim.teams_messages())
    assert _opened_count(a) + 1 == _opened_count(b)


def _opened_count(side: Side) -> int:
    """The number of anomalies the tenant's digest card announced as opened."""
    texts = [json.dumps(m.body) for m in side.sim.teams_messages()]
    found = [int(n) for t in texts for n in re.findall(r'"(\d+) ETG anomalies opened"', t)]
    assert len(found) == 1, found
    return found[0]


def test_every_card_a_tenant_receives_says_whose_it_is(world):
    for side in world["sides"].values():
        for message in side.sim.teams_messages():
            assert side.label in json.dumps(message.body), side.name


def test_each_tenants_summary_and_rollup_line_counts_only_its_own_deployments(world):
    a, b = world["sides"].values()
    week = {side.tenant_id: _run(service.summary_of_week(side.settings, WEEK)) for side in (a, b)}
    missing = {t: s["compliance"]["missing"] for t, s in week.items()}
    assert missing[b.tenant_id] == missing[a.tenant_id] + 1
    assert week[a.tenant_id]["deployments"] == week[b.tenant_id]["deployments"]
    rollup = _run(service.rollup_of_week(world["base"], WEEK))
    lines = {line["tenant_id"]: line for line in rollup["tenants"]}
    assert {t: lines[t]["missing"] for t in lines} == missing
    text = rollup_text(rollup).splitlines()
    for side in (a, b):
        [line] = [row for row in text if side.label in row]
        assert f"missing {missing[side.tenant_id]}," in line
        assert _other(world, side).name not in line


def test_each_tenants_notifications_are_stored_and_processed_in_its_own_tables(world):
    for side in world["sides"].values():
        inbox = world["inboxes"][side.tenant_id]
        assert inbox and {i.subscription_id for i in inbox} <= set(side.subscriptions)
        sent = side.sim.notifications_sent()
        assert sent and all(s["status"] == 202 for s in sent)
        report = side.runs["notifications"]
        assert report["processed"] == len(inbox) and report["observations"] >= 1
        assert notification_inbox(side.settings) == []


def test_a_notification_carrying_the_other_tenants_state_is_refused(world):
    assert world["forged"] == {"b with a's state": 403, "a with b's state": 403}
