"""The live tenant: a scenario plus a clock, answering "what is visible now".

Everything is indexed up front (by group, by member, by time) because the
benchmarks serve hundreds of thousands of objects through small pages and a
request must never scan the whole tenant. Mutations and multi-step reads share one
lock so tests can change the tenant between monitor runs while the server thread
reads it.

A ``ChangeSink`` (the change-notification service) hears about membership changes
of the groups it watches as they become effective: when the clock passes them, or
at once when a mutation adds a change that is already due.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from devtools.simtenant.clock import SimClock
from devtools.simtenant.scenario import (
    Actor,
    AppSpec,
    AuditActorFields,
    DeviceSpec,
    DirectoryDevice,
    Group,
    MembershipOp,
    PayloadAssignment,
    Policy,
    ProvisioningClient,
    RunAsAccount,
    Scenario,
    ScenarioError,
    ScriptSpec,
    User,
    WrappedObject,
)

EntraDevice = DeviceSpec | DirectoryDevice
# Who made a change: the scenario's actors, or the monitor itself when it remediates.
RecordActor = Actor | Literal["monitor"]
# Which link of the group a record changes: membership, or (audit only) ownership.
Relation = Literal["members", "owners"]
# What the monitor's write identity is granted by default: group-post-members.md (a device
# member needs GroupMember.ReadWrite.All and Device.ReadWrite.All) and group-post-owners.md
# (an owner needs Group.ReadWrite.All).
WRITE_PERMISSIONS = frozenset(
    {"GroupMember.ReadWrite.All", "Device.ReadWrite.All", "Group.ReadWrite.All"}
)
MONITOR_APP_DISPLAY_NAME = "etg-monitor remediation"
_MONITOR_NAMESPACE = uuid.UUID("7d4f1e0a-2c3b-4e5f-8a9b-0c1d2e3f4a5b")
GROUP_FIELDS = frozenset(
    {
        "display_name",
        "security_enabled",
        "mail_enabled",
        "group_types",
        "membership_rule",
        "is_assignable_to_role",
        "deleted",
        "caller_in_scope",
    }
)
POLICY_FIELDS = frozenset(
    {
        "name",
        "template",
        "etg_group_id",
        "etg_api",
        "timeout_minutes",
        "allowed_app_ids",
        "allowed_script_ids",
        "description",
        "priority",
        "assigned_group_ids",
        "settings_group_ids",
    }
)


@dataclass(slots=True)
class MembershipRecord:
    """One membership change; it is also the audit event that reports it."""

    ts: float  # when the change took effect (the audit activityDateTime)
    visible_ts: float  # when the audit event shows up in the log
    seq: int  # tie-breaker and stable identity
    op: MembershipOp
    group_id: str
    member_id: str
    actor: RecordActor
    audit_actor_fields: AuditActorFields
    managed_device_id: str | None  # set for events that belong to a deployment
    # "owners" records only report an owner change in the audit log; they never count as
    # membership (and so never reach delta or change notifications).
    relation: Relation = "members"


def activity_key(record: MembershipRecord) -> str:
    """The record's activity: "add"/"remove" for members, "owner_add"/"owner_remove" for owners."""
    return record.op if record.relation == "members" else f"owner_{record.op}"


@dataclass(slots=True, frozen=True)
class MonitorApp:
    """The monitor's write identity as the directory shows it in audit events."""

    app_id: str
    object_id: str
    display_name: str = MONITOR_APP_DISPLAY_NAME


@dataclass(slots=True, frozen=True)
class WriteRequest:
    """One write the tenant received (status is what it answered; ``at`` is sim time)."""

    method: str
    path: str
    body: Any
    status: int
    at: float


def _record_key(record: MembershipRecord) -> tuple[float, int]:
    return (record.ts, record.seq)


def _merge_sorted(target: list[MembershipRecord], new: list[MembershipRecord]) -> None:
    """Merge sorted ``new`` records into sorted ``target`` in place (touching only its tail)."""
    start = bisect.bisect_left(target, _record_key(new[0]), key=_record_key)
    tail = target[start:]
    tail.extend(new)
    if start < len(target):
        tail.sort(key=_record_key)
    del target[start:]
    target.extend(tail)


@dataclass(slots=True)
class AuditQuery:
    """The directoryAudits filters the stand-in understands (all optional, and-ed)."""

    ops: frozenset[str] | None = None
    since_ts: float | None = None  # inclusive
    until_ts: float | None = None  # inclusive
    target_id: str | None = None
    app_id: str | None = None


@dataclass(slots=True)
class _MemberCache:
    ts: float
    pos: int
    members: dict[str, None]
    sorted_ids: list[str] | None = None
    stale: bool = False


class ChangeSink(Protocol):
    """Receives effective changes; called outside the state's lock, from any thread."""

    @property
    def watched_groups(self) -> frozenset[str]:
        """Groups whose changes are wanted (read without locking; keep it cheap)."""
        ...

    def membership_changed(self, changes: list[tuple[MembershipRecord, float]]) -> None:
        """Records that became effective, each with the sim time it did (POSIX seconds)."""

    def group_deleted(self, group_id: str, ts: float) -> None:
        """A group was deleted at sim time ``ts``."""

    def time_moved(self, now_ts: float) -> None:
        """The clock moved (after any changes it made effective were reported)."""


@dataclass(slots=True, frozen=True)
class Owner:
    kind: str  # "servicePrincipal" or "user"
    id: str
    display_name: str
    app_id: str | None = None
    user_principal_name: str | None = None


