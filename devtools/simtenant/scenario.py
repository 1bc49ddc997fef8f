"""The scenario: everything the simulated tenant knows, as plain data.

A scenario is loaded from JSON (``load_scenario``) or built in code
(``simtenant.generate``). Times in JSON are ISO-8601 UTC strings; device event
times are offsets in seconds from the device's ``enrolled_at`` so a device can be
moved in time by changing one field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

PROVISIONING_CLIENT_APP_ID = "f1346770-5b25-470b-88bd-d5744ab7952c"

TEMPLATES = ("user-driven", "automatic")
ETG_APIS = ("documented", "targets", "targets_wrapped", "jit_only", "unrouted", "error")
OUTCOMES = ("success", "failed", "in_progress")
MEMBERSHIP_OPS = ("add", "remove")
ACTORS = ("provisioning_client", "admin")
AUDIT_ACTOR_FIELDS = ("both", "appId", "displayName")
INSTALL_STATUSES = ("Installed", "In progress", "Skipped", "Failed")

Template = Literal["user-driven", "automatic"]
EtgApi = Literal["documented", "targets", "targets_wrapped", "jit_only", "unrouted", "error"]
# Single-object answers that can be served wrapped as {"@odata.context", "value": {...}}.
WrappedObject = Literal["exportJob", "managedDevice", "etgAction"]
Outcome = Literal["success", "failed", "in_progress"]
MembershipOp = Literal["add", "remove"]
Actor = Literal["provisioning_client", "admin"]
AuditActorFields = Literal["both", "appId", "displayName"]
InstallStatus = Literal["Installed", "In progress", "Skipped", "Failed"]
# deviceAndAppManagementAssignmentTarget subtypes (intune-shared-*assignmenttarget.md).
AssignmentTarget = Literal["group", "allDevices", "allLicensedUsers", "exclusionGroup"]
# installIntent (intune-apps-installintent.md).
InstallIntent = Literal["required", "available", "uninstall", "availableWithoutEnrollment"]
RunAsAccount = Literal["system", "user"]  # runAsAccountType (intune-shared-runasaccounttype.md)


class ScenarioError(ValueError):
    """A scenario that cannot be served; the message names every offending path."""


def parse_time(value: str) -> datetime:
    """Parse an ISO-8601 time that must carry a zone (``Z`` or an offset)."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        raise ValueError(f"time has no zone (use 'Z' for UTC): {value!r}")
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """ISO-8601 UTC with a ``Z``; fractional seconds only when present."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


@dataclass(slots=True)
class ProvisioningClient:
    """The first-party app Intune uses to add devices to an ETG."""

    present: bool = True
    object_id: str = "6d0b2e3c-1f2a-4c51-9a0e-3b7c2d1e4f50"
    app_id: str = PROVISIONING_CLIENT_APP_ID
    display_name: str = "Intune Provisioning Client"


@dataclass(slots=True)
class User:
    id: str
    display_name: str
    user_principal_name: str


@dataclass(slots=True)
class Group:
    id: str
    display_name: str
    security_enabled: bool = True
    mail_enabled: bool = False
    group_types: list[str] = field(default_factory=list)
    membership_rule: str | None = None
    is_assignable_to_role: bool = False
    deleted: bool = False
    owners: list[str] = field(default_factory=list)
    initial_members: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    # False: the retrieve action reports securityGroupNotInCallerScope for this group.
    caller_in_scope: bool = True


@dataclass(slots=True)
class Policy:
    id: str
    name: str
    template: Template = "user-driven"
    etg_group_id: str | None = None
    etg_api: EtgApi = "documented"
    timeout_minutes: int = 60
    allowed_app_ids: list[str] = field(default_factory=list)
    allowed_script_ids: list[str] = field(default_factory=list)
    description: str = ""
    created_at: datetime | None = None
    # priorityMetaData.priority; None means the 1-based position in scenario.policies.
    priority: int | None = None
    # User groups the policy is assigned to (groupAssignmentTarget).
    assigned_group_ids: list[str] = field(default_factory=list)
    # Values of enrollment_autopilot_dpp_devicesecuritygroupids; None keeps a stale value.
    settings_group_ids: list[str] | None = None


@dataclass(slots=True)
class Deployment:
    outcome: Outcome = "success"
    duration_s: float = 600.0
    result_code: int = 0
    phase: int = 6
    current_phase: int = 4


@dataclass(slots=True)
class MembershipEvent:
    """One change of a device's ETG membership, relative to its enrollment."""

    op: MembershipOp = "add"
    offset_s: float = 30.0
    group_id: str | None = None  # None means the ETG of the device's policy
    actor: Actor = "provisioning_client"
    audit_delay_s: float = 120.0
    audit_actor_fields: AuditActorFields = "both"


