"""`etg-monitor tenants test`: can the monitor work in this tenant, and if not, what is missing?

Three questions, in order, each answered only when the one before allowed it:

1. Do the tenant's secret references resolve (its alert channels)?
2. Has the tenant's administrator consented to the app? Without consent the token request
   itself fails, with one of the AADSTS codes below.
3. Is every Graph permission the monitor needs granted? Two sources: the ``roles`` claim of
   the app-only token (access-token-claims-reference.md: the application permissions granted
   to the app in that tenant), and one read-only call per permission, whose 403 shows a
   permission missing exactly as the jobs would see it (a granted role can still be refused,
   e.g. by a tenant without an Intune licence). A simulated tenant has no token: its calls
   alone decide.

Unknown is not missing: a call that is throttled or fails otherwise leaves its permission
"unverified", reported and never counted as granted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from monitors.failures import SettingsError
from monitors.graph import permissions
from monitors.logs import scrub
from monitors.tenants.registry import Tenant
from monitors.tenants.scope import tenant_settings
from monitors.tenants.secrets import resolve_available

if TYPE_CHECKING:
    from monitors.graph.client import GraphClient
    from monitors.settings import Settings

State = Literal["granted", "missing", "unverified"]
ConsentState = Literal["granted", "missing", "unverified", "not_needed"]

# Token errors that mean the app is not (or no longer) consented to in the tenant
# (reference-error-codes.md): 65001 DelegationDoesNotExist, 650056 misconfigured application
# ("or, the admin has not consented in the tenant"), 700011 and 700016: the application was not
# found in the directory, "if the application has not been installed by the administrator of
# the tenant or consented to by any user in the tenant".
CONSENT_CODES = ("AADSTS65001", "AADSTS650056", "AADSTS700011", "AADSTS700016")
# Directory.Read.All is left out: docs/permissions.md grants it beside AuditLog.Read.All only
# because Graph's documentation once listed it there; no call needs it.
NIL_ID = "00000000-0000-0000-0000-000000000000"
PROVISIONING_CLIENT_APP_ID = "f1346770-5b25-470b-88bd-d5744ab7952c"


def consent_url(tenant_id: str, app_client_id: str) -> str:
    """Tenant-wide admin consent for the app (grant-admin-consent.md, "Construct the URL for
    granting tenant-wide admin consent")."""
    return f"https://login.microsoftonline.com/{tenant_id}/adminconsent?client_id={app_client_id}"


@dataclass(frozen=True, slots=True)
class Probe:
    """One call that needs ``permission`` (the Graph page named in ``doc`` lists it). Reads of
    the nil id count a 404 as allowed, since a refusal answers 403 Authorization_RequestDenied;
    where a token exists its roles decide as well, so a 404 alone never hides a missing role."""

    permission: str
    method: str
    version: Literal["v1.0", "beta"]
    path: str
    doc: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.method} /{self.version}/{self.path.replace(NIL_ID, '{nil id}')}"


_ONE = {"$top": "1", "$select": "id"}
PROBES: tuple[Probe, ...] = (
    Probe(
        permissions.CONFIGURATION_POLICIES,
        "GET",
        "beta",
        "deviceManagement/configurationPolicies",
        "intune-deviceconfigv2-devicemanagementconfigurationpolicy-list.md",
        _ONE,
    ),
    Probe(
        permissions.MANAGED_DEVICES,
        "GET",
        "v1.0",
        "deviceManagement/managedDevices",
        "intune-devices-manageddevice-list.md",
        _ONE,
    ),
    # The deployment report exists only as an export: creating one is the only way to see
    # this permission, and every scan creates one anyway.
    Probe(
        permissions.REPORT_EXPORT,
        "POST",
        "beta",
        "deviceManagement/reports/exportJobs",
        "intune-reporting-devicemanagementexportjob-create.md",
        body={"reportName": "AutopilotV2DeploymentStatus", "format": "csv", "select": ["DeviceId"]},
    ),
    Probe(
        permissions.APPS,
        "GET",
        "v1.0",
        f"deviceAppManagement/mobileApps/{NIL_ID}",
        "intune-apps-mobileapp-get.md",
    ),
    Probe(permissions.DEVICES, "GET", "v1.0", "devices", "device-list.md", _ONE),
    Probe(permissions.GROUP_READ, "GET", "v1.0", f"groups/{NIL_ID}", "group-get.md"),
    Probe(permissions.USERS, "GET", "v1.0", f"users/{NIL_ID}", "user-get.md"),
    Probe(
        permissions.AUDIT_LOGS,
        "GET",
        "v1.0",
        "auditLogs/directoryAudits",
        "directoryaudit-list.md",
        {"$top": "1"},
    ),
    Probe(
        permissions.SERVICE_PRINCIPALS,
        "GET",
        "v1.0",
        "servicePrincipals",
        "serviceprincipal-list.md",
        {"$filter": f"appId eq '{PROVISIONING_CLIENT_APP_ID}'", "$select": "id"},
    ),
)


