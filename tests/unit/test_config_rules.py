from datetime import UTC, datetime

from monitors.models import (
    PROVISIONING_CLIENT_APP_ID,
    Clear,
    EtgFacts,
    EtgLookup,
    Finding,
    Group,
    GroupNotFound,
    NotEvaluated,
    Owner,
    Policy,
    PolicyConfigFacts,
    ProvisioningClient,
    TenantConfigFacts,
    Unverified,
    UnverifiedReason,
)
from monitors.rules.config import evaluate_config, judge_owner, needs_second_owner_source

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SP = ProvisioningClient(object_id="sp-object")
GID = "group-1"
SP_OWNER = Owner(
    "sp-object",
    "#microsoft.graph.servicePrincipal",
    "Intune Provisioning Client",
    PROVISIONING_CLIENT_APP_ID,
)
USER_OWNER = Owner("user-1", "#microsoft.graph.user", "Admin")
FORBIDDEN = Unverified(
    "GET /v1.0/groups/{id}/owners",
    UnverifiedReason.FORBIDDEN,
    "denied",
    "GroupMember.Read.All",
    403,
)


def group(**kw):
    base = dict(
        id=GID,
        display_name="APv2 Devices",
        security_enabled=True,
        mail_enabled=False,
        group_types=(),
        is_assignable_to_role=False,
    )
    base.update(kw)
    return Group(**base)


def policy_facts(
    etg=None, grp=None, owners=(SP_OWNER,), errors=(), validated=(), beta=None, owned=None
):
    lookup = etg if etg is not None else EtgLookup((GID,), "test", errors, validated)
    groups = ()
    if isinstance(lookup, EtgLookup) and lookup.group_ids:
        grp = grp if grp is not None else group()
        groups = (EtgFacts(GID, grp, owners, beta_owners=beta, in_owned_objects=owned),)
    return PolicyConfigFacts(Policy("pol-1", "Standard", "t"), lookup, groups)


def verdicts(pf, pc=SP):
    result = evaluate_config(TenantConfigFacts(NOW, (pf,), pc))
    return {v.kind: v for v in result.verdicts}, result


def test_healthy_policy_clears_every_kind():
    v, result = verdicts(policy_facts())
    assert all(isinstance(x, Clear) for x in v.values())
    assert result.healthy_policies == ("pol-1",)
    assert result.unverified == ()


def test_policy_without_group_is_not_configured_and_nothing_else():
    v, _ = verdicts(policy_facts(etg=EtgLookup((), "test")))
    assert isinstance(v["etg_not_configured"], Finding)
    assert isinstance(v["etg_invalid_group"], Clear)
    assert isinstance(v["etg_owner_missing"], Clear)
    assert "Standard" in v["etg_not_configured"].explanation


def test_missing_owner_is_found_with_owner_list_as_evidence():
    v, _ = verdicts(policy_facts(owners=(USER_OWNER,), beta=(USER_OWNER,), owned=False))
    finding = v["etg_owner_missing"]
    assert isinstance(finding, Finding)
    assert finding.evidence["groups"][0]["owners"][0]["id"] == "user-1"
    assert "appId f1346770" in finding.fix


def test_owner_recognised_by_app_id_even_when_object_id_differs():
    other = Owner("other-id", "#microsoft.graph.servicePrincipal", None, PROVISIONING_CLIENT_APP_ID)
    v, _ = verdicts(policy_facts(owners=(other,)))
    assert isinstance(v["etg_owner_missing"], Clear)


def test_dynamic_group_is_invalid():
    v, _ = verdicts(policy_facts(grp=group(group_types=("DynamicMembership",))))
    assert isinstance(v["etg_invalid_group"], Finding)
    assert "dynamic" in v["etg_invalid_group"].explanation


def test_non_security_and_role_assignable_groups_are_invalid_with_both_reasons():
    v, _ = verdicts(policy_facts(grp=group(security_enabled=False, is_assignable_to_role=True)))
    text = v["etg_invalid_group"].explanation
    assert "not a security group" in text and "role-assignable" in text