@dataclass(slots=True)
class InstallItem:
    """An app or script selected in the policy, with its install status on the device."""

    id: str
    name: str
    status: InstallStatus = "Installed"


@dataclass(slots=True)
class PayloadAssignment:
    """One assignment of an app or script. ``group_id`` only for group targets; ``intent``
    only matters for apps (script assignments have none)."""

    target: AssignmentTarget = "group"
    group_id: str | None = None
    intent: InstallIntent = "required"


@dataclass(slots=True)
class AppSpec:
    """An Intune app (deviceAppManagement/mobileApps) a policy can select."""

    id: str
    display_name: str
    odata_type: str = "#microsoft.graph.win32LobApp"
    assignments: list[PayloadAssignment] = field(default_factory=list)


@dataclass(slots=True)
class ScriptSpec:
    """A platform script (beta deviceManagement/deviceManagementScripts)."""

    id: str
    display_name: str
    run_as_account: RunAsAccount = "system"
    assignments: list[PayloadAssignment] = field(default_factory=list)


@dataclass(slots=True)
class DeviceSpec:
    """A device enrolled through a device preparation policy (one report row)."""

    managed_device_id: str
    entra_device_id: str
    object_id: str
    device_name: str
    serial_number: str
    user_principal_name: str
    enrolled_at: datetime
    policy_id: str | None = None
    profile_name_stamped: bool = True
    deployment: Deployment = field(default_factory=Deployment)
    membership: list[MembershipEvent] = field(default_factory=list)
    apps: list[InstallItem] = field(default_factory=list)
    scripts: list[InstallItem] = field(default_factory=list)
    note: str = ""
    # How long the report export lags this deployment: its row appears this long after
    # enrollment and each later state (completion, duration) this long after it happened.
    # memdocs autopilot/device-preparation/reporting-monitoring.md promises "near real-time"
    # status and gives no figure, so any value here is UNVERIFIED; 0 keeps the report exact.
    report_delay_s: float = 0.0


@dataclass(slots=True)
class DirectoryDevice:
    """An Entra device with no device preparation deployment (an older device)."""

    object_id: str
    device_id: str
    display_name: str
    registered_at: datetime


@dataclass(slots=True)
class DirectoryMembershipEvent:
    """A membership change unrelated to a deployment (users, older devices, other groups).

    It changes the group's members and is written to the audit log like any other.
    """

    at: datetime
    op: MembershipOp
    group_id: str
    member_id: str
    actor: Actor = "admin"
    audit_delay_s: float = 60.0
    audit_actor_fields: AuditActorFields = "both"


