"""Faults of one tenant stay that tenant's: three simulated tenants fanned out on one queue,
one throttled (every Graph call 429) for the whole run, one whose consent was revoked (every
Graph call 403 Authorization_RequestDenied), and the third finishes with the verdicts of a
fault-free run, before the throttled one has given up."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from monitors.settings import Settings
from tests.helpers import GROUND_TRUTH, device_anomalies, pairs, provider_from_env, run_timer
from tests.integration.test_fanout import entry_of, job_failing, of_tenant, queued, register, runs

pytestmark = pytest.mark.integration

# Only Graph's own paths: the simulator's Teams receiver is left alone.
GRAPH_PATHS = r"^/(v1\.0|beta)/"


@pytest.fixture
def base(monkeypatch, azurite_queues, table_prefix) -> Settings:
    return provider_from_env(
        monkeypatch,
        azurite_queues.connection_string,
        table_prefix,
        ("ETG_NOTIFICATION_URL", "ETG_CLIENT_STATE", "ETG_TEAMS_WEBHOOK_URL"),
        ETG_DETAILED_REPORTS="true",
        # Small retry budgets, so the throttled tenant gives up within seconds.
        ETG_GRAPH_MAX_RETRIES="2",
        ETG_GRAPH_RETRY_BUDGET_SECONDS="20",
    )


@pytest.fixture
def three_tenants() -> Iterator[tuple[Any, Any, Any]]:
    """Three tenants of the demo scenario, each its own directory, on one clock."""
    from devtools.simtenant.scenario import demo_scenario
    from devtools.simtenant.server import SimulatedTenant

    def scenario() -> Any:
        return dataclasses.replace(demo_scenario(), tenant_id=str(uuid.uuid4()))

    healthy = SimulatedTenant(scenario())
    with (
        healthy,
        SimulatedTenant(scenario(), clock=healthy.clock) as throttled,
        SimulatedTenant(scenario(), clock=healthy.clock) as revoked,
    ):
        yield healthy, throttled, revoked


async def _timed(body: bytes, clock: Any) -> tuple[str, float, dict[str, Any]]:
    from monitors import entry

    answer = await entry.run_queued(body, 1, clock=clock)
    return json.loads(body)["tenant"], time.monotonic(), answer


def test_a_throttled_and_a_revoked_tenant_never_delay_or_touch_the_healthy_ones_verdicts(
    base, three_tenants
):
    from devtools.simtenant.faults import FaultRule

    healthy, throttled, revoked = three_tenants
    # Graph's answer to a throttled client, on every call for the whole run.
    throttled.faults.add(FaultRule(GRAPH_PATHS, status=429, retry_after=8))
    # An app without (or no longer with) admin consent: Graph answers 403
    # Authorization_RequestDenied "Insufficient privileges to complete the operation."
    # (SupportArticles-docs troubleshoot-authorization-requestdenied-graph-api.md).
    revoked.faults.add(FaultRule(GRAPH_PATHS, status=403, retry_after=None))
    register(
        base,
        entry_of(healthy, "Contoso"),
        entry_of(throttled, "Fabrikam"),
        entry_of(revoked, "Northwind"),
    )
    run_timer("scan")
    bodies = [json.dumps(m).encode() for m in queued(base)]
    assert len(bodies) == 3

    async def all_at_once() -> list[tuple[str, float, dict[str, Any]]]:
        return list(await asyncio.gather(*(_timed(b, healthy.clock) for b in bodies)))

    began = time.monotonic()
    finished = {tenant: (at - began, answer) for tenant, at, answer in asyncio.run(all_at_once())}

    ids = {
        name: sim.state.tenant_id
        for name, sim in zip(("healthy", "throttled", "revoked"), three_tenants, strict=True)
    }
    healthy_took, _ = finished[ids["healthy"]]
    throttled_took, throttled_answer = finished[ids["throttled"]]
    # The healthy tenant's run ends while the throttled one is still waiting out its 429s.
    assert healthy_took < throttled_took, finished
    assert throttled.faults.rules()[0].fired > 0 and revoked.faults.rules()[0].fired > 0

    contoso = of_tenant(base, ids["healthy"])
    assert pairs(device_anomalies(contoso)) == GROUND_TRUTH
    assert job_failing(contoso) == []

    fabrikam = of_tenant(base, ids["throttled"])
    assert device_anomalies(fabrikam) == []  # unknown is never a finding
    assert job_failing(fabrikam) == []
    fabrikam_run = runs(fabrikam)["scan"]
    assert fabrikam_run.last_outcome not in ("running", "failed")
    assert "throttled" in {u["reason"] for u in fabrikam_run.unverified}
    assert throttled_answer["tenant"] == ids["throttled"]

    northwind = of_tenant(base, ids["revoked"])
    assert device_anomalies(northwind) == []
    northwind_run = runs(northwind)["scan"]
    assert "forbidden" in {u["reason"] for u in northwind_run.unverified}
    assert northwind_run.missing_permissions  # health names what consent is missing
