"""Enrollment rules: did this deployment's device join its ETG before provisioning completed?

``judge`` is a pure function of one deployment's facts and the current time. It never guesses:
evidence that may still arrive (a running deployment, an audit event not yet due) makes a
verdict pending, and evidence that cannot be read makes it unverified. Only conclusive
evidence produces a Finding or a Clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from monitors.models import (
    JSON,
    Clear,
    Deployment,
    DeploymentFacts,
    DeploymentStatus,
    EtgLookup,
    Finding,
    MembershipEvent,
    MembershipOp,
    NotEvaluated,
    Policy,
    PolicyMatch,
    Scope,
    Subject,
    Unverified,
    UnverifiedReason,
    UserPolicies,
    Verdict,
)
from monitors.rules.kinds import (
    DEPLOYMENT_FAILED,
    DEPLOYMENT_STUCK,
    ETG_LATE,
    ETG_MISSING,
    ETG_REMOVED,
    KINDS,
    PAYLOAD_INCOMPLETE,
)

State = Literal["conclusive", "pending", "unverified"]
BAD_PAYLOAD = {"skipped", "failed"}
DONE_PAYLOAD = {"installed", "succeeded", "success", "not applicable"}


@dataclass(frozen=True, slots=True)
class ScanRules:
    stuck_grace: timedelta = timedelta(minutes=30)
    default_timeout_minutes: int = 60


@dataclass(frozen=True, slots=True)
class JoinAnalysis:
    member_at_completion: bool
    joined_at: datetime | None  # first join, exact or an upper bound
    join_event: MembershipEvent | None
    late_join: MembershipEvent | None  # first join after completion
    removal: MembershipEvent | None  # a removal after joining, not followed by a re-add
    readded_after_removal: MembershipEvent | None


@dataclass(frozen=True, slots=True)
class Judgement:
    deployment: Deployment
    subject: Subject
    verdicts: tuple[Verdict, ...]
    state: State
    summary: str
    joined_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def unverified(self) -> tuple[Unverified, ...]:
        return tuple(u for v in self.verdicts if isinstance(v, NotEvaluated) for u in v.unverified)


def subject_for(facts: DeploymentFacts) -> Subject:
    d = facts.deployment
    match = facts.policy if isinstance(facts.policy, PolicyMatch) else None
    return Subject(
        Scope.DEVICE,
        policy_id=match.policy.id if match else None,
        policy_name=match.policy.name if match else None,
        group_id=match.etg_group_ids[0] if match and match.etg_group_ids else None,
        managed_device_id=d.managed_device_id,
        device_name=d.device_name,
        serial_number=d.serial_number,
        user_principal_name=d.user_principal_name,
        deployment_key=d.key,
    )


def _relevant(facts: DeploymentFacts) -> list[MembershipEvent]:
    if not isinstance(facts.policy, PolicyMatch) or not isinstance(facts.device_object_id, str):
        return []
    if isinstance(facts.events, Unverified):
        return []
    groups = set(facts.policy.etg_group_ids)
    events = [
        e
        for e in facts.events
        if e.group_id in groups and e.device_object_id == facts.device_object_id
    ]
    # Same instant: an add observed with a removal sorts the removal last (the safer reading).
    return sorted(events, key=lambda e: (e.at, e.op is MembershipOp.REMOVE, not e.exact))


def analyse_joins(events: list[MembershipEvent], completed_at: datetime) -> JoinAnalysis:
    member = False
    for event in events:
        if event.at > completed_at:
            break
        member = event.op is MembershipOp.ADD
    adds = [e for e in events if e.op is MembershipOp.ADD]
    first = adds[0] if adds else None
    late = next((e for e in adds if e.at > completed_at), None) if not member else None
    removal = readded = None
    if first is not None:
        for event in events:
            if event.at < first.at:
                continue
            if event.op is MembershipOp.REMOVE:
                removal, readded = event, None
            elif removal is not None and readded is None:
                readded = event
    return JoinAnalysis(
        member,
        first.at if first else None,
        first,
        late,
        removal if readded is None else None,
        readded,
    )


def _ev(event: MembershipEvent | None) -> JSON:
    return event.to_json() if event else None


def _seconds(delta: timedelta) -> int:
    return round(delta.total_seconds())


def _human(delta: timedelta) -> str:
    s = abs(_seconds(delta))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s / 3600:.1f} h"


class _Collector:
    """Accumulates one deployment's verdicts and the phrases that explain them."""

    def __init__(self, subject: Subject, base: dict[str, JSON]) -> None:
        self.subject = subject
        self.base = base
        self.verdicts: list[Verdict] = []
        self.why: list[str] = []

    def found(self, kind: str, explanation: str, evidence: dict[str, JSON]) -> None:
        self.verdicts.append(
            Finding(kind, self.subject, explanation, KINDS[kind].fix, {**self.base, **evidence})
        )

    def clear(self, kind: str, reason: str) -> None:
        self.verdicts.append(Clear(kind, self.subject, reason))

    def pending(self, kind: str, reason: str) -> None:
        self.verdicts.append(NotEvaluated(kind, self.subject, reason=reason, pending=True))

    def unknown(self, kind: str, items: tuple[Unverified, ...]) -> None:
        self.verdicts.append(NotEvaluated(kind, self.subject, items))

    def not_applicable(self, kind: str, reason: str) -> None:
        self.verdicts.append(NotEvaluated(kind, self.subject, reason=reason))