@dataclass(slots=True)
class Scenario:
    tenant_id: str
    start: datetime
    provisioning_client: ProvisioningClient = field(default_factory=ProvisioningClient)
    users: list[User] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    other_configuration_policies: int = 3
    devices: list[DeviceSpec] = field(default_factory=list)
    directory_devices: list[DirectoryDevice] = field(default_factory=list)
    other_membership_events: list[DirectoryMembershipEvent] = field(default_factory=list)
    audit_retention_days: float = 30.0
    export_polls_before_ready: int = 1
    export_jobs_fail: bool = False
    admin_user_id: str | None = None  # who "admin" audit events name; default: first user
    # False: retrieveJustInTimeConfiguration is not routed for any policy.
    jit_action_routed: bool = True
    # Endpoints whose single-object answers are wrapped in "value".
    wrapped_single_objects: list[WrappedObject] = field(default_factory=list)
    # True: v1.0 group owners omit service principals (beta still lists them).
    v1_owners_omit_service_principals: bool = False
    # Apps and scripts the policies select. One selected but not listed here exists,
    # assigned as required to the ETG of every policy selecting it; ``missing_payload_ids``
    # names selected ones that no longer exist.
    apps: list[AppSpec] = field(default_factory=list)
    scripts: list[ScriptSpec] = field(default_factory=list)
    missing_payload_ids: list[str] = field(default_factory=list)
    # How long a membership change takes to show in groups/delta and to be notified. For
    # groups Graph gives an average under 2 minutes and a maximum of 15 ("Latency" table):
    # microsoft-graph-docs-contrib concepts/includes/change-notifications-delivery-latency.md.
    # 0 makes them show the moment the change takes effect.
    delta_delay_s: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        scenario: Scenario = _from_json(cls, data, "scenario")
        scenario.validate()
        return scenario

    def to_dict(self) -> dict[str, Any]:
        result = _to_json(self)
        assert isinstance(result, dict)
        return result

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def validate(self) -> None:
        """Raise ``ScenarioError`` listing every inconsistency found."""
        problems = _validate(self)
        if problems:
            shown = problems[:25]
            more = (
                f"\n  ... and {len(problems) - len(shown)} more"
                if len(problems) > len(shown)
                else ""
            )
            raise ScenarioError("invalid scenario:\n  " + "\n  ".join(shown) + more)

    def policy(self, policy_id: str) -> Policy:
        for policy in self.policies:
            if policy.id == policy_id:
                return policy
        raise KeyError(policy_id)

    def group(self, group_id: str) -> Group:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise KeyError(group_id)

    def admin_user(self) -> User | None:
        if self.admin_user_id is not None:
            return next((u for u in self.users if u.id == self.admin_user_id), None)
        return self.users[0] if self.users else None


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario JSON file; errors name the file and the offending path."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the top level must be a JSON object")
    try:
        return Scenario.from_dict(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from exc


def demo_scenario_path() -> Path:
    return Path(str(resources.files("devtools.simtenant").joinpath("scenarios", "demo.json")))


def demo_scenario() -> Scenario:
    """The bundled demo tenant (a handful of policies, ~36 devices, every failure mode)."""
    return load_scenario(demo_scenario_path())


# ---------------------------------------------------------------------------
# JSON conversion, driven by the dataclass annotations so the model stays the
# single source of truth for field names and types.


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ScenarioError(f"{path}: must not be null")
        inner = [o for o in options if o is not type(None)]
        return _from_json(inner[0], value, path)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ScenarioError(f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ScenarioError(f"{path}: expected a list, got {type(value).__name__}")
        (item_type,) = get_args(tp)
        return [_from_json(item_type, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass_from_json(tp, value, path)
    if tp is datetime:
        if not isinstance(value, str):
            raise ScenarioError(f"{path}: expected an ISO-8601 string")
        try:
            return parse_time(value)
        except ValueError as exc:
            raise ScenarioError(f"{path}: {exc}") from exc
    if tp is bool:
        if not isinstance(value, bool):
            raise ScenarioError(f"{path}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{path}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{path}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ScenarioError(f"{path}: expected a string")
        return value
    raise TypeError(f"unsupported scenario field type {tp!r} at {path}")


def _dataclass_from_json(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ScenarioError(f"{path}: expected an object")
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ScenarioError(f"{path}: unknown field(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in value:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ScenarioError(f"{path}: missing required field '{name}'")
            continue
        kwargs[name] = _from_json(hints[name], value[name], f"{path}.{name}")
    return cls(**kwargs)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    if isinstance(value, datetime):
        return format_time(value)
    return value


# ---------------------------------------------------------------------------
# Cross-reference validation.


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    dupes: list[str] = []
    for value in values:
        if value in seen:
            dupes.append(value)
        seen.add(value)
    return dupes


def _validate(s: Scenario) -> list[str]:
    problems: list[str] = []
    user_ids = {u.id for u in s.users}
    group_ids = {g.id for g in s.groups}
    policies = {p.id: p for p in s.policies}
    device_object_ids = {d.object_id for d in s.devices} | {
        d.object_id for d in s.directory_devices
    }
    directory_objects = (
        [u.id for u in s.users]
        + [g.id for g in s.groups]
        + [d.object_id for d in s.devices]
        + [d.object_id for d in s.directory_devices]
        + [s.provisioning_client.object_id]
    )
    for kind, ids in (
        ("user id", [u.id for u in s.users]),
        ("group id", [g.id for g in s.groups]),
        ("policy id", [p.id for p in s.policies]),
        ("managed_device_id", [d.managed_device_id for d in s.devices]),
        (
            "entra device id",
            [d.entra_device_id for d in s.devices] + [d.device_id for d in s.directory_devices],
        ),
        ("directory object id", directory_objects),
    ):
        for dupe in sorted(set(_duplicates(ids))):
            problems.append(f"duplicate {kind} {dupe!r}")

    # Graph writes GUIDs in lower case and the tenant compares ids as written.
    for value in directory_objects + [p.id for p in s.policies]:
        if value != value.lower():
            problems.append(f"id {value!r} must be lower case, as Graph writes GUIDs")
    if s.audit_retention_days <= 0:
        problems.append("audit_retention_days must be positive")
    if s.delta_delay_s < 0:
        problems.append("delta_delay_s must be >= 0")
    if s.export_polls_before_ready < 0:
        problems.append("export_polls_before_ready must be >= 0")
    if s.other_configuration_policies < 0:
        problems.append("other_configuration_policies must be >= 0")
    for dupe in sorted(set(_duplicates(list(s.wrapped_single_objects)))):
        problems.append(f"wrapped_single_objects: {dupe!r} listed twice")
    if s.admin_user_id is not None and s.admin_user_id not in user_ids:
        problems.append(f"admin_user_id {s.admin_user_id!r} is not a user")

    owner_ids = user_ids | {s.provisioning_client.object_id}
    member_ids = device_object_ids | user_ids
    for gi, g in enumerate(s.groups):
        for owner in g.owners:
            if owner not in owner_ids:
                problems.append(
                    f"groups[{gi}] ({g.display_name}): owner {owner!r} is neither a user "
                    "nor the provisioning client"
                )
        for member in g.initial_members:
            if member not in member_ids:
                problems.append(
                    f"groups[{gi}] ({g.display_name}): initial member {member!r} "
                    "is not a known device or user"
                )

    upns: dict[str, str] = {}
    for u in s.users:
        key = u.user_principal_name.lower()
        if key in upns:
            problems.append(f"users: duplicate userPrincipalName {u.user_principal_name!r}")
        upns[key] = u.id

    priorities: dict[int, str] = {}
    for pi, p in enumerate(s.policies):
        if p.etg_group_id is not None and p.etg_group_id not in group_ids:
            problems.append(
                f"policies[{pi}] ({p.name}): unknown group id {p.etg_group_id!r} in etg_group_id"
            )
        for group_id in p.assigned_group_ids:
            if group_id not in group_ids:
                problems.append(
                    f"policies[{pi}] ({p.name}): unknown group id {group_id!r} "
                    "in assigned_group_ids"
                )
        for dupe in sorted(set(_duplicates(p.assigned_group_ids))):
            problems.append(f"policies[{pi}] ({p.name}): group {dupe!r} assigned twice")
        if p.priority is not None:
            if p.priority < 1:
                problems.append(f"policies[{pi}] ({p.name}): priority must be >= 1")
            elif p.priority in priorities:
                problems.append(
                    f"policies[{pi}] ({p.name}): priority {p.priority} is also "
                    f"{priorities[p.priority]}'s"
                )
            else:
                priorities[p.priority] = p.name
        if p.timeout_minutes <= 0:
            problems.append(f"policies[{pi}] ({p.name}): timeout_minutes must be positive")

    has_admin = s.admin_user() is not None
    for di, d in enumerate(s.devices):
        where = f"devices[{di}] ({d.device_name})"
        policy = policies.get(d.policy_id) if d.policy_id is not None else None
        if d.policy_id is not None and policy is None:
            problems.append(f"{where}: unknown policy id {d.policy_id!r}")
        if d.deployment.duration_s < 0:
            problems.append(f"{where}: deployment.duration_s must be >= 0")
        if d.report_delay_s < 0:
            problems.append(f"{where}: report_delay_s must be >= 0")
        for mi, m in enumerate(d.membership):
            if m.group_id is not None:
                if m.group_id not in group_ids:
                    problems.append(f"{where}.membership[{mi}]: unknown group id {m.group_id!r}")
            elif policy is None or policy.etg_group_id is None:
                problems.append(
                    f"{where}.membership[{mi}]: no group_id and the device's policy has no ETG"
                )
            if m.actor == "admin" and not has_admin:
                problems.append(
                    f"{where}.membership[{mi}]: actor 'admin' needs at least one user "
                    "in the scenario"
                )
            if m.audit_delay_s < 0:
                problems.append(f"{where}.membership[{mi}]: audit_delay_s must be >= 0")

    problems.extend(_payload_problems(s, group_ids))

    for ei, e in enumerate(s.other_membership_events):
        if e.group_id not in group_ids:
            problems.append(f"other_membership_events[{ei}]: unknown group id {e.group_id!r}")
        if e.member_id not in member_ids:
            problems.append(
                f"other_membership_events[{ei}]: member {e.member_id!r} "
                "is not a known device or user"
            )
        if e.actor == "admin" and not has_admin:
            problems.append(
                f"other_membership_events[{ei}]: actor 'admin' needs at least one user "
                "in the scenario"
            )
    return problems


def _payload_problems(s: Scenario, group_ids: set[str]) -> list[str]:
    problems: list[str] = []
    items: list[AppSpec | ScriptSpec] = [*s.apps, *s.scripts]
    for dupe in sorted(set(_duplicates([i.id for i in items]))):
        problems.append(f"duplicate app or script id {dupe!r}")
    for item in items:
        if item.id != item.id.lower():
            problems.append(f"id {item.id!r} must be lower case, as Graph writes GUIDs")
        for ai, a in enumerate(item.assignments):
            grouped = a.target in ("group", "exclusionGroup")
            if grouped and a.group_id not in group_ids:
                problems.append(
                    f"{item.display_name}.assignments[{ai}]: unknown group id {a.group_id!r}"
                )
            if not grouped and a.group_id is not None:
                problems.append(f"{item.display_name}.assignments[{ai}]: {a.target} has no group")
    listed = {i.id for i in items}
    for missing in s.missing_payload_ids:
        if missing in listed:
            problems.append(f"missing_payload_ids: {missing!r} is also listed as existing")
    return problems
