"""Small typed models shared by the Graph layer, the rules and the store.

Facts come in from Graph as these models; rules turn facts into verdicts; the store keeps
anomalies. A fact that could not be read is an ``Unverified`` value in place of the fact, so
every rule has to say what it does when it does not know.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

# What the monitor writes as JSON (reports, evidence, payloads). Read-only containers, so a
# list[str] or a dict of counts is a JSON value as it stands.
JSON: TypeAlias = Mapping[str, "JSON"] | Sequence["JSON"] | str | int | float | bool | None


def json_object(value: JSON) -> Mapping[str, JSON]:
    """``value`` as an object, or an empty one: stored JSON is read defensively."""
    return value if isinstance(value, Mapping) else {}


def json_list(value: JSON) -> Sequence[JSON]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def fields_json(report: object, *, omit: Iterable[str] = ()) -> dict[str, JSON]:
    """A report dataclass's fields as JSON, in declaration order: what a job returns is
    written out once, not field by field; items that know their JSON (Unverified) use it."""
    skipped = set(omit)
    out: dict[str, JSON] = {}
    for f in dataclasses.fields(report):  # type: ignore[arg-type]
        if f.name in skipped:
            continue
        value = getattr(report, f.name)
        if isinstance(value, list | tuple):
            value = [v.to_json() if hasattr(v, "to_json") else v for v in value]
        out[f.name] = value
    return out


def json_number(value: JSON) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_guid(value: object) -> bool:
    """Directory object ids are GUIDs; a documentation placeholder ("id-value") is not one."""
    return isinstance(value, str) and _GUID.match(value) is not None


PROVISIONING_CLIENT_APP_ID = "f1346770-5b25-470b-88bd-d5744ab7952c"
PROVISIONING_CLIENT_NAMES = ("Intune Provisioning Client", "Intune Autopilot ConfidentialClient")


class UnverifiedReason(StrEnum):
    FORBIDDEN = "forbidden"  # a permission is missing
    THROTTLED = "throttled"  # retries ran out on 429/503
    UNAVAILABLE = "unavailable"  # network error, timeout, 5xx
    MALFORMED = "malformed"  # an answer the monitor cannot interpret
    NOT_YET_VISIBLE = "not_yet_visible"  # data that should appear later (audit latency)
    RETENTION = "retention"  # data older than the source keeps
    REJECTED = "rejected"  # 4xx other than 403/404: the request shape is not accepted
    UNRESOLVED = "unresolved"  # facts disagree or are missing (e.g. which policy applied)
    OUT_OF_SCOPE = "out_of_scope"  # the monitor's Intune scope does not cover the object


@dataclass(frozen=True, slots=True)
class Unverified:
    """A fact the monitor could not establish. Reported as monitor health, never as an anomaly."""

    source: str
    reason: UnverifiedReason
    detail: str = ""
    permission: str | None = None
    status: int | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "source": self.source,
            "reason": self.reason.value,
            "detail": self.detail,
            "permission": self.permission,
            "status": self.status,
        }


# --- configuration facts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    name: str
    template_id: str
    timeout_minutes: int | None = None
    allowed_app_ids: tuple[str, ...] = ()
    allowed_script_ids: tuple[str, ...] = ()
    # Intune's priorityMetaData.priority: among the policies assigned to a user, the lowest wins.
    priority: int | None = None
    # enrollment_autopilot_dpp_devicesecuritygroupids: what older tools read as the ETG. Not
    # reliable (it can name a group Intune never applied), so only a last-resort source.
    settings_group_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EtgLookup:
    """What Intune says the policy's ETG is. Empty ``group_ids`` means none is configured."""

    group_ids: tuple[str, ...]
    source: str
    # Intune's own validation, when the documented response shape carries it: group id -> code.
    validation_errors: tuple[tuple[str, str], ...] = ()
    # Targets the documented shape reports with validationSucceeded true. Intune checks that the
    # provisioning client owns the group, so this is evidence of ownership that v1.0 lacks.
    validated_group_ids: tuple[str, ...] = ()

    def validation_error(self, group_id: str) -> str | None:
        return next((code for gid, code in self.validation_errors if gid == group_id), None)

    @property
    def from_settings(self) -> bool:
        """Read from the policy's settings, not confirmed by Intune's retrieve actions."""
        return self.source == ETG_SOURCE_SETTINGS

    @property
    def confirmed(self) -> bool:
        """Intune (a retrieve action) or the operator named this group as the ETG."""
        return not self.from_settings


