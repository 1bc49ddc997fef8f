"""Which pending deployments a targeted re-check judges again (monitors.scan.recheck), pure."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from monitors.models import (
    Deployment,
    DeploymentStatus,
    MembershipEvent,
    MembershipOp,
    NotEvaluated,
    Policy,
    PolicyMatch,
    Scope,
)
from monitors.scan.recheck import (
    NEVER,
    audit_settled_until,
    observation_since,
    select,
)
from monitors.store.scan_state import DeploymentRecord

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=10)
ETG_A, ETG_B = "aaaaaaaa-0000-0000-0000-00000000000a", "bbbbbbbb-0000-0000-0000-00000000000b"


def record(
    n: int,
    *,
    completed_ago_min: float | None = 30,
    judged_ago_min: float | None = 1,
    etg: str = ETG_A,
    status: DeploymentStatus = DeploymentStatus.SUCCESS,
    events: tuple[MembershipEvent, ...] = (),
    object_id: str | None = "auto",
) -> DeploymentRecord:
    duration = 1800
    ago = completed_ago_min if completed_ago_min is not None else 0
    enrolled = NOW - timedelta(minutes=ago, seconds=duration)
    deployment = Deployment(
        f"md-{n:04d}",
        enrolled,
        status if completed_ago_min is not None else DeploymentStatus.IN_PROGRESS,
        duration_seconds=duration if completed_ago_min is not None else None,
    )
    r = DeploymentRecord(
        deployment,
        policy=PolicyMatch(Policy("p1", "Policy", "t"), (etg,), "enrollmentProfileName"),
        object_id=f"obj-{n:04d}" if object_id == "auto" else object_id,
        events=list(events),
    )
    r.updated_at = NOW - timedelta(minutes=judged_ago_min) if judged_ago_min is not None else None
    return r


def seen(r: DeploymentRecord, group: str = ETG_A, op: str = "add", page: str = "p1"):
    return MembershipEvent(
        MembershipOp(op), group, r.object_id or "", NOW, False, "delta", f"obs:{r.object_id}|{page}"
    )


def by_key(*records: DeploymentRecord) -> dict[str, DeploymentRecord]:
    return {r.key: r for r in records}


def observed(*events: MembershipEvent) -> dict[str, list[MembershipEvent]]:
    out: dict[str, list[MembershipEvent]] = {}
    for e in events:
        out.setdefault(e.device_object_id, []).append(e)
    return out


def test_a_notified_group_selects_only_the_deployments_its_delta_saw_change():
    changed, quiet, other_group = record(1), record(2), record(3, etg=ETG_B)
    chosen = select(
        by_key(changed, quiet, other_group),
        observed(seen(changed), seen(other_group, ETG_B)),
        [ETG_A],
        NOW,
        GRACE,
    )
    assert chosen.keys == (changed.key,) and chosen.waiting == ()


def test_an_observation_the_record_already_holds_selects_nothing():
    event = seen(record(1))
    held = record(1, events=(event,))
    assert select(by_key(held), observed(event), [ETG_A], NOW, GRACE).keys == ()


def test_an_observation_in_a_group_not_caught_up_by_this_run_selects_nothing():
    r = record(1)
    assert select(by_key(r), observed(seen(r)), [ETG_B], NOW, GRACE).keys == ()


def test_a_deployment_is_selected_once_its_grace_passed_since_it_was_last_judged():
    judged_before_grace = record(1, completed_ago_min=12, judged_ago_min=5)
    judged_after_grace = record(2, completed_ago_min=12, judged_ago_min=1)
    within_grace = record(3, completed_ago_min=8, judged_ago_min=5)
    never_judged = record(4, completed_ago_min=11, judged_ago_min=None)
    records = by_key(judged_before_grace, judged_after_grace, within_grace, never_judged)
    chosen = select(records, {}, [], NOW, GRACE)
    assert set(chosen.keys) == {judged_before_grace.key, never_judged.key}


def test_with_early_conclusion_off_the_grace_selects_nothing():
    r = record(1, completed_ago_min=12, judged_ago_min=5)
    assert select(by_key(r), {}, [], NOW, None).keys == ()
    assert select(by_key(r), observed(seen(r)), [ETG_A], NOW, None).keys == (r.key,)


def test_deployments_the_scan_must_read_first_are_never_selected():
    running = record(1, completed_ago_min=None)
    failed = record(2, status=DeploymentStatus.FAILED)
    no_device = record(3, object_id=None)
    no_etg = record(4, etg="")
    no_etg.policy = PolicyMatch(Policy("p2", "No ETG", "t"), (), "enrollmentProfileName")
    records = by_key(running, failed, no_device, no_etg)
    events = observed(*(seen(r) for r in (running, failed, no_etg)))
    assert select(records, events, [ETG_A], NOW, GRACE).keys == ()


def test_the_bound_takes_the_oldest_completions_and_names_the_groups_left_waiting():
    records = [record(n, completed_ago_min=30 + n, etg=ETG_A if n % 2 else ETG_B) for n in range(7)]
    events = observed(*(seen(r, r.policy.etg_group_ids[0]) for r in records))
    chosen = select(by_key(*records), events, [ETG_A, ETG_B], NOW, GRACE, limit=3)
    oldest = sorted(records, key=lambda r: r.deployment.completed_at)
    assert chosen.keys == tuple(r.key for r in oldest[:3])
    assert set(chosen.waiting) == {r.key for r in oldest[3:]}
    assert chosen.deferred_groups == {r.policy.etg_group_ids[0] for r in oldest[3:]}


def test_waiting_only_for_the_grace_defers_no_group():
    records = [record(n, completed_ago_min=20 + n, judged_ago_min=15) for n in range(4)]
    chosen = select(by_key(*records), {}, [ETG_A], NOW, GRACE, limit=2)
    assert len(chosen.keys) == 2 and len(chosen.waiting) == 2
    assert chosen.deferred_groups == frozenset()


def test_observations_are_read_from_the_oldest_judgement_in_each_group_read():
    older = record(1, judged_ago_min=9)
    newer = record(2, judged_ago_min=2)
    due = record(3, etg=ETG_B, completed_ago_min=12, judged_ago_min=4)
    unrelated = record(4, etg=ETG_B, judged_ago_min=15)  # judged after its grace passed
    floor = NOW - timedelta(days=30)
    since = observation_since(by_key(older, newer, due, unrelated), [ETG_A], NOW, GRACE, floor)
    assert set(since) == {ETG_A, ETG_B}
    assert since[ETG_A] == older.updated_at - timedelta(minutes=15)
    # ETG_B is read for the deployment whose grace passed; the other one there does not count.
    assert since[ETG_B] == due.updated_at - timedelta(minutes=15)


def test_the_audit_log_has_settled_only_as_far_as_the_scan_read_it():
    latency = timedelta(minutes=60)
    marks = {"audit:" + ETG_A: NOW - timedelta(minutes=7), "audit:" + ETG_B: NOW}
    assert audit_settled_until(marks, [ETG_A, ETG_B], latency) == NOW - timedelta(minutes=67)
    assert audit_settled_until(marks, [ETG_B, "never-read"], latency) == NEVER
    legacy = {"audit": NOW - timedelta(minutes=3)}
    assert audit_settled_until(legacy, [ETG_A], latency) == NOW - timedelta(minutes=63)


def test_a_recheck_leaves_the_install_reports_to_the_scan_and_never_settles_for_them():
    from monitors.models import Clear, Subject
    from monitors.rules.enrollment import Judgement, JudgementState
    from monitors.scan.recheck import without_payload

    r = record(1)
    subject = Subject(Scope.DEVICE, deployment_key=r.key)
    judged = Judgement(
        r.deployment,
        subject,
        (Clear("payload_incomplete", subject), Clear("etg_missing", subject)),
        JudgementState.CONCLUSIVE,
        "ok",
    )
    out = without_payload(judged)
    assert out.state is JudgementState.PENDING
    payload, etg = out.verdicts
    assert isinstance(payload, NotEvaluated) and payload.pending
    assert etg == judged.verdicts[1]
    unverified = dataclasses.replace(judged, state=JudgementState.UNVERIFIED)
    assert without_payload(unverified).state is JudgementState.UNVERIFIED
