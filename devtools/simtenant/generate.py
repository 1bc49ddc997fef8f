"""Deterministic large scenarios for benchmarks and incremental-scan tests."""

from __future__ import annotations

import random
import string
import uuid
from datetime import UTC, datetime, timedelta

from devtools.simtenant.scenario import (
    Actor,
    AppSpec,
    Deployment,
    DeviceSpec,
    DirectoryDevice,
    DirectoryMembershipEvent,
    Group,
    InstallItem,
    MembershipEvent,
    PayloadAssignment,
    Policy,
    ProvisioningClient,
    Scenario,
    ScriptSpec,
    User,
)

DEFAULT_START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
FAILED_RESULT_CODE = -2147023436
_SERIAL_CHARS = string.ascii_uppercase + string.digits

# Share of deployments per failure mode; the rest are healthy.
FAILURE_MODES: tuple[tuple[str, float], ...] = (
    ("missing", 0.02),
    ("late", 0.02),
    ("removed", 0.01),
    ("failed", 0.02),
    ("stuck", 0.01),
    ("unstamped", 0.01),
    ("slow_audit", 0.01),
    ("apps_skipped", 0.01),
)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _serial(rng: random.Random) -> str:
    return "".join(rng.choices(_SERIAL_CHARS, k=10))


class _DeviceFactory:
    """Builds deployments; install lists are shared between devices to keep memory flat."""

    def __init__(
        self,
        rng: random.Random,
        policies: list[Policy],
        upn_domain: str,
        users_by_policy: dict[str, list[str]] | None = None,
    ) -> None:
        self.rng = rng
        self.policies = policies
        self.upn_domain = upn_domain
        # UPNs of the users each policy is assigned to (through its user group); a device
        # enrolls as one of them so Intune's choice of policy is the device's policy.
        self.users_by_policy = users_by_policy or {}
        self.counter = 0
        self.installed: dict[str, tuple[list[InstallItem], list[InstallItem]]] = {}
        self.skipped: dict[str, tuple[list[InstallItem], list[InstallItem]]] = {}
        for policy in policies:
            apps = [
                InstallItem(a, f"App {i + 1}", "Installed")
                for i, a in enumerate(policy.allowed_app_ids)
            ]
            scripts = [
                InstallItem(s, f"Script {i + 1}.ps1", "Installed")
                for i, s in enumerate(policy.allowed_script_ids)
            ]
            self.installed[policy.id] = (apps, scripts)
            skipped = [InstallItem(a.id, a.name, "Skipped") for a in apps[:1]] + apps[1:]
            self.skipped[policy.id] = (skipped, scripts)

    def make(self, enrolled_at: datetime, mode: str) -> DeviceSpec:
        rng = self.rng
        self.counter += 1
        policy = self.policies[rng.randrange(len(self.policies))]
        serial = _serial(rng)
        duration = float(rng.randint(600, 2400))
        join = float(rng.randint(20, 90))
        delay = float(rng.randint(30, 600))
        deployment = Deployment("success", duration, 0, 6, 4)
        membership = [MembershipEvent("add", join, None, "provisioning_client", delay, "both")]
        apps, scripts = self.installed[policy.id]
        stamped = True
        if mode == "missing":
            membership = []
        elif mode == "late":
            membership = [
                MembershipEvent(
                    "add",
                    duration + rng.randint(300, 3600),
                    None,
                    "provisioning_client",
                    delay,
                    "both",
                )
            ]
        elif mode == "removed":
            membership.append(
                MembershipEvent(
                    "remove", duration + rng.randint(3600, 86400), None, "admin", delay, "both"
                )
            )
        elif mode == "failed":
            deployment = Deployment(
                "failed", float(rng.randint(900, 1800)), FAILED_RESULT_CODE, 1796, 2
            )
        elif mode == "stuck":
            deployment = Deployment("in_progress", duration, 0, 2, 2)
        elif mode == "unstamped":
            stamped = False
        elif mode == "slow_audit":
            membership = [
                MembershipEvent(
                    "add", join, None, "provisioning_client", float(rng.randint(1800, 3600)), "both"
                )
            ]
        elif mode == "apps_skipped":
            apps, scripts = self.skipped[policy.id]
        return DeviceSpec(
            managed_device_id=_uuid(rng),
            entra_device_id=_uuid(rng),
            object_id=_uuid(rng),
            device_name=f"CTS-{serial[:7]}",
            serial_number=serial,
            user_principal_name=self._upn(policy.id),
            enrolled_at=enrolled_at,
            policy_id=policy.id,
            profile_name_stamped=stamped,
            deployment=deployment,
            membership=membership,
            apps=apps,
            scripts=scripts,
            note=mode,
        )

    def _upn(self, policy_id: str) -> str:
        upns = self.users_by_policy.get(policy_id)
        if upns:
            # Deterministic from the counter: no extra draws, so the rest of the stream stays put.
            return upns[self.counter % len(upns)]
        return f"user{self.counter:06d}@{self.upn_domain}"