def judge(
    facts: DeploymentFacts,
    now: datetime,
    rules: ScanRules = ScanRules(),
    *,
    previously_missing: bool = False,
) -> Judgement:
    d = facts.deployment
    subject = subject_for(facts)
    completed = d.completed_at
    base: dict[str, JSON] = {
        "enrolled_at": {
            "value": d.enrolled_at.isoformat(),
            "source": "AutopilotV2DeploymentStatus.EnrollmentTimeInUtc",
        },
        "status": {
            "value": d.status_label or d.status.value,
            "source": "AutopilotV2DeploymentStatus.DeploymentStatus",
        },
        "duration_seconds": d.duration_seconds,
        "provisioning_completed_at": completed.isoformat() if completed else None,
        "device_object_id": facts.device_object_id
        if isinstance(facts.device_object_id, str)
        else None,
    }
    if isinstance(facts.policy, PolicyMatch):
        base["policy"] = {
            "id": facts.policy.policy.id,
            "name": facts.policy.policy.name,
            "resolved_by": facts.policy.how,
            "etg_group_ids": list(facts.policy.etg_group_ids),
            "etg_source": facts.policy.etg_source,
        }

    out = _Collector(subject, base)
    name = d.device_name or d.managed_device_id

    # deployment outcome ----------------------------------------------------------------------
    unknown_status = Unverified(
        "AutopilotV2DeploymentStatus.DeploymentStatus",
        UnverifiedReason.MALFORMED,
        f"unknown deployment status {d.status_label!r}",
    )
    if d.status is DeploymentStatus.FAILED:
        out.found(
            DEPLOYMENT_FAILED.name,
            f"Device preparation failed on {name} (result code {d.result_code}, phase {d.phase}).",
            {
                "result_code": d.result_code,
                "phase": d.phase,
                "current_provisioning_phase": d.current_phase,
            },
        )
    elif d.status is DeploymentStatus.SUCCESS:
        out.clear(DEPLOYMENT_FAILED.name, "the deployment succeeded")
    elif d.status is DeploymentStatus.IN_PROGRESS:
        out.pending(DEPLOYMENT_FAILED.name, "deployment in progress")
    else:
        out.unknown(DEPLOYMENT_FAILED.name, (unknown_status,))

    timeout = rules.default_timeout_minutes
    if isinstance(facts.policy, PolicyMatch) and facts.policy.policy.timeout_minutes:
        timeout = facts.policy.policy.timeout_minutes
    deadline = d.enrolled_at + timedelta(minutes=timeout) + rules.stuck_grace
    if d.status is DeploymentStatus.IN_PROGRESS:
        if now > deadline:
            out.found(
                DEPLOYMENT_STUCK.name,
                # Stable text and evidence: a stuck deployment is not rewritten every scan.
                f"Provisioning of {name} has been in progress since "
                f"{d.enrolled_at:%Y-%m-%d %H:%M} UTC, past the policy timeout of {timeout} min.",
                {"timeout_minutes": timeout, "stuck_since": deadline.isoformat()},
            )
            out.why.append("stuck in progress")
        else:
            out.pending(DEPLOYMENT_STUCK.name, "within the policy timeout")
            out.why.append("deployment in progress")
    elif d.status is DeploymentStatus.UNKNOWN:
        out.unknown(DEPLOYMENT_STUCK.name, (unknown_status,))
    else:
        out.clear(DEPLOYMENT_STUCK.name, "the deployment finished")

    # ETG membership --------------------------------------------------------------------------
    etg_kinds = (ETG_MISSING.name, ETG_LATE.name, ETG_REMOVED.name)
    joined_at = None
    blockers = _membership_blockers(facts)
    if d.status is DeploymentStatus.UNKNOWN:
        for kind in etg_kinds:
            out.unknown(kind, (unknown_status,))
    elif d.status is DeploymentStatus.IN_PROGRESS or completed is None:
        for kind in etg_kinds:
            out.pending(kind, "provisioning has not completed")
    elif isinstance(facts.policy, PolicyMatch) and not facts.policy.etg_group_ids:
        # Nothing to join: the policy-level etg_not_configured anomaly is the finding.
        for kind in etg_kinds:
            out.not_applicable(kind, "the policy has no ETG")
        out.why.append("policy has no ETG (see etg_not_configured)")
    elif blockers:
        for kind in etg_kinds:
            out.unknown(kind, blockers)
        out.why.append("could not verify the ETG join: " + blockers[0].detail)
    else:
        assert isinstance(facts.policy, PolicyMatch)
        analysis = analyse_joins(_relevant(facts), completed)
        joined_at = analysis.joined_at
        join_evidence = {"join": _ev(analysis.join_event), "late_join": _ev(analysis.late_join)}
        failed = d.status is DeploymentStatus.FAILED
        if failed:
            out.not_applicable(ETG_MISSING.name, "the deployment failed")
            out.not_applicable(ETG_LATE.name, "the deployment failed")
            out.why.append(
                "deployment failed; ETG join "
                + (f"at {analysis.joined_at.isoformat()}" if analysis.joined_at else "never seen")
            )
        else:
            _judge_join(out, facts, analysis, completed, previously_missing, join_evidence, name)
        if analysis.removal is not None:
            removal = analysis.removal
            out.found(
                ETG_REMOVED.name,
                f"{name} was removed from its ETG at {removal.at.isoformat()}"
                + (f" by {removal.actor}" if removal.actor else "")
                + "; Intune will pull the apps and policies assigned to it.",
                {"removal": removal.to_json(), **join_evidence},
            )
            out.why.append("removed from the ETG")
        elif analysis.readded_after_removal is not None:
            out.clear(
                ETG_REMOVED.name, f"re-added at {analysis.readded_after_removal.at.isoformat()}"
            )
        else:
            out.clear(ETG_REMOVED.name, "still in the ETG")

    # payload ---------------------------------------------------------------------------------
    _judge_payload(out, facts, name)

    state: State = "conclusive"
    if any(isinstance(v, NotEvaluated) and v.unverified for v in out.verdicts):
        state = "unverified"
    elif any(isinstance(v, NotEvaluated) and v.pending for v in out.verdicts):
        state = "pending"
    problems = [v.kind for v in out.verdicts if isinstance(v, Finding)]
    summary = "; ".join(out.why) if out.why else ", ".join(problems) or "ok"
    return Judgement(d, subject, tuple(out.verdicts), state, summary, joined_at, completed)