# Where a policy's ETG was read from, in the order the monitor tries them (the operator map
# always wins when it names the policy).
ETG_SOURCE_OPERATOR = "operator map (ETG_POLICY_GROUPS)"
ETG_SOURCE_ACTION = "retrieveEnrollmentTimeDeviceMembershipTarget"
ETG_SOURCE_JIT = "retrieveJustInTimeConfiguration"
ETG_SOURCE_SETTINGS = "read from policy settings (enrollment_autopilot_dpp_devicesecuritygroupids)"


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    display_name: str
    security_enabled: bool
    mail_enabled: bool
    group_types: tuple[str, ...]
    is_assignable_to_role: bool
    membership_rule: str | None = None

    @property
    def is_dynamic(self) -> bool:
        return any(t.lower() == "dynamicmembership" for t in self.group_types)


@dataclass(frozen=True, slots=True)
class GroupNotFound:
    id: str
    source: str


@dataclass(frozen=True, slots=True)
class Owner:
    id: str
    odata_type: str
    display_name: str | None = None
    app_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProvisioningClient:
    """The Intune Provisioning Client service principal, or ``object_id=None`` when absent."""

    object_id: str | None
    display_name: str | None = None
    app_id: str = PROVISIONING_CLIENT_APP_ID

    @property
    def present(self) -> bool:
        return self.object_id is not None


@dataclass(frozen=True, slots=True)
class EtgFacts:
    group_id: str
    group: Group | GroupNotFound | Unverified
    owners: tuple[Owner, ...] | Unverified | None  # None: not read because the group is gone
    # v1.0 owners may leave service principals out (staged rollout), so when it does not show
    # the provisioning client these are asked too. None: not asked.
    beta_owners: tuple[Owner, ...] | Unverified | None = None
    in_owned_objects: bool | Unverified | None = None  # the client's ownedObjects holds the group


# --- the apps and scripts a device preparation policy selects (payload readiness) -----------


class PayloadKind(StrEnum):
    APP = "app"  # deviceAppManagement/mobileApps (intune-apps-mobileapp-get.md)
    SCRIPT = "script"  # deviceManagement/deviceManagementScripts (beta, intune-devices-...-get.md)


@dataclass(frozen=True, slots=True)
class PayloadAssignment:
    """One assignment of an app or script, as Graph lists it."""

    target_type: str  # the target's @odata.type without its namespace, e.g. groupAssignmentTarget
    group_id: str | None = None
    intent: str | None = None  # apps only: required, available, uninstall...; scripts have none


@dataclass(frozen=True, slots=True)
class PayloadObject:
    display_name: str
    odata_type: str | None = None  # apps: the derived type, e.g. #microsoft.graph.win32LobApp
    run_as_account: str | None = None  # scripts: system or user


@dataclass(frozen=True, slots=True)
class PayloadFacts:
    """An app or script a policy selects. ``item`` is None when Graph answered 404: it no
    longer exists, which is a fact, not an unknown."""

    kind: PayloadKind
    id: str
    item: PayloadObject | Unverified | None
    assignments: tuple[PayloadAssignment, ...] | Unverified = ()


@dataclass(frozen=True, slots=True)
class PolicyConfigFacts:
    policy: Policy
    etg: EtgLookup | Unverified
    groups: tuple[EtgFacts, ...] = ()
    # The policy's selected apps and scripts; None: not read (the payload rule does not decide).
    payload: tuple[PayloadFacts, ...] | None = None


@dataclass(frozen=True, slots=True)
class TenantConfigFacts:
    observed_at: datetime
    policies: tuple[PolicyConfigFacts, ...] | Unverified
    provisioning_client: ProvisioningClient | Unverified


