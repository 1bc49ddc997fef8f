"""The scan's Graph reads. Each step takes what is known so far and returns what it read; a
read that fails is an ``Unverified`` in place of the facts it would have given."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from monitors.aio import between_turns
from monitors.graph import audit, devices, policies, reports
from monitors.graph.client import GraphClient
from monitors.graph.policies import PolicyWithEtg
from monitors.graph.reports import DeploymentReport
from monitors.models import (
    InstallItem,
    ManagedDevice,
    MembershipEvent,
    Unverified,
    UnverifiedReason,
    UserPolicies,
)
from monitors.settings import Settings
from monitors.store.notifications import NotificationStore
from monitors.store.scan_state import DeploymentRecord
from monitors.store.tables import TableStore

V = TypeVar("V")

Payload = dict[str, tuple[InstallItem, ...]]


@dataclass(frozen=True, slots=True)
class Intune:
    policies: list[PolicyWithEtg]
    report: DeploymentReport
    payload: Payload | Unverified | None  # None: the detailed reports are not enabled


PolicyRead = list[PolicyWithEtg] | Unverified


def read_policies(graph: GraphClient, settings: Settings) -> asyncio.Future[PolicyRead]:
    """The policies with their ETGs, started now: the audit read waits for them alone, not for
    the report export."""
    return asyncio.ensure_future(policies.policies_with_etgs(graph, settings.policy_groups))


async def read_intune(
    graph: GraphClient,
    settings: Settings,
    wanted: reports.WantedLater | None = None,
    policy_read: Awaitable[PolicyRead] | None = None,
) -> Intune | list[Unverified]:
    """The policies with their ETGs (``policy_read`` when already started), the deployment
    report and, when enabled, the detailed app and script reports; without the first two
    nothing can be judged."""
    payload = (
        asyncio.ensure_future(reports.install_items(graph)) if settings.detailed_reports else None
    )
    policy_list, report = await asyncio.gather(
        policy_read or policies.policies_with_etgs(graph, settings.policy_groups),
        reports.deployment_report(graph, wanted),
    )
    items = await payload if payload else None
    if isinstance(policy_list, Unverified) or isinstance(report, Unverified):
        return [x for x in (policy_list, report) if isinstance(x, Unverified)]
    return Intune(policy_list, report, items)


@dataclass(frozen=True, slots=True)
class DeviceReads:
    records: dict[str, DeploymentRecord]  # with what was read of each device
    problems: dict[str, Unverified]  # by deployment key: why its device could not be read


def _with_device(
    key: str,
    record: DeploymentRecord,
    managed: Mapping[str, ManagedDevice | None],
    object_ids: Mapping[str, str | None],
) -> DeploymentRecord:
    """The record with what was read of its device: the managed device (None when Intune has
    none) and the Entra object id, each where it was read."""
    changes: dict[str, Any] = {}
    if key in managed:
        changes["profile_read"] = True
        md = managed[key]
        if md is not None:
            changes["azure_ad_device_id"] = md.azure_ad_device_id or record.azure_ad_device_id
            # One policy name for thousands of devices: one copy of it.
            name = md.enrollment_profile_name
            changes["enrollment_profile_name"] = sys.intern(name) if name else name
    if key in object_ids:
        changes["object_id"] = object_ids[key]
    return dataclasses.replace(record, **changes) if changes else record


# Ids per look-up call: a multiple of 20 (a $batch) and of 300 (20 filters of 15 ids), so the
# requests are as full as before; the answers of one chunk are let go before the next is read.
READ_CHUNK = 6000


async def _by_key(
    wanted: Mapping[str, str],
    read: Callable[[list[str]], Awaitable[Mapping[str, V] | Unverified]],
    problems: dict[str, Unverified],
) -> dict[str, V | None]:
    """One read for the ids of many deployments, a chunk at a time, answered per deployment
    key; when a chunk's read fails, each deployment of it and of the chunks not yet read
    carries the reason (nothing more is asked of a failing endpoint)."""
    out: dict[str, V | None] = {}
    # By id, so deployments of one device (enrolled twice) share a chunk and one look-up.
    keys = sorted(wanted, key=wanted.__getitem__)
    for start in range(0, len(keys), READ_CHUNK):
        chunk = {key: wanted[key] for key in keys[start : start + READ_CHUNK]}
        found = await read(list(chunk.values()))
        if isinstance(found, Unverified):
            problems.update(dict.fromkeys(keys[start:], found))
            break
        out.update((key, found.get(value)) for key, value in chunk.items())
    return out


async def read_devices(graph: GraphClient, records: Mapping[str, DeploymentRecord]) -> DeviceReads:
    """Managed devices by id (only that read carries enrollmentProfileName: list answers leave
    it null), 20 to a $batch; then Entra object ids, 15 to a filter. Each is read once: what
    was read before is kept on the record."""
    problems: dict[str, Unverified] = {}
    need_md = {
        key: r.deployment.managed_device_id
        for key, r in records.items()
        if r.azure_ad_device_id is None
        or (r.enrollment_profile_name is None and not r.profile_read)
    }
    managed = await _by_key(
        need_md, lambda ids: devices.managed_devices_by_id(graph, ids), problems
    )
    need_obj: dict[str, str] = {}
    for key, r in records.items():
        md = managed.get(key)
        entra_id = (md.azure_ad_device_id if md else None) or r.azure_ad_device_id
        if entra_id and not r.object_id:
            need_obj[key] = entra_id
    object_ids = await _by_key(need_obj, lambda ids: devices.entra_object_ids(graph, ids), problems)
    out: dict[str, DeploymentRecord] = {}
    async for part in between_turns(list(records.items()), RECORDS_PER_TURN):
        out.update((key, _with_device(key, r, managed, object_ids)) for key, r in part)
    return DeviceReads(out, problems)


# Records given what was read of their devices between two turns of the event loop.
RECORDS_PER_TURN = 500


@dataclass(frozen=True, slots=True)
class UserReads:
    records: dict[str, DeploymentRecord]  # with the user's policies where known in full
    partial: dict[str, UserPolicies]  # known but for policies whose assignments were unreadable
    problems: dict[str, Unverified]  # by deployment key: why its user's policies are not known
    gaps: list[Unverified]  # failed reads, reported as health even where others decided


def named_policy(policy_list: Sequence[PolicyWithEtg], record: DeploymentRecord) -> bool:
    """The enrollment profile name names exactly one policy (resolution needs nothing else)."""
    name = (record.enrollment_profile_name or "").strip().casefold()
    return bool(name) and sum(p.name.strip().casefold() == name for p, _ in policy_list) == 1


@dataclass(slots=True)
class UserCache:
    """What read_users learnt, kept across the scan's chunks: the policies' assignments are
    read once, and each user's groups once."""

    assignments: dict[str, Any] | None = None  # policy id -> its assignments, or Unverified
    member_of: dict[str, set[str] | None] = dataclasses.field(default_factory=dict)


