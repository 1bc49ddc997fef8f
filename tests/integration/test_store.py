"""The anomaly repository against a real Azurite: batched saves keep each anomaly and its alert
together and never overwrite a change made by someone else."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from monitors.models import Anomaly, Scope, Status, Subject
from monitors.store.outbox import OutboxItem, OutboxRepository
from monitors.store.tables import ConcurrentUpdate
from tests.helpers import in_store

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def anomaly(n: int, kind: str = "etg_missing") -> Anomaly:
    return Anomaly(
        kind=kind,
        subject=Subject(Scope.DEVICE, device_name=f"PC-{n}", deployment_key=f"dev{n}_20261120"),
        status=Status.OPEN,
        first_seen=NOW,
        last_seen=NOW,
        explanation="never joined",
        fix="add it",
        evidence={"n": n},
    )


def alert(a: Anomaly) -> OutboxItem:
    return OutboxItem(
        partition=a.kind, change="opened", run_id="r1", created_at=NOW, payload=a.to_json()
    )


def test_many_anomalies_of_several_kinds_are_saved_with_their_alerts(settings):
    items = [anomaly(n) for n in range(130)] + [anomaly(n, "etg_late") for n in range(3)]

    async def work(store):
        await store.anomalies.save_many([(a, alert(a)) for a in items])
        stored = await store.anomalies.by_key(["etg_missing", "etg_late"])
        queued = await OutboxRepository(store).items()
        return stored, queued

    stored, queued = in_store(settings, work)
    assert set(stored) == {a.key for a in items}
    assert len(queued) == len(items)
    assert all(a.etag for a in items)  # the caller can update them next


def test_a_batch_never_overwrites_a_concurrent_change_and_names_it(settings):
    items = [anomaly(n) for n in range(5)]

    async def work(store):
        await store.anomalies.save_many([(a, None) for a in items])
        # someone else (an operator's suppression) changes the third one meanwhile
        theirs = (await store.anomalies.by_key(["etg_missing"]))[items[2].key]
        theirs.status = Status.SUPPRESSED
        await store.anomalies.save(theirs)
        ours = [dataclasses.replace(a, last_seen=NOW + timedelta(hours=1)) for a in items]
        with pytest.raises(ConcurrentUpdate) as raised:
            await store.anomalies.save_many([(a, alert(a)) for a in ours])
        return raised.value, await store.anomalies.by_key(["etg_missing"]), ours

    conflict, stored, ours = in_store(settings, work)
    assert items[2].key in str(conflict)
    assert stored[items[2].key].status is Status.SUPPRESSED  # theirs survives
    assert all(stored[a.key].last_seen == ours[0].last_seen for a in ours[:2])  # before it: ours