class TenantState:
    """Tenant data visible at ``clock.now()``, with a thread-safe mutation API."""

    def __init__(self, scenario: Scenario, clock: SimClock | None = None) -> None:
        self._lock = threading.RLock()
        self.clock = clock if clock is not None else SimClock(scenario.start)
        self.tenant_id = scenario.tenant_id
        self.start = scenario.start
        self.other_configuration_policies = scenario.other_configuration_policies
        self.audit_retention_days = scenario.audit_retention_days
        self.export_polls_before_ready = scenario.export_polls_before_ready
        self.export_jobs_fail = scenario.export_jobs_fail
        self.jit_action_routed = scenario.jit_action_routed
        self.wrapped_single_objects = frozenset(scenario.wrapped_single_objects)
        self.v1_owners_omit_service_principals = scenario.v1_owners_omit_service_principals
        self._pc = dataclasses.replace(scenario.provisioning_client)
        self._users: dict[str, User] = {u.id: u for u in scenario.users}
        # Graph matches a userPrincipalName key case-insensitively.
        self._users_by_upn: dict[str, User] = {
            u.user_principal_name.lower(): u for u in scenario.users
        }
        admin = scenario.admin_user()
        self.admin_user: User | None = admin
        # Groups and policies are copied because tests mutate them; devices are
        # shared with the scenario (read-only here) to keep memory flat at scale.
        self._groups: dict[str, Group] = {
            g.id: dataclasses.replace(
                g,
                group_types=list(g.group_types),
                owners=list(g.owners),
                initial_members=list(g.initial_members),
            )
            for g in scenario.groups
        }
        self._policies: dict[str, Policy] = {
            p.id: dataclasses.replace(
                p,
                allowed_app_ids=list(p.allowed_app_ids),
                allowed_script_ids=list(p.allowed_script_ids),
                assigned_group_ids=list(p.assigned_group_ids),
                settings_group_ids=None
                if p.settings_group_ids is None
                else list(p.settings_group_ids),
            )
            for p in scenario.policies
        }
        self.payload = PayloadCatalog(scenario, self._lock)
        self._devices: dict[str, DeviceSpec] = {}
        self._by_device_id: dict[str, EntraDevice] = {}
        self._by_object_id: dict[str, EntraDevice] = {}
        self._enroll_keys: list[tuple[float, str]] = []
        self._enroll_devices: list[DeviceSpec] = []
        self._sorted_object_ids: list[str] | None = None
        self._seq = 0
        self._all: list[MembershipRecord] = []
        self._by_group: dict[str, list[MembershipRecord]] = {}
        self._by_member: dict[str, list[MembershipRecord]] = {}
        self._member_cache: dict[str, _MemberCache] = {}
        # Remediation writes: what the caller may do, who it is, what it sent.
        self._write_permissions = WRITE_PERMISSIONS
        self._monitor = MonitorApp(
            app_id=str(uuid.uuid5(_MONITOR_NAMESPACE, f"{self.tenant_id}:app")),
            object_id=str(uuid.uuid5(_MONITOR_NAMESPACE, f"{self.tenant_id}:sp")),
        )
        self._writes: list[WriteRequest] = []
        self.write_audit_delay_s = 0.0
        self._lost_answers: list[int] = []  # statuses for the next successful writes
        self._owner_records_by_group: dict[str, list[MembershipRecord]] = {}
        self._merged_cache: dict[
            str,
            tuple[list[list[MembershipRecord]], list[int], list[MembershipRecord]],
        ] = {}
        # Change feed: records up to the watermark (the sim time last seen) are
        # effective and, for watched groups, already reported to the sink.
        self._sink: ChangeSink | None = None
        self._watermark = self.clock.timestamp()
        # A change shows in delta and is notified this long after it takes effect (see
        # Scenario.delta_delay_s); members and checkMemberGroups show it at once.
        self.delta_delay_s = scenario.delta_delay_s

        for directory_device in scenario.directory_devices:
            self._by_device_id[directory_device.device_id] = directory_device
            self._by_object_id[directory_device.object_id] = directory_device
        records: list[MembershipRecord] = []
        pairs: list[tuple[tuple[float, str], DeviceSpec]] = []
        for device in scenario.devices:
            self._register_device(device)
            pairs.append(((device.enrolled_at.timestamp(), device.managed_device_id), device))
            records.extend(self._device_records(device))
        pairs.sort(key=lambda pair: pair[0])
        self._enroll_keys = [key for key, _ in pairs]
        self._enroll_devices = [device for _, device in pairs]
        for event in scenario.other_membership_events:
            ts = event.at.timestamp()
            records.append(
                self._new_record(
                    ts,
                    ts + event.audit_delay_s,
                    event.op,
                    event.group_id,
                    event.member_id,
                    event.actor,
                    event.audit_actor_fields,
                    None,
                )
            )
        records.sort(key=_record_key)
        self._all = records
        for record in records:
            self._by_group.setdefault(record.group_id, []).append(record)
            self._by_member.setdefault(record.member_id, []).append(record)
        self.clock.add_listener(self._on_clock_moved)

    # ------------------------------------------------------------------ change feed

    def set_change_sink(self, sink: ChangeSink | None) -> None:
        """Report effective membership changes and group deletions to ``sink``."""
        with self._lock:
            self._sink = sink
            self._watermark = self.clock.timestamp()

    def _on_clock_moved(self) -> None:
        """Report the changes the clock just passed (the watermark follows the clock)."""
        with self._lock:
            sink = self._sink
            since = self._watermark
            now = self.clock.timestamp()
            self._watermark = now
            changes: list[tuple[MembershipRecord, float]] = []
            delay = self.delta_delay_s
            if sink is not None and now > since:
                for group_id in sink.watched_groups:
                    timeline = self._by_group.get(group_id)
                    if not timeline:
                        continue
                    low, high = (since - delay, math.inf), (now - delay, math.inf)
                    start = bisect.bisect_right(timeline, low, key=_record_key)
                    end = bisect.bisect_right(timeline, high, key=_record_key)
                    changes.extend((record, record.ts + delay) for record in timeline[start:end])
        if sink is None:
            return
        if changes:
            changes.sort(key=lambda change: _record_key(change[0]))
            sink.membership_changed(changes)
        sink.time_moved(now)

    def _due_now(self, records: Iterable[MembershipRecord]) -> list[tuple[MembershipRecord, float]]:
        """New records already due for notification (the clock will never pass them)."""
        sink = self._sink
        if sink is None:
            return []
        watched = sink.watched_groups
        if not watched:
            return []
        now = self.clock.timestamp()
        return [
            (record, now)
            for record in records
            if record.group_id in watched and record.ts + self.delta_delay_s <= self._watermark
        ]

    def _report(self, changes: list[tuple[MembershipRecord, float]]) -> None:
        sink = self._sink
        if changes and sink is not None:
            sink.membership_changed(changes)

    # ------------------------------------------------------------------ build

    def _register_device(self, device: DeviceSpec) -> None:
        if device.managed_device_id in self._devices:
            raise ScenarioError(f"duplicate managed_device_id {device.managed_device_id!r}")
        self._devices[device.managed_device_id] = device
        self._by_device_id[device.entra_device_id] = device
        self._by_object_id[device.object_id] = device
        self._sorted_object_ids = None

    def _new_record(
        self,
        ts: float,
        visible_ts: float,
        op: MembershipOp,
        group_id: str,
        member_id: str,
        actor: RecordActor,
        fields: AuditActorFields,
        managed_device_id: str | None,
    ) -> MembershipRecord:
        self._seq += 1
        return MembershipRecord(
            ts, visible_ts, self._seq, op, group_id, member_id, actor, fields, managed_device_id
        )

    def _device_records(self, device: DeviceSpec) -> list[MembershipRecord]:
        enrolled = device.enrolled_at.timestamp()
        policy = self._policies.get(device.policy_id) if device.policy_id else None
        records = []
        for event in device.membership:
            group_id = event.group_id or (policy.etg_group_id if policy else None)
            if group_id is None:
                # The policy has no ETG, so Intune has nowhere to add the device.
                continue
            ts = enrolled + event.offset_s
            records.append(
                self._new_record(
                    ts,
                    ts + event.audit_delay_s,
                    event.op,
                    group_id,
                    device.object_id,
                    event.actor,
                    event.audit_actor_fields,
                    device.managed_device_id,
                )
            )
        return records

    def _insert_record(self, record: MembershipRecord) -> None:
        bisect.insort(self._all, record, key=_record_key)
        timeline = self._by_group.setdefault(record.group_id, [])
        index = bisect.bisect_right(timeline, _record_key(record), key=_record_key)
        timeline.insert(index, record)
        cache = self._member_cache.get(record.group_id)
        if cache is not None and index < cache.pos:
            cache.stale = True
        bisect.insort(self._by_member.setdefault(record.member_id, []), record, key=_record_key)

    # ------------------------------------------------------------------ time

    def now(self) -> datetime:
        return self.clock.now()

    def now_ts(self) -> float:
        return self.clock.timestamp()

    # ------------------------------------------------------------------ mutation API

    def set_group_owners(self, group_id: str, owner_ids: Iterable[str]) -> None:
        with self._lock:
            self._group(group_id).owners = list(owner_ids)

    def add_group_owner(self, group_id: str, owner_id: str) -> None:
        with self._lock:
            owners = self._group(group_id).owners
            if owner_id not in owners:
                owners.append(owner_id)

    def add_owner_now(
        self,
        group_id: str,
        owner_id: str,
        *,
        actor: RecordActor = "admin",
        audit_delay_s: float = 0.0,
    ) -> MembershipRecord:
        """Make ``owner_id`` an owner now and log "Add owner to group" (audit only)."""
        with self._lock:
            self.add_group_owner(group_id, owner_id)
            ts = self.now_ts()
            record = self._new_record(
                ts, ts + audit_delay_s, "add", group_id, owner_id, actor, "both", None
            )
            record.relation = "owners"
            bisect.insort(self._all, record, key=_record_key)
            timeline = self._owner_records_by_group.setdefault(group_id, [])
            bisect.insort(timeline, record, key=_record_key)
            bisect.insort(self._by_member.setdefault(owner_id, []), record, key=_record_key)
            return record

    def write_permissions(self) -> frozenset[str]:
        """Graph permissions the writing caller holds (application permissions)."""
        with self._lock:
            return self._write_permissions

    def set_write_permissions(self, permissions: Iterable[str]) -> None:
        """Say which write permissions the caller holds; an empty set makes every write 403."""
        with self._lock:
            self._write_permissions = frozenset(permissions)

    def monitor_app(self) -> MonitorApp:
        with self._lock:
            return self._monitor

    def set_monitor_app(
        self,
        *,
        app_id: str | None = None,
        object_id: str | None = None,
        display_name: str | None = None,
    ) -> None:
        """Name the monitor's write identity (its appId is the managed identity's client id)."""
        with self._lock:
            current = self._monitor
            self._monitor = MonitorApp(
                app_id=(app_id or current.app_id).lower(),
                object_id=(object_id or current.object_id).lower(),
                display_name=display_name or current.display_name,
            )

    def set_write_audit_delay(self, seconds: float) -> None:
        """How late the audit event of a write shows up (Entra's audit log lags)."""
        with self._lock:
            self.write_audit_delay_s = float(seconds)

    def lose_write_answers(self, count: int = 1, status: int = 504) -> None:
        """The next ``count`` successful writes take effect but answer ``status`` instead of
        204: the caller cannot tell whether the write happened."""
        with self._lock:
            self._lost_answers.extend([status] * count)

    def take_lost_answer(self) -> int | None:
        """The status to answer instead of a write's 204, if one is queued (consumes it)."""
        with self._lock:
            return self._lost_answers.pop(0) if self._lost_answers else None

    def record_write(self, method: str, path: str, body: Any, status: int) -> None:
        with self._lock:
            self._writes.append(WriteRequest(method, path, body, status, self.now_ts()))

    def writes(self) -> list[WriteRequest]:
        """Every write the Graph routes received, in order, with the status answered."""
        with self._lock:
            return list(self._writes)

    def clear_writes(self) -> None:
        with self._lock:
            self._writes = []

    def remove_group_owner(self, group_id: str, owner_id: str) -> None:
        with self._lock:
            group = self._group(group_id)
            group.owners = [o for o in group.owners if o != owner_id]

    def update_group(self, group_id: str, **fields: object) -> None:
        """Change group properties (security_enabled, group_types, deleted, ...)."""
        unknown = set(fields) - GROUP_FIELDS
        if unknown:
            raise ValueError(f"update_group: unknown field(s) {', '.join(sorted(unknown))}")
        with self._lock:
            group = self._group(group_id)
            was_deleted = group.deleted
            for name, value in fields.items():
                if name == "group_types":
                    if not isinstance(value, list | tuple):
                        raise TypeError("group_types must be a list of strings")
                    value = [str(v) for v in value]
                setattr(group, name, value)
            deleted_now = group.deleted and not was_deleted
            sink = self._sink
        if deleted_now and sink is not None and group_id in sink.watched_groups:
            sink.group_deleted(group_id, self.now_ts())

    def add_group(self, group: Group) -> None:
        with self._lock:
            if group.id in self._groups:
                raise ValueError(f"group {group.id!r} already exists")
            self._groups[group.id] = dataclasses.replace(
                group,
                group_types=list(group.group_types),
                owners=list(group.owners),
                initial_members=list(group.initial_members),
            )

    def set_provisioning_client_present(self, present: bool) -> None:
        with self._lock:
            self._pc.present = present

    def set_policy_etg(self, policy_id: str, group_id: str | None) -> None:
        self.update_policy(policy_id, etg_group_id=group_id)

    def update_policy(self, policy_id: str, **fields: object) -> None:
        unknown = set(fields) - POLICY_FIELDS
        if unknown:
            raise ValueError(f"update_policy: unknown field(s) {', '.join(sorted(unknown))}")
        with self._lock:
            policy = self._policies.get(policy_id)
            if policy is None:
                raise KeyError(f"unknown policy {policy_id!r}")
            for name, value in fields.items():
                if name == "assigned_group_ids":
                    if not isinstance(value, list | tuple):
                        raise TypeError("assigned_group_ids must be a list of group ids")
                    unknown_groups = [g for g in value if g not in self._groups]
                    if unknown_groups:
                        raise ValueError(f"unknown group id(s) {', '.join(unknown_groups)}")
                    value = [str(v) for v in value]
                setattr(policy, name, value)

    def set_export_jobs_fail(self, fail: bool) -> None:
        with self._lock:
            self.export_jobs_fail = fail

    def set_export_polls_before_ready(self, polls: int) -> None:
        with self._lock:
            self.export_polls_before_ready = polls

    def set_audit_retention_days(self, days: float) -> None:
        with self._lock:
            self.audit_retention_days = days

    def add_device(self, device: DeviceSpec) -> None:
        """Add a deployment (report row, managed device, Entra device and its membership events)."""
        self.add_devices([device])

    def add_devices(self, devices: Iterable[DeviceSpec]) -> None:
        """Add deployments atomically: all of them, or none when any is invalid.

        Raises ``ScenarioError`` for an unknown policy or an id already in the tenant
        (or repeated in ``devices``). New devices are merged into the indexes in one
        pass, so adding many at once stays cheap on a large tenant.
        """
        batch = list(devices)
        if not batch:
            return
        with self._lock:
            self._check_new_devices(batch)
            records: list[MembershipRecord] = []
            for device in batch:
                self._register_device(device)
                records.extend(self._device_records(device))
            self._merge_enrolled(batch)
            self._merge_records(records)
            due = self._due_now(records)
        self._report(due)

    def _check_new_devices(self, devices: list[DeviceSpec]) -> None:
        problems: list[str] = []
        managed: set[str] = set()
        entra: set[str] = set()
        objects: set[str] = set()
        for device in devices:
            name = device.device_name
            if device.policy_id is not None and device.policy_id not in self._policies:
                problems.append(f"device {name}: unknown policy id {device.policy_id!r}")
            if device.managed_device_id in self._devices or device.managed_device_id in managed:
                problems.append(
                    f"device {name}: duplicate managed_device_id {device.managed_device_id!r}"
                )
            if device.entra_device_id in self._by_device_id or device.entra_device_id in entra:
                problems.append(
                    f"device {name}: duplicate entra_device_id {device.entra_device_id!r}"
                )
            if (
                device.object_id in self._by_object_id
                or device.object_id in self._users
                or device.object_id in self._groups
                or device.object_id in objects
            ):
                problems.append(f"device {name}: duplicate object_id {device.object_id!r}")
            managed.add(device.managed_device_id)
            entra.add(device.entra_device_id)
            objects.add(device.object_id)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ScenarioError("; ".join(problems[:5]) + more)

    def _merge_enrolled(self, devices: list[DeviceSpec]) -> None:
        pairs = sorted(
            (((d.enrolled_at.timestamp(), d.managed_device_id), d) for d in devices),
            key=lambda pair: pair[0],
        )
        # Only the existing keys at or after the first new one can interleave with it.
        start = bisect.bisect_left(self._enroll_keys, pairs[0][0])
        if start < len(self._enroll_keys):
            pairs += zip(self._enroll_keys[start:], self._enroll_devices[start:], strict=True)
            pairs.sort(key=lambda pair: pair[0])
        del self._enroll_keys[start:]
        del self._enroll_devices[start:]
        self._enroll_keys.extend(key for key, _ in pairs)
        self._enroll_devices.extend(device for _, device in pairs)

    def _merge_records(self, records: list[MembershipRecord]) -> None:
        if not records:
            return
        records.sort(key=_record_key)
        _merge_sorted(self._all, records)
        by_group: dict[str, list[MembershipRecord]] = {}
        by_member: dict[str, list[MembershipRecord]] = {}
        for record in records:
            by_group.setdefault(record.group_id, []).append(record)
            by_member.setdefault(record.member_id, []).append(record)
        for group_id, new in by_group.items():
            timeline = self._by_group.setdefault(group_id, [])
            cache = self._member_cache.get(group_id)
            if cache is not None:
                index = bisect.bisect_right(timeline, _record_key(new[0]), key=_record_key)
                if index < cache.pos:
                    cache.stale = True
            _merge_sorted(timeline, new)
        for member_id, new in by_member.items():
            existing = self._by_member.get(member_id)
            if existing is None:
                self._by_member[member_id] = new
            else:
                _merge_sorted(existing, new)

    def add_membership_event(
        self,
        managed_device_id: str,
        op: MembershipOp,
        at_offset_s: float,
        *,
        group_id: str | None = None,
        actor: Actor = "provisioning_client",
        audit_delay_s: float = 0.0,
        audit_actor_fields: AuditActorFields = "both",
    ) -> MembershipRecord:
        """Add a membership change for a deployment, at an offset from its enrollment."""
        with self._lock:
            device = self._devices.get(managed_device_id)
            if device is None:
                raise KeyError(f"unknown managed device {managed_device_id!r}")
            if group_id is None:
                policy = self._policies.get(device.policy_id) if device.policy_id else None
                group_id = policy.etg_group_id if policy else None
                if group_id is None:
                    raise ValueError(
                        f"device {device.device_name} has no policy ETG; pass group_id"
                    )
            ts = device.enrolled_at.timestamp() + at_offset_s
            record = self._new_record(
                ts,
                ts + audit_delay_s,
                op,
                group_id,
                device.object_id,
                actor,
                audit_actor_fields,
                managed_device_id,
            )
            self._insert_record(record)
            due = self._due_now([record])
        self._report(due)
        return record

    def add_member_now(
        self,
        group_id: str,
        object_id: str,
        *,
        actor: RecordActor = "provisioning_client",
        audit_delay_s: float = 0.0,
        audit_actor_fields: AuditActorFields = "both",
    ) -> MembershipRecord:
        return self._member_change_now(
            "add", group_id, object_id, actor, audit_delay_s, audit_actor_fields
        )

    def remove_member_now(
        self,
        group_id: str,
        object_id: str,
        *,
        actor: RecordActor = "admin",
        audit_delay_s: float = 0.0,
        audit_actor_fields: AuditActorFields = "both",
    ) -> MembershipRecord:
        return self._member_change_now(
            "remove", group_id, object_id, actor, audit_delay_s, audit_actor_fields
        )

    def _member_change_now(
        self,
        op: MembershipOp,
        group_id: str,
        object_id: str,
        actor: RecordActor,
        audit_delay_s: float,
        fields: AuditActorFields,
    ) -> MembershipRecord:
        with self._lock:
            self._group(group_id)
            device = self._by_object_id.get(object_id)
            managed = device.managed_device_id if isinstance(device, DeviceSpec) else None
            ts = self.now_ts()
            record = self._new_record(
                ts, ts + audit_delay_s, op, group_id, object_id, actor, fields, managed
            )
            self._insert_record(record)
            due = self._due_now([record])
        self._report(due)
        return record

    # ------------------------------------------------------------------ directory objects

    def _group(self, group_id: str) -> Group:
        group = self._groups.get(group_id)
        if group is None:
            raise KeyError(f"unknown group {group_id!r}")
        return group

    def get_group(self, group_id: str) -> Group | None:
        """A copy of the group (deleted ones included; callers decide visibility)."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                return None
            return dataclasses.replace(
                group, group_types=list(group.group_types), owners=list(group.owners)
            )

    def group_ids(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def provisioning_client(self) -> ProvisioningClient:
        with self._lock:
            return dataclasses.replace(self._pc)

    def group_owners(self, group_id: str) -> list[Owner]:
        with self._lock:
            group = self._group(group_id)
            owners: list[Owner] = []
            for owner_id in group.owners:
                if owner_id == self._pc.object_id:
                    if self._pc.present:  # a deleted service principal drops out of owners
                        owners.append(
                            Owner(
                                "servicePrincipal",
                                owner_id,
                                self._pc.display_name,
                                app_id=self._pc.app_id,
                            )
                        )
                elif (user := self._users.get(owner_id)) is not None:
                    owners.append(
                        Owner(
                            "user",
                            owner_id,
                            user.display_name,
                            user_principal_name=user.user_principal_name,
                        )
                    )
            return owners

    def user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def user_by_key(self, key: str) -> User | None:
        """A user by object id or userPrincipalName (case-insensitive), as /users/{key}."""
        return self._users.get(key.lower()) or self._users_by_upn.get(key.lower())

    def owned_groups(self, owner_id: str) -> list[Group]:
        """Live groups ``owner_id`` owns, in id order (a deleted service principal owns none)."""
        with self._lock:
            if owner_id == self._pc.object_id and not self._pc.present:
                return []
            return [
                dataclasses.replace(g, group_types=list(g.group_types), owners=list(g.owners))
                for g in sorted(self._groups.values(), key=lambda g: g.id)
                if not g.deleted and owner_id in g.owners
            ]

    def set_wrapped_single_objects(self, kinds: Iterable[WrappedObject]) -> None:
        with self._lock:
            self.wrapped_single_objects = frozenset(kinds)

    def set_jit_action_routed(self, routed: bool) -> None:
        with self._lock:
            self.jit_action_routed = routed

    def set_v1_owners_omit_service_principals(self, omit: bool) -> None:
        with self._lock:
            self.v1_owners_omit_service_principals = omit

    def etg_validation_error(self, group_id: str) -> str | None:
        """The validation code Intune would report for this ETG, or None when valid.

        Role-assignable groups are not flagged here (the documented enum has no
        code for them); the group's own fields expose that case.
        """
        with self._lock:
            group = self._groups.get(group_id)
            if group is None or group.deleted:
                return "securityGroupNotFound"
            # microsoft-graph-docs-contrib api-reference/beta/resources/intune-shared-enrollmenttimedevicemembershiptargetvalidationerrorcode.md  # noqa: E501
            if not group.caller_in_scope:
                return "securityGroupNotInCallerScope"
            if not group.security_enabled:
                return "notSecurityGroup"
            if "DynamicMembership" in group.group_types:
                return "notStaticSecurityGroup"
            if not self._pc.present or self._pc.object_id not in group.owners:
                return "firstPartyAppNotAnOwner"
            return None

    # ------------------------------------------------------------------ policies

    def policies(self) -> list[Policy]:
        with self._lock:
            return [dataclasses.replace(p) for p in self._policies.values()]

    def policy_priority(self, policy_id: str) -> int | None:
        """priorityMetaData.priority: the policy's own, else its 1-based position."""
        with self._lock:
            for position, policy in enumerate(self._policies.values(), start=1):
                if policy.id == policy_id:
                    return policy.priority if policy.priority is not None else position
            return None

    def get_policy(self, policy_id: str) -> Policy | None:
        with self._lock:
            policy = self._policies.get(policy_id)
            return dataclasses.replace(policy) if policy is not None else None

    def policy_name(self, policy_id: str | None) -> str | None:
        if policy_id is None:
            return None
        with self._lock:
            policy = self._policies.get(policy_id)
            return policy.name if policy else None

    # ------------------------------------------------------------------ devices

    def managed_device(self, managed_device_id: str, now_ts: float) -> DeviceSpec | None:
        device = self._devices.get(managed_device_id)
        if device is None or device.enrolled_at.timestamp() > now_ts:
            return None
        return device

    def managed_devices_page(
        self,
        now_ts: float,
        since_ts: float | None,
        until_ts: float | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> tuple[list[DeviceSpec], tuple[float, str] | None]:
        """Devices enrolled in [since, min(until, now)] ordered by enrollment, from a cursor."""
        with self._lock:
            upper = now_ts if until_ts is None else min(until_ts, now_ts)
            if after is not None:
                start = bisect.bisect_right(self._enroll_keys, after)
            elif since_ts is not None:
                start = bisect.bisect_left(self._enroll_keys, (since_ts, ""))
            else:
                start = 0
            end = bisect.bisect_right(self._enroll_keys, (upper, "\uffff"))
            if start >= end:
                return [], None
            stop = min(start + limit, end)
            page = self._enroll_devices[start:stop]
            cursor = self._enroll_keys[stop - 1] if stop < end else None
            return page, cursor

    def visible_deployments(self, now_ts: float) -> list[DeviceSpec]:
        """Every deployment enrolled at or before ``now_ts`` (report rows)."""
        with self._lock:
            end = bisect.bisect_right(self._enroll_keys, (now_ts, "\uffff"))
            return self._enroll_devices[:end]

    def deployments(self) -> list[DeviceSpec]:
        """Every deployment, visible or not, in enrollment order."""
        with self._lock:
            return list(self._enroll_devices)

    def entra_device(self, object_id: str, now_ts: float) -> EntraDevice | None:
        device = self._by_object_id.get(object_id)
        return device if device is not None and self._entra_visible(device, now_ts) else None

    def entra_device_by_device_id(self, device_id: str, now_ts: float) -> EntraDevice | None:
        device = self._by_device_id.get(device_id)
        return device if device is not None and self._entra_visible(device, now_ts) else None

    @staticmethod
    def _entra_visible(device: EntraDevice, now_ts: float) -> bool:
        if isinstance(device, DeviceSpec):
            return device.enrolled_at.timestamp() <= now_ts
        return device.registered_at.timestamp() <= now_ts

    def entra_devices_page(
        self, now_ts: float, after: str | None, limit: int
    ) -> tuple[list[EntraDevice], str | None]:
        with self._lock:
            if self._sorted_object_ids is None:
                self._sorted_object_ids = sorted(self._by_object_id)
            ids = self._sorted_object_ids
            index = bisect.bisect_right(ids, after) if after is not None else 0
            page: list[EntraDevice] = []
            while index < len(ids):
                device = self._by_object_id[ids[index]]
                index += 1
                if self._entra_visible(device, now_ts):
                    if len(page) == limit:
                        return page, page[-1].object_id
                    page.append(device)
            return page, None

    def directory_object(self, object_id: str) -> EntraDevice | User | None:
        return self._by_object_id.get(object_id) or self._users.get(object_id)

    def member_display_name(self, object_id: str) -> str | None:
        obj = self.directory_object(object_id)
        if isinstance(obj, DeviceSpec):
            return obj.device_name
        if obj is not None:
            return obj.display_name
        # Owner changes name service principals: the provisioning client or the monitor.
        if object_id == self._pc.object_id:
            return self._pc.display_name
        if object_id == self._monitor.object_id:
            return self._monitor.display_name
        return None

    # ------------------------------------------------------------------ membership

    def _members(self, group_id: str, now_ts: float) -> _MemberCache:
        timeline = self._by_group.get(group_id, [])
        cache = self._member_cache.get(group_id)
        if cache is None or cache.stale or now_ts < cache.ts:
            group = self._groups.get(group_id)
            initial = dict.fromkeys(group.initial_members) if group is not None else {}
            cache = _MemberCache(ts=-math.inf, pos=0, members=initial)
            self._member_cache[group_id] = cache
        members = cache.members
        pos = cache.pos
        changed = False
        while pos < len(timeline) and timeline[pos].ts <= now_ts:
            record = timeline[pos]
            if record.op == "add":
                if record.member_id not in members:
                    members[record.member_id] = None
                    changed = True
            elif record.member_id in members:
                del members[record.member_id]
                changed = True
            pos += 1
        cache.pos = pos
        cache.ts = now_ts
        if changed:
            cache.sorted_ids = None
        return cache

    def is_member(self, group_id: str, object_id: str, now_ts: float) -> bool:
        with self._lock:
            return object_id in self._members(group_id, now_ts).members

    def transitive_member_groups(self, object_id: str, now_ts: float) -> set[str]:
        """Ids of the live groups ``object_id`` belongs to at ``now_ts``, directly or nested.

        Scenarios only put devices and users in groups, but the mutation API accepts
        any object id, so a group placed in another group is followed (cycles are safe).
        Deleted groups have no members and pass no membership on.
        """
        with self._lock:
            live = [g.id for g in self._groups.values() if not g.deleted]
            found: set[str] = set()
            frontier = {object_id}
            while frontier:
                added: set[str] = set()
                for group_id in live:
                    if group_id in found:
                        continue
                    members = self._members(group_id, now_ts).members
                    if any(member in members for member in frontier):
                        added.add(group_id)
                found |= added
                frontier = added
            return found

    def member_count(self, group_id: str, now_ts: float) -> int:
        with self._lock:
            return len(self._members(group_id, now_ts).members)

    def members_page(
        self, group_id: str, now_ts: float, after: str | None, limit: int, *, devices_only: bool
    ) -> tuple[list[str], str | None]:
        """Member object ids in id order after a cursor; returns (page, next cursor or None)."""
        with self._lock:
            cache = self._members(group_id, now_ts)
            if cache.sorted_ids is None:
                cache.sorted_ids = sorted(cache.members)
            ids = cache.sorted_ids
            index = bisect.bisect_right(ids, after) if after is not None else 0
            page: list[str] = []
            while index < len(ids):
                object_id = ids[index]
                if not devices_only or object_id in self._by_object_id:
                    if len(page) == limit:
                        return page, page[-1]
                    page.append(object_id)
                index += 1
            return page, None

    def membership_changes(
        self, group_id: str, since_ts: float, until_ts: float
    ) -> list[tuple[str, MembershipOp]]:
        """Net membership changes that delta shows in (since, until]: the last operation per
        member, by time. A change shows ``delta_delay_s`` after it took effect."""
        with self._lock:
            timeline = self._by_group.get(group_id, [])
            low, high = since_ts - self.delta_delay_s, until_ts - self.delta_delay_s
            start = bisect.bisect_right(timeline, (low, math.inf), key=_record_key)
            end = bisect.bisect_right(timeline, (high, math.inf), key=_record_key)
            last: dict[str, MembershipOp] = {}
            for record in timeline[start:end]:
                last.pop(record.member_id, None)
                last[record.member_id] = record.op
            return list(last.items())

    # ------------------------------------------------------------------ audit log

    def _merged(
        self, target_id: str, lists: list[list[MembershipRecord]]
    ) -> list[MembershipRecord]:
        """The target's timelines merged in order, kept while none of them has grown: each of
        a listing's pages asks for them again, and merging a large group's anew for every page
        made the simulator's paging cost grow with the whole log, which Graph's does not."""
        # The timelines only ever grow (insort, or a new list in their place): the same lists
        # at the same lengths hold the same records.
        lengths = [len(found) for found in lists]
        cached = self._merged_cache.get(target_id)
        if (
            cached is not None
            and len(cached[0]) == len(lists)
            and all(a is b for a, b in zip(cached[0], lists, strict=True))
            and cached[1] == lengths
        ):
            return cached[2]
        merged = list(heapq.merge(*lists, key=_record_key))
        self._merged_cache[target_id] = (list(lists), lengths, merged)
        return merged

    def audit_page(
        self,
        query: AuditQuery,
        snapshot_ts: float,
        cursor: tuple[float, int] | None,
        limit: int,
    ) -> tuple[list[MembershipRecord], tuple[float, int] | None]:
        """Audit events matching ``query`` as of ``snapshot_ts``, newest first.

        Paging continues strictly below ``cursor`` so later pages stay consistent
        with the first even when new events become visible meanwhile.
        """
        with self._lock:
            if query.target_id is not None:
                lists = [
                    found
                    for found in (
                        self._by_member.get(query.target_id),
                        self._by_group.get(query.target_id),
                        self._owner_records_by_group.get(query.target_id),
                    )
                    if found
                ]
                if len(lists) > 1:
                    candidates = self._merged(query.target_id, lists)
                else:
                    candidates = lists[0] if lists else []
            else:
                candidates = self._all
            lower = snapshot_ts - self.audit_retention_days * 86400.0
            if query.since_ts is not None:
                lower = max(lower, query.since_ts)
            upper = snapshot_ts if query.until_ts is None else min(query.until_ts, snapshot_ts)
            top = bisect.bisect_right(candidates, (upper, math.inf), key=_record_key)
            if cursor is not None:
                top = min(top, bisect.bisect_left(candidates, cursor, key=_record_key))
            app_id = query.app_id.lower() if query.app_id else None
            pc_app = self._pc.app_id.lower()
            monitor_app = self._monitor.app_id.lower()
            page: list[MembershipRecord] = []
            index = top - 1
            while index >= 0:
                record = candidates[index]
                index -= 1
                if record.ts < lower:
                    break
                if record.visible_ts > snapshot_ts:
                    continue
                if query.ops is not None and activity_key(record) not in query.ops:
                    continue
                if app_id is not None and not (
                    (
                        record.actor == "provisioning_client"
                        and record.audit_actor_fields != "displayName"
                        and app_id == pc_app
                    )
                    or (record.actor == "monitor" and app_id == monitor_app)
                ):
                    continue
                if len(page) == limit:
                    last = page[-1]
                    return page, (last.ts, last.seq)
                page.append(record)
            return page, None

    def group_display_name(self, group_id: str) -> str | None:
        group = self._groups.get(group_id)
        return group.display_name if group else None

    def audit_event_count(self) -> int:
        with self._lock:
            return len(self._all)

    def device_count(self) -> int:
        with self._lock:
            return len(self._devices)


# --- apps and scripts device preparation policies select ------------------------------------


class PayloadCatalog:
    """The tenant's Intune apps and platform scripts, as the payload routes serve them.

    Selected ids the scenario does not describe exist and are assigned as required to the
    ETG of each policy selecting them, so a scenario stays healthy unless it says otherwise.
    """

    def __init__(self, scenario: Scenario, lock: threading.RLock) -> None:
        self._lock = lock
        self.apps: dict[str, AppSpec] = {a.id: copy_payload(a) for a in scenario.apps}
        self.scripts: dict[str, ScriptSpec] = {s.id: copy_payload(s) for s in scenario.scripts}
        missing = set(scenario.missing_payload_ids)
        names = {item.id: item.name for d in scenario.devices for item in (*d.apps, *d.scripts)}
        for policy in scenario.policies:
            etg = [PayloadAssignment("group", policy.etg_group_id)] if policy.etg_group_id else []
            for app_id in policy.allowed_app_ids:
                if app_id not in missing and app_id not in self.apps:
                    self.apps[app_id] = AppSpec(app_id, names.get(app_id, f"App {app_id[:8]}"))
                if app_id in self.apps and app_id not in {a.id for a in scenario.apps}:
                    self._assign_once(self.apps[app_id], etg)
            for script_id in policy.allowed_script_ids:
                if script_id not in missing and script_id not in self.scripts:
                    name = names.get(script_id, f"Script {script_id[:8]}.ps1")
                    self.scripts[script_id] = ScriptSpec(script_id, name)
                if script_id in self.scripts and script_id not in {s.id for s in scenario.scripts}:
                    self._assign_once(self.scripts[script_id], etg)

    @staticmethod
    def _assign_once(item: AppSpec | ScriptSpec, add: list[PayloadAssignment]) -> None:
        for assignment in add:
            if assignment not in item.assignments:
                item.assignments.append(assignment)

    def app(self, app_id: str) -> AppSpec | None:
        with self._lock:
            found = self.apps.get(app_id.lower())
            return copy_payload(found) if found else None

    def script(self, script_id: str) -> ScriptSpec | None:
        with self._lock:
            found = self.scripts.get(script_id.lower())
            return copy_payload(found) if found else None

    def set_assignments(self, item_id: str, assignments: Iterable[PayloadAssignment]) -> None:
        """Replace what an app or script is assigned to (an admin editing its assignments)."""
        with self._lock:
            item = self.apps.get(item_id) or self.scripts.get(item_id)
            if item is None:
                raise KeyError(f"unknown app or script {item_id!r}")
            item.assignments = [dataclasses.replace(a) for a in assignments]

    def update_script(self, script_id: str, run_as_account: RunAsAccount) -> None:
        with self._lock:
            self.scripts[script_id].run_as_account = run_as_account

    def delete(self, item_id: str) -> None:
        with self._lock:
            self.apps.pop(item_id, None)
            self.scripts.pop(item_id, None)


def copy_payload(item: AppSpec | ScriptSpec) -> Any:
    return dataclasses.replace(item, assignments=[dataclasses.replace(a) for a in item.assignments])