def _membership_blockers(facts: DeploymentFacts) -> tuple[Unverified, ...]:
    """Facts without which the ETG question cannot be decided."""
    items: list[Unverified] = []
    if isinstance(facts.policy, Unverified):
        items.append(facts.policy)
    elif facts.policy is None:
        items.append(
            Unverified(
                "policy resolution",
                UnverifiedReason.UNRESOLVED,
                "cannot tell which device preparation policy applied",
            )
        )
    if isinstance(facts.device_object_id, Unverified):
        items.append(facts.device_object_id)
    elif facts.device_object_id is None:
        items.append(
            Unverified(
                "GET /v1.0/devices",
                UnverifiedReason.NOT_YET_VISIBLE,
                "no Entra device found for this deployment",
            )
        )
    if isinstance(facts.events, Unverified):
        items.append(facts.events)
    if isinstance(facts.audit_settled_until, Unverified):
        items.append(facts.audit_settled_until)
    return tuple(items)


def needs_membership_check(facts: DeploymentFacts) -> bool:
    """True when only the current membership can decide between missing and unknown."""
    d = facts.deployment
    completed = d.completed_at
    if d.status is not DeploymentStatus.SUCCESS or completed is None:
        return False
    if _membership_blockers(facts) or facts.is_member_now is not None:
        return False
    assert isinstance(facts.audit_settled_until, datetime)
    if facts.audit_settled_until < completed:
        return False
    return not any(e.op is MembershipOp.ADD for e in _relevant(facts))


