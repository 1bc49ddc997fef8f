"""Remediation's I/O: the live Graph reads a plan needs, and the writes with their log entries.

Each write is logged first (state ``started``), then sent, then its result recorded: a run that
dies between the write and the log leaves a ``started`` entry, and the next run's live read
tells whether the write happened before it writes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from monitors.clock import Clock
from monitors.graph import devices, directory
from monitors.graph.client import GraphClient
from monitors.graph.writes import Relation, WriteOutcome, WriteResult, add_reference
from monitors.models import Group, GroupNotFound, Unverified
from monitors.remediation.plan import Action, Live, PlanItem, Target, group_refusal
from monitors.store.remediations import RemediationEntry, RemediationRepository


async def read_live(graph: GraphClient, targets: Sequence[Target]) -> dict[str, Live]:
    """For each target (by anomaly key): its group, and whether the change is there now. The
    presence reads are made only for groups the monitor would write to."""
    group_ids = sorted({t.group_id for t in targets if t.group_id})
    read = await asyncio.gather(*(directory.read_group(graph, gid) for gid in group_ids))
    groups = dict(zip(group_ids, read, strict=True))
    writable = [t for t in targets if t.group_id and _writable(groups[t.group_id])]
    members = await _members([t for t in writable if t.action is Action.ADD_MEMBER], graph)
    owners = await _owners([t for t in writable if t.action is Action.ADD_OWNER], graph)
    present = {**members, **owners}
    return {
        t.anomaly_key: Live(
            groups.get(t.group_id or "", GroupNotFound(t.group_id or "", "no group id")),
            present.get(t.anomaly_key),
        )
        for t in targets
    }


def _writable(group: Group | GroupNotFound | Unverified) -> bool:
    return not isinstance(group, Unverified) and group_refusal(group) is None


async def _members(targets: Sequence[Target], graph: GraphClient) -> dict[str, bool | Unverified]:
    """directoryobject-checkmembergroups.md, as the scan asks it: is the device in its ETG now."""
    if not targets:
        return {}
    asks: dict[str, set[str]] = {}
    for t in targets:
        asks.setdefault(str(t.object_id), set()).add(str(t.group_id))
    found = await devices.member_groups(graph, asks)
    if isinstance(found, Unverified):
        return {t.anomaly_key: found for t in targets}
    return {
        t.anomaly_key: str(t.group_id).lower() in found.get(str(t.object_id), set())
        for t in targets
    }


async def _owners(targets: Sequence[Target], graph: GraphClient) -> dict[str, bool | Unverified]:
    """Whether the provisioning client owns the group: the v1.0 owners list may leave service
    principals out (group-list-owners.md, staged rollout), so the client's ownedObjects
    (serviceprincipal-list-ownedobjects.md) is asked as well; either showing it is enough."""
    out: dict[str, bool | Unverified] = {}
    owned: dict[str, frozenset[str] | Unverified] = {}
    for t in targets:
        client, group_id = str(t.object_id), str(t.group_id)
        if client not in owned:
            owned[client] = await directory.read_owned_object_ids(graph, client)
        listed = await directory.read_owners(graph, group_id)
        by_owned = owned[client]
        answers: list[bool | Unverified] = [
            by_owned if isinstance(by_owned, Unverified) else group_id.lower() in by_owned,
            listed
            if isinstance(listed, Unverified)
            else any(o.id.lower() == client for o in listed),
        ]
        if True in answers:
            out[t.anomaly_key] = True
        elif False in answers:
            out[t.anomaly_key] = False
        else:
            out[t.anomaly_key] = next(a for a in answers if isinstance(a, Unverified))
    return out


def _relation(action: Action) -> Relation:
    return Relation.MEMBERS if action is Action.ADD_MEMBER else Relation.OWNERS


def new_entry(
    item: PlanItem, mode: str, now: datetime, log: Sequence[RemediationEntry]
) -> RemediationEntry:
    t = item.target
    return RemediationEntry(
        anomaly_key=t.anomaly_key,
        attempt=max((e.attempt for e in log), default=0) + 1,
        action=t.action.value,
        group_id=str(t.group_id),
        object_id=str(t.object_id),
        mode=mode,
        started_at=now,
        why=t.why,
        evidence={"kind": t.kind, "first_seen": t.first_seen.isoformat(), "plan": item.reason},
        policy_name=t.policy_name,
        device_name=t.device_name,
        group_name=item.group_name,
    )


async def write(
    graph: GraphClient,
    repo: RemediationRepository,
    item: PlanItem,
    entry: RemediationEntry,
    clock: Clock,
) -> WriteOutcome:
    """Log, write, log: the entry is ``started`` before the request leaves."""
    if item.interrupted is None:
        await repo.start(entry)
    t = item.target
    outcome = await add_reference(graph, _relation(t.action), str(t.group_id), str(t.object_id))
    entry.state = outcome.result.value
    entry.finished_at = clock.now()
    entry.request_id = outcome.request_id
    entry.client_request_id = outcome.client_request_id
    entry.detail = outcome.detail
    await repo.finish(entry)
    return outcome


async def verified(repo: RemediationRepository, entry: RemediationEntry, now: datetime) -> None:
    """An interrupted attempt whose change is there: recorded done without writing again."""
    entry.state = WriteResult.DONE.value
    entry.finished_at = now
    entry.detail = "verified after an interrupted run"
    await repo.finish(entry)
