"""Fan-out on Azurite's Queue service: the timers enqueue one message per enabled registry
tenant, the queue function runs that tenant's job into that tenant's tables only, a message
that fails five times becomes that tenant's monitor_job_failing, and hostile messages are
dropped with a log line. The host is emulated here: receive, invoke the function with the
message as the host passes it, delete on success, move to ``-poison`` after the fifth try."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from monitors.settings import Settings
from monitors.tenants.registry import Overrides, Tenant
from tests.helpers import in_store, provider_from_env, run_timer, stored_anomalies, user_function

pytestmark = pytest.mark.integration

MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount


# --- the deployment, its registry, its queue --------------------------------------------------


@pytest.fixture
def base(monkeypatch, azurite_queues, table_prefix) -> Settings:
    """The deployment's settings, with its own queue and tables; Graph retries kept short."""
    return provider_from_env(
        monkeypatch,
        azurite_queues.connection_string,
        table_prefix,
        ("ETG_NOTIFICATION_URL", "ETG_CLIENT_STATE", "ETG_TEAMS_WEBHOOK_URL"),
        ETG_GRAPH_MAX_RETRIES="1",
        ETG_GRAPH_RETRY_BUDGET_SECONDS="2",
        ETG_LOG_FORMAT="json",
    )


def simulated(tenant_id: str) -> Any:
    from devtools.simtenant.scenario import demo_scenario
    from devtools.simtenant.server import SimulatedTenant

    return SimulatedTenant(dataclasses.replace(demo_scenario(), tenant_id=tenant_id))


@pytest.fixture
def two_tenants() -> Iterator[tuple[Any, Any]]:
    with simulated(str(uuid.uuid4())) as one, simulated(str(uuid.uuid4())) as two:
        yield one, two


def register(base: Settings, *tenants: Tenant) -> None:
    from monitors.clock import SystemClock
    from monitors.tenants.registry import TenantRegistry

    async def put(store: Any) -> None:
        for tenant in tenants:
            await TenantRegistry(store).put(tenant, SystemClock().now())

    in_store(base, put)


def entry_of(sim: Any, name: str = "Contoso", **changes: Any) -> Tenant:
    return Tenant(sim.state.tenant_id, name, graph_endpoint=sim.base_url, **changes)


def of_tenant(base: Settings, tenant_id: str) -> Settings:
    """Settings reading one registry tenant's tables."""
    from monitors.tenants.registry import tenant_tag

    return dataclasses.replace(base, table_prefix=f"{base.table_prefix}t{tenant_tag(tenant_id)}")


def runs(settings: Settings) -> dict[str, Any]:
    from monitors.store.runs import RunRepository

    return in_store(settings, lambda store: RunRepository(store).all())


def job_failing(settings: Settings) -> list[Any]:
    return [a for a in stored_anomalies(settings) if a.kind == "monitor_job_failing"]


def queue_client(base: Settings, name: str | None = None) -> Any:
    from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    return QueueClient.from_connection_string(
        base.storage_connection,
        name or base.job_queue,
        message_encode_policy=BinaryBase64EncodePolicy(),
        message_decode_policy=BinaryBase64DecodePolicy(),
    )


def queued(base: Settings, name: str | None = None) -> list[dict[str, Any]]:
    """The messages waiting on a queue (peeked, left in place)."""

    async def peek() -> list[dict[str, Any]]:
        async with queue_client(base, name) as client:
            try:
                return [json.loads(m.content) for m in await client.peek_messages(32)]
            except Exception as exc:  # the queue does not exist: nothing was enqueued
                if type(exc).__name__ == "ResourceNotFoundError":
                    return []
                raise

    return asyncio.run(peek())


# --- the host, emulated -----------------------------------------------------------------------


Invoke = Callable[[QueueMessage], Awaitable[None]]


async def host_drain(base: Settings, queue: str, function: Invoke) -> dict[str, int]:
    """What the Functions host does with a queue until it is empty: receive a message, invoke
    the function with it, delete it on success; on failure make it visible again, and after
    the fifth failed try move it to ``<queue>-poison``."""
    from monitors.store.queues import poison_queue

    counts = {"succeeded": 0, "failed": 0, "poisoned": 0}
    async with (
        queue_client(base, queue) as client,
        queue_client(base, poison_queue(queue)) as poison,
    ):
        while True:
            batch = [m async for m in client.receive_messages(max_messages=16)]
            if not batch:
                return counts
            for message in batch:
                await _deliver(client, poison, message, function, counts)


