"""Configuration rules: is each device preparation policy's ETG usable by Intune?

Each rule is a small function registered under the anomaly kind it decides. A rule returns a
Finding when the condition holds, Clear when it checked and all is well, and NotEvaluated when
a fact it needs could not be read: an unknown never opens or resolves an anomaly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

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
    OwnerAnswer,
    OwnerCheck,
    OwnerEvidence,
    OwnerSource,
    OwnerStatus,
    PolicyConfigFacts,
    ProvisioningClient,
    Scope,
    Subject,
    TenantConfigFacts,
    Unverified,
    UnverifiedReason,
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
# Codes that say validation failed without saying why: Intune checks ownership, and did not
# report it as the problem, so they weigh against "missing".
_INCONCLUSIVE_CODES = {"unknown", "unknownFutureValue"}

PolicyRule = Callable[[PolicyConfigFacts, ProvisioningClient | Unverified], Verdict]
POLICY_RULES: dict[str, PolicyRule] = {}


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One policy whose ETG lookup could be read, as every policy rule sees it."""

    kind: str
    facts: PolicyConfigFacts
    lookup: EtgLookup
    pc: ProvisioningClient | Unverified
    subject: Subject

    def found(self, explanation: str, evidence: dict[str, JSON] | None = None) -> Finding:
        """A finding whose evidence starts with what Intune says the ETG is."""
        everything = {**_lookup_evidence(self.lookup), **(evidence or {})}
        return _finding(self.kind, self.subject, explanation, everything)

    def clear(self, reason: str) -> Clear:
        return Clear(self.kind, self.subject, reason)

    def unknown(self, unverified: tuple[Unverified, ...] = (), reason: str = "") -> NotEvaluated:
        return NotEvaluated(self.kind, self.subject, unverified, reason)


CaseRule = Callable[[PolicyCase], Verdict]


def policy_rule(kind: str) -> Callable[[CaseRule], CaseRule]:
    """Registers the rule deciding ``kind`` for each policy. Every one of them needs the
    policy's ETG lookup, so while that cannot be read none decides."""

    def register(decide: CaseRule) -> CaseRule:
        def rule(facts: PolicyConfigFacts, pc: ProvisioningClient | Unverified) -> Verdict:
            subject = policy_subject(facts)
            if isinstance(facts.etg, Unverified):
                return NotEvaluated(kind, subject, (facts.etg,))
            return decide(PolicyCase(kind, facts, facts.etg, pc, subject))

        POLICY_RULES[kind] = rule
        return decide

    return register


class PolicyHealth(StrEnum):
    """A device preparation policy's configuration, as check-config reports it."""

    HEALTHY = "healthy"  # every rule checked and cleared
    BROKEN = "broken"  # a rule found a problem
    UNVERIFIED = "unverified"  # no problem found, but some rule could not decide


