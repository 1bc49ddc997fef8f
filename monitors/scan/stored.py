"""The scan's reads of its own tables.

Everything the scan keeps is read once, at its start, except what only Graph's answers can
name: the deployment records the report and the pending set name (``load_records``), those this
run's membership events touch again (``bring_back``), and the observations of change
notifications, read with the audit log from the same point (``reads.read_membership``). Reading
them up front would mean reading whole days and the whole look-back on every scan.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from monitors.models import Anomaly, Deployment, MembershipEvent, MembershipOp, Status
from monitors.rules.kinds import DEVICE_KINDS, ETG_MISSING, ETG_REMOVED
from monitors.rules.suppression import Suppression
from monitors.store.scan_state import DeploymentRecord, ScanState
from monitors.store.tables import TableStore


@dataclass(frozen=True, slots=True)
class StoredState:
    checkpoints: dict[str, datetime]
    pending: dict[str, str]  # deployment key -> enrollment day, awaiting a conclusive verdict
    anomalies: dict[str, Anomaly]  # every device-level anomaly by key, whatever its status
    suppressions: list[Suppression]


async def read_stored(store: TableStore) -> StoredState:
    state = ScanState(store)
    reads = (
        asyncio.ensure_future(state.checkpoints()),
        asyncio.ensure_future(state.pending()),
        asyncio.ensure_future(store.anomalies.by_key(DEVICE_KINDS)),
        asyncio.ensure_future(store.suppressions.all()),
    )
    # Every read runs to its end before a failure is raised: none is left running behind it.
    await asyncio.wait(reads)
    checkpoints, pending, anomalies, suppressions = reads
    return StoredState(
        checkpoints.result(), pending.result(), anomalies.result(), suppressions.result()
    )


async def load_records(
    store: TableStore,
    deployments: Mapping[str, Deployment],
    pending: Mapping[str, str],
    since: datetime,
) -> dict[str, DeploymentRecord]:
    """The deployments to judge: those in the report enrolled since ``since`` and not yet
    settled, and every pending one (judged on what was stored once it left the report)."""
    candidates = {k: d for k, d in deployments.items() if d.enrolled_at >= since or k in pending}
    stored = await ScanState(store).records_by_keys(set(candidates) | set(pending))
    records: dict[str, DeploymentRecord] = {}
    for key, deployment in candidates.items():
        record = stored.get(key)
        if record is None:
            records[key] = DeploymentRecord(deployment)
        elif record.state != "conclusive" or key in pending:
            records[key] = dataclasses.replace(record, deployment=deployment)
    for key in pending:
        if key not in records and key in stored:
            records[key] = stored[key]  # aged out of the report
    return records


async def bring_back(
    store: TableStore,
    records: Mapping[str, DeploymentRecord],
    events_by_object: Mapping[str, Sequence[MembershipEvent]],
    anomalies: Mapping[str, Anomaly],
) -> dict[str, DeploymentRecord]:
    """``records`` and the deployments judged in earlier scans that this run's membership
    events touch again."""
    state = ScanState(store)
    out = dict(records)
    # A removal can come long after a deployment was judged.
    tracked = {r.object_id for r in records.values() if r.object_id}
    removed_elsewhere = {
        obj
        for obj, events in events_by_object.items()
        if obj not in tracked and any(e.op is MembershipOp.REMOVE for e in events)
    }
    if removed_elsewhere:
        for key, record in (await state.deployments_of(removed_elsewhere)).items():
            out.setdefault(key, record)
    # An open etg_missing or etg_removed can still clear: the device may have been added back.
    watched = {
        a.subject.deployment_key
        for a in anomalies.values()
        if a.kind in (ETG_MISSING.name, ETG_REMOVED.name)
        and a.status is not Status.RESOLVED
        and a.subject.deployment_key
        and a.subject.deployment_key not in out
        and a.evidence.get("device_object_id") in events_by_object
    }
    if watched:
        out.update(await state.records_by_keys(watched))
    return out
