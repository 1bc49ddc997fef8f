"""What remediation would do, decided purely from stored anomalies, the log and live facts.

Two steps. ``screen`` works from what the store holds (the anomaly's evidence and the log) and
refuses everything the monitor must never act on, before any Graph read. ``judge`` weighs what
Graph says about the group right now and whether the change is already there; ``cap`` then
keeps the first actions of the run, oldest anomaly first. Nothing here ever removes anything:
the only actions are adding a device to its ETG and adding the provisioning client as owner.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from monitors.models import (
    ETG_SOURCE_SETTINGS,
    JSON,
    Anomaly,
    Group,
    GroupNotFound,
    Status,
    Unverified,
    is_guid,
    json_list,
    json_object,
)
from monitors.rules.enrollment import RESOLVED_BY_ELIMINATION
from monitors.rules.kinds import ETG_MISSING, ETG_OWNER_MISSING, ETG_REMOVED
from monitors.store.remediations import RemediationEntry

KINDS = (ETG_MISSING.name, ETG_OWNER_MISSING.name)
# Log states whose write put the reference in place (monitors.graph.writes.WriteResult).
IN_PLACE = ("done", "already")


class Action(StrEnum):
    ADD_MEMBER = "add_member"
    ADD_OWNER = "add_owner"


class Decision(StrEnum):
    WRITE = "write"  # add it (dry-run: would add it)
    PRESENT = "present"  # already a member or owner: nothing to write
    VERIFIED = "verified"  # an interrupted run's write is there: recorded done, not repeated
    REFUSED = "refused"
    DEFERRED = "deferred"
    UNVERIFIED = "unverified"  # a live read failed: skipped, re-checked next run


@dataclass(frozen=True, slots=True)
class Target:
    """One anomaly as an action: what would be added to which group, and why."""

    anomaly_key: str
    kind: str
    action: Action
    group_id: str | None
    object_id: str | None
    first_seen: datetime
    why: str
    device_name: str = ""
    policy_name: str = ""
    policy_id: str = ""

    @property
    def what(self) -> str:
        if self.action is Action.ADD_MEMBER:
            return f"add {self.device_name or self.object_id} to its ETG"
        return f"add the Intune Provisioning Client as an owner of the ETG of {self.policy_name}"

    @property
    def command(self) -> str:
        """The CLI command that applies just this item."""
        if self.action is Action.ADD_MEMBER and self.device_name:
            return f"etg-monitor remediate --apply --device {shlex.quote(self.device_name)}"
        policy = shlex.quote(self.policy_name or self.policy_id)
        return f"etg-monitor remediate --apply --policy {policy}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the monitor will not act on an item, in words."""

    reason: str


@dataclass(frozen=True, slots=True)
class Live:
    """What Graph says now: the group, and whether the change is there (None: not read)."""

    group: Group | GroupNotFound | Unverified
    present: bool | Unverified | None = None


@dataclass(frozen=True, slots=True)
class PlanItem:
    target: Target
    decision: Decision
    reason: str
    group_name: str = ""
    unverified: tuple[Unverified, ...] = ()
    # The log entry of an interrupted attempt this item continues.
    interrupted: RemediationEntry | None = None
    # The log entry of an earlier write that put the change in place.
    earlier: RemediationEntry | None = None

    def to_json(self) -> dict[str, JSON]:
        t = self.target
        return {
            "anomaly_key": t.anomaly_key,
            "kind": t.kind,
            "action": t.action.value,
            "device_name": t.device_name or None,
            "policy_name": t.policy_name or None,
            "group_id": t.group_id,
            "group_name": self.group_name or None,
            "object_id": t.object_id,
            "decision": self.decision.value,
            "reason": self.reason,
            "command": t.command,
            "unverified": [u.to_json() for u in self.unverified],
        }