async def _deliver(client: Any, poison: Any, message: Any, function: Invoke, counts: Any) -> None:
    host_message = QueueMessage(
        id=message.id,
        body=message.content,
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
    )
    try:
        await function(host_message)
    except Exception:
        counts["failed"] += 1
        if message.dequeue_count >= MAX_DEQUEUE_COUNT:
            await poison.create_queue() if not await _exists(poison) else None
            await poison.send_message(message.content)
            await client.delete_message(message)
            counts["poisoned"] += 1
        else:
            await client.update_message(message, visibility_timeout=0)
        return
    await client.delete_message(message)
    counts["succeeded"] += 1


async def _exists(client: Any) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        await client.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


def drain(base: Settings, queue: str | None = None, function: str = "tenant_job") -> Any:
    return asyncio.run(host_drain(base, queue or base.job_queue, user_function(function)))


def test_the_launchers_queue_service_answers_on_the_endpoint_its_connection_string_names(
    azurite_queues, azurite
):
    import httpx

    assert f"QueueEndpoint={azurite_queues.queue_endpoint};" in azurite_queues.connection_string
    assert azurite_queues.queue_connection_string == azurite_queues.connection_string
    # An unsigned request is refused by the emulator, which proves it is Azurite answering.
    assert httpx.get(f"{azurite_queues.queue_endpoint}?comp=list", timeout=5).status_code == 403
    # The table-only launcher is unchanged: no queue endpoint, none named.
    assert "QueueEndpoint" not in azurite.connection_string
    with pytest.raises(RuntimeError, match="queues=True"):
        _ = azurite.queue_connection_string


# --- the timers -------------------------------------------------------------------------------


def test_with_an_empty_registry_a_timer_runs_its_job_itself_and_enqueues_nothing(
    base, tenant, monkeypatch
):
    from monitors import entry

    monkeypatch.setenv("ETG_GRAPH_ENDPOINT", tenant.base_url)
    monkeypatch.setattr(entry, "_settings", None)
    run_timer("config_check")
    assert runs(base)["config_check"].last_outcome not in ("running", "failed")
    assert queued(base) == []


def test_a_timer_enqueues_one_message_per_enabled_tenant_and_runs_no_job_itself(base, two_tenants):
    one, two = two_tenants
    register(base, entry_of(one, "Contoso"), entry_of(two, "Fabrikam", enabled=False))
    run_timer("scan")
    [message] = queued(base)
    assert message["v"] == 1 and message["job"] == "scan"
    assert message["tenant"] == one.state.tenant_id
    assert "scan" not in runs(base)  # the deployment's own tables ran nothing


def test_a_tenant_overriding_a_schedule_is_enqueued_only_when_its_own_schedule_fires(
    base, two_tenants
):
    from monitors import entry
    from monitors.clock import FixedClock
    from monitors.service import Job

    one, two = two_tenants
    daily = Overrides(schedules={"CONFIG_CHECK_SCHEDULE": "0 30 6 * * *"})
    register(base, entry_of(one, "Contoso"), entry_of(two, "Fabrikam", overrides=daily))
    clock = FixedClock(one.clock.now().replace(hour=6, minute=0, second=1, microsecond=0))
    at_six = asyncio.run(entry.run_job(Job.CONFIG_CHECK, clock=clock))
    clock.advance(timedelta(hours=1).total_seconds())  # the hourly check at 07:00
    at_seven = asyncio.run(entry.run_job(Job.CONFIG_CHECK, clock=clock))
    assert (at_six["enqueued"], at_six["not_due"]) == (1, [two.state.tenant_id])
    assert (at_seven["enqueued"], at_seven["not_due"]) == (2, [])
    tenants = [m["tenant"] for m in queued(base)]
    assert sorted(tenants) == sorted([one.state.tenant_id] * 2 + [two.state.tenant_id])


# --- the queue function -----------------------------------------------------------------------


def test_the_queue_function_runs_that_tenants_job_into_its_own_tables_only(base, two_tenants):
    one, two = two_tenants
    register(base, entry_of(one, "Contoso"), entry_of(two, "Fabrikam"))
    run_timer("config_check")
    assert len(queued(base)) == 2
    # Fabrikam's message is taken off the queue first and dropped: only Contoso's runs.
    fabrikam_only: list[QueueMessage] = []

    async def contoso_only(message: QueueMessage) -> None:
        if json.loads(message.get_body())["tenant"] == two.state.tenant_id:
            fabrikam_only.append(message)
            return
        await user_function("tenant_job")(message)

    counts = asyncio.run(host_drain(base, base.job_queue, contoso_only))
    assert counts == {"succeeded": 2, "failed": 0, "poisoned": 0}
    assert fabrikam_only[0].dequeue_count == 1  # as the host passes it: its first try
    contoso = runs(of_tenant(base, one.state.tenant_id))
    assert contoso["config_check"].last_outcome not in ("running", "failed")
    assert contoso["config_check"].graph_requests > 0
    assert one.stats() and not two.stats()  # only Contoso's Graph was asked
    assert runs(of_tenant(base, two.state.tenant_id)) == {}
    assert "config_check" not in runs(base)


