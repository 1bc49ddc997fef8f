"""payload_not_ready: what keeps a policy's selected apps and scripts from installing."""

from datetime import UTC, datetime

import pytest

from monitors.models import (
    Clear,
    EtgFacts,
    EtgLookup,
    Finding,
    Group,
    NotEvaluated,
    Owner,
    PayloadAssignment,
    PayloadFacts,
    PayloadKind,
    PayloadObject,
    Policy,
    PolicyConfigFacts,
    ProvisioningClient,
    TenantConfigFacts,
    Unverified,
    UnverifiedReason,
)
from monitors.rules.config import POLICY_RULES, evaluate_config
from monitors.rules.kinds import CONFIG_KINDS, KINDS, PAYLOAD_NOT_READY, Severity
from monitors.rules.payload import MAX_APPS, MAX_SCRIPTS

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ETG = "etg-1"
SP = ProvisioningClient(object_id="sp")
SP_OWNER = Owner("sp", "#microsoft.graph.servicePrincipal", "Intune Provisioning Client", None)
GROUP = Group(ETG, "APv2-ETG-Laptops", True, False, (), False)
REQUIRED = PayloadAssignment("groupAssignmentTarget", ETG, "required")
FORBIDDEN = Unverified(
    "GET /v1.0/deviceAppManagement/mobileApps/{id}/assignments",
    UnverifiedReason.FORBIDDEN,
    "denied",
    "DeviceManagementApps.Read.All",
    403,
)


def app(app_id="app-1", *assignments, name="VPN Client", odata_type="#microsoft.graph.winGetApp"):
    return PayloadFacts(
        PayloadKind.APP, app_id, PayloadObject(name, odata_type), assignments or (REQUIRED,)
    )


def script(script_id="scr-1", *assignments, run_as="system", name="Fonts.ps1"):
    target = PayloadAssignment("groupAssignmentTarget", ETG)
    return PayloadFacts(
        PayloadKind.SCRIPT,
        script_id,
        PayloadObject(name, "#microsoft.graph.deviceManagementScript", run_as),
        assignments or (target,),
    )


def judge(*payload, etg_ids=(ETG,), apps=None, scripts=None, read=True):
    policy = Policy(
        "pol-1",
        "Contoso - Laptops",
        "t",
        allowed_app_ids=tuple(
            apps if apps is not None else [p.id for p in payload if p.kind == "app"]
        ),
        allowed_script_ids=tuple(
            scripts if scripts is not None else [p.id for p in payload if p.kind == "script"]
        ),
    )
    lookup = EtgLookup(tuple(etg_ids), "test", (), tuple(etg_ids))
    groups = tuple(EtgFacts(g, GROUP, (SP_OWNER,)) for g in etg_ids)
    facts = PolicyConfigFacts(policy, lookup, groups, tuple(payload) if read else None)
    result = evaluate_config(TenantConfigFacts(NOW, (facts,), SP))
    verdict = next(v for v in result.verdicts if v.kind == PAYLOAD_NOT_READY.name)
    return verdict, result


def problems(verdict):
    assert isinstance(verdict, Finding), verdict
    return {item["id"]: item["problems"] for item in verdict.evidence["items"]}


def test_the_kind_is_a_critical_policy_config_kind_with_its_own_rule():
    kind = KINDS[PAYLOAD_NOT_READY.name]
    assert kind.severity is Severity.CRITICAL and kind.scope.value == "policy"
    assert PAYLOAD_NOT_READY.name in CONFIG_KINDS and PAYLOAD_NOT_READY.name in POLICY_RULES
    assert "payload_incomplete" in kind.meaning


def test_apps_and_scripts_assigned_to_the_etg_clear_and_the_policy_is_healthy():
    verdict, result = judge(app(), script())
    assert isinstance(verdict, Clear)
    assert result.healthy_policies == ("pol-1",)


def test_all_devices_with_required_intent_counts_as_assigned():
    verdict, _ = judge(
        app("app-1", PayloadAssignment("allDevicesAssignmentTarget", None, "required"))
    )
    assert isinstance(verdict, Clear)