# With remediation `auto` a registry tenant's writes go through the same app
# (docs/permissions.md, "Remediation"): group-post-members.md needs both of the first two for
# a device member, group-post-owners.md the third for an owner.
WRITE_PERMISSIONS = ("GroupMember.ReadWrite.All", "Device.ReadWrite.All", "Group.ReadWrite.All")


def required_permissions(settings: Settings) -> tuple[str, ...]:
    """What the monitor needs in this tenant (docs/permissions.md). Group.Read.All only with
    change notifications, the write permissions only with remediation `auto`: no read-only
    call shows them, so only the token's roles can."""
    needed = tuple(p.permission for p in PROBES)
    if settings.notification_url:
        needed += (permissions.GROUP_SUBSCRIPTIONS,)
    if settings.remediation == "auto":
        needed += WRITE_PERMISSIONS
    return needed


@dataclass(frozen=True, slots=True)
class Answer:
    """How Graph answered a probe: its status, or None when no answer came."""

    status: int | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PermissionCheck:
    permission: str
    state: State
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"permission": self.permission, "state": self.state, "detail": self.detail}


def judge_permissions(
    required: Sequence[str],
    roles: frozenset[str] | None,
    answers: Mapping[str, tuple[Probe, Answer]],
) -> tuple[PermissionCheck, ...]:
    """Pure: each permission granted, missing or unverified, from the token's roles (None: no
    token, a simulated tenant) and each probe's answer."""
    out = []
    for permission in required:
        probed = answers.get(permission)
        if roles is not None and permission not in roles:
            out.append(PermissionCheck(permission, "missing", "not granted to the app here"))
        elif probed is None:
            out.append(
                PermissionCheck(permission, "granted", "in the token's roles")
                if roles is not None
                else PermissionCheck(
                    permission, "unverified", "no read-only call shows it without a token"
                )
            )
        else:
            out.append(_judged(permission, *probed))
    return tuple(out)


def _judged(permission: str, probe: Probe, answer: Answer) -> PermissionCheck:
    status = answer.status
    if status in (401, 403):
        return PermissionCheck(
            permission, "missing", f"Graph refused {probe.label} ({status}) {answer.detail}"
        )
    if status is not None and (200 <= status < 300 or status == 404):
        return PermissionCheck(permission, "granted", f"{probe.label} answered {status}")
    what = f"answered {status}" if status is not None else "got no answer"
    return PermissionCheck(
        permission, "unverified", f"could not check: {probe.label} {what} {answer.detail}"
    )


def consent_refused(message: str) -> bool:
    return any(code in message for code in CONSENT_CODES)