def _judge_join(
    out: _Collector,
    facts: DeploymentFacts,
    analysis: JoinAnalysis,
    completed: datetime,
    previously_missing: bool,
    join_evidence: dict[str, JSON],
    name: str,
) -> None:
    settled = facts.audit_settled_until
    assert isinstance(settled, datetime)
    if analysis.member_at_completion and analysis.joined_at is not None:
        gap = completed - analysis.joined_at
        out.clear(ETG_MISSING.name, "joined before completion")
        out.clear(ETG_LATE.name, "joined before completion")
        out.why.append(f"joined {_human(gap)} before provisioning completed")
        return
    late = analysis.late_join
    if late is not None and (late.exact or settled >= late.at):
        gap = late.at - completed
        reason = (
            f"joined the ETG at {late.at.isoformat()}, {_human(gap)} after provisioning completed"
        )
        out.clear(ETG_MISSING.name, reason)
        if previously_missing or not late.exact:
            # The join came after an etg_missing alert (usually the operator's own fix), or
            # only its upper bound is known: the history of etg_missing records it.
            out.clear(ETG_LATE.name, reason)
        else:
            out.found(
                ETG_LATE.name,
                f"{name} joined its ETG {_human(gap)} after provisioning completed: the user "
                "reached the desktop before the ETG's apps and policies installed.",
                {**join_evidence, "gap_seconds": _seconds(gap)},
            )
        out.why.append(f"joined {_human(gap)} after provisioning completed")
        return
    if settled < completed or (late is not None and settled < late.at):
        for kind in (ETG_MISSING.name, ETG_LATE.name):
            out.pending(kind, "audit events for the completion time may still arrive")
        out.why.append("waiting for the audit log")
        return
    member_now = facts.is_member_now
    if member_now is None:
        for kind in (ETG_MISSING.name, ETG_LATE.name):
            out.pending(kind, "current membership not checked yet")
        out.why.append("membership check pending")
        return
    if isinstance(member_now, Unverified):
        for kind in (ETG_MISSING.name, ETG_LATE.name):
            out.unknown(kind, (member_now,))
        out.why.append("could not check current membership")
        return
    if member_now:
        gap_item = Unverified(
            "GET /v1.0/auditLogs/directoryAudits",
            UnverifiedReason.RETENTION,
            "the device is in the ETG but no audit event shows when it joined",
        )
        for kind in (ETG_MISSING.name, ETG_LATE.name):
            out.unknown(kind, (gap_item,))
        out.why.append("in the ETG, join time unknown")
        return
    out.found(
        ETG_MISSING.name,
        f"Provisioning of {name} completed at {completed.isoformat()} and the device never "
        "joined its ETG: the user has no ETG apps or policies.",
        {**join_evidence, "member_now": False, "audit_searched_until": settled.isoformat()},
    )
    out.clear(ETG_LATE.name, "not joined at all (see etg_missing)")
    out.why.append("never joined the ETG")


def _judge_payload(out: _Collector, facts: DeploymentFacts, name: str) -> None:
    kind = PAYLOAD_INCOMPLETE.name
    payload = facts.payload
    d = facts.deployment
    if payload is None:
        out.not_applicable(kind, "detailed app and script reports are not enabled")
    elif isinstance(payload, Unverified):
        out.unknown(kind, (payload,))
    elif d.status is DeploymentStatus.IN_PROGRESS:
        out.pending(kind, "deployment in progress")
    else:
        bad = [i for i in payload if i.status.lower() in BAD_PAYLOAD]
        if bad:
            # Every item is named: on-call fixes each one, and a list cut at five hides the rest.
            parts = [
                f"{label}: " + ", ".join(f"{i.name} ({i.status})" for i in items)
                for label, items in (
                    ("apps", [i for i in bad if i.kind == "app"]),
                    ("scripts", [i for i in bad if i.kind != "app"]),
                )
                if items
            ]
            out.found(
                kind,
                f"{len(bad)} of {len(payload)} apps and scripts did not install on {name}: "
                + "; ".join(parts)
                + ".",
                {
                    "items": [
                        {"kind": i.kind, "id": i.id, "name": i.name, "status": i.status}
                        for i in payload
                    ]
                },
            )
        elif all(i.status.lower() in DONE_PAYLOAD for i in payload):
            out.clear(kind, "every app and script installed")
        else:
            out.pending(kind, "apps or scripts still installing")