class OwnerSource(StrEnum):
    """Where the monitor can learn whether the provisioning client owns an ETG."""

    V1_OWNERS = "v1.0 owners"
    INTUNE_VALIDATION = "Intune validation"
    OWNED_OBJECTS = "ownedObjects"
    BETA_OWNERS = "beta owners"

    @property
    def call(self) -> str:
        return _OWNER_SOURCE_CALLS[self]


_OWNER_SOURCE_CALLS = {
    OwnerSource.V1_OWNERS: "GET /v1.0/groups/{id}/owners",
    OwnerSource.INTUNE_VALIDATION: (
        "POST /beta/deviceManagement/configurationPolicies/{id}/"
        "retrieveEnrollmentTimeDeviceMembershipTarget"
    ),
    OwnerSource.OWNED_OBJECTS: "GET /v1.0/servicePrincipals/{id}/ownedObjects",
    OwnerSource.BETA_OWNERS: "GET /beta/groups/{id}/owners",
}


class OwnerAnswer(StrEnum):
    OWNER = "owner"  # shows the provisioning client as an owner of the group
    NOT_OWNER = "not_owner"  # read, and does not (Intune: firstPartyAppNotAnOwner)
    INCONCLUSIVE = "inconclusive"  # Intune's validation failed without naming ownership
    SILENT = "silent"  # read, but it says nothing about ownership
    UNREADABLE = "unreadable"
    NOT_ASKED = "not_asked"  # not needed: an earlier source already showed the owner


@dataclass(frozen=True, slots=True)
class OwnerEvidence:
    source: OwnerSource
    answer: OwnerAnswer
    detail: str = ""
    unverified: Unverified | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "source": self.source.value,
            "call": self.source.call,
            "answer": self.answer.value,
            "detail": self.detail,
            "unverified": self.unverified.to_json() if self.unverified else None,
        }


class OwnerStatus(StrEnum):
    OWNER = "owner"
    MISSING = "missing"
    UNVERIFIED = "unverified"
    NOT_APPLICABLE = "not_applicable"  # the group is gone, or the client itself is missing


@dataclass(frozen=True, slots=True)
class OwnerCheck:
    """Whether the provisioning client owns one ETG, with what each source said."""

    group_id: str
    status: OwnerStatus
    evidence: tuple[OwnerEvidence, ...]
    detail: str = ""
    unverified: tuple[Unverified, ...] = ()

    @property
    def confirmed_by(self) -> tuple[str, ...]:
        return tuple(e.source.value for e in self.evidence if e.answer is OwnerAnswer.OWNER)

    def to_json(self) -> dict[str, JSON]:
        return {
            "group_id": self.group_id,
            "status": self.status.value,
            "confirmed_by": list(self.confirmed_by),
            "detail": self.detail,
            "sources": [e.to_json() for e in self.evidence],
        }


# --- verdicts --------------------------------------------------------------------------------


class Scope(StrEnum):
    TENANT = "tenant"
    POLICY = "policy"
    DEVICE = "device"
    MONITOR = "monitor"  # the monitor's own jobs


@dataclass(frozen=True, slots=True)
class Subject:
    """What an anomaly is about. Its key keeps repeated runs updating one record."""

    scope: Scope
    policy_id: str | None = None
    policy_name: str | None = None
    group_id: str | None = None
    managed_device_id: str | None = None
    device_name: str | None = None
    serial_number: str | None = None
    user_principal_name: str | None = None
    # A device can be provisioned more than once; each deployment is judged on its own.
    deployment_key: str | None = None
    job: str | None = None  # for Scope.MONITOR

    @property
    def key(self) -> str:
        if self.scope is Scope.TENANT:
            return "tenant"
        if self.scope is Scope.POLICY:
            return f"policy:{self.policy_id}"
        if self.scope is Scope.MONITOR:
            return f"monitor:{self.job}"
        return f"device:{self.deployment_key or self.managed_device_id}"


@dataclass(frozen=True, slots=True)
class Finding:
    """The condition holds now."""

    kind: str
    subject: Subject
    explanation: str
    fix: str
    evidence: dict[str, JSON]
    # A line for the anomaly's history, written once, by the first run whose finding carries
    # it: what a later look at the evidence (the audit log settling) made of an open anomaly.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Clear:
    """The condition was checked conclusively and does not hold."""

    kind: str
    subject: Subject
    reason: str = "condition no longer holds"
    # The finding it resolves should not have been made: counted in health and the summary.
    false_alarm: bool = False