def test_deleted_group_is_invalid_and_owner_question_is_left_open():
    pf = PolicyConfigFacts(
        Policy("pol-1", "Standard", "t"),
        EtgLookup((GID,), "t"),
        (EtgFacts(GID, GroupNotFound(GID, "src"), None),),
    )
    v, _ = verdicts(pf)
    assert isinstance(v["etg_invalid_group"], Finding)
    assert isinstance(v["etg_owner_missing"], NotEvaluated)


def test_unreadable_owners_is_unverified_not_an_anomaly():
    v, result = verdicts(policy_facts(owners=FORBIDDEN))
    assert isinstance(v["etg_owner_missing"], NotEvaluated)
    assert result.unverified[0].permission == "GroupMember.Read.All"
    assert result.healthy_policies == ()


def test_intune_validation_code_proves_missing_owner_when_owners_unreadable():
    v, _ = verdicts(policy_facts(owners=FORBIDDEN, errors=((GID, "firstPartyAppNotAnOwner"),)))
    assert isinstance(v["etg_owner_missing"], Finding)


def test_unreadable_etg_lookup_leaves_all_policy_kinds_unevaluated():
    lookup = Unverified("POST retrieve", UnverifiedReason.THROTTLED, "429")
    v, result = verdicts(PolicyConfigFacts(Policy("pol-1", "Standard", "t"), lookup))
    for kind in ("etg_not_configured", "etg_invalid_group", "etg_owner_missing"):
        assert isinstance(v[kind], NotEvaluated)
    assert lookup in result.unverified


def test_missing_provisioning_client_is_one_tenant_finding_naming_affected_policies():
    v, _ = verdicts(policy_facts(owners=(USER_OWNER,)), pc=ProvisioningClient(None))
    finding = v["provisioning_client_missing"]
    assert isinstance(finding, Finding)
    assert finding.evidence["affected_policies"] == ["Standard"]
    # The owner rule defers: the root cause is the missing service principal.
    assert isinstance(v["etg_owner_missing"], NotEvaluated)


def test_unreadable_service_principal_is_unverified():
    pc = Unverified("GET sp", UnverifiedReason.FORBIDDEN, "", "Application.Read.All", 403)
    v, result = verdicts(policy_facts(), pc=pc)
    assert isinstance(v["provisioning_client_missing"], NotEvaluated)
    assert result.healthy_policies == ()


def test_unlisted_policies_resolve_their_open_anomalies():
    from monitors.models import Scope, Subject

    gone = Subject(Scope.POLICY, policy_id="deleted-policy")
    result = evaluate_config(TenantConfigFacts(NOW, (policy_facts(),), SP), [gone])
    cleared = [v for v in result.verdicts if v.subject == gone]
    assert {v.kind for v in cleared} == {
        "etg_not_configured",
        "etg_invalid_group",
        "etg_owner_missing",
        "payload_not_ready",
    }
    assert all(isinstance(v, Clear) for v in cleared)


def test_policy_list_unreadable_evaluates_only_the_tenant_rule():
    listing = Unverified("GET policies", UnverifiedReason.FORBIDDEN, "", "X", 403)
    result = evaluate_config(TenantConfigFacts(NOW, listing, SP))
    assert [v.kind for v in result.verdicts] == ["provisioning_client_missing"]
    assert listing in result.unverified


# --- ownership: v1.0 owners may omit service principals, so its silence needs a second source


def owner_verdict(pf, pc=SP):
    v, result = verdicts(pf, pc)
    return v["etg_owner_missing"], result


def answers(verdict):
    return {s["source"]: s["answer"] for s in verdict.evidence["groups"][0]["owner_sources"]}


def test_v1_owners_without_the_client_alone_never_opens_the_anomaly():
    verdict, result = owner_verdict(policy_facts(owners=(USER_OWNER,)))
    assert isinstance(verdict, NotEvaluated)
    assert "may omit service principals" in verdict.reason
    assert result.unverified[0].reason is UnverifiedReason.UNRESOLVED