PolicyEntry = tuple[Policy, EtgLookup | Unverified]
UNASSIGNED_PRIORITY = 1 << 30


def _matched(entry: PolicyEntry, how: str) -> PolicyMatch | Unverified:
    policy, etg = entry
    if isinstance(etg, Unverified):
        return etg
    return PolicyMatch(policy, etg.group_ids, how, etg.source)


def _by_assignment(
    policies: Sequence[PolicyEntry], assigned: UserPolicies
) -> PolicyMatch | Unverified | None:
    """Intune's own choice: among the policies assigned to the user, the lowest priority."""
    candidates = [e for e in policies if e[0].id in assigned.policy_ids]
    if not candidates:
        return None

    def priority(entry: PolicyEntry) -> int:
        return entry[0].priority if entry[0].priority is not None else UNASSIGNED_PRIORITY

    best = min(candidates, key=priority)
    rivals = [e for e in candidates if priority(e) == priority(best) and e is not best]
    unknown = [
        e for e in policies if e[0].id in assigned.unreadable and priority(e) <= priority(best)
    ]
    if rivals or unknown:
        names = ", ".join(e[0].name for e in [best, *rivals, *unknown])
        return Unverified(
            "policy resolution",
            UnverifiedReason.UNRESOLVED,
            f"{assigned.user} is assigned several device preparation policies ({names}) and "
            "their priorities do not decide which applied",
        )
    rank = f"priority {best[0].priority}" if best[0].priority is not None else "only one assigned"
    return _matched(best, f"assignment to {assigned.user} ({rank})")


def resolve_policy(
    profile_name: str | None,
    policies: Sequence[PolicyEntry],
    joined_groups: Iterable[str] = (),
    assigned: UserPolicies | Unverified | None = None,
) -> PolicyMatch | Unverified | None:
    """Which device preparation policy a deployment used.

    The report carries no policy id. In order: the enrollment profile name Intune stamps on the
    managed device (since 2409, not always); as Intune picks it, the lowest-priority policy
    among those assigned to the enrolling user; the ETG the device was added to; the only
    policy. Unverified when nothing decides, saying why; None when nothing was known at all.
    """
    if profile_name:
        wanted = profile_name.strip().casefold()
        named = [p for p in policies if p[0].name.strip().casefold() == wanted]
        if len(named) == 1:
            return _matched(named[0], "enrollmentProfileName")
    by_user = _by_assignment(policies, assigned) if isinstance(assigned, UserPolicies) else None
    if by_user is not None:
        return by_user
    joined = set(joined_groups)
    by_group = [
        p
        for p in policies
        if not isinstance(p[1], Unverified) and joined.intersection(p[1].group_ids)
    ]
    if len(by_group) == 1:
        return _matched(by_group[0], "ETG membership")
    if len(policies) == 1:
        return _matched(policies[0], "only device preparation policy")
    if isinstance(assigned, Unverified):
        return assigned
    if isinstance(assigned, UserPolicies):
        return Unverified(
            "policy resolution",
            UnverifiedReason.UNRESOLVED,
            f"{assigned.user} is in no group any device preparation policy is assigned to, "
            "and the device has no enrollment profile name or ETG join that names one",
        )
    return None


def etg_outcome(j: Judgement) -> str:
    """One word per deployment for reports: on_time, late, missing, no_etg, failed, in_progress,
    pending or unverified."""
    found = {v.kind for v in j.verdicts if isinstance(v, Finding)}
    d = j.deployment
    if d.status is DeploymentStatus.FAILED:
        return "failed"
    if ETG_MISSING.name in found:
        return "missing"
    if ETG_LATE.name in found:
        return "late"
    if d.status is DeploymentStatus.IN_PROGRESS:
        return "in_progress"
    if j.state == "unverified":
        return "unverified"
    if j.state == "pending" and j.joined_at is None:
        return "pending"
    if j.subject.policy_id and not j.subject.group_id:
        return "no_etg"
    if j.joined_at is not None and j.completed_at is not None:
        return "on_time" if j.joined_at <= j.completed_at else "late"
    return "pending"