def test_an_app_assigned_elsewhere_is_named_with_the_etg_in_explanation_and_fix():
    elsewhere = PayloadAssignment("groupAssignmentTarget", "users-1", "available")
    verdict, result = judge(app("app-1", elsewhere), app("app-2", name="Company Portal"))
    assert problems(verdict) == {
        "app-1": ["not assigned to the ETG or all devices with required intent"]
    }
    assert "'VPN Client'" in verdict.explanation and "Company Portal" not in verdict.explanation
    assert "'VPN Client'" in verdict.fix and "APv2-ETG-Laptops" in verdict.fix
    assert ETG in verdict.fix and "Required" in verdict.fix
    item = verdict.evidence["items"][0]
    assert (item["display_name"], item["type"]) == ("VPN Client", "#microsoft.graph.winGetApp")
    assert item["assignments"] == [
        {"target": "groupAssignmentTarget", "group_id": "users-1", "intent": "available"}
    ]
    assert result.healthy_policies == ()


def test_available_intent_to_the_etg_is_not_enough():
    available = PayloadAssignment("groupAssignmentTarget", ETG, "available")
    verdict, _ = judge(app("app-1", available))
    assert problems(verdict) == {
        "app-1": ["assigned to the ETG with intent available, not required"]
    }


def test_an_exclusion_of_the_etg_counts_against_an_all_devices_assignment():
    verdict, _ = judge(
        app(
            "app-1",
            PayloadAssignment("allDevicesAssignmentTarget", None, "required"),
            PayloadAssignment("exclusionGroupAssignmentTarget", ETG, None),
        )
    )
    assert problems(verdict) == {"app-1": ["the ETG is excluded from its assignments"]}
    assert "exclusions" in verdict.fix


def test_all_users_is_not_the_device_group():
    verdict, _ = judge(
        app("app-1", PayloadAssignment("allLicensedUsersAssignmentTarget", None, "required"))
    )
    assert problems(verdict) == {"app-1": ["assigned to all users, not to the ETG or all devices"]}


def test_a_script_in_the_user_context_is_not_ready():
    verdict, _ = judge(script(run_as="user"))
    assert problems(verdict) == {"scr-1": ["runs as user, not system"]}
    assert "'Fonts.ps1'" in verdict.fix and "System" in verdict.fix


def test_an_unassigned_script_is_named_without_an_intent():
    verdict, _ = judge(script("scr-1", PayloadAssignment("groupAssignmentTarget", "other")))
    assert problems(verdict) == {"scr-1": ["not assigned to the ETG or all devices"]}


def test_a_deleted_app_is_a_finding_not_an_unknown():
    gone = PayloadFacts(PayloadKind.APP, "app-9", None)
    verdict, _ = judge(app(), gone)
    assert problems(verdict) == {"app-9": ["the app no longer exists"]}
    assert "app-9" in verdict.fix


@pytest.mark.parametrize(
    "odata_type", ["#microsoft.graph.webApp", "#microsoft.graph.microsoftStoreForBusinessApp", None]
)
def test_an_app_type_device_preparation_does_not_install_is_named(odata_type):
    verdict, _ = judge(app(odata_type=odata_type))
    [text] = problems(verdict)["app-1"]
    assert "not one device preparation installs" in text


@pytest.mark.parametrize(
    "odata_type",
    [
        "#microsoft.graph.win32LobApp",
        "#microsoft.graph.windowsMobileMSI",
        "#microsoft.graph.winGetApp",
        "#microsoft.graph.officeSuiteApp",
        "#microsoft.graph.win32CatalogApp",
    ],
)
def test_supported_app_types_are_ready(odata_type):
    verdict, _ = judge(app(odata_type=odata_type))
    assert isinstance(verdict, Clear)


