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
from monitors.rules.config import evaluate_config

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


def policy_facts(etg=None, grp=None, owners=(SP_OWNER,), errors=()):
    lookup = etg if etg is not None else EtgLookup((GID,), "test", errors)
    groups = ()
    if isinstance(lookup, EtgLookup) and lookup.group_ids:
        groups = (EtgFacts(GID, grp if grp is not None else group(), owners),)
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
    v, _ = verdicts(policy_facts(owners=(USER_OWNER,)))
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
    }
    assert all(isinstance(v, Clear) for v in cleared)


def test_policy_list_unreadable_evaluates_only_the_tenant_rule():
    listing = Unverified("GET policies", UnverifiedReason.FORBIDDEN, "", "X", 403)
    result = evaluate_config(TenantConfigFacts(NOW, listing, SP))
    assert [v.kind for v in result.verdicts] == ["provisioning_client_missing"]
    assert listing in result.unverified