def policy_health(verdicts: Iterable[Verdict]) -> PolicyHealth:
    """One policy's configuration from its verdicts: an unknown is never called healthy."""
    seen = list(verdicts)
    if any(isinstance(v, Finding) for v in seen):
        return PolicyHealth.BROKEN
    if all(isinstance(v, Clear) for v in seen):
        return PolicyHealth.HEALTHY
    return PolicyHealth.UNVERIFIED


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
def etg_not_configured(case: PolicyCase) -> Verdict:
    if case.lookup.group_ids:
        return case.clear("the policy names a device group")
    return case.found(
        f"Device preparation policy '{case.facts.policy.name}' has no Enrollment Time Group, so "
        "its enrollments get no apps or scripts during provisioning."
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
def etg_invalid_group(case: PolicyCase) -> Verdict:
    groups = case.facts.groups
    broken: dict[str, list[str]] = {}
    unknown: list[Unverified] = []
    for etg in groups:
        problems = _group_problems(etg, case.lookup)
        if isinstance(problems, Unverified):
            unknown.append(problems)
        elif problems:
            broken[etg.group_id] = problems
    if broken:
        gid, problems = next(iter(broken.items()))
        label = next(_group_label(e) for e in groups if e.group_id == gid)
        return case.found(
            f"The ETG {label} of policy '{case.facts.policy.name}' is unusable: "
            + "; ".join(problems)
            + ".",
            {"groups": [_group_evidence(e) for e in groups]},
        )
    if unknown:
        return case.unknown(tuple(unknown))
    return case.clear("the ETG is an assigned security group")


def _owns(owners: tuple[Owner, ...], pc: ProvisioningClient | Unverified) -> bool:
    for owner in owners:
        if owner.app_id and owner.app_id.lower() == PROVISIONING_CLIENT_APP_ID:
            return True
        if isinstance(pc, ProvisioningClient) and pc.object_id and owner.id == pc.object_id:
            return True
    return False


def needs_second_owner_source(etg: EtgFacts, pc: ProvisioningClient | Unverified) -> bool:
    """v1.0 owners did not show the provisioning client for an existing group. That list may
    leave service principals out (group-list-owners.md, staged rollout), so its silence alone
    cannot open etg_owner_missing."""
    if not isinstance(etg.group, Group):
        return False
    if isinstance(pc, ProvisioningClient) and not pc.present:
        return False
    return not (isinstance(etg.owners, tuple) and _owns(etg.owners, pc))


def _list_evidence(
    source: OwnerSource,
    owners: tuple[Owner, ...] | Unverified | None,
    pc: ProvisioningClient | Unverified,
) -> OwnerEvidence:
    if owners is None:
        return OwnerEvidence(source, OwnerAnswer.NOT_ASKED)
    if isinstance(owners, Unverified):
        return OwnerEvidence(source, OwnerAnswer.UNREADABLE, owners.reason.value, owners)
    if _owns(owners, pc):
        return OwnerEvidence(source, OwnerAnswer.OWNER, "lists the provisioning client")
    if isinstance(pc, Unverified):
        # An owner without an appId might be the client: only its object id would tell.
        return OwnerEvidence(
            source, OwnerAnswer.UNREADABLE, "the provisioning client's object id is unknown", pc
        )
    return OwnerEvidence(
        source, OwnerAnswer.NOT_OWNER, f"{len(owners)} owner(s), not the provisioning client"
    )


def _owned_objects_evidence(held: bool | Unverified | None) -> OwnerEvidence:
    source = OwnerSource.OWNED_OBJECTS
    if held is None:
        return OwnerEvidence(source, OwnerAnswer.NOT_ASKED)
    if isinstance(held, Unverified):
        return OwnerEvidence(source, OwnerAnswer.UNREADABLE, held.reason.value, held)
    if held:
        return OwnerEvidence(source, OwnerAnswer.OWNER, "the provisioning client owns the group")
    return OwnerEvidence(source, OwnerAnswer.NOT_OWNER, "the group is not among its owned objects")


def _intune_evidence(lookup: EtgLookup, group_id: str) -> OwnerEvidence:
    source = OwnerSource.INTUNE_VALIDATION
    code = lookup.validation_error(group_id)
    if code == _NOT_OWNER_CODE:
        return OwnerEvidence(source, OwnerAnswer.NOT_OWNER, f"Intune reports {code}")
    if group_id in lookup.validated_group_ids:
        return OwnerEvidence(source, OwnerAnswer.OWNER, "Intune validated the group")
    if code in _INCONCLUSIVE_CODES:
        return OwnerEvidence(source, OwnerAnswer.INCONCLUSIVE, f"validation failed with {code}")
    if code:
        return OwnerEvidence(source, OwnerAnswer.SILENT, f"Intune reports {code}")
    return OwnerEvidence(source, OwnerAnswer.SILENT, f"{lookup.source} carries no validation")


def _names(evidence: Iterable[OwnerEvidence]) -> str:
    names = [e.source.value for e in evidence]
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def judge_owner(
    etg: EtgFacts, lookup: EtgLookup, pc: ProvisioningClient | Unverified
) -> OwnerCheck:
    """Decide ownership of one ETG from every source read. A list that shows the client is
    proof (lists omit, they do not invent); absence is only believed when a source beyond
    v1.0 owners confirms it and no source read says otherwise."""
    gid = etg.group_id
    if isinstance(etg.group, GroupNotFound):
        return OwnerCheck(gid, OwnerStatus.NOT_APPLICABLE, (), "the group does not exist")
    if isinstance(pc, ProvisioningClient) and not pc.present:
        return OwnerCheck(gid, OwnerStatus.NOT_APPLICABLE, (), "the provisioning client is missing")
    if isinstance(etg.group, Unverified):
        return OwnerCheck(
            gid, OwnerStatus.UNVERIFIED, (), "the group could not be read", (etg.group,)
        )
    v1 = _list_evidence(OwnerSource.V1_OWNERS, etg.owners, pc)
    intune = _intune_evidence(lookup, gid)
    owned = _owned_objects_evidence(etg.in_owned_objects)
    beta = _list_evidence(OwnerSource.BETA_OWNERS, etg.beta_owners, pc)
    evidence = (v1, intune, owned, beta)

    def check(status: OwnerStatus, detail: str, *unverified: Unverified) -> OwnerCheck:
        return OwnerCheck(gid, status, evidence, detail, unverified)

    def disagree(detail: str) -> OwnerCheck:
        text = f"sources disagree: {detail}"
        return check(
            OwnerStatus.UNVERIFIED,
            text,
            Unverified(f"owners of ETG {gid}", UnverifiedReason.UNRESOLVED, text),
        )

    listed = [e for e in (v1, owned, beta) if e.answer is OwnerAnswer.OWNER]
    lacking = [e for e in (owned, beta) if e.answer is OwnerAnswer.NOT_OWNER]
    if listed:
        if intune.answer is OwnerAnswer.NOT_OWNER:
            return disagree(
                f"{_names(listed)} list the provisioning client as owner, "
                f"but Intune reports {_NOT_OWNER_CODE}"
            )
        return check(OwnerStatus.OWNER, f"confirmed by {_names(listed)}")
    if intune.answer is OwnerAnswer.OWNER:
        if lacking:
            return disagree(
                f"Intune validated the group, but {_names(lacking)} do not list the "
                "provisioning client"
            )
        return check(OwnerStatus.OWNER, "confirmed by Intune validation")
    if intune.answer is OwnerAnswer.NOT_OWNER:
        return check(OwnerStatus.MISSING, f"Intune reports {_NOT_OWNER_CODE}")
    if intune.answer is OwnerAnswer.INCONCLUSIVE and lacking:
        return disagree(
            f"{_names(lacking)} do not list the provisioning client, but Intune's validation "
            f"did not report {_NOT_OWNER_CODE} ({intune.detail})"
        )
    if len(lacking) == 2:
        agreeing = [e for e in (v1, *lacking) if e.answer is OwnerAnswer.NOT_OWNER]
        return check(OwnerStatus.MISSING, f"{_names(agreeing)} do not list it")
    unreadable = [e for e in evidence if e.answer is OwnerAnswer.UNREADABLE and e.unverified]
    if unreadable:
        return check(
            OwnerStatus.UNVERIFIED,
            f"{_names(unreadable)} could not be read",
            *(e.unverified for e in unreadable if e.unverified),
        )
    text = "no source beyond v1.0 owners, which may omit service principals, was read"
    return check(
        OwnerStatus.UNVERIFIED,
        text,
        Unverified(f"owners of ETG {gid}", UnverifiedReason.UNRESOLVED, text),
    )


def owner_checks(
    facts: PolicyConfigFacts, pc: ProvisioningClient | Unverified
) -> tuple[OwnerCheck, ...]:
    if isinstance(facts.etg, Unverified):
        return ()
    lookup = facts.etg
    return tuple(judge_owner(etg, lookup, pc) for etg in facts.groups)


@policy_rule(ETG_OWNER_MISSING.name)
def etg_owner_missing(case: PolicyCase) -> Verdict:
    facts, pc = case.facts, case.pc
    if isinstance(pc, ProvisioningClient) and not pc.present:
        return case.unknown(reason="the provisioning client itself is missing")
    if any(isinstance(etg.group, GroupNotFound) for etg in facts.groups):
        # Ownership of a group that does not exist is moot; etg_invalid_group covers it.
        return case.unknown(reason="the ETG does not exist")
    checks = owner_checks(facts, pc)
    missing = [c for c in checks if c.status is OwnerStatus.MISSING]
    if missing:
        by_group = {c.group_id: c for c in checks}
        evidence: dict[str, JSON] = {
            "groups": [_group_evidence(e, by_group.get(e.group_id)) for e in facts.groups]
        }
        if isinstance(pc, ProvisioningClient):
            evidence["provisioning_client_object_id"] = pc.object_id
        first = next(e for e in facts.groups if e.group_id == missing[0].group_id)
        return case.found(
            f"The Intune Provisioning Client is not an owner of ETG {_group_label(first)} "
            f"of policy '{facts.policy.name}', so Intune cannot add enrolling devices to it "
            f"({missing[0].detail}).",
            evidence,
        )
    unsettled = [c for c in checks if c.status is OwnerStatus.UNVERIFIED]
    if unsettled:
        return case.unknown(
            tuple(u for c in unsettled for u in c.unverified),
            reason="; ".join(c.detail for c in unsettled),
        )
    confirmed = sorted({name for c in checks for name in c.confirmed_by})
    return case.clear(
        "the provisioning client owns the ETG"
        + (f" (confirmed by {', '.join(confirmed)})" if confirmed else "")
    )


def _owner_json(owners: tuple[Owner, ...]) -> list[JSON]:
    return [
        {"id": o.id, "type": o.odata_type, "display_name": o.display_name, "app_id": o.app_id}
        for o in owners
    ]


def _group_evidence(etg: EtgFacts, owner_check: OwnerCheck | None = None) -> dict[str, JSON]:
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
        out["owners"] = _owner_json(etg.owners)
    elif isinstance(etg.owners, Unverified):
        out["owners_unverified"] = etg.owners.to_json()
    if isinstance(etg.beta_owners, tuple):
        out["beta_owners"] = _owner_json(etg.beta_owners)
    if owner_check is not None:
        out["owner_sources"] = [e.to_json() for e in owner_check.evidence]
        out["owner_status"] = owner_check.status.value
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
            policy_health(results) is PolicyHealth.HEALTHY
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