def _users_by_policy(scenario: Scenario) -> dict[str, list[str]]:
    """Per policy, the UPNs of users in its assigned groups that no lower priority number claims."""
    users = {u.id: u.user_principal_name for u in scenario.users}
    groups = {g.id: g for g in scenario.groups}
    ranked = sorted(
        enumerate(scenario.policies, start=1),
        key=lambda pair: pair[1].priority if pair[1].priority is not None else pair[0],
    )
    claimed: set[str] = set()
    result: dict[str, list[str]] = {}
    for _, policy in ranked:
        members: list[str] = []
        for group_id in policy.assigned_group_ids:
            group = groups.get(group_id)
            if group is None:
                continue
            members.extend(m for m in group.initial_members if m in users and m not in claimed)
        claimed.update(members)
        result[policy.id] = [users[m] for m in dict.fromkeys(members)]
    return result


def _pick_mode(rng: random.Random) -> str:
    draw = rng.random()
    for mode, share in FAILURE_MODES:
        if draw < share:
            return mode
        draw -= share
    return "healthy"


def generate_scale_scenario(
    deployments: int = 20000,
    etg_members: int = 100000,
    audit_events: int = 200000,
    policies: int = 4,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    *,
    window_days: float = 7.0,
    users: int = 1000,
    other_groups: int = 40,
) -> Scenario:
    """A large tenant: ``deployments`` report rows over ``window_days`` before ``start``.

    ETGs hold ``etg_members`` members in total (older devices fill the gap), and the
    audit log holds about ``audit_events`` events, the surplus being unrelated
    membership changes in other groups so that audit filters matter.
    """
    if policies < 1:
        raise ValueError("policies must be >= 1")
    rng = random.Random(seed)
    domain = "contoso.com"
    pc = ProvisioningClient(present=True, object_id=_uuid(rng))
    user_list = [User(_uuid(rng), "IT Admin", f"it.admin@{domain}")]
    user_list += [
        User(_uuid(rng), f"User {i:05d}", f"user.{i:05d}@{domain}") for i in range(1, users)
    ]
    admin = user_list[0]

    etgs = [
        Group(
            _uuid(rng),
            f"APv2 ETG - Fleet {i + 1}",
            owners=[pc.object_id, admin.id],
            created_at=start - timedelta(days=400),
        )
        for i in range(policies)
    ]
    others = [
        Group(
            _uuid(rng),
            f"Contoso Group {i + 1:03d}",
            group_types=["DynamicMembership"] if i % 10 == 9 else [],
            membership_rule='(user.department -eq "Sales")' if i % 10 == 9 else None,
            owners=[admin.id],
            created_at=start - timedelta(days=500),
        )
        for i in range(other_groups)
    ]
    policy_list = [
        Policy(
            id=_uuid(rng),
            name=f"Contoso - Fleet {i + 1}",
            etg_group_id=etgs[i].id,
            allowed_app_ids=[_uuid(rng) for _ in range(3)],
            allowed_script_ids=[_uuid(rng)],
            created_at=start - timedelta(days=300),
        )
        for i in range(policies)
    ]
    # Every selected app and script exists and is assigned to its policy's ETG (required,
    # System context), as memdocs entra-join-autopilot-policy.md asks; no random draw, so the
    # stream stays as it was.
    apps = [
        AppSpec(a, f"App {i + 1}", assignments=[PayloadAssignment("group", p.etg_group_id)])
        for p in policy_list
        for i, a in enumerate(p.allowed_app_ids)
    ]
    scripts = [
        ScriptSpec(
            s, f"Script {i + 1}.ps1", assignments=[PayloadAssignment("group", p.etg_group_id)]
        )
        for p in policy_list
        for i, s in enumerate(p.allowed_script_ids)
    ]
    # Each policy is assigned to one user group; regular users are dealt round-robin
    # over them, so every user has exactly one policy (priority = list position).
    # The group ids derive from the policy ids so the random stream is unchanged.
    user_groups = [
        Group(
            str(uuid.uuid5(uuid.UUID(policy.id), "users")),
            f"APv2 Users - Fleet {i + 1}",
            owners=[admin.id],
            created_at=start - timedelta(days=400),
        )
        for i, policy in enumerate(policy_list)
    ]
    users_by_policy: dict[str, list[str]] = {p.id: [] for p in policy_list}
    for i, user in enumerate(user_list[1:]):
        index = i % policies
        user_groups[index].initial_members.append(user.id)
        users_by_policy[policy_list[index].id].append(user.user_principal_name)
    for policy, group in zip(policy_list, user_groups, strict=True):
        policy.assigned_group_ids = [group.id]

    factory = _DeviceFactory(rng, policy_list, domain, users_by_policy)
    window_s = window_days * 86400.0
    offsets = sorted(rng.uniform(0, window_s) for _ in range(deployments))
    devices = [
        factory.make(start - timedelta(seconds=window_s - offset), _pick_mode(rng))
        for offset in offsets
    ]
    joined = sum(1 for d in devices if any(m.op == "add" for m in d.membership))
    device_events = sum(len(d.membership) for d in devices)

    older: list[DirectoryDevice] = []
    for i in range(max(0, etg_members - joined)):
        etg = etgs[i % len(etgs)]
        device = DirectoryDevice(
            object_id=_uuid(rng),
            device_id=_uuid(rng),
            display_name=f"CTS-OLD{i:06d}",
            registered_at=start - timedelta(days=30 + rng.uniform(0, 700)),
        )
        older.append(device)
        etg.initial_members.append(device.object_id)

    noise: list[DirectoryMembershipEvent] = []
    horizon_s = 30 * 86400.0
    noise_count = max(0, audit_events - device_events)
    for _ in range(noise_count):
        group = others[rng.randrange(len(others))]
        if older and rng.random() < 0.3:
            member = older[rng.randrange(len(older))].object_id
        else:
            member = (
                user_list[rng.randrange(1, len(user_list))].id if len(user_list) > 1 else admin.id
            )
        actor: Actor = "provisioning_client" if rng.random() < 0.1 else "admin"
        noise.append(
            DirectoryMembershipEvent(
                at=start - timedelta(seconds=rng.uniform(0, horizon_s)),
                op="add" if rng.random() < 0.8 else "remove",
                group_id=group.id,
                member_id=member,
                actor=actor,
                audit_delay_s=float(rng.randint(30, 900)),
            )
        )

    return Scenario(
        tenant_id=_uuid(rng),
        start=start,
        provisioning_client=pc,
        users=user_list,
        groups=etgs + others + user_groups,
        policies=policy_list,
        other_configuration_policies=6,
        devices=devices,
        directory_devices=older,
        other_membership_events=noise,
        admin_user_id=admin.id,
        apps=apps,
        scripts=scripts,
    )


def add_deployments(
    scenario: Scenario,
    n: int,
    at: datetime | None = None,
    *,
    seed: int = 2,
    spread_s: float = 0.0,
) -> list[DeviceSpec]:
    """Append ``n`` new healthy deployments enrolled at ``at`` (default: the scenario start).

    Returns the new devices so a running tenant can take them too:
    ``tenant.state.add_devices(add_deployments(scenario, 500, at=tenant.clock.now()))``.
    """
    if not scenario.policies:
        raise ValueError("the scenario has no policies to enroll through")
    when = at if at is not None else scenario.start
    rng = random.Random(seed + len(scenario.devices))
    factory = _DeviceFactory(
        rng,
        [p for p in scenario.policies if p.etg_group_id] or scenario.policies,
        "contoso.com",
        _users_by_policy(scenario),
    )
    factory.counter = len(scenario.devices)
    new = [
        factory.make(
            when + timedelta(seconds=rng.uniform(0, spread_s) if spread_s else 0.0), "healthy"
        )
        for _ in range(n)
    ]
    scenario.devices.extend(new)
    return new