@dataclass(frozen=True, slots=True)
class NotEvaluated:
    """The condition could not be decided this run; any stored state stays as it was."""

    kind: str
    subject: Subject
    unverified: tuple[Unverified, ...] = ()
    reason: str = ""
    # Pending: the evidence is not conclusive yet but will be (a deployment still running, an
    # audit event not yet due). Not pending and not unverified: the check does not apply.
    pending: bool = False


Verdict: TypeAlias = Finding | Clear | NotEvaluated


def anomaly_key(kind: str, subject_key: str) -> str:
    """One record per kind and subject, so that repeated runs update it."""
    return f"{kind}|{subject_key}"


class Status(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"


@dataclass(slots=True)
class Anomaly:
    kind: str
    subject: Subject
    status: Status
    first_seen: datetime
    last_seen: datetime
    explanation: str
    fix: str
    evidence: dict[str, JSON]
    resolved_at: datetime | None = None
    history: list[dict[str, JSON]] = field(default_factory=list)
    etag: str | None = None
    # What remediation planned or did for it (monitors/remediation): mode, decision, when,
    # request id; None when remediation never looked at it.
    remediation: dict[str, JSON] | None = None
    # Who took it from the console, and when: an acknowledged anomaly gets no reminders.
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    # When on-call was last reminded of it, so reminders come at most daily.
    reminded_at: datetime | None = None

    @property
    def key(self) -> str:
        return anomaly_key(self.kind, self.subject.key)

    def to_json(self) -> dict[str, JSON]:
        s = self.subject
        return {
            "kind": self.kind,
            "status": self.status.value,
            "scope": s.scope.value,
            "policy_id": s.policy_id,
            "policy_name": s.policy_name,
            "group_id": s.group_id,
            "managed_device_id": s.managed_device_id,
            "device_name": s.device_name,
            "serial_number": s.serial_number,
            "user_principal_name": s.user_principal_name,
            "deployment_key": s.deployment_key,
            "job": s.job,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "explanation": self.explanation,
            "fix": self.fix,
            "evidence": self.evidence,
            "history": self.history,
            "remediation": self.remediation,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "reminded_at": self.reminded_at.isoformat() if self.reminded_at else None,
        }


# --- enrollment facts ------------------------------------------------------------------------


class DeploymentStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILED = "failed"
    UNKNOWN = "unknown"  # a status code the monitor does not know: never guessed


def deployment_key(managed_device_id: str, enrolled_at: datetime) -> str:
    """A deployment's key: the device and its enrollment time to the second."""
    t = enrolled_at
    if t.year < 1000:  # strftime's %Y does not pad these; keys made before stay the same
        return f"{managed_device_id}_{t:%Y%m%dT%H%M%S}"
    # %-formatting, not strftime: the same text at a third of the cost, made once per report
    # row and per stored record read.
    return "%s_%04d%02d%02dT%02d%02d%02d" % (  # noqa: UP031
        managed_device_id,
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    """One row of the AutopilotV2DeploymentStatus report."""

    managed_device_id: str
    enrolled_at: datetime
    status: DeploymentStatus
    status_label: str = ""
    device_name: str | None = None
    serial_number: str | None = None
    user_principal_name: str | None = None
    duration_seconds: int | None = None
    result_code: str | None = None
    phase: str | None = None
    current_phase: str | None = None
    # Made once: a scan asks every deployment's key many times, and one string per
    # deployment instead of one per question is tens of megabytes at 100,000 deployments.
    key: str = field(init=False, repr=False, compare=False)
    # Also made once: the rules ask for it several times per deployment and verdict.
    completed_at: datetime | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", deployment_key(self.managed_device_id, self.enrolled_at))
        completed = None
        if (
            self.status in (DeploymentStatus.SUCCESS, DeploymentStatus.FAILED)
            and self.duration_seconds is not None
        ):
            completed = self.enrolled_at + timedelta(seconds=self.duration_seconds)
        object.__setattr__(self, "completed_at", completed)


@dataclass(frozen=True, slots=True)
class ManagedDevice:
    id: str
    azure_ad_device_id: str | None
    enrollment_profile_name: str | None
    device_name: str | None = None
    serial_number: str | None = None
    user_principal_name: str | None = None
    enrolled_at: datetime | None = None


class MembershipOp(StrEnum):
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """A device joining or leaving a group.

    ``exact`` events (directory audit) happened at ``at``; observations (delta, change
    notifications) only prove the change happened at or before ``at``.
    """

    op: MembershipOp
    group_id: str
    device_object_id: str
    at: datetime
    exact: bool
    source: str
    event_id: str
    actor: str | None = None
    by_provisioning_client: bool | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "op": self.op.value,
            "group_id": self.group_id,
            "device_object_id": self.device_object_id,
            "at": self.at.isoformat(),
            "exact": self.exact,
            "source": self.source,
            "event_id": self.event_id,
            "actor": self.actor,
            "by_provisioning_client": self.by_provisioning_client,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> MembershipEvent:
        actor, by_client = data.get("actor"), data.get("by_provisioning_client")
        return cls(
            op=MembershipOp(str(data["op"])),
            group_id=str(data["group_id"]),
            device_object_id=str(data["device_object_id"]),
            at=datetime.fromisoformat(str(data["at"])),
            exact=bool(data["exact"]),
            source=str(data["source"]),
            event_id=str(data["event_id"]),
            actor=actor if isinstance(actor, str) else None,
            by_provisioning_client=by_client if isinstance(by_client, bool) else None,
        )


@dataclass(frozen=True, slots=True)
class InstallItem:
    kind: str  # "app" | "script"
    id: str
    name: str
    status: str  # Installed | In progress | Skipped | Failed | other


@dataclass(frozen=True, slots=True)
class PolicyMatch:
    policy: Policy
    etg_group_ids: tuple[str, ...]
    how: str  # which rule resolved the policy, shown as evidence
    etg_source: str = ""  # where the ETG was read from (see ETG_SOURCE_*)


@dataclass(frozen=True, slots=True)
class PolicyAssignment:
    """Who a device preparation policy is assigned to (its assignment targets)."""

    include_groups: tuple[str, ...] = ()
    exclude_groups: tuple[str, ...] = ()
    all_users: bool = False

    def includes(self, user_groups: set[str]) -> bool:
        """Intune's rule: included (directly, or as all users) and not in an excluded group."""
        if user_groups.intersection(self.exclude_groups):
            return False
        return self.all_users or bool(user_groups.intersection(self.include_groups))


@dataclass(frozen=True, slots=True)
class UserPolicies:
    """The device preparation policies whose assignment includes the enrolling user."""

    user: str
    policy_ids: tuple[str, ...]
    # Policies whose assignments could not be read: any of them might apply instead.
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeploymentFacts:
    deployment: Deployment
    policy: PolicyMatch | Unverified | None  # None: no rule could tell which policy applied
    device_object_id: str | Unverified | None  # None: no Entra device (yet)
    events: tuple[MembershipEvent, ...] | Unverified
    # Audit events that happened before this instant are assumed visible by now.
    audit_settled_until: datetime | Unverified
    is_member_now: bool | Unverified | None = None  # None: not asked
    payload: tuple[InstallItem, ...] | Unverified | None = None  # None: reports not enabled
    # The read the join events come from, as an unverified join time names it.
    audit_source: str = "audit log"
    # Early conclusion (ETG_EARLY_CONCLUSION): how long after completion a live "not a member"
    # counts before the audit log settles (directory replication); None: off.
    membership_grace: timedelta | None = None
    # The live check that opened an etg_missing still standing, as its evidence recorded it.
    early_check: EarlyCheck | None = None


@dataclass(frozen=True, slots=True)
class EarlyCheck:
    """A live check that found the device outside its ETG before the audit log had settled
    past completion, with how far the audit log had been searched then. Read back from the
    anomaly it opened, so the evidence stays the same scan after scan."""

    checked_at: datetime
    audit_searched_until: datetime
