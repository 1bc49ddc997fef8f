"""The remediation planner, pure: what it refuses from stored evidence, how it weighs the live
group, the cap, and what the anomaly records and resolves as."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from monitors.graph.writes import WriteOutcome, WriteResult
from monitors.models import (
    ETG_SOURCE_ACTION,
    ETG_SOURCE_OPERATOR,
    ETG_SOURCE_SETTINGS,
    Anomaly,
    Clear,
    Group,
    GroupNotFound,
    Scope,
    Status,
    Subject,
    Unverified,
    UnverifiedReason,
)
from monitors.remediation.plan import (
    Action,
    Decision,
    Live,
    PlanItem,
    cap,
    judge,
    matches,
    screen,
)
from monitors.remediation.record import changed, history_line, record
from monitors.rules.enrollment import RESOLVED_BY_ELIMINATION
from monitors.rules.lifecycle import reconcile
from monitors.store.remediations import RemediationEntry

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ETG = str(uuid.uuid4())
DEVICE = str(uuid.uuid4())
CLIENT = str(uuid.uuid4())


def missing(
    name: str = "PC-1",
    *,
    resolved_by: str = "enrollmentProfileName",
    source: str = ETG_SOURCE_ACTION,
    groups: tuple[str, ...] = (ETG,),
    device: str | None = DEVICE,
    status: Status = Status.OPEN,
    first_seen: datetime = T0,
    refined: str | None = None,
) -> Anomaly:
    subject = Subject(
        Scope.DEVICE,
        policy_id="p1",
        policy_name="Sales",
        group_id=groups[0] if groups else None,
        managed_device_id=f"md-{name}",
        device_name=name,
        deployment_key=f"md-{name}_20261130T080000",
    )
    evidence = {
        "device_object_id": device,
        "policy": {
            "id": "p1",
            "name": "Sales",
            "resolved_by": resolved_by,
            "etg_group_ids": list(groups),
            "etg_source": source,
        },
        **({"refined": refined} if refined else {}),
    }
    return Anomaly(
        "etg_missing", subject, status, first_seen, first_seen, f"{name} never joined", "", evidence
    )


def owner_missing(source: str = ETG_SOURCE_OPERATOR, client: str | None = CLIENT) -> Anomaly:
    subject = Subject(Scope.POLICY, policy_id="p1", policy_name="Sales", group_id=ETG)
    evidence: dict[str, object] = {"etg_group_ids": [ETG], "etg_source": source}
    if client:
        evidence["provisioning_client_object_id"] = client
    return Anomaly(
        "etg_owner_missing",
        subject,
        Status.OPEN,
        T0,
        T0,
        "no owner",
        "",
        evidence,  # type: ignore[arg-type]
    )


def group(**overrides: object) -> Group:
    values: dict[str, object] = {
        "id": ETG,
        "display_name": "Sales ETG",
        "security_enabled": True,
        "mail_enabled": False,
        "group_types": (),
        "is_assignable_to_role": False,
    }
    values.update(overrides)
    return Group(**values)  # type: ignore[arg-type]


def planned(anomaly: Anomaly) -> tuple[list, list[PlanItem]]:
    return screen([anomaly], {})


def test_a_concluded_missing_device_with_a_confirmed_etg_becomes_an_add_member_target():
    targets, refused = planned(missing())
    assert refused == []
    [target] = targets
    assert (target.action, target.group_id, target.object_id) == (Action.ADD_MEMBER, ETG, DEVICE)
    assert target.command == "etg-monitor remediate --apply --device PC-1"


@pytest.mark.parametrize(
    ("anomaly", "words"),
    [
        (missing(source=ETG_SOURCE_SETTINGS), "known only from the policy's settings"),
        (missing(resolved_by=RESOLVED_BY_ELIMINATION), "resolved only by elimination"),
        (missing(device=None), "Entra object id is not known"),
        (missing(groups=()), "names no ETG"),
        (missing(groups=(ETG, str(uuid.uuid4()))), "names 2 ETGs"),
        (missing(status=Status.SUPPRESSED), "suppressed"),
        (missing(refined="etg_removed"), "removed from its ETG after joining"),
        (owner_missing(source=ETG_SOURCE_SETTINGS), "known only from the policy's settings"),
        (owner_missing(client=None), "object id is not known"),
    ],
)
def test_stored_evidence_the_monitor_must_not_act_on_is_refused_in_words(anomaly, words):
    targets, [item] = planned(anomaly)
    assert targets == []
    assert item.decision is Decision.REFUSED
    assert words in item.reason


def test_an_owner_target_takes_the_provisioning_client_read_in_graph_when_evidence_lacks_it():
    [target], _ = screen([owner_missing(client=None)], {}, provisioning_client=CLIENT)
    assert (target.action, target.object_id) == (Action.ADD_OWNER, CLIENT)


@pytest.mark.parametrize(
    ("live_group", "words"),
    [
        (group(group_types=("DynamicMembership",)), "dynamic"),
        (group(membership_rule='(device.devicePhysicalIds -any _ -eq "x")'), "dynamic"),
        (group(is_assignable_to_role=True), "role-assignable"),
        (group(mail_enabled=True), "mail-enabled"),
        (group(security_enabled=False), "not a security group"),
        (GroupNotFound(ETG, "GET /v1.0/groups/{id}"), "does not exist"),
    ],
)
def test_groups_the_monitor_never_writes_to_are_refused(live_group, words):
    [target], _ = planned(missing())
    item = judge(target, Live(live_group, False))
    assert item.decision is Decision.REFUSED
    assert words in item.reason


def test_an_unreadable_group_or_membership_is_unverified_and_never_written():
    [target], _ = planned(missing())
    failed = Unverified("GET /v1.0/groups/{id}", UnverifiedReason.UNAVAILABLE, "timeout")
    assert judge(target, Live(failed)).decision is Decision.UNVERIFIED
    item = judge(target, Live(group(), failed))
    assert item.decision is Decision.UNVERIFIED
    assert item.unverified == (failed,)


def test_already_a_member_is_done_without_a_write():
    [target], _ = planned(missing())
    item = judge(target, Live(group(), True))
    assert item.decision is Decision.PRESENT
    assert "already a member" in item.reason


def entry(state: str, attempt: int = 1, at: datetime = T0) -> RemediationEntry:
    return RemediationEntry(
        anomaly_key=missing().key,
        attempt=attempt,
        action="add_member",
        group_id=ETG,
        object_id=DEVICE,
        mode="auto",
        started_at=at,
        why="",
        state=state,
        client_request_id="c-1",
    )


def test_an_interrupted_write_found_in_place_is_verified_not_repeated():
    [target], _ = planned(missing())
    interrupted = entry("started")
    item = judge(target, Live(group(), True), [interrupted])
    assert item.decision is Decision.VERIFIED
    assert item.reason == "verified after an interrupted run"
    assert item.interrupted is interrupted


def test_an_interrupted_write_not_in_place_is_written_again_on_the_same_log_entry():
    [target], _ = planned(missing())
    interrupted = entry("started")
    item = judge(target, Live(group(), False), [interrupted])
    assert item.decision is Decision.WRITE
    assert item.interrupted is interrupted


def test_a_404_is_not_retried_until_a_scan_sees_the_anomaly_again():
    gone = entry("gone", at=T0 + timedelta(minutes=5))
    _, [item] = screen([missing()], {missing().key: [gone]})
    assert "404" in item.reason
    seen_again = missing()
    seen_again.last_seen = T0 + timedelta(hours=1)
    targets, refused = screen([seen_again], {missing().key: [gone]})
    assert len(targets) == 1
    assert refused == []


def test_the_cap_keeps_the_oldest_anomalies_and_defers_the_rest_saying_why():
    anomalies = [missing(f"PC-{i}", first_seen=T0 + timedelta(minutes=i)) for i in range(5)]
    targets, _ = screen(list(reversed(anomalies)), {})
    items = cap([judge(t, Live(group(), False)) for t in targets], 2)
    writes = [i.target.device_name for i in items if i.decision is Decision.WRITE]
    deferred = [i for i in items if i.decision is Decision.DEFERRED]
    assert writes == ["PC-0", "PC-1"]
    assert len(deferred) == 3
    assert all(
        i.reason == "waits for the next run: the cap of 2 per run was reached" for i in deferred
    )


def test_device_and_policy_narrowing_matches_names_case_insensitively():
    [target], _ = planned(missing("PC-7"))
    assert matches(target, "pc-7", None)
    assert not matches(target, "PC-8", None)
    assert matches(target, None, "sales")
    assert not matches(target, None, "Finance")


def test_a_dry_run_record_names_the_command_and_repeats_are_not_news():
    [target], _ = planned(missing())
    item = judge(target, Live(group(), False))
    first = record(item, "dry-run", T0)
    assert first is not None and first["state"] == "planned"
    line = history_line(first)
    assert line.startswith("remediation (dry run): would add it to its ETG")
    assert "`etg-monitor remediate --apply --device PC-1`" in line
    again = record(item, "dry-run", T0 + timedelta(minutes=10))
    assert again is not None and not changed(first, again)


def test_a_done_write_is_recorded_with_its_request_id_and_resolves_as_remediated():
    anomaly = missing()
    [target], _ = planned(anomaly)
    item = judge(target, Live(group(), False))
    outcome = WriteOutcome(WriteResult.DONE, "client-1", "graph-req-9")
    done = record(item, "auto", T0 + timedelta(minutes=1), outcome)
    assert done is not None and done["written"] is True
    assert history_line(done) == (
        f"remediation: added to its ETG automatically at {(T0 + timedelta(minutes=1)).isoformat()}"
        " (request id graph-req-9)"
    )
    anomaly.remediation = done
    late = "joined 12 min after provisioning completed (after the etg_missing alert)"
    [transition] = reconcile(
        {anomaly.key: anomaly},
        [Clear(anomaly.kind, anomaly.subject, late)],
        T0 + timedelta(minutes=20),
    )
    resolved = transition.anomaly
    why = resolved.history[-1]["why"]
    assert isinstance(why, str)
    assert why.startswith("remediated: added to its ETG by etg-monitor at ")
    assert why.endswith(late)
    assert resolved.remediation is not None and resolved.remediation["resolved_as"] == "remediated"


def test_a_clear_without_a_monitor_write_resolves_as_before():
    anomaly = missing()
    [transition] = reconcile(
        {anomaly.key: anomaly}, [Clear(anomaly.kind, anomaly.subject, "joined")], T0
    )
    assert transition.anomaly.history[-1]["why"] == "joined"
    assert transition.anomaly.remediation is None


def test_a_forbidden_write_names_the_missing_permission():
    [target], _ = planned(missing())
    item = judge(target, Live(group(), False))
    failed = Unverified(
        "POST /v1.0/groups/{id}/members/$ref",
        UnverifiedReason.FORBIDDEN,
        "Insufficient privileges",
        permission="GroupMember.ReadWrite.All and Device.ReadWrite.All",
        status=403,
    )
    kept = record(item, "auto", T0, WriteOutcome(WriteResult.FORBIDDEN, "c", "", "", failed))
    assert kept is not None and kept["written"] is False
    assert "GroupMember.ReadWrite.All and Device.ReadWrite.All" in str(kept["reason"])