def test_more_than_the_documented_limits_is_a_finding():
    apps = [f"app-{i}" for i in range(MAX_APPS + 1)]
    scripts = [f"scr-{i}" for i in range(MAX_SCRIPTS + 1)]
    payload = [app(a) for a in apps] + [script(s) for s in scripts]
    verdict, _ = judge(*payload)
    assert isinstance(verdict, Finding)
    assert verdict.evidence["limits"] == [
        f"{MAX_APPS + 1} apps selected, more than the {MAX_APPS} allowed",
        f"{MAX_SCRIPTS + 1} scripts selected, more than the {MAX_SCRIPTS} allowed",
    ]
    assert verdict.evidence["items"] == []


def test_exactly_the_limits_is_fine():
    payload = [app(f"app-{i}") for i in range(MAX_APPS)] + [
        script(f"s-{i}") for i in range(MAX_SCRIPTS)
    ]
    verdict, _ = judge(*payload)
    assert isinstance(verdict, Clear)


def test_a_failed_read_is_not_evaluated_and_touches_only_this_rule():
    unreadable = PayloadFacts(
        PayloadKind.APP, "app-1", PayloadObject("VPN", "#microsoft.graph.winGetApp"), FORBIDDEN
    )
    verdict, result = judge(unreadable)
    assert isinstance(verdict, NotEvaluated) and verdict.unverified == (FORBIDDEN,)
    others = [v for v in result.verdicts if v.kind != PAYLOAD_NOT_READY.name]
    assert others and all(isinstance(v, Clear) for v in others)
    assert FORBIDDEN in result.unverified


def test_a_concrete_problem_is_reported_even_when_another_read_failed():
    unreadable = PayloadFacts(PayloadKind.APP, "app-2", FORBIDDEN)
    verdict, _ = judge(script(run_as="user"), unreadable)
    assert problems(verdict) == {"scr-1": ["runs as user, not system"]}


def test_a_policy_selecting_nothing_clears():
    verdict, _ = judge(read=False)
    assert isinstance(verdict, Clear)


def test_a_policy_without_an_etg_is_left_to_etg_not_configured():
    verdict, result = judge(app(), etg_ids=())
    assert isinstance(verdict, Clear) and "etg_not_configured" in verdict.reason
    kinds = {v.kind for v in result.verdicts if isinstance(v, Finding)}
    assert kinds == {"etg_not_configured"}


def test_an_unverified_etg_lookup_leaves_the_payload_undecided():
    lookup = Unverified("POST retrieve", UnverifiedReason.THROTTLED, "429")
    policy = Policy("pol-1", "Contoso - Laptops", "t", allowed_app_ids=("app-1",))
    facts = PolicyConfigFacts(policy, lookup)
    result = evaluate_config(TenantConfigFacts(NOW, (facts,), SP))
    verdict = next(v for v in result.verdicts if v.kind == PAYLOAD_NOT_READY.name)
    assert isinstance(verdict, NotEvaluated) and verdict.unverified == (lookup,)


def test_payload_not_read_while_the_policy_selects_items_is_not_evaluated():
    verdict, _ = judge(apps=["app-1"], read=False)
    assert isinstance(verdict, NotEvaluated)


def test_the_weekly_summary_lists_an_open_payload_not_ready_under_its_policy():
    from monitors.models import Anomaly, Scope, Status, Subject
    from monitors.summary.card import summary_card
    from monitors.summary.compute import IsoWeek, compute_summary

    week = IsoWeek(2026, 47)
    subject = Subject(Scope.POLICY, policy_id="pol-1", policy_name="Contoso - Laptops")
    opened = week.start + (week.end - week.start) / 2
    anomaly = Anomaly(PAYLOAD_NOT_READY.name, subject, Status.OPEN, opened, opened, "x", "y", {})
    summary = compute_summary(week, [], [anomaly], [], {}, week.end)
    assert summary["policy_health"] == [
        {"policy": "Contoso - Laptops", "issues": [PAYLOAD_NOT_READY.name]}
    ]
    assert "Policy Contoso - Laptops: payload_not_ready" in str(summary_card(summary))