def target_of(anomaly: Anomaly) -> Target:
    ev, s = anomaly.evidence, anomaly.subject
    if anomaly.kind == ETG_MISSING.name:
        action = Action.ADD_MEMBER
        groups = _strings(json_object(ev.get("policy")).get("etg_group_ids"))
        group_id = groups[0] if len(groups) == 1 else s.group_id
        object_id = ev.get("device_object_id")
    else:
        action = Action.ADD_OWNER
        groups = _strings(ev.get("etg_group_ids"))
        group_id = groups[0] if len(groups) == 1 else None
        object_id = ev.get("provisioning_client_object_id")
    return Target(
        anomaly_key=anomaly.key,
        kind=anomaly.kind,
        action=action,
        group_id=group_id,
        object_id=object_id.lower() if isinstance(object_id, str) and object_id else None,
        first_seen=anomaly.first_seen,
        why=anomaly.explanation,
        device_name=s.device_name or "",
        policy_name=s.policy_name or "",
        policy_id=s.policy_id or "",
    )


def _strings(value: JSON) -> list[str]:
    return [v for v in json_list(value) if isinstance(v, str) and v]


def refusal(anomaly: Anomaly, log: Sequence[RemediationEntry] = ()) -> Refusal | None:
    """What the stored evidence already forbids, before any Graph read."""
    if anomaly.status is Status.SUPPRESSED:
        return Refusal("suppressed: the operator marked it as expected, so it is left alone")
    if anomaly.status is not Status.OPEN:
        return Refusal("not open")
    if anomaly.kind == ETG_MISSING.name:
        found = _member_refusal(anomaly.evidence)
    elif anomaly.kind == ETG_OWNER_MISSING.name:
        found = _owner_refusal(anomaly.evidence)
    else:
        found = Refusal(f"{anomaly.kind} is not remediated")
    return found or _gone_refusal(anomaly, log)


def _etg_refusal(groups: list[str], source: JSON) -> Refusal | None:
    if not groups:
        return Refusal("the policy names no ETG")
    if len(groups) > 1:
        return Refusal(f"the policy names {len(groups)} ETGs, so which one is meant is unclear")
    if not is_guid(groups[0]):
        return Refusal(f"the ETG id {groups[0]!r} is not a directory object id")
    if source == ETG_SOURCE_SETTINGS or not isinstance(source, str) or not source:
        return Refusal(
            "the ETG is known only from the policy's settings, not confirmed by Intune's "
            "retrieve action or the operator map (ETG_POLICY_GROUPS)"
        )
    return None


def _member_refusal(evidence: Mapping[str, JSON]) -> Refusal | None:
    if evidence.get("refined") == ETG_REMOVED.name:
        # Someone took it out after it joined: putting it back would undo a person's decision.
        return Refusal(
            "the device was removed from its ETG after joining (see the history); re-add it "
            "by hand if the removal was a mistake"
        )
    policy = json_object(evidence.get("policy"))
    if not policy:
        return Refusal("the device's policy is not known")
    if policy.get("resolved_by") == RESOLVED_BY_ELIMINATION:
        return Refusal(
            "the device's policy was resolved only by elimination (the only device "
            "preparation policy), not by its enrollment profile, assignment or ETG"
        )
    etg = _etg_refusal(_strings(policy.get("etg_group_ids")), policy.get("etg_source"))
    if etg is not None:
        return etg
    if not is_guid(evidence.get("device_object_id")):
        return Refusal("the device's Entra object id is not known")
    return None


def _owner_refusal(evidence: Mapping[str, JSON]) -> Refusal | None:
    return _etg_refusal(_strings(evidence.get("etg_group_ids")), evidence.get("etg_source"))


def _gone_refusal(anomaly: Anomaly, log: Sequence[RemediationEntry]) -> Refusal | None:
    """A 404 is not retried blindly: only once a later scan has seen the anomaly again
    (``last_seen`` moved past the answer) is it tried once more."""
    last = log[-1] if log else None
    if last is None or last.state != "gone":
        return None
    when = last.finished_at or last.started_at
    if anomaly.last_seen > when:
        return None
    return Refusal(
        f"Graph answered 404 at {when.isoformat()} (the group or the object is gone): not "
        "retried until a scan sees the anomaly again"
    )


