"""Sample anomalies for `etg-monitor alerts preview KIND`: what on-call would see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitors.models import JSON, Anomaly, Scope, Status, Subject
from monitors.rules.kinds import DEPLOYMENT_FAILED, ETG_LATE, KINDS, PAYLOAD_NOT_READY, Kind

_AT = datetime(2026, 11, 20, 7, 42, 10, tzinfo=UTC)
_ENROLLED = _AT - timedelta(minutes=40)
_COMPLETED = _AT - timedelta(minutes=5)

_DEVICE = Subject(
    Scope.DEVICE,
    policy_id="0c1f7a5e-2b7d-4c61-9d1e-5d0f5a9c2e11",
    policy_name="Contoso - Standard Laptops",
    group_id="5b1f0e3c-7a2d-4f0e-8c3b-1e2d3c4b5a69",
    managed_device_id="9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
    device_name="CTSO-J5NB1GX",
    serial_number="5CGJ5NB1GX",
    user_principal_name="megan.bowen@contoso.com",
    deployment_key="9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d_20261120T070210",
)

# What each device rule would say about the sample device.
_DEVICE_EXPLANATIONS = {
    "etg_missing": "Provisioning of CTSO-J5NB1GX completed at "
    f"{_COMPLETED.isoformat()} and the device never joined its ETG: the user has no ETG "
    "apps or policies.",
    "etg_late": "CTSO-J5NB1GX joined its ETG 25 min after provisioning completed: the "
    "user reached the desktop before the ETG's apps and policies installed.",
    "etg_removed": "CTSO-J5NB1GX was removed from its ETG by admin@contoso.com; Intune "
    "will pull the apps and policies assigned to it.",
    "deployment_failed": "Device preparation failed on CTSO-J5NB1GX during App installation: "
    "0x800705B4 (ERROR_TIMEOUT), the operation timed out.",
    "deployment_stuck": "Provisioning of CTSO-J5NB1GX has been in progress for 2.1 h, "
    "past the policy timeout of 60 min.",
    "payload_incomplete": "1 of 5 apps and scripts did not install on CTSO-J5NB1GX: "
    "Contoso VPN Client (Skipped).",
}


def _device_sample(spec: Kind) -> tuple[Subject, dict[str, JSON], str]:
    evidence: dict[str, JSON] = {
        "enrolled_at": {
            "value": _ENROLLED.isoformat(),
            "source": "AutopilotV2DeploymentStatus.EnrollmentTimeInUtc",
        },
        "provisioning_completed_at": _COMPLETED.isoformat(),
        "join": None,
    }
    if spec.name == ETG_LATE.name:
        evidence["late_join"] = {
            "at": (_COMPLETED + timedelta(minutes=25)).isoformat(),
            "source": "audit:3f2c...",
        }
        evidence["gap_seconds"] = 1500
    if spec.name == DEPLOYMENT_FAILED.name:
        evidence.update(result_code="-2147023436", phase="App installation")
    return _DEVICE, evidence, _DEVICE_EXPLANATIONS.get(spec.name, spec.meaning)


def _policy_sample(spec: Kind) -> tuple[Subject, dict[str, JSON], str]:
    tenant = spec.scope is Scope.TENANT
    subject = Subject(
        spec.scope,
        policy_id=None if tenant else "f0510649-2ef1-4a65-85b5-8f3a807d2f89",
        policy_name=None if tenant else "Contoso - Finance",
        group_id=None if tenant else "76886726-9581-4675-9260-8ba953623b53",
    )
    evidence: dict[str, JSON] = {"etg_group_ids": [subject.group_id] if subject.group_id else []}
    if spec.name == PAYLOAD_NOT_READY.name:
        evidence.update(_NOT_READY_EVIDENCE)
        return subject, evidence, _NOT_READY_EXPLANATION
    return subject, evidence, spec.meaning


# What payload_not_ready would say about a policy whose VPN app and one script would not install.
_NOT_READY_EXPLANATION = (
    "Policy 'Contoso - Finance' would not install its whole payload during provisioning: app "
    "'Contoso VPN Client' (f201da49-cac8-48bb-8cca-838c6e2d3c61): assigned to the ETG with "
    "intent available, not required. script 'Set-RegionalSettings.ps1' "
    "(2b1522b8-a15f-49c8-98b8-413f8ef5b163): runs as user, not system."
)
_NOT_READY_EVIDENCE: dict[str, JSON] = {
    "etg_group_names": ["APv2-ETG-Finance"],
    "items": [
        {
            "kind": "app",
            "id": "f201da49-cac8-48bb-8cca-838c6e2d3c61",
            "display_name": "Contoso VPN Client",
            "type": "#microsoft.graph.win32LobApp",
            "problems": ["assigned to the ETG with intent available, not required"],
        },
        {
            "kind": "script",
            "id": "2b1522b8-a15f-49c8-98b8-413f8ef5b163",
            "display_name": "Set-RegionalSettings.ps1",
            "type": "#microsoft.graph.deviceManagementScript",
            "run_as_account": "user",
            "problems": ["runs as user, not system"],
        },
    ],
    "limits": [],
    "checked": 4,
}


def sample_anomaly(kind: str) -> Anomaly:
    spec = KINDS[kind]
    sample = _device_sample if spec.scope is Scope.DEVICE else _policy_sample
    subject, evidence, explanation = sample(spec)
    return Anomaly(
        kind,
        subject,
        Status.OPEN,
        _AT,
        _AT,
        explanation,
        spec.fix,
        evidence,
        history=[{"at": _AT.isoformat(), "status": Status.OPEN.value, "why": "detected"}],
    )
