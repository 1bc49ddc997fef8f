"""Configuration rules: is each device preparation policy's ETG usable by Intune?

Each rule is a small function registered under the anomaly kind it decides. A rule returns a
Finding when the condition holds, Clear when it checked and all is well, and NotEvaluated when
a fact it needs could not be read: an unknown never opens or resolves an anomaly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from monitors.models import (
    JSON,
    PROVISIONING_CLIENT_APP_ID,
    Clear,
    EtgFacts,
    EtgLookup,
    Finding,
    Group,
    GroupNotFound,
    NotEvaluated,
    Owner,
    PolicyConfigFacts,
    ProvisioningClient,
    Scope,
    Subject,
    TenantConfigFacts,
    Unverified,
    Verdict,
)
from monitors.rules.kinds import (
    CONFIG_KINDS,
    ETG_INVALID_GROUP,
    ETG_NOT_CONFIGURED,
    ETG_OWNER_MISSING,
    KINDS,
    PROVISIONING_CLIENT_MISSING,
)

# Intune's own validation codes that already prove the group is unusable or unowned.
_INVALID_GROUP_CODES = {"securityGroupNotFound", "notSecurityGroup", "notStaticSecurityGroup"}
_NOT_OWNER_CODE = "firstPartyAppNotAnOwner"

PolicyRule = Callable[[PolicyConfigFacts, ProvisioningClient | Unverified], Verdict]
POLICY_RULES: dict[str, PolicyRule] = {}


def policy_rule(kind: str) -> Callable[[PolicyRule], PolicyRule]:
    def register(fn: PolicyRule) -> PolicyRule:
        POLICY_RULES[kind] = fn
        return fn

    return register


@dataclass(frozen=True, slots=True)
class ConfigEvaluation:
    verdicts: tuple[Verdict, ...]
    unverified: tuple[Unverified, ...]
    healthy_policies: tuple[str, ...]


def policy_subject(facts: PolicyConfigFacts) -> Subject:
    group_id = None
    if isinstance(facts.etg, EtgLookup) and facts.etg.group_ids:
        group_id = facts.etg.group_ids[0]
    return Subject(
        Scope.POLICY, policy_id=facts.policy.id, policy_name=facts.policy.name, group_id=group_id
    )


def _finding(kind: str, subject: Subject, explanation: str, evidence: dict[str, JSON]) -> Finding:
    return Finding(kind, subject, explanation, KINDS[kind].fix, evidence)


def _group_label(etg: EtgFacts) -> str:
    return f"'{etg.group.display_name}'" if isinstance(etg.group, Group) else etg.group_id


def _lookup_evidence(lookup: EtgLookup) -> dict[str, JSON]:
    return {
        "etg_group_ids": list(lookup.group_ids),
        "etg_source": lookup.source,
        "intune_validation_errors": dict(lookup.validation_errors),
    }


def evaluate_provisioning_client(
    pc: ProvisioningClient | Unverified, policies: Iterable[PolicyConfigFacts] = ()
) -> Verdict:
    subject = Subject(Scope.TENANT)
    kind = PROVISIONING_CLIENT_MISSING.name
    if isinstance(pc, Unverified):
        return NotEvaluated(kind, subject, (pc,))
    if pc.present:
        return Clear(kind, subject, "the service principal exists")
    names = sorted(p.policy.name for p in policies)
    return _finding(
        kind,
        subject,
        "No service principal with appId f1346770-5b25-470b-88bd-d5744ab7952c exists in the "
        f"tenant, so Intune cannot add devices to the ETG of any of {len(names)} device "
        "preparation policies.",
        {
            "service_principal_query": f"servicePrincipals?$filter=appId eq '{pc.app_id}'",
            "result": "no match",
            "affected_policies": names,
        },
    )


@policy_rule(ETG_NOT_CONFIGURED.name)
def etg_not_configured(facts: PolicyConfigFacts, _pc: ProvisioningClient | Unverified) -> Verdict:
    subject = policy_subject(facts)
    if isinstance(facts.etg, Unverified):
        return NotEvaluated(ETG_NOT_CONFIGURED.name, subject, (facts.etg,))
    if facts.etg.group_ids:
        return Clear(ETG_NOT_CONFIGURED.name, subject, "the policy names a device group")
    return _finding(
        ETG_NOT_CONFIGURED.name,
        subject,
        f"Device preparation policy '{facts.policy.name}' has no Enrollment Time Group, so its "
        "enrollments get no apps or scripts during provisioning.",
        _lookup_evidence(facts.etg),
    )


def _group_problems(etg: EtgFacts, lookup: EtgLookup) -> list[str] | Unverified:
    group = etg.group
    if isinstance(group, GroupNotFound):
        return ["it does not exist (deleted, or never created)"]
    if isinstance(group, Group):
        problems = []
        if not group.security_enabled:
            problems.append("it is not a security group")
        if group.is_dynamic:
            problems.append("its membership is dynamic, not assigned")
        if group.is_assignable_to_role:
            problems.append("it is role-assignable")
        return problems
    code = lookup.validation_error(etg.group_id)
    if code in _INVALID_GROUP_CODES:
        return [f"Intune reports {code}"]
    return group


@policy_rule(ETG_INVALID_GROUP.name)
def etg_invalid_group(facts: PolicyConfigFacts, _pc: ProvisioningClient | Unverified) -> Verdict:
    subject = policy_subject(facts)
    kind = ETG_INVALID_GROUP.name
    if isinstance(facts.etg, Unverified):
        return NotEvaluated(kind, subject, (facts.etg,))
    broken: dict[str, list[str]] = {}
    unknown: list[Unverified] = []
    for etg in facts.groups:
        problems = _group_problems(etg, facts.etg)
        if isinstance(problems, Unverified):
            unknown.append(problems)
        elif problems:
            broken[etg.group_id] = problems
    if broken:
        evidence = _lookup_evidence(facts.etg)
        evidence["groups"] = [_group_evidence(e) for e in facts.groups]
        gid, problems = next(iter(broken.items()))
        label = next(_group_label(e) for e in facts.groups if e.group_id == gid)
        return _finding(
            kind,
            subject,
            f"The ETG {label} of policy '{facts.policy.name}' is unusable: "
            + "; ".join(problems)
            + ".",
            evidence,
        )
    if unknown:
        return NotEvaluated(kind, subject, tuple(unknown))
    return Clear(kind, subject, "the ETG is an assigned security group")


def _owns(owners: tuple[Owner, ...], pc: ProvisioningClient | Unverified) -> bool:
    for owner in owners:
        if owner.app_id and owner.app_id.lower() == PROVISIONING_CLIENT_APP_ID:
            return True
        if isinstance(pc, ProvisioningClient) and pc.object_id and owner.id == pc.object_id:
            return True
    return False


@policy_rule(ETG_OWNER_MISSING.name)
def etg_owner_missing(facts: PolicyConfigFacts, pc: ProvisioningClient | Unverified) -> Verdict:
    subject = policy_subject(facts)
    kind = ETG_OWNER_MISSING.name
    if isinstance(facts.etg, Unverified):
        return NotEvaluated(kind, subject, (facts.etg,))
    if isinstance(pc, ProvisioningClient) and not pc.present:
        return NotEvaluated(kind, subject, reason="the provisioning client itself is missing")
    unowned: list[EtgFacts] = []
    unknown: list[Unverified] = []
    for etg in facts.groups:
        if isinstance(etg.group, GroupNotFound):
            # Ownership of a group that does not exist is moot; etg_invalid_group covers it.
            return NotEvaluated(kind, subject, reason="the ETG does not exist")
        if isinstance(etg.group, Unverified):
            unknown.append(etg.group)
            continue
        if isinstance(etg.owners, Unverified):
            if facts.etg.validation_error(etg.group_id) == _NOT_OWNER_CODE:
                unowned.append(etg)
            else:
                unknown.append(etg.owners)
        elif etg.owners is not None and not _owns(etg.owners, pc):
            if isinstance(pc, Unverified):
                # Without the service principal's object id, an owner lacking an appId is ambiguous.
                unknown.append(pc)
            else:
                unowned.append(etg)
    if unowned:
        evidence = _lookup_evidence(facts.etg)
        evidence["groups"] = [_group_evidence(e) for e in facts.groups]
        if isinstance(pc, ProvisioningClient):
            evidence["provisioning_client_object_id"] = pc.object_id
        return _finding(
            kind,
            subject,
            f"The Intune Provisioning Client is not an owner of ETG {_group_label(unowned[0])} "
            f"of policy '{facts.policy.name}', so Intune cannot add enrolling devices to it.",
            evidence,
        )
    if unknown:
        return NotEvaluated(kind, subject, tuple(unknown))
    return Clear(kind, subject, "the provisioning client owns the ETG")


def _group_evidence(etg: EtgFacts) -> dict[str, JSON]:
    out: dict[str, JSON] = {"group_id": etg.group_id}
    group = etg.group
    if isinstance(group, Group):
        out.update(
            display_name=group.display_name,
            security_enabled=group.security_enabled,
            group_types=list(group.group_types),
            is_assignable_to_role=group.is_assignable_to_role,
        )
    elif isinstance(group, GroupNotFound):
        out["found"] = False
        out["source"] = group.source
    else:
        out["unverified"] = group.to_json()
    if isinstance(etg.owners, tuple):
        out["owners"] = [
            {"id": o.id, "type": o.odata_type, "display_name": o.display_name, "app_id": o.app_id}
            for o in etg.owners
        ]
    elif isinstance(etg.owners, Unverified):
        out["owners_unverified"] = etg.owners.to_json()
    return out


def evaluate_config(
    facts: TenantConfigFacts, open_policy_subjects: Iterable[Subject] = ()
) -> ConfigEvaluation:
    """Judge the whole tenant. Open anomalies of policies that no longer exist are cleared."""
    verdicts: list[Verdict] = []
    unverified: list[Unverified] = []
    policies = facts.policies
    if isinstance(facts.provisioning_client, Unverified):
        unverified.append(facts.provisioning_client)
    if isinstance(policies, Unverified):
        unverified.append(policies)
        verdicts.append(evaluate_provisioning_client(facts.provisioning_client))
        return ConfigEvaluation(tuple(verdicts), tuple(unverified), ())

    verdicts.append(evaluate_provisioning_client(facts.provisioning_client, policies))
    healthy: list[str] = []
    for policy_facts in policies:
        results = [rule(policy_facts, facts.provisioning_client) for rule in POLICY_RULES.values()]
        verdicts.extend(results)
        for verdict in results:
            if isinstance(verdict, NotEvaluated):
                unverified.extend(verdict.unverified)
        if (
            all(isinstance(v, Clear) for v in results)
            and not isinstance(facts.provisioning_client, Unverified)
            and facts.provisioning_client.present
        ):
            healthy.append(policy_facts.policy.id)

    present = {p.policy.id for p in policies}
    for subject in open_policy_subjects:
        if subject.policy_id not in present:
            verdicts.extend(
                Clear(kind, subject, "the policy no longer exists")
                for kind in CONFIG_KINDS
                if KINDS[kind].scope is Scope.POLICY
            )
    return ConfigEvaluation(tuple(verdicts), tuple(_dedupe(unverified)), tuple(healthy))


def _dedupe(items: Iterable[Unverified]) -> list[Unverified]:
    seen: dict[tuple[str, str, str], Unverified] = {}
    for item in items:
        seen.setdefault((item.source, item.reason.value, item.detail), item)
    return list(seen.values())
