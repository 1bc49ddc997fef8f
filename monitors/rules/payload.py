"""Payload readiness: will the apps and scripts a policy selects install during provisioning?

memdocs autopilot/device-preparation/tutorial/user-driven/entra-join-autopilot-policy.md: the
selected apps (up to 25) and scripts (up to 10) must be assigned to the policy's device group,
scripts must run in the System context, and only LOB, Win32, Microsoft Store (WinGet),
Microsoft 365 and Enterprise App Catalog apps are supported. Anything else is reported
Skipped on every device the policy prepares (payload_incomplete, one device at a time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from monitors.models import (
    JSON,
    Group,
    PayloadAssignment,
    PayloadFacts,
    PayloadKind,
    PayloadObject,
    Unverified,
    UnverifiedReason,
    Verdict,
)
from monitors.rules.config import PolicyCase, policy_rule
from monitors.rules.kinds import PAYLOAD_NOT_READY

# entra-join-autopilot-policy.md, Apps and Scripts sections.
MAX_APPS = 25
MAX_SCRIPTS = 10
# The @odata.type of each supported app type (microsoft-graph-docs-contrib resources
# intune-apps-windowsmobilemsi.md, intune-apps-windowsuniversalappx.md and
# intune-apps-windowsappx.md: LOB; intune-apps-win32lobapp.md: Win32; intune-apps-wingetapp.md:
# Microsoft Store (new, WinGet); intune-apps-officesuiteapp.md: Microsoft 365 Apps; beta
# intune-apps-win32catalogapp.md: Enterprise App Catalog).
SUPPORTED_APP_TYPES = frozenset(
    {
        "windowsMobileMSI",
        "windowsUniversalAppX",
        "windowsAppX",
        "win32LobApp",
        "winGetApp",
        "officeSuiteApp",
        "win32CatalogApp",
    }
)
_ALL_DEVICES = "allDevicesAssignmentTarget"
_GROUP = "groupAssignmentTarget"
_EXCLUDED = "exclusionGroupAssignmentTarget"
_ALL_USERS = "allLicensedUsersAssignmentTarget"
_EXCLUSION_PROBLEM = "the ETG is excluded from its assignments"


@dataclass(frozen=True, slots=True)
class PayloadCheck:
    """One selected app or script and what keeps it from installing during provisioning."""

    facts: PayloadFacts
    problems: tuple[str, ...]
    unverified: tuple[Unverified, ...] = ()

    @property
    def name(self) -> str:
        item = self.facts.item
        return item.display_name if isinstance(item, PayloadObject) else self.facts.id

    def to_json(self) -> dict[str, JSON]:
        item = self.facts.item
        out: dict[str, JSON] = {
            "kind": self.facts.kind.value,
            "id": self.facts.id,
            "display_name": item.display_name if isinstance(item, PayloadObject) else None,
            "type": item.odata_type if isinstance(item, PayloadObject) else None,
            "problems": list(self.problems),
        }
        if isinstance(item, PayloadObject) and self.facts.kind is PayloadKind.SCRIPT:
            out["run_as_account"] = item.run_as_account
        if isinstance(self.facts.assignments, tuple):
            out["assignments"] = [
                {"target": a.target_type, "group_id": a.group_id, "intent": a.intent}
                for a in self.facts.assignments
            ]
        if self.unverified:
            out["unverified"] = [u.to_json() for u in self.unverified]
        return out


def _type_name(odata_type: str | None) -> str:
    return (odata_type or "").lstrip("#").removeprefix("microsoft.graph.")


def _assignment_problems(
    kind: PayloadKind, assignments: tuple[PayloadAssignment, ...], etg: frozenset[str]
) -> list[str]:
    excluded = any(a.target_type == _EXCLUDED and a.group_id in etg for a in assignments)
    reaching = [
        a
        for a in assignments
        if a.target_type == _ALL_DEVICES or (a.target_type == _GROUP and a.group_id in etg)
    ]
    # deviceManagementScriptAssignment has no intent: an assigned script runs.
    required = [a for a in reaching if kind is PayloadKind.SCRIPT or a.intent == "required"]
    problems = []
    if excluded:
        problems.append(_EXCLUSION_PROBLEM)
    if not required:
        if reaching:
            intents = sorted({str(a.intent) for a in reaching})
            problems.append(f"assigned to the ETG with intent {', '.join(intents)}, not required")
        elif any(a.target_type == _ALL_USERS for a in assignments):
            problems.append("assigned to all users, not to the ETG or all devices")
        else:
            problems.append(
                "not assigned to the ETG or all devices"
                + (" with required intent" if kind is PayloadKind.APP else "")
            )
    return problems


def check_item(facts: PayloadFacts, etg: frozenset[str]) -> PayloadCheck:
    item = facts.item
    if isinstance(item, Unverified):
        return PayloadCheck(facts, (), (item,))
    if item is None:
        return PayloadCheck(facts, (f"the {facts.kind.value} no longer exists",))
    problems = []
    if facts.kind is PayloadKind.APP and _type_name(item.odata_type) not in SUPPORTED_APP_TYPES:
        problems.append(
            f"type {_type_name(item.odata_type) or 'unknown'} is not one device preparation "
            "installs"
        )
    if facts.kind is PayloadKind.SCRIPT and (item.run_as_account or "").lower() != "system":
        problems.append(f"runs as {item.run_as_account or 'an unknown account'}, not system")
    if isinstance(facts.assignments, Unverified):
        return PayloadCheck(facts, tuple(problems), (facts.assignments,))
    problems += _assignment_problems(facts.kind, facts.assignments, etg)
    return PayloadCheck(facts, tuple(problems))


def limit_problems(app_count: int, script_count: int) -> list[str]:
    problems = []
    if app_count > MAX_APPS:
        problems.append(f"{app_count} apps selected, more than the {MAX_APPS} allowed")
    if script_count > MAX_SCRIPTS:
        problems.append(f"{script_count} scripts selected, more than the {MAX_SCRIPTS} allowed")
    return problems


def _etg_label(case: PolicyCase) -> str:
    names = [
        f"'{g.group.display_name}' ({g.group_id})"
        for g in case.facts.groups
        if isinstance(g.group, Group)
    ]
    return " or ".join(names) if names else " or ".join(case.lookup.group_ids)


def _names(checks: Iterable[PayloadCheck], kind: PayloadKind) -> list[str]:
    return [f"'{c.name}'" for c in checks if c.facts.kind is kind]


def _explain(case: PolicyCase, broken: list[PayloadCheck], limits: list[str]) -> str:
    parts = [
        f"Policy '{case.facts.policy.name}' would not install its whole payload during "
        "provisioning:"
    ]
    for check in broken:
        kind = check.facts.kind.value
        parts.append(f"{kind} '{check.name}' ({check.facts.id}): {'; '.join(check.problems)}.")
    parts.extend(f"{p[0].upper()}{p[1:]}." for p in limits)
    return " ".join(parts)


def _fix(case: PolicyCase, broken: list[PayloadCheck], limits: list[str]) -> str:
    etg = _etg_label(case)
    assignable = [c for c in broken if c.facts.item is not None]
    apps, scripts = _names(assignable, PayloadKind.APP), _names(assignable, PayloadKind.SCRIPT)
    gone = [c for c in broken if c.facts.item is None]
    steps = []
    if apps:
        steps.append(
            f"In Intune > Apps, assign {', '.join(apps)} to the ETG {etg} with Required intent "
            "(or to All devices)."
        )
    if scripts:
        steps.append(
            f"In Intune > Devices > Scripts, assign {', '.join(scripts)} to the ETG {etg} and "
            "set 'Run this script using the logged on credentials' to No (System context)."
        )
    if any(p == _EXCLUSION_PROBLEM for c in broken for p in c.problems):
        steps.append(f"Remove the ETG {etg} from the exclusions of the listed items.")
    if gone:
        steps.append(
            "Edit the policy's Apps and Scripts settings: replace "
            + ", ".join(f"'{c.facts.id}'" for c in gone)
            + ", which no longer exist."
        )
    if limits:
        steps.append(
            f"Select at most {MAX_APPS} apps and {MAX_SCRIPTS} scripts in the policy settings."
        )
    return " ".join(steps) or PAYLOAD_NOT_READY.fix


@policy_rule(PAYLOAD_NOT_READY.name)
def payload_not_ready(case: PolicyCase) -> Verdict:
    facts, policy = case.facts, case.facts.policy
    if not policy.allowed_app_ids and not policy.allowed_script_ids:
        return case.clear("the policy selects no apps or scripts")
    if not case.lookup.group_ids:
        # Nothing can be assigned to a group that is not there: etg_not_configured reports it.
        return case.clear("the policy has no ETG (etg_not_configured reports it)")
    if facts.payload is None:
        return case.unknown(
            (
                Unverified(
                    "policy payload", UnverifiedReason.UNRESOLVED, "apps and scripts not read"
                ),
            )
        )
    etg = frozenset(g.lower() for g in case.lookup.group_ids)
    checks = [check_item(item, etg) for item in facts.payload]
    broken = [c for c in checks if c.problems]
    limits = limit_problems(len(policy.allowed_app_ids), len(policy.allowed_script_ids))
    if broken or limits:
        evidence: dict[str, JSON] = {
            "etg_group_names": [
                g.group.display_name for g in facts.groups if isinstance(g.group, Group)
            ],
            "items": [c.to_json() for c in broken],
            "limits": limits,
            "checked": len(checks),
        }
        found = case.found(_explain(case, broken, limits), evidence)
        return dataclasses.replace(found, fix=_fix(case, broken, limits))
    unknown = tuple(u for c in checks for u in c.unverified)
    if unknown:
        return case.unknown(unknown, reason=f"{len(unknown)} app or script reads failed")
    return case.clear(
        f"{len(checks)} apps and scripts exist, are assigned to the ETG and can install"
    )