def screen(
    anomalies: Iterable[Anomaly],
    log: Mapping[str, Sequence[RemediationEntry]],
    provisioning_client: str | None = None,
) -> tuple[list[Target], list[PlanItem]]:
    """Targets worth a live read, and items refused from stored state. ``provisioning_client``
    is the client's object id, when read in Graph, for owner anomalies whose evidence lacks it."""
    targets: list[Target] = []
    refused: list[PlanItem] = []
    for anomaly in sorted(anomalies, key=lambda a: (a.first_seen, a.key)):
        target = target_of(anomaly)
        if target.action is Action.ADD_OWNER and target.object_id is None and provisioning_client:
            target = replace(target, object_id=provisioning_client)
        why = refusal(anomaly, log.get(anomaly.key, ()))
        if why is None and target.object_id is None:
            why = Refusal("the Intune Provisioning Client's object id is not known")
        if why is not None:
            refused.append(PlanItem(target, Decision.REFUSED, why.reason))
        else:
            targets.append(target)
    return targets, refused


def group_refusal(group: Group | GroupNotFound) -> Refusal | None:
    """Groups the monitor never writes to, whatever the anomaly says."""
    if isinstance(group, GroupNotFound):
        return Refusal("the ETG does not exist (deleted?)")
    if group.is_dynamic or group.membership_rule:
        return Refusal("the ETG is a dynamic group: its members come from its rule")
    if group.is_assignable_to_role:
        return Refusal("the ETG is role-assignable: adding to it grants directory roles")
    if group.mail_enabled:
        return Refusal("the ETG is mail-enabled")
    if not group.security_enabled:
        return Refusal("the ETG is not a security group")
    return None


def judge(target: Target, live: Live, log: Sequence[RemediationEntry] = ()) -> PlanItem:
    """Decide one target from what Graph says now."""
    if isinstance(live.group, Unverified):
        return PlanItem(target, Decision.UNVERIFIED, _unread(live.group), unverified=(live.group,))
    name = live.group.display_name if isinstance(live.group, Group) else ""
    refused = group_refusal(live.group)
    if refused is not None:
        return PlanItem(target, Decision.REFUSED, refused.reason, name)
    if isinstance(live.present, Unverified) or live.present is None:
        detail = live.present if isinstance(live.present, Unverified) else None
        reason = _unread(detail) if detail else "whether it is there already was not read"
        return PlanItem(
            target, Decision.UNVERIFIED, reason, name, unverified=(detail,) if detail else ()
        )
    interrupted = log[-1] if log and log[-1].interrupted else None
    noun = "a member" if target.action is Action.ADD_MEMBER else "an owner"
    if live.present and interrupted is not None:
        return PlanItem(
            target, Decision.VERIFIED, "verified after an interrupted run", name, (), interrupted
        )
    earlier = log[-1] if log and log[-1].state in IN_PLACE else None
    if live.present and earlier is not None:
        why = f"added by etg-monitor at {earlier.started_at.isoformat()}"
        return PlanItem(target, Decision.VERIFIED, why, name, earlier=earlier)
    if live.present:
        return PlanItem(target, Decision.PRESENT, f"already {noun}: nothing to write", name)
    return PlanItem(target, Decision.WRITE, target.what, name, (), interrupted)


def _unread(u: Unverified) -> str:
    return f"unverified: {u.source} could not be read ({u.reason.value}); re-checked next run"


def cap(items: Sequence[PlanItem], limit: int) -> list[PlanItem]:
    """The first ``limit`` writes, oldest anomaly first; the others wait and say so."""
    out: list[PlanItem] = []
    writes = 0
    for item in sorted(items, key=lambda i: (i.target.first_seen, i.target.anomaly_key)):
        if item.decision is Decision.WRITE:
            writes += 1
            if writes > limit:
                item = replace(
                    item,
                    decision=Decision.DEFERRED,
                    reason=f"waits for the next run: the cap of {limit} per run was reached",
                )
        out.append(item)
    return out


def matches(target: Target, device: str | None, policy: str | None) -> bool:
    """The CLI's --device and --policy narrowing, by name (case-insensitive) or id."""
    if device and device.casefold() not in (target.device_name.casefold(), target.object_id):
        return False
    names = (target.policy_name.casefold(), target.policy_id.casefold())
    return not (policy and policy.casefold() not in names)