def test_a_message_failing_five_times_becomes_monitor_job_failing_for_that_tenant_only(
    base, two_tenants, monkeypatch
):
    from azure.core.exceptions import ServiceRequestError
    from azure.data.tables.aio import TableClient

    one, two = two_tenants
    register(base, entry_of(one, "Contoso"), entry_of(two, "Fabrikam"))
    broken = f"{of_tenant(base, one.state.tenant_id).table_prefix}runs"
    original = TableClient.upsert_entity

    async def upsert(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.table_name == broken:  # Contoso's run records cannot be written
            raise ServiceRequestError("connection reset")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(TableClient, "upsert_entity", upsert)
    run_timer("config_check")
    counts = drain(base)
    assert counts == {"succeeded": 1, "failed": MAX_DEQUEUE_COUNT, "poisoned": 1}
    monkeypatch.setattr(TableClient, "upsert_entity", original)  # the outage is over

    from monitors.store.queues import poison_queue

    assert drain(base, poison_queue(base.job_queue), "tenant_job_poison")["succeeded"] == 1
    contoso = of_tenant(base, one.state.tenant_id)
    [failing] = job_failing(contoso)
    assert failing.subject.job == "config_check" and failing.status.value == "open"
    assert "failed on every try" in failing.explanation
    assert runs(contoso)["config_check"].last_outcome == "failed"
    fabrikam = of_tenant(base, two.state.tenant_id)
    assert job_failing(fabrikam) == []
    assert runs(fabrikam)["config_check"].last_outcome not in ("running", "failed")


def test_a_tenant_whose_secret_does_not_resolve_records_its_failing_job_and_completes(
    base, two_tenants, monkeypatch
):
    from monitors import entry

    one, _ = two_tenants
    monkeypatch.delenv("ETG_TEST_CONTOSO_HOOK", raising=False)
    register(base, entry_of(one, secrets={"teams_webhook_url": "env:ETG_TEST_CONTOSO_HOOK"}))
    run_timer("scan")
    [body] = queued(base)
    answer = asyncio.run(entry.run_queued(json.dumps(body).encode(), 1))
    assert "ETG_TEST_CONTOSO_HOOK is not set" in answer["failed"]
    [failing] = job_failing(of_tenant(base, one.state.tenant_id))
    assert failing.subject.job == "scan"
    assert "ETG_TEST_CONTOSO_HOOK" in failing.explanation
    assert not one.stats()  # nothing reached its Graph


def _logged(capsys: Any) -> list[dict[str, Any]]:
    lines = capsys.readouterr().err.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize(
    "body,event",
    [
        (b"", "queue.message_refused"),
        (b"\x00\xff garbage", "queue.message_refused"),
        (b'{"v": 1, "tenant": "../../other", "job": "scan", "at": "x"}', "queue.message_refused"),
        (b'{"v": 1, "job": "drop_tables"}', "queue.message_refused"),
        ("unregistered", "tenant_job.dropped"),
        ("disabled", "tenant_job.dropped"),
    ],
)
def test_hostile_or_stale_messages_are_completed_with_one_log_line(
    base, two_tenants, capsys, body, event
):
    from monitors.tenants.fanout import JobMessage

    one, two = two_tenants
    register(base, entry_of(two, "Fabrikam", enabled=False))
    at = one.clock.now()
    if body == "unregistered":
        body = JobMessage(one.state.tenant_id, "scan", at).to_bytes()
    elif body == "disabled":
        body = JobMessage(two.state.tenant_id, "scan", at).to_bytes()
    _logged(capsys)

    async def send() -> None:
        async with queue_client(base) as client:
            await client.create_queue()
            await client.send_message(body)

    asyncio.run(send())
    assert drain(base) == {"succeeded": 1, "failed": 0, "poisoned": 0}
    assert [e["event"] for e in _logged(capsys) if e["level"] in ("error", "warning")] == [event]
    assert not one.stats() and not two.stats()
    assert runs(of_tenant(base, two.state.tenant_id)) == {}


def test_a_hostile_poison_message_is_completed_with_one_log_line(base, capsys):
    from monitors import entry

    _logged(capsys)
    answer = asyncio.run(entry.poisoned(b'{"v": 1, "tenant": "*", "job": "scan"}'))
    assert "refused" in answer
    assert [e["event"] for e in _logged(capsys) if e["level"] == "error"] == [
        "queue.poison_refused"
    ]