def test_owned_objects_listing_the_group_settles_ownership():
    pf = policy_facts(owners=(USER_OWNER,), owned=True)
    verdict, _ = owner_verdict(pf)
    assert isinstance(verdict, Clear)
    assert "ownedObjects" in verdict.reason
    check = judge_owner(pf.groups[0], pf.etg, SP)
    assert check.confirmed_by == ("ownedObjects",)


def test_beta_owners_listing_the_client_settles_ownership():
    verdict, _ = owner_verdict(policy_facts(owners=(), owned=False, beta=(SP_OWNER, USER_OWNER)))
    assert isinstance(verdict, Clear)
    assert "beta owners" in verdict.reason


def test_intune_validation_alone_confirms_the_owner_when_the_lists_cannot_be_read():
    owned_403 = Unverified("GET owned", UnverifiedReason.FORBIDDEN, "", "Application.Read.All", 403)
    pf = policy_facts(owners=(USER_OWNER,), validated=(GID,), owned=owned_403, beta=FORBIDDEN)
    verdict, _ = owner_verdict(pf)
    assert isinstance(verdict, Clear)
    assert "Intune validation" in verdict.reason


def test_every_source_read_agreeing_opens_the_anomaly_with_what_each_said():
    verdict, _ = owner_verdict(policy_facts(owners=(USER_OWNER,), owned=False, beta=(USER_OWNER,)))
    assert isinstance(verdict, Finding)
    assert answers(verdict) == {
        "v1.0 owners": "not_owner",
        "Intune validation": "silent",
        "ownedObjects": "not_owner",
        "beta owners": "not_owner",
    }
    assert "v1.0 owners, ownedObjects and beta owners do not list it" in verdict.explanation


def test_intune_not_owner_code_stands_when_the_other_lists_cannot_be_read():
    pf = policy_facts(
        owners=(USER_OWNER,),
        errors=((GID, "firstPartyAppNotAnOwner"),),
        owned=FORBIDDEN,
        beta=FORBIDDEN,
    )
    verdict, _ = owner_verdict(pf)
    assert isinstance(verdict, Finding)
    assert answers(verdict)["ownedObjects"] == "unreadable"
    assert answers(verdict)["Intune validation"] == "not_owner"


def test_intune_not_owner_but_owned_objects_lists_the_group_is_a_disagreement():
    pf = policy_facts(owners=(USER_OWNER,), errors=((GID, "firstPartyAppNotAnOwner"),), owned=True)
    verdict, result = owner_verdict(pf)
    assert isinstance(verdict, NotEvaluated)
    assert "sources disagree" in verdict.reason
    assert "ownedObjects" in verdict.reason and "firstPartyAppNotAnOwner" in verdict.reason
    assert result.unverified[0].reason is UnverifiedReason.UNRESOLVED


def test_v1_owner_contradicted_by_intune_is_a_disagreement():
    verdict, _ = owner_verdict(policy_facts(errors=((GID, "firstPartyAppNotAnOwner"),)))
    assert isinstance(verdict, NotEvaluated)
    assert "v1.0 owners list the provisioning client" in verdict.reason


def test_intune_validated_but_both_lists_lack_the_client_is_a_disagreement():
    pf = policy_facts(owners=(USER_OWNER,), validated=(GID,), owned=False, beta=(USER_OWNER,))
    verdict, _ = owner_verdict(pf)
    assert isinstance(verdict, NotEvaluated)
    assert "Intune validated the group, but ownedObjects and beta owners" in verdict.reason


def test_intune_unknown_code_weighs_against_missing():
    pf = policy_facts(owners=(), errors=((GID, "unknown"),), owned=False, beta=())
    verdict, _ = owner_verdict(pf)
    assert isinstance(verdict, NotEvaluated)
    assert "sources disagree" in verdict.reason and "unknown" in verdict.reason


def test_group_shape_codes_say_nothing_about_ownership():
    pf = policy_facts(
        grp=group(group_types=("DynamicMembership",)),
        owners=(USER_OWNER,),
        errors=((GID, "notStaticSecurityGroup"),),
        owned=False,
        beta=(USER_OWNER,),
    )
    verdict, _ = owner_verdict(pf)
    assert isinstance(verdict, Finding)
    assert answers(verdict)["Intune validation"] == "silent"


