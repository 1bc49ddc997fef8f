"""A tenant that behaves as Graph is documented to, with its ground truth.

It is the scenario on which the monitor must find every anomaly, raise no false alarm, and leave
unverified only what the tenant truly makes unreadable:

- 26 device preparation policies, each with its own ETG and user group, assigned by priority;
- managed-device lists without ``enrollmentProfileName`` (every tenant), and devices whose
  profile name Intune never stamped, so the policy must be picked as Intune picks it: the
  lowest-priority policy assigned to the enrolling user;
- one policy whose two ETG actions are not routed, so its ETG is only in its settings; one
  answered by the older action only; one whose ETG Intune reports out of the caller's scope
  (unreadable), beside healthy ones;
- single objects wrapped in ``value`` and v1.0 owner lists that omit service principals;
- one ETG whose owner really is gone (every source agrees).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from devtools.simtenant.scenario import (
    Deployment,
    DeviceSpec,
    Group,
    InstallItem,
    InstallStatus,
    MembershipEvent,
    Policy,
    ProvisioningClient,
    Scenario,
    User,
)

NAMESPACE = uuid.UUID("5d1b7c2e-8f4a-4e3b-9c6d-2a1f0e9b8c7d")
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
POLICY_COUNT = 26
FAILED_RESULT_CODE = -2147023436

# Policies with a twist, by number (1-based).
UNROUTED = 2  # neither ETG action is routed; the ETG is read from the policy's settings
JIT_ONLY = 3  # only the older retrieveJustInTimeConfiguration answers
OUT_OF_SCOPE = 4  # Intune reports securityGroupNotInCallerScope: its ETG cannot be read
WRAPPED_TARGETS = 5  # the undocumented targets shape, wrapped in value
OWNER_GONE = 18  # the provisioning client no longer owns this ETG (every source agrees)


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, ":".join(str(p) for p in parts)))


@dataclass(frozen=True)
class GroundTruth:
    """What a correct monitor concludes on this scenario."""

    # (kind, device name) for device anomalies, (kind, policy name) for policy anomalies.
    device_anomalies: frozenset[tuple[str, str]]
    policy_anomalies: frozenset[tuple[str, str]]
    # device name -> the reason its verdict must be unverified (UnverifiedReason value).
    unverified: dict[str, str] = field(default_factory=dict)
    pending: frozenset[str] = frozenset()
    out_of_scope_policy: str = ""


def policy_name(n: int) -> str:
    return f"Contoso APv2 {n:02d}"


def _user(n: int, name: str) -> User:
    return User(_id("user", name), name.replace(".", " ").title(), f"{name}@contoso.com")


@dataclass
class _Builder:
    users: dict[str, User] = field(default_factory=dict)
    devices: list[DeviceSpec] = field(default_factory=list)
    memberships: dict[str, list[str]] = field(default_factory=dict)  # user group -> user ids
    device_truth: set[tuple[str, str]] = field(default_factory=set)
    unverified: dict[str, str] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    apps: dict[int, list[str]] = field(default_factory=dict)
    scripts: dict[int, list[str]] = field(default_factory=dict)

    def user_for(self, name: str, *policies: int) -> User:
        user = self.users.setdefault(name, _user(len(self.users), name))
        for n in policies:
            members = self.memberships.setdefault(_id("users-group", n), [])
            if user.id not in members:
                members.append(user.id)
        return user

    def device(
        self,
        name: str,
        policy: int,
        hours_ago: float,
        *,
        user: str | None = None,
        stamped: bool = True,
        outcome: str = "success",
        join_s: float | None = 40.0,
        late_by_s: float | None = None,
        removed_after_s: float | None = None,
        audit_delay_s: float = 300.0,
        app_status: InstallStatus = "Installed",
        script_status: InstallStatus = "Installed",
        truth: tuple[str, ...] = (),
    ) -> None:
        upn_user = self.user_for(user or f"user.{name.lower()}", *(() if user else (policy,)))
        duration = 1500.0
        membership: list[MembershipEvent] = []
        if late_by_s is not None:
            membership.append(
                MembershipEvent("add", duration + late_by_s, None, "admin", audit_delay_s)
            )
        elif join_s is not None:
            membership.append(
                MembershipEvent("add", join_s, None, "provisioning_client", audit_delay_s)
            )
        if removed_after_s is not None:
            membership.append(
                MembershipEvent("remove", duration + removed_after_s, None, "admin", 120.0)
            )
        deployment = {
            "success": Deployment("success", duration, 0, 6, 4),
            "failed": Deployment("failed", 1237.0, FAILED_RESULT_CODE, 1796, 2),
            "in_progress": Deployment("in_progress", duration, 0, 2, 2),
        }[outcome]
        apps = [
            InstallItem(a, f"App {i + 1} of policy {policy}", app_status if i == 0 else "Installed")
            for i, a in enumerate(self.apps.get(policy, []))
        ]
        scripts = [
            InstallItem(s, f"Script{i + 1}-P{policy}.ps1", script_status if i == 0 else "Installed")
            for i, s in enumerate(self.scripts.get(policy, []))
        ]
        self.devices.append(
            DeviceSpec(
                managed_device_id=_id("managed", name),
                entra_device_id=_id("entra", name),
                object_id=_id("object", name),
                device_name=name,
                serial_number="S" + _id("serial", name)[:9].upper().replace("-", ""),
                user_principal_name=upn_user.user_principal_name,
                enrolled_at=START - timedelta(hours=hours_ago),
                policy_id=_id("policy", policy),
                profile_name_stamped=stamped,
                deployment=deployment,
                membership=membership,
                apps=apps,
                scripts=scripts,
            )
        )
        self.device_truth.update((kind, name) for kind in truth)


def strict_scenario() -> tuple[Scenario, GroundTruth]:
    b = _Builder()
    admin = b.user_for("adele.vance")
    pc = ProvisioningClient(object_id=_id("provisioning-client"))
    for n in (15, 16):
        b.apps[n] = [_id("app", n, i) for i in range(2)]
        b.scripts[n] = [_id("script", n, i) for i in range(2)]

    # Healthy deployments on every policy: stamped on even hours, unstamped on odd ones, so
    # half of them are resolved through the user's assignment.
    for n in range(1, POLICY_COUNT + 1):
        for k in range(2):
            b.device(f"OK-{n:02d}-{k}", n, 40 + n + k * 0.5, stamped=k == 0)

    # A user assigned two policies: the lower priority number (6) is the one Intune applied.
    b.user_for("multi.policy", 6, 7)
    b.device("OK-MULTI", 6, 30, user="multi.policy", stamped=False)

    # The anomalies: every kind, on ordinary and twisted policies, stamped or not.
    b.device("MISS-01", 1, 20, join_s=None, truth=("etg_missing",))
    b.device("MISS-02", UNROUTED, 21, stamped=False, join_s=None, truth=("etg_missing",))
    b.device("MISS-03", JIT_ONLY, 22, stamped=False, join_s=None, truth=("etg_missing",))
    b.device("MISS-04", 8, 23, stamped=False, join_s=None, truth=("etg_missing",))
    b.device(
        "MISS-05", 6, 24, user="multi.policy", stamped=False, join_s=None, truth=("etg_missing",)
    )
    b.device("MISS-06", 20, 25, stamped=False, join_s=None, truth=("etg_missing",))
    b.device("MISS-07", WRAPPED_TARGETS, 26, join_s=None, truth=("etg_missing",))
    b.device("MISS-08", OWNER_GONE, 10, stamped=False, join_s=None, truth=("etg_missing",))
    b.device("LATE-01", 9, 27, stamped=False, late_by_s=1500, truth=("etg_late",))
    b.device("LATE-02", 10, 28, late_by_s=900, truth=("etg_late",))
    b.device("LATE-03", UNROUTED, 29, late_by_s=2400, truth=("etg_late",))
    b.device("RM-01", 11, 30, stamped=False, removed_after_s=7200, truth=("etg_removed",))
    b.device("RM-02", 22, 31, removed_after_s=3600, truth=("etg_removed",))
    b.device("FAIL-01", 12, 32, outcome="failed", truth=("deployment_failed",))
    b.device("FAIL-02", 13, 33, stamped=False, outcome="failed", truth=("deployment_failed",))
    b.device("STUCK-01", 14, 5, outcome="in_progress", truth=("deployment_stuck",))
    b.device("PAY-01", 15, 34, app_status="Skipped", truth=("payload_incomplete",))
    b.device("PAY-02", 16, 35, stamped=False, script_status="Failed", truth=("payload_incomplete",))

    # What the scan must leave open, each for a reason the tenant really gives.
    # Every deployment of the out-of-scope policy, and only those, whichever way its policy
    # is found (profile name or the user's assignment).
    b.device("SCOPE-01", OUT_OF_SCOPE, 36)
    b.device("SCOPE-02", OUT_OF_SCOPE, 37, stamped=False, join_s=None)
    for d in b.devices:
        if d.policy_id == _id("policy", OUT_OF_SCOPE):
            b.unverified[d.device_name] = "out_of_scope"
    b.user_for("no.assignment")
    b.device("NOUSER-01", 17, 38, user="no.assignment", stamped=False, join_s=None)
    b.unverified["NOUSER-01"] = "unresolved"
    b.device("SLOW-01", 19, 0.6, audit_delay_s=3000)  # its audit event is not due yet
    b.device("RUNNING-01", 21, 0.3, outcome="in_progress")  # within the policy timeout
    b.pending.update({"SLOW-01", "RUNNING-01"})

    groups: list[Group] = []
    policies: list[Policy] = []
    for n in range(1, POLICY_COUNT + 1):
        etg = _id("etg", n)
        owners = [admin.id] if n == OWNER_GONE else [pc.object_id, admin.id]
        groups.append(
            Group(
                etg,
                f"APv2-ETG-{n:02d}",
                owners=owners,
                caller_in_scope=n != OUT_OF_SCOPE,
                created_at=START - timedelta(days=200),
            )
        )
        users_group = _id("users-group", n)
        groups.append(
            Group(
                users_group,
                f"APv2-Users-{n:02d}",
                owners=[admin.id],
                initial_members=b.memberships.get(users_group, []),
                created_at=START - timedelta(days=200),
            )
        )
        etg_api = {
            UNROUTED: "unrouted",
            JIT_ONLY: "jit_only",
            WRAPPED_TARGETS: "targets_wrapped",
        }.get(n, "documented")
        policies.append(
            Policy(
                _id("policy", n),
                policy_name(n),
                etg_group_id=etg,
                etg_api=etg_api,  # type: ignore[arg-type]
                timeout_minutes=60,
                allowed_app_ids=b.apps.get(n, []),
                allowed_script_ids=b.scripts.get(n, []),
                priority=n,
                assigned_group_ids=[users_group],
                settings_group_ids=[etg] if n == UNROUTED else [],
                created_at=START - timedelta(days=100),
            )
        )
    scenario = Scenario(
        tenant_id=_id("tenant"),
        start=START,
        provisioning_client=pc,
        users=list(b.users.values()),
        groups=groups,
        policies=policies,
        devices=b.devices,
        admin_user_id=admin.id,
        wrapped_single_objects=["exportJob", "managedDevice", "etgAction"],
        v1_owners_omit_service_principals=True,
    )
    scenario.validate()
    truth = GroundTruth(
        device_anomalies=frozenset(b.device_truth),
        policy_anomalies=frozenset({("etg_owner_missing", policy_name(OWNER_GONE))}),
        unverified=dict(b.unverified),
        pending=frozenset(b.pending),
        out_of_scope_policy=policy_name(OUT_OF_SCOPE),
    )
    return scenario, truth