async def read_users(
    graph: GraphClient,
    records: Mapping[str, DeploymentRecord],
    policy_list: list[PolicyWithEtg],
    cache: UserCache | None = None,
) -> UserReads:
    """For deployments the profile name does not settle: which policies are assigned to the
    enrolling user, as Intune decides (assignments to user groups, transitive membership)."""
    need = {
        key: r
        for key, r in records.items()
        if r.user_policies is None
        and r.deployment.user_principal_name
        and not named_policy(policy_list, r)
        and len(policy_list) > 1
    }
    if not need:
        return UserReads(dict(records), {}, {}, [])
    cache = UserCache() if cache is None else cache
    ids = [p.id for p, _ in policy_list]
    if cache.assignments is None:
        read = await policies.policy_assignments(graph, ids)
        cache.assignments = dict(dict.fromkeys(ids, read) if isinstance(read, Unverified) else read)
    assignments = cache.assignments
    gaps = list({g.detail: g for g in assignments.values() if isinstance(g, Unverified)}.values())
    readable = {p: a for p, a in assignments.items() if not isinstance(a, Unverified)}
    unreadable = tuple(p for p, a in assignments.items() if isinstance(a, Unverified))
    groups = sorted({g for a in readable.values() for g in (*a.include_groups, *a.exclude_groups)})
    users = sorted({(r.deployment.user_principal_name or "").lower() for r in need.values()})
    unknown = [u for u in users if u not in cache.member_of]
    if unknown:
        read_groups = await devices.user_member_groups(graph, {u: groups for u in unknown})
        if isinstance(read_groups, Unverified):
            gaps.append(read_groups)
            return UserReads(dict(records), {}, dict.fromkeys(need, read_groups), gaps)
        cache.member_of.update((u, read_groups.get(u)) for u in unknown)
    found = cache.member_of
    out, partial, problems = dict(records), {}, {}
    for key, r in need.items():
        upn = (r.deployment.user_principal_name or "").lower()
        member_of = found.get(upn) or set()
        assigned = tuple(p for p, a in readable.items() if a.includes(member_of))
        facts = UserPolicies(r.deployment.user_principal_name or upn, assigned, unreadable)
        if unreadable:
            problems[key] = policies.policy_assignments.unverified(
                UnverifiedReason.UNAVAILABLE,
                f"assignments of {len(unreadable)} policies could not be read",
            )
            partial[key] = facts
        else:
            out[key] = dataclasses.replace(r, user_policies=facts)
    return UserReads(out, partial, problems, gaps)