def test_unreadable_owned_objects_is_unverified_naming_its_permission():
    owned_403 = Unverified("GET owned", UnverifiedReason.FORBIDDEN, "", "Application.Read.All", 403)
    pf = policy_facts(owners=(USER_OWNER,), owned=owned_403, beta=(USER_OWNER,))
    verdict, result = owner_verdict(pf)
    assert isinstance(verdict, NotEvaluated)
    assert [u.permission for u in result.unverified] == ["Application.Read.All"]
    assert "ownedObjects could not be read" in verdict.reason


def test_unreadable_beta_owners_is_unverified_naming_its_permission():
    verdict, result = owner_verdict(policy_facts(owners=(USER_OWNER,), owned=False, beta=FORBIDDEN))
    assert isinstance(verdict, NotEvaluated)
    assert [u.permission for u in result.unverified] == ["GroupMember.Read.All"]


def test_unknown_client_object_id_still_recognises_the_client_by_app_id_in_beta():
    pc = Unverified("GET sp", UnverifiedReason.THROTTLED, "429")
    pf = policy_facts(owners=(USER_OWNER,), owned=pc, beta=(SP_OWNER,))
    verdict, _ = owner_verdict(pf, pc=pc)
    assert isinstance(verdict, Clear)


def test_second_sources_are_needed_only_when_v1_owners_does_not_show_the_client():
    listed = EtgFacts(GID, group(), (SP_OWNER,))
    silent = EtgFacts(GID, group(), (USER_OWNER,))
    unreadable = EtgFacts(GID, group(), FORBIDDEN)
    gone = EtgFacts(GID, GroupNotFound(GID, "src"), None)
    assert not needs_second_owner_source(listed, SP)
    assert needs_second_owner_source(silent, SP)
    assert needs_second_owner_source(unreadable, SP)
    assert not needs_second_owner_source(gone, SP)
    assert not needs_second_owner_source(silent, ProvisioningClient(None))


def test_every_policy_kind_is_decided_by_one_registered_rule():
    from monitors.models import Scope
    from monitors.rules.config import POLICY_RULES
    from monitors.rules.kinds import CONFIG_KINDS, KINDS

    policy_kinds = {k for k in CONFIG_KINDS if KINDS[k].scope is Scope.POLICY}
    assert set(POLICY_RULES) == policy_kinds
    v, _ = verdicts(policy_facts())
    assert set(v) == policy_kinds | {"provisioning_client_missing"}


def test_policy_health_is_broken_on_a_finding_and_healthy_only_when_every_rule_cleared():
    from monitors.rules.config import PolicyHealth, policy_health

    healthy, _ = verdicts(policy_facts())
    broken, _ = verdicts(policy_facts(grp=group(group_types=("DynamicMembership",))))
    unknown, _ = verdicts(policy_facts(owners=FORBIDDEN))
    assert policy_health(healthy.values()) is PolicyHealth.HEALTHY
    assert policy_health(broken.values()) is PolicyHealth.BROKEN
    assert policy_health(unknown.values()) is PolicyHealth.UNVERIFIED
    assert [str(h) for h in PolicyHealth] == ["healthy", "broken", "unverified"]


def test_every_policy_finding_carries_the_etg_lookup_it_was_judged_on():
    code = "firstPartyAppNotAnOwner"
    v, _ = verdicts(
        policy_facts(
            grp=group(group_types=("DynamicMembership",)),
            owners=(USER_OWNER,),
            errors=((GID, code),),
        )
    )
    found = {k: x for k, x in v.items() if isinstance(x, Finding)}
    assert set(found) == {"etg_invalid_group", "etg_owner_missing"}
    for finding in found.values():
        lookup = ["etg_group_ids", "etg_source", "intune_validation_errors"]
        assert list(finding.evidence)[:3] == lookup
        assert finding.evidence["intune_validation_errors"] == {GID: code}
        assert finding.evidence["groups"][0]["group_id"] == GID
    assert found["etg_owner_missing"].evidence["provisioning_client_object_id"] == SP.object_id
