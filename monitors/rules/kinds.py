"""Every anomaly kind the monitor can raise: one registered rule each, with its severity, what
it means, what to do about it and where the runbook explains it. Nothing else in the code says
what a kind means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from monitors.models import Scope

RUNBOOK = "docs/runbook.md"


class Severity(StrEnum):
    """How much breaks while an anomaly stays open; declared most severe first."""

    CRITICAL = "critical"  # every enrollment through a policy, or the whole tenant, is affected
    HIGH = "high"  # one device is exposed, or the monitor is blind while a job fails

    @property
    def rank(self) -> int:
        """0 for the most severe."""
        return list(Severity).index(self)


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    scope: Scope
    severity: Severity
    title: str  # what on-call reads first, in the notification preview
    meaning: str
    fix: str

    @property
    def runbook(self) -> str:
        """The runbook section for this kind: its headings are the kind names."""
        return f"{RUNBOOK}#{self.name}"


_KINDS: dict[str, Kind] = {}
KINDS: Mapping[str, Kind] = MappingProxyType(_KINDS)


def _register(kind: Kind) -> Kind:
    if kind.name in _KINDS:
        raise ValueError(f"anomaly kind {kind.name} registered twice")
    _KINDS[kind.name] = kind
    return kind


def severity_rank(kind: str) -> int:
    """Sort key for anomaly kinds, most severe first: 0 for critical; unknown kinds last."""
    known = KINDS.get(kind)
    return known.severity.rank if known else len(Severity)


PROVISIONING_CLIENT_MISSING = _register(
    Kind(
        "provisioning_client_missing",
        Scope.TENANT,
        Severity.CRITICAL,
        "Intune Provisioning Client missing",
        "Intune cannot add any device to any Enrollment Time Group: every device preparation "
        "enrollment finishes without its ETG apps and policies.",
        "Create the service principal (Connect-MgGraph -Scopes Application.ReadWrite.All; "
        "New-MgServicePrincipal -AppId f1346770-5b25-470b-88bd-d5744ab7952c), then make it an "
        "owner of every ETG.",
    )
)
ETG_NOT_CONFIGURED = _register(
    Kind(
        "etg_not_configured",
        Scope.POLICY,
        Severity.CRITICAL,
        "Policy has no ETG",
        "The device preparation experience does not run for this policy's users; devices get "
        "no apps or scripts during provisioning.",
        "In Intune > Devices > Enrollment > Device preparation policies, edit the policy and "
        "select a static security group owned by the Intune Provisioning Client.",
    )
)
ETG_INVALID_GROUP = _register(
    Kind(
        "etg_invalid_group",
        Scope.POLICY,
        Severity.CRITICAL,
        "ETG unusable",
        "Intune cannot add devices to this group during enrollment, so the apps and policies "
        "assigned to it never install during provisioning.",
        "Point the policy at an assigned (static) security group that is not role-assignable, "
        "owned by the Intune Provisioning Client; re-create the group if it was deleted.",
    )
)
ETG_OWNER_MISSING = _register(
    Kind(
        "etg_owner_missing",
        Scope.POLICY,
        Severity.CRITICAL,
        "ETG owner missing",
        "Intune cannot add devices to the group, so new enrollments finish without the apps "
        "and policies assigned to it.",
        "In Entra admin center > Groups > (the ETG) > Owners, add the service principal "
        "'Intune Provisioning Client' (appId f1346770-5b25-470b-88bd-d5744ab7952c).",
    )
)
PAYLOAD_NOT_READY = _register(
    Kind(
        "payload_not_ready",
        Scope.POLICY,
        Severity.CRITICAL,
        "Policy apps or scripts not ready",
        "Apps or scripts the policy selects are missing, not assigned to its ETG with required "
        "intent, not in System context, of a type device preparation does not install, or over "
        "its limits: every enrollment through the policy would report them Skipped, one "
        "payload_incomplete per device.",
        "Assign each listed app to the policy's ETG (or All devices) with Required intent, and "
        "each listed script to the ETG with 'Run this script using the logged on credentials' "
        "set to No; remove the ETG from any exclusion; replace deleted or unsupported items in "
        "the policy's Apps and Scripts settings.",
    )
)

CONFIG_KINDS = (
    PROVISIONING_CLIENT_MISSING.name,
    ETG_NOT_CONFIGURED.name,
    ETG_INVALID_GROUP.name,
    ETG_OWNER_MISSING.name,
    PAYLOAD_NOT_READY.name,
)

ETG_MISSING = _register(
    Kind(
        "etg_missing",
        Scope.DEVICE,
        Severity.HIGH,
        "Device not in its ETG",
        "Provisioning completed without the device in its ETG: the user reached the desktop "
        "without the apps and policies assigned to that group.",
        "Add the device to the ETG (Entra admin center > Groups > the ETG > Members) so its apps "
        "and policies arrive, check the policy's ETG health (etg-monitor check-config), and "
        "consider resetting the device so it provisions correctly.",
    )
)
ETG_LATE = _register(
    Kind(
        "etg_late",
        Scope.DEVICE,
        Severity.HIGH,
        "Device joined its ETG late",
        "The user reached the desktop before the ETG's apps and policies could install; they "
        "arrived later, outside the provisioning guarantee.",
        "Confirm the device now has the ETG's required apps and security policies (Intune > "
        "Devices > the device > Managed apps / Device configuration); investigate Intune "
        "service delays if several devices are late.",
    )
)
ETG_REMOVED = _register(
    Kind(
        "etg_removed",
        Scope.DEVICE,
        Severity.HIGH,
        "Device removed from its ETG",
        "Intune re-evaluates the device and pulls the apps and policies assigned to the ETG.",
        "Find who removed it (Entra audit log, 'Remove member from group'); add the device back "
        "to the ETG unless the removal was intended.",
    )
)
DEPLOYMENT_FAILED = _register(
    Kind(
        "deployment_failed",
        Scope.DEVICE,
        Severity.HIGH,
        "Device preparation failed",
        "The device did not finish provisioning; the user may be blocked or on a partially "
        "configured device.",
        "Open Intune > Devices > Monitor > Windows Autopilot device preparation deployments, "
        "read the failed phase and result code, fix the cause, then reset the device.",
    )
)
DEPLOYMENT_STUCK = _register(
    Kind(
        "deployment_stuck",
        Scope.DEVICE,
        Severity.HIGH,
        "Device preparation stuck",
        "Provisioning has run past the policy's timeout: the user is waiting on the setup "
        "screen or gave up.",
        "Contact the user; check the device's progress in the deployment report and the "
        "Intune Management Extension logs; reset the device if it does not recover.",
    )
)
PAYLOAD_INCOMPLETE = _register(
    Kind(
        "payload_incomplete",
        Scope.DEVICE,
        Severity.HIGH,
        "Apps or scripts skipped or failed",
        "Some apps or scripts selected in the policy did not install during provisioning.",
        "Skipped usually means the app or script is not assigned to the ETG or not in System "
        "context: assign it to the ETG; for Failed, check the app's install status and logs.",
    )
)

DEVICE_KINDS = (
    ETG_MISSING.name,
    ETG_LATE.name,
    ETG_REMOVED.name,
    DEPLOYMENT_FAILED.name,
    DEPLOYMENT_STUCK.name,
    PAYLOAD_INCOMPLETE.name,
)

MONITOR_JOB_FAILING = _register(
    Kind(
        "monitor_job_failing",
        Scope.MONITOR,
        Severity.HIGH,
        "etg-monitor job failing",
        "While it fails, enrollments are not checked and ETG problems go unnoticed.",
        "Read the error in `etg-monitor health` or Application Insights (docs/deploy.md has the "
        "queries): usually storage access, a missing Graph permission or consent, or a setting.",
    )
)