@dataclass(frozen=True, slots=True)
class Membership:
    by_object: dict[str, list[MembershipEvent]]  # device object id -> joins and removals seen
    read_from: dict[str, datetime]  # per ETG whose audit log was read: from when
    gaps: dict[str, Unverified]  # per ETG whose audit log could not be read

    def updated(self, again: Membership) -> Membership:
        """With the ETGs of ``again`` read once more, from further back: their events added
        (an event seen twice is one, by id: coverage.merged_events), their outcome replacing
        the first read's."""
        by_object = {obj: list(events) for obj, events in self.by_object.items()}
        for obj, events in again.by_object.items():
            by_object.setdefault(obj, []).extend(events)
        read_from = {**self.read_from, **again.read_from}
        gaps = {**self.gaps, **again.gaps}
        for group_id in again.read_from:
            gaps.pop(group_id, None)
        for group_id in again.gaps:
            read_from.pop(group_id, None)
        return Membership(by_object, read_from, gaps)


async def read_membership(
    graph: GraphClient, store: TableStore, since: Mapping[str, datetime]
) -> Membership:
    """The audit log of each ETG from ``since``; then the joins and removals change
    notifications saw, upper bounds of when they happened, known within seconds while the
    audit log may take an hour."""
    etg_ids = list(since)
    notes = NotificationStore(store)
    read, observed = await asyncio.gather(
        audit.membership_events_of(graph, since),
        asyncio.gather(*(notes.observations(g, since[g]) for g in etg_ids)),
    )
    results = [read[g] for g in etg_ids]
    by_object: dict[str, list[MembershipEvent]] = {}
    read_from: dict[str, datetime] = {}
    gaps: dict[str, Unverified] = {}
    for group_id, result in zip(etg_ids, results, strict=True):
        if isinstance(result, Unverified):
            gaps[group_id] = result
            continue
        read_from[group_id] = since[group_id]
        for event in result:
            by_object.setdefault(event.device_object_id, []).append(event)
    for events in observed:
        for event in events:
            by_object.setdefault(event.device_object_id, []).append(event)
    return Membership(by_object, read_from, gaps)


async def read_current_membership(
    graph: GraphClient, to_check: Mapping[str, DeploymentRecord]
) -> dict[str, bool | Unverified]:
    """Per deployment key, whether its device is in its policy's ETG now: asked only where
    that alone can decide, each device only about its own policy's ETGs."""
    if not to_check:
        return {}
    asks: dict[str, set[str]] = {}
    for r in to_check.values():
        if r.object_id and r.policy:
            asks.setdefault(r.object_id, set()).update(r.policy.etg_group_ids)
    members = await devices.member_groups(graph, asks)
    if isinstance(members, Unverified):
        return dict.fromkeys(to_check, members)
    return {
        key: bool(
            members.get(r.object_id or "", set()) & set(r.policy.etg_group_ids if r.policy else ())
        )
        for key, r in to_check.items()
    }