def token_roles(access_token: str) -> frozenset[str] | None:
    """The ``roles`` claim of an app-only access token (access-token-claims-reference.md), read
    only to report; the token is not validated here (Graph does that). None when unreadable."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    roles = claims.get("roles", []) if isinstance(claims, dict) else None
    if not isinstance(roles, list):
        return None
    return frozenset(r for r in roles if isinstance(r, str))


@dataclass(frozen=True)
class TenantTest:
    tenant: Tenant
    simulated: bool
    secrets_resolved: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # references that did not resolve, settings that do not fit
    consent: ConsentState = "unverified"
    consent_detail: str | None = None
    consent_url: str | None = None
    permissions: tuple[PermissionCheck, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and self.consent in ("granted", "not_needed")
            and bool(self.permissions)
            and all(p.state == "granted" for p in self.permissions)
        )

    @property
    def missing(self) -> list[str]:
        return [p.permission for p in self.permissions if p.state == "missing"]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant.tenant_id,
            "display_name": self.tenant.display_name,
            "simulated": self.simulated,
            "ok": self.ok,
            "secrets_resolved": list(self.secrets_resolved),
            "problems": list(self.problems),
            "consent": {
                "state": self.consent,
                "detail": self.consent_detail,
                "consent_url": self.consent_url,
            },
            "permissions": [p.to_json() for p in self.permissions],
            "missing_permissions": self.missing,
        }


async def check_tenant(
    base: Settings,
    tenant: Tenant,
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
) -> TenantTest:
    """Check one registry tenant end to end. ``credential`` replaces the federated one
    (tests); the secrets' Key Vault is read with the deployment's own identity."""
    resolved, problems = await resolve_available(base, tenant, env=env)
    usable = dataclasses.replace(
        tenant, secrets={k: v for k, v in tenant.secrets.items() if k in resolved}
    )
    result = TenantTest(
        tenant, tenant.graph_endpoint is not None, tuple(sorted(resolved)), tuple(problems)
    )
    try:
        settings = tenant_settings(base, usable, resolved)
    except SettingsError as exc:
        return dataclasses.replace(result, problems=result.problems + tuple(exc.problems))
    if result.simulated:
        checks = await _probe(settings, None, None)
        return dataclasses.replace(result, consent="not_needed", permissions=checks)
    return await _test_signed_in(settings, result, credential)


async def _test_signed_in(settings: Settings, result: TenantTest, credential: Any) -> TenantTest:
    from azure.core.exceptions import ClientAuthenticationError

    from monitors.tenants.credential import federated_credential

    url = consent_url(result.tenant.tenant_id, str(settings.msp_app_client_id))
    owned = None
    try:
        if credential is None:
            credential = owned = federated_credential(settings)
        try:
            token = await credential.get_token(settings.graph_scope)
        except ClientAuthenticationError as exc:
            # Judged on Entra's own words; only what is shown is scrubbed, since redaction
            # can reach into an error code.
            message = scrub(str(exc))
            if consent_refused(str(exc)):
                return dataclasses.replace(
                    result, consent="missing", consent_detail=message[:300], consent_url=url
                )
            return dataclasses.replace(
                result, consent="unverified", consent_detail=f"could not sign in: {message[:300]}"
            )
        checks = await _probe(settings, credential, token_roles(token.token))
        return dataclasses.replace(result, consent="granted", permissions=checks)
    except SettingsError as exc:
        return dataclasses.replace(result, problems=result.problems + tuple(exc.problems))
    finally:
        if owned is not None:
            await owned.close()


async def _probe(
    settings: Settings, credential: Any, roles: frozenset[str] | None
) -> tuple[PermissionCheck, ...]:
    from monitors.graph.client import GraphClient

    # A short retry budget: this is a question for an operator at a terminal, and a throttled
    # answer is reported as unverified rather than waited out.
    async with GraphClient(settings, credential=credential, retry_budget_seconds=10) as graph:
        answers = await asyncio.gather(*(_ask(graph, probe) for probe in PROBES))
    by_permission = {probe.permission: (probe, a) for probe, a in zip(PROBES, answers, strict=True)}
    return judge_permissions(required_permissions(settings), roles, by_permission)


async def _ask(graph: GraphClient, probe: Probe) -> Answer:
    from monitors.graph.errors import GRAPH_ERRORS, error_code, status_of

    url = (graph.v1 if probe.version == "v1.0" else graph.beta)(probe.path, **probe.params)
    try:
        await graph.request(probe.method, url, dict(probe.body) if probe.body else None)
    except GRAPH_ERRORS as exc:
        code = error_code(exc)
        return Answer(status_of(exc), f"({code})" if code else "")
    return Answer(200)
