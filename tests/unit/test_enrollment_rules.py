"""Timelines in, verdicts out: every anomaly kind and every boundary of the enrollment rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitors.models import (
    Clear,
    Deployment,
    DeploymentFacts,
    DeploymentStatus,
    Finding,
    InstallItem,
    MembershipEvent,
    MembershipOp,
    NotEvaluated,
    Policy,
    PolicyMatch,
    Unverified,
    UnverifiedReason,
)
from monitors.rules.enrollment import judge, needs_membership_check

ENROLLED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
DURATION = 600
COMPLETED = ENROLLED + timedelta(seconds=DURATION)
GROUP = "etg-1"
OBJ = "device-object-1"
POLICY = PolicyMatch(
    Policy("pol-1", "Standard", "t", timeout_minutes=60), (GROUP,), "enrollmentProfileName"
)
SETTLED = COMPLETED + timedelta(hours=2)
NOW = COMPLETED + timedelta(hours=3)


def deployment(status=DeploymentStatus.SUCCESS, duration=DURATION, **kw):
    return Deployment(
        "md-1", ENROLLED, status, status.value, device_name="PC-1", duration_seconds=duration, **kw
    )


def add(offset_s, exact=True, event_id=None, actor="Intune Provisioning Client"):
    return MembershipEvent(
        MembershipOp.ADD,
        GROUP,
        OBJ,
        COMPLETED + timedelta(seconds=offset_s),
        exact,
        "audit" if exact else "delta",
        event_id or f"a{offset_s}",
        actor,
        True,
    )


def remove(offset_s, exact=True):
    return MembershipEvent(
        MembershipOp.REMOVE,
        GROUP,
        OBJ,
        COMPLETED + timedelta(seconds=offset_s),
        exact,
        "audit",
        f"r{offset_s}",
        "admin@contoso.com",
        False,
    )


def facts(
    events=(),
    status=DeploymentStatus.SUCCESS,
    settled=SETTLED,
    member=None,
    policy=POLICY,
    obj=OBJ,
    payload=None,
    duration=DURATION,
    **kw,
):
    return DeploymentFacts(
        deployment(status, duration, **kw),
        policy,
        obj,
        tuple(events) if not isinstance(events, Unverified) else events,
        settled,
        member,
        payload,
    )


def kinds(j, cls):
    return {v.kind for v in j.verdicts if isinstance(v, cls)}


def test_joined_one_second_before_completion_is_on_time():
    j = judge(facts([add(-1)]), NOW)
    assert kinds(j, Finding) == set()
    assert {"etg_missing", "etg_late", "etg_removed", "deployment_failed"} <= kinds(j, Clear)
    assert j.state == "conclusive"
    assert "1 s before" in j.summary


def test_joined_exactly_at_completion_is_on_time():
    assert kinds(judge(facts([add(0)]), NOW), Finding) == set()


def test_joined_one_second_after_completion_is_late_with_both_times_and_gap():
    j = judge(facts([add(1)]), NOW)
    assert kinds(j, Finding) == {"etg_late"}
    late = next(v for v in j.verdicts if isinstance(v, Finding))
    assert late.evidence["gap_seconds"] == 1
    assert late.evidence["provisioning_completed_at"] == COMPLETED.isoformat()
    assert late.evidence["late_join"]["at"] == (COMPLETED + timedelta(seconds=1)).isoformat()
    assert "etg_missing" in kinds(j, Clear)


def test_never_joined_and_not_a_member_is_missing():
    j = judge(facts([], member=False), NOW)
    assert kinds(j, Finding) == {"etg_missing"}
    assert j.state == "conclusive"


def test_never_joined_asks_for_membership_before_deciding():
    f = facts([])
    assert needs_membership_check(f, NOW)
    j = judge(f, NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "pending"


def test_missing_is_pending_while_audit_events_may_still_arrive():
    j = judge(facts([], settled=COMPLETED - timedelta(seconds=1), member=False), NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "pending"
    assert not needs_membership_check(facts([], settled=COMPLETED - timedelta(seconds=1)), NOW)


def test_late_audit_event_turns_a_pending_device_into_on_time():
    early = judge(facts([], settled=COMPLETED - timedelta(minutes=5)), NOW)
    assert early.state == "pending"
    later = judge(facts([add(-30)]), NOW)
    assert later.state == "conclusive" and kinds(later, Finding) == set()


def test_member_without_any_audit_event_is_unverified_not_missing():
    j = judge(facts([], member=True), NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "unverified"


def test_observation_before_completion_proves_on_time_join():
    j = judge(facts([add(-5, exact=False)]), NOW)
    assert kinds(j, Finding) == set() and j.state == "conclusive"


def test_observation_after_completion_alone_is_not_called_late_until_audit_settles():
    j = judge(facts([add(60, exact=False)], settled=COMPLETED + timedelta(seconds=30)), NOW)
    assert j.state == "pending"
    assert kinds(j, Finding) == set()


def test_removed_after_joining_is_etg_removed():
    j = judge(facts([add(-30), remove(3600)]), NOW)
    assert kinds(j, Finding) == {"etg_removed"}


def test_removed_then_readded_is_not_an_anomaly():
    j = judge(facts([add(-30), remove(3600), add(3700)]), NOW)
    assert kinds(j, Finding) == set()
    assert "etg_removed" in kinds(j, Clear)


def test_failed_deployment_without_any_join_is_only_deployment_failed():
    j = judge(
        facts([], status=DeploymentStatus.FAILED, result_code="-2147023436", phase="1796"), NOW
    )
    assert kinds(j, Finding) == {"deployment_failed"}
    failed = next(v for v in j.verdicts if isinstance(v, Finding))
    assert failed.evidence["result_code"] == "-2147023436"
    assert "never seen" in j.summary


def test_in_progress_within_timeout_is_pending():
    j = judge(
        facts([], status=DeploymentStatus.IN_PROGRESS, duration=None),
        ENROLLED + timedelta(minutes=89),
    )
    assert kinds(j, Finding) == set()
    assert j.state == "pending"


def test_in_progress_past_timeout_plus_grace_is_stuck():
    j = judge(
        facts([], status=DeploymentStatus.IN_PROGRESS, duration=None),
        ENROLLED + timedelta(minutes=90, seconds=1),
    )
    assert kinds(j, Finding) == {"deployment_stuck"}


def test_stuck_uses_the_policy_timeout():
    slow = PolicyMatch(Policy("p", "Slow", "t", timeout_minutes=240), (GROUP,), "x")
    j = judge(
        facts([], status=DeploymentStatus.IN_PROGRESS, duration=None, policy=slow),
        ENROLLED + timedelta(minutes=200),
    )
    assert kinds(j, Finding) == set()


def test_unknown_policy_is_unverified_never_missing():
    j = judge(facts([], policy=None, member=False), NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "unverified"
    assert j.unverified[0].reason is UnverifiedReason.UNRESOLVED


def test_graph_error_reading_audit_is_unverified():
    err = Unverified(
        "GET /v1.0/auditLogs/directoryAudits",
        UnverifiedReason.FORBIDDEN,
        "403",
        "AuditLog.Read.All",
        403,
    )
    j = judge(facts(err, member=False), NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "unverified"
    assert j.unverified[0].permission == "AuditLog.Read.All"


def test_unknown_status_code_is_unverified_not_an_outcome():
    j = judge(facts([], status=DeploymentStatus.UNKNOWN, member=False), NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "unverified"


def test_missing_device_added_later_resolves_missing_without_a_second_alert():
    j = judge(
        facts([add(7200, actor="admin@contoso.com")], member=True), NOW, previously_missing=True
    )
    assert kinds(j, Finding) == set()
    missing_clear = next(v for v in j.verdicts if isinstance(v, Clear) and v.kind == "etg_missing")
    assert "after provisioning completed" in missing_clear.reason


def test_event_for_another_group_or_device_is_ignored():
    other = MembershipEvent(MembershipOp.ADD, "other-group", OBJ, ENROLLED, True, "audit", "x")
    j = judge(facts([other], member=False), NOW)
    assert kinds(j, Finding) == {"etg_missing"}


@pytest.mark.parametrize(
    "status,expected",
    [
        ("Skipped", {"payload_incomplete"}),
        ("Failed", {"payload_incomplete"}),
        ("Installed", set()),
    ],
)
def test_payload_skipped_or_failed_is_incomplete(status, expected):
    payload = (
        InstallItem("app", "a1", "Company Portal", "Installed"),
        InstallItem("app", "a2", "VPN", status),
    )
    j = judge(facts([add(-10)], payload=payload), NOW)
    assert kinds(j, Finding) == expected


def full_policy_payload(status="Failed", name_chars=60):
    """The most a policy can select: 25 apps and 10 scripts."""
    apps = [
        InstallItem("app", f"app-{n}", f"App {n:02d} " + "a" * (name_chars - 7), status)
        for n in range(25)
    ]
    scripts = [
        InstallItem("script", f"script-{n}", f"Script {n:02d} " + "s" * (name_chars - 10), status)
        for n in range(10)
    ]
    return (InstallItem("app", "ok", "Company Portal", "Installed"), *apps, *scripts)


def test_payload_incomplete_names_every_skipped_or_failed_item():
    payload = full_policy_payload()
    j = judge(facts([add(-10)], payload=payload), NOW)
    finding = next(v for v in j.verdicts if isinstance(v, Finding))
    assert finding.kind == "payload_incomplete"
    assert finding.explanation.startswith("35 of 36 apps and scripts did not install")
    for item in payload[1:]:
        assert f"{item.name} (Failed)" in finding.explanation
    assert "Company Portal" not in finding.explanation
    # apps and scripts are told apart, and the evidence keeps every item with its id
    assert "apps: App 00" in finding.explanation and "; scripts: Script 00" in finding.explanation
    assert [i["id"] for i in finding.evidence["items"]] == [i.id for i in payload]


def test_payload_reports_disabled_is_not_applicable_and_still_conclusive():
    j = judge(facts([add(-10)], payload=None), NOW)
    payload = next(v for v in j.verdicts if v.kind == "payload_incomplete")
    assert isinstance(payload, NotEvaluated) and not payload.pending and not payload.unverified
    assert j.state == "conclusive"


def test_policy_without_etg_is_not_applicable_not_unverified():
    no_etg = PolicyMatch(Policy("k", "Kiosk", "t"), (), "enrollmentProfileName")
    j = judge(facts([], policy=no_etg, member=False), NOW)
    assert kinds(j, Finding) == set()
    assert j.state == "conclusive"
    assert j.unverified == ()
    assert "etg_not_configured" in j.summary


def _etg(*groups):
    from monitors.models import EtgLookup

    return EtgLookup(tuple(groups), "retrieveEnrollmentTimeDeviceMembershipTarget")


def test_policy_resolution_prefers_profile_name_then_assignment_then_membership_then_single():
    from monitors.models import UserPolicies
    from monitors.rules.enrollment import resolve_policy

    a = Policy("a", "Standard", "t", priority=2)
    b = Policy("b", "Finance", "t", priority=1)
    both = [(a, _etg("g-a")), (b, _etg("g-b"))]
    assert resolve_policy(" finance ", both).policy.id == "b"
    assert resolve_policy(None, [(a, _etg("g-a"))]).how == "only device preparation policy"
    assert resolve_policy(None, both, {"g-b"}).how == "ETG membership"
    assert resolve_policy(None, both) is None
    assert resolve_policy("Unknown profile", both, {"g-a", "g-b"}) is None
    broken = Unverified("retrieve", UnverifiedReason.THROTTLED, "429")
    assert resolve_policy("Standard", [(a, broken), (b, _etg("g-b"))]) is broken
    # Intune's own rule: of the policies assigned to the user, the lowest priority number.
    user = UserPolicies("ann@contoso.com", ("a", "b"))
    match = resolve_policy(None, both, {"g-a"}, user)
    assert match.policy.id == "b" and match.how == "assignment to ann@contoso.com (priority 1)"
    assert match.etg_source == "retrieveEnrollmentTimeDeviceMembershipTarget"
    # A profile name that names no policy (renamed since) falls through to the assignment.
    assert resolve_policy("Old name", both, (), UserPolicies("ann", ("a",))).policy.id == "a"


def test_a_user_in_no_assigned_group_is_unverified_and_says_so():
    from monitors.models import UserPolicies
    from monitors.rules.enrollment import resolve_policy

    both = [
        (Policy("a", "A", "t", priority=1), _etg("g-a")),
        (Policy("b", "B", "t", priority=2), _etg("g-b")),
    ]
    result = resolve_policy(None, both, (), UserPolicies("bob@contoso.com", ()))
    assert isinstance(result, Unverified)
    assert result.reason is UnverifiedReason.UNRESOLVED
    assert "bob@contoso.com is in no group" in result.detail
    # ETG membership evidence still decides when the assignment does not.
    assert resolve_policy(None, both, {"g-b"}, UserPolicies("bob", ())).how == "ETG membership"


def test_unreadable_assignments_of_a_policy_that_could_win_leave_the_choice_unverified():
    from monitors.models import UserPolicies
    from monitors.rules.enrollment import resolve_policy

    a, b, c = (Policy(x, x.upper(), "t", priority=n) for x, n in (("a", 1), ("b", 2), ("c", 3)))
    entries = [(a, _etg("g-a")), (b, _etg("g-b")), (c, _etg("g-c"))]
    # b is assigned; a (priority 1) might be too, but its assignments were not readable.
    unsure = resolve_policy(None, entries, (), UserPolicies("ann", ("b",), unreadable=("a",)))
    assert isinstance(unsure, Unverified) and "priorities do not decide" in unsure.detail
    # c's assignments unreadable cannot change the answer: priority 3 loses to b anyway.
    sure = resolve_policy(None, entries, (), UserPolicies("ann", ("b",), unreadable=("c",)))
    assert sure.policy.id == "b"
    # Two assigned policies with the same priority: Intune's choice cannot be told.
    tie = [
        (Policy("x", "X", "t", priority=1), _etg("g-x")),
        (Policy("y", "Y", "t", priority=1), _etg("g-y")),
    ]
    assert isinstance(resolve_policy(None, tie, (), UserPolicies("ann", ("x", "y"))), Unverified)


def test_a_record_stored_before_profile_names_were_read_by_id_is_read_again():
    from monitors.scan.coverage import covered
    from monitors.store.scan_state import DeploymentRecord

    stored = {
        "deployment": {
            "managed_device_id": "m1",
            "enrolled_at": "2026-11-19T10:00:00+00:00",
            "status": "success",
        },
        "policy": {"id": "p", "name": "P", "etg_group_ids": ["g1", "g2"], "how": "x"},
        "audit_from": "2026-11-19T09:00:00+00:00",
    }
    record = DeploymentRecord.from_json(stored, "pending", "")
    assert record.profile_read is False  # the next scan reads the managed device by id
    # Coverage kept before it was per ETG covered the policy's ETGs, and only those.
    assert set(record.audit_from) == {"g1", "g2"}
    assert covered(record, ("g1", "g2"), NOW - timedelta(days=7))
    assert not covered(record, ("g3",), NOW - timedelta(days=7))
    again = DeploymentRecord.from_json(record.to_json(), "pending", "")
    assert again.audit_from == record.audit_from and again.policy == record.policy


def test_every_device_kind_is_decided_by_one_registered_rule_in_judge_order():
    from monitors.rules.enrollment import DEVICE_RULES
    from monitors.rules.kinds import DEVICE_KINDS

    assert sorted(DEVICE_RULES) == sorted(DEVICE_KINDS)
    # The scan report lists a deployment's findings in this order.
    j = judge(facts([add(-10)]), NOW)
    assert [v.kind for v in j.verdicts] == [
        "deployment_failed",
        "deployment_stuck",
        "etg_missing",
        "etg_late",
        "etg_removed",
        "payload_incomplete",
    ]


def test_judgement_state_and_outcome_keep_their_stored_spelling():
    from monitors.rules.enrollment import EtgOutcome, JudgementState, etg_outcome

    on_time = judge(facts([add(-10)]), NOW)
    late = judge(facts([add(90)]), NOW)
    assert on_time.state is JudgementState.CONCLUSIVE and on_time.state == "conclusive"
    assert etg_outcome(on_time) is EtgOutcome.ON_TIME and etg_outcome(on_time) == "on_time"
    assert etg_outcome(late) is EtgOutcome.LATE and f"{etg_outcome(late)}" == "late"


def test_reason_shared_by_every_etg_kind_is_told_once_in_the_summary():
    err = Unverified("GET /v1.0/auditLogs/directoryAudits", UnverifiedReason.FORBIDDEN, "403")
    j = judge(facts(err, member=False), NOW)
    assert j.summary == "could not verify the ETG join: 403"
    etg_kinds = {"etg_missing", "etg_late", "etg_removed"}
    assert {v.kind for v in j.verdicts if isinstance(v, NotEvaluated) and v.unverified} == etg_kinds


def test_failed_deployment_still_reports_a_removal_after_its_join():
    j = judge(facts([add(-30), remove(600)], status=DeploymentStatus.FAILED), NOW)
    assert kinds(j, Finding) == {"deployment_failed", "etg_removed"}
    assert {"etg_missing", "etg_late"} <= kinds(j, NotEvaluated)
    assert j.summary.startswith("deployment failed; ETG join at ")
    assert j.summary.endswith("; removed from the ETG")


def test_a_deployment_without_policy_or_entra_device_is_unverified_naming_both_policy_first():
    j = judge(facts([], policy=None, obj=None, member=False), NOW)
    assert kinds(j, Finding) == set()
    for kind in ("etg_missing", "etg_late", "etg_removed"):
        [verdict] = [v for v in j.verdicts if v.kind == kind]
        assert isinstance(verdict, NotEvaluated)
        reasons = [u.reason for u in verdict.unverified]
        assert reasons == [UnverifiedReason.UNRESOLVED, UnverifiedReason.NOT_YET_VISIBLE]
    assert j.summary == "could not verify the ETG join: " + j.unverified[0].detail
