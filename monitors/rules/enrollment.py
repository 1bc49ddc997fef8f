"""Enrollment rules: did this deployment's device join its ETG before provisioning completed?

Each device anomaly kind is decided by one small pure rule over a ``Case`` (one deployment's
facts, the current time, and what every rule derives from them), registered in
``DEVICE_RULES`` in the order ``judge`` asks them. ``judge`` only orchestrates. No rule
guesses: evidence that may still arrive (a running deployment, an audit event not yet due)
makes a verdict pending, and evidence that cannot be read makes it unverified. Only
conclusive evidence produces a Finding or a Clear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum, auto

from monitors.models import (
    JSON,
    Anomaly,
    Clear,
    Deployment,
    DeploymentFacts,
    DeploymentStatus,
    EarlyCheck,
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
from monitors.rules.result_codes import describe_failure

# Install statuses as the deployment report spells them, compared in lower case.
BAD_PAYLOAD = frozenset({"skipped", "failed"})
DONE_PAYLOAD = frozenset({"installed", "succeeded", "success", "not applicable"})


class JudgementState(StrEnum):
    """How final a deployment's judgement is; stored with the deployment."""

    CONCLUSIVE = "conclusive"
    PENDING = "pending"  # evidence that will arrive: re-judged by a later scan
    UNVERIFIED = "unverified"  # a fact could not be read


class EtgOutcome(StrEnum):
    """One word per deployment for reports; stored with the deployment."""

    ON_TIME = "on_time"
    LATE = "late"
    MISSING = "missing"
    NO_ETG = "no_etg"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    PENDING = "pending"
    UNVERIFIED = "unverified"


class EtgQuestion(Enum):
    """Whether the ETG membership of a deployment can be judged yet, and if not, why."""

    STATUS_UNKNOWN = auto()
    NOT_COMPLETED = auto()
    NO_ETG = auto()
    BLOCKED = auto()  # a fact it needs could not be read
    OPEN = auto()


class JoinTiming(Enum):
    """When the device joined its ETG, as far as the evidence read so far tells."""

    ON_TIME = auto()  # a member when provisioning completed
    LATE = auto()  # first joined after completion, at an exactly known time
    LATE_EXCUSED = auto()  # late, but after an etg_missing alert or only bounded from above
    AUDIT_PENDING = auto()  # audit events for the completion time may still arrive
    # Early conclusion: past the grace, a live check found it outside its ETG and no join was
    # seen, before the audit log settled past completion.
    NOT_MEMBER_EARLY = auto()
    MEMBERSHIP_PENDING = auto()  # no join seen; current membership not asked yet
    MEMBERSHIP_UNREADABLE = auto()
    JOIN_UNSEEN = auto()  # a member now, but no event shows when it joined
    NEVER = auto()


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
    state: JudgementState
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


def _base_evidence(facts: DeploymentFacts) -> dict[str, JSON]:
    """What every device finding carries, whichever kind it is."""
    d = facts.deployment
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
    return base


_POLICY_UNRESOLVED = Unverified(
    "policy resolution",
    UnverifiedReason.UNRESOLVED,
    "cannot tell which device preparation policy applied",
)
# The scan names the read that found no device; this stands in when no reason was given.
_NO_ENTRA_DEVICE = Unverified(
    "Entra device",
    UnverifiedReason.NOT_YET_VISIBLE,
    "no Entra device found for this deployment",
)


def _membership_blockers(facts: DeploymentFacts) -> tuple[Unverified, ...]:
    """Facts without which the ETG question cannot be decided: unreadable, or not found."""
    needed = (
        facts.policy if facts.policy is not None else _POLICY_UNRESOLVED,
        facts.device_object_id if facts.device_object_id is not None else _NO_ENTRA_DEVICE,
        facts.events,
        facts.audit_settled_until,
    )
    return tuple(fact for fact in needed if isinstance(fact, Unverified))


def _etg_question(facts: DeploymentFacts, blockers: tuple[Unverified, ...]) -> EtgQuestion:
    d = facts.deployment
    if d.status is DeploymentStatus.UNKNOWN:
        return EtgQuestion.STATUS_UNKNOWN
    if d.status is DeploymentStatus.IN_PROGRESS or d.completed_at is None:
        return EtgQuestion.NOT_COMPLETED
    if isinstance(facts.policy, PolicyMatch) and not facts.policy.etg_group_ids:
        return EtgQuestion.NO_ETG
    return EtgQuestion.BLOCKED if blockers else EtgQuestion.OPEN


def _unknown_status(d: Deployment) -> Unverified:
    return Unverified(
        "AutopilotV2DeploymentStatus.DeploymentStatus",
        UnverifiedReason.MALFORMED,
        f"unknown deployment status {d.status_label!r}",
    )


def _join_unseen(facts: DeploymentFacts) -> Unverified:
    return Unverified(
        facts.audit_source,
        UnverifiedReason.RETENTION,
        "the device is in the ETG but no audit event shows when it joined",
    )


@dataclass(frozen=True, slots=True)
class Case:
    """One deployment as every device rule sees it."""

    facts: DeploymentFacts
    now: datetime
    rules: ScanRules
    previously_missing: bool  # an etg_missing anomaly was opened for it before
    subject: Subject
    name: str  # how explanations name the device
    blockers: tuple[Unverified, ...]
    etg: EtgQuestion
    joins: JoinAnalysis | None  # only when the ETG question is open

    @classmethod
    def of(
        cls, facts: DeploymentFacts, now: datetime, rules: ScanRules, previously_missing: bool
    ) -> Case:
        d = facts.deployment
        blockers = _membership_blockers(facts)
        etg = _etg_question(facts, blockers)
        joins = None
        if etg is EtgQuestion.OPEN and d.completed_at is not None:
            joins = analyse_joins(_relevant(facts), d.completed_at)
        return cls(
            facts,
            now,
            rules,
            previously_missing,
            subject_for(facts),
            d.device_name or d.managed_device_id,
            blockers,
            etg,
            joins,
        )

    @property
    def deployment(self) -> Deployment:
        return self.facts.deployment

    def found(
        self, kind: str, explanation: str, evidence: dict[str, JSON], note: str | None = None
    ) -> Finding:
        # What every finding carries, made only for findings: most deployments have none.
        base = _base_evidence(self.facts)
        return Finding(kind, self.subject, explanation, KINDS[kind].fix, {**base, **evidence}, note)

    def clear(self, kind: str, reason: str) -> Clear:
        return Clear(kind, self.subject, reason)

    def pending(self, kind: str, reason: str) -> NotEvaluated:
        return NotEvaluated(kind, self.subject, reason=reason, pending=True)

    def unknown(self, kind: str, items: tuple[Unverified, ...]) -> NotEvaluated:
        return NotEvaluated(kind, self.subject, items)

    def not_applicable(self, kind: str, reason: str) -> NotEvaluated:
        return NotEvaluated(kind, self.subject, reason=reason)


@dataclass(frozen=True, slots=True)
class Ruling:
    """One rule's verdict, and the phrase it adds to the deployment's summary."""

    verdict: Verdict
    why: str | None = None


DeviceRule = Callable[[Case], Ruling]
DEVICE_RULES: dict[str, DeviceRule] = {}


def device_rule(kind: str) -> Callable[[DeviceRule], DeviceRule]:
    def register(fn: DeviceRule) -> DeviceRule:
        DEVICE_RULES[kind] = fn
        return fn

    return register


def judge(
    facts: DeploymentFacts,
    now: datetime,
    rules: ScanRules = ScanRules(),
    *,
    previously_missing: bool = False,
) -> Judgement:
    case = Case.of(facts, now, rules, previously_missing)
    rulings = [rule(case) for rule in DEVICE_RULES.values()]
    verdicts = tuple(r.verdict for r in rulings)
    # The ETG kinds share one account of the membership question: the summary tells it once.
    why = list(dict.fromkeys(r.why for r in rulings if r.why))
    problems = [v.kind for v in verdicts if isinstance(v, Finding)]
    summary = "; ".join(why) if why else ", ".join(problems) or "ok"
    d = facts.deployment
    joined_at = case.joins.joined_at if case.joins else None
    return Judgement(
        d, case.subject, verdicts, _state(verdicts), summary, joined_at, d.completed_at
    )


def _state(verdicts: Iterable[Verdict]) -> JudgementState:
    undecided = [v for v in verdicts if isinstance(v, NotEvaluated)]
    if any(v.unverified for v in undecided):
        return JudgementState.UNVERIFIED
    if any(v.pending for v in undecided):
        return JudgementState.PENDING
    return JudgementState.CONCLUSIVE


# deployment outcome ------------------------------------------------------------------------


@device_rule(DEPLOYMENT_FAILED.name)
def deployment_failed(case: Case) -> Ruling:
    kind, d = DEPLOYMENT_FAILED.name, case.deployment
    if d.status is DeploymentStatus.FAILED:
        # Decoded from the report's values alone, so the text and evidence stay the same
        # scan after scan for the same deployment.
        failure = describe_failure(d.result_code, d.phase)
        return Ruling(
            case.found(
                kind,
                f"Device preparation failed on {case.name}{failure.clause}.",
                {
                    "result_code": d.result_code,
                    "result_code_hex": failure.hex,
                    "result_name": failure.name,
                    "phase": d.phase,
                    "phase_name": failure.phase_name,
                    "current_provisioning_phase": d.current_phase,
                },
            )
        )
    if d.status is DeploymentStatus.SUCCESS:
        return Ruling(case.clear(kind, "the deployment succeeded"))
    if d.status is DeploymentStatus.IN_PROGRESS:
        return Ruling(case.pending(kind, "deployment in progress"))
    return Ruling(case.unknown(kind, (_unknown_status(d),)))


@device_rule(DEPLOYMENT_STUCK.name)
def deployment_stuck(case: Case) -> Ruling:
    kind, d, policy = DEPLOYMENT_STUCK.name, case.deployment, case.facts.policy
    if d.status is DeploymentStatus.UNKNOWN:
        return Ruling(case.unknown(kind, (_unknown_status(d),)))
    if d.status is not DeploymentStatus.IN_PROGRESS:
        return Ruling(case.clear(kind, "the deployment finished"))
    timeout = case.rules.default_timeout_minutes
    if isinstance(policy, PolicyMatch) and policy.policy.timeout_minutes:
        timeout = policy.policy.timeout_minutes
    deadline = d.enrolled_at + timedelta(minutes=timeout) + case.rules.stuck_grace
    if case.now <= deadline:
        return Ruling(case.pending(kind, "within the policy timeout"), "deployment in progress")
    stuck = case.found(
        kind,
        # Stable text and evidence: a stuck deployment is not rewritten every scan.
        f"Provisioning of {case.name} has been in progress since "
        f"{d.enrolled_at:%Y-%m-%d %H:%M} UTC, past the policy timeout of {timeout} min.",
        {"timeout_minutes": timeout, "stuck_since": deadline.isoformat()},
    )
    return Ruling(stuck, "stuck in progress")


# ETG membership ----------------------------------------------------------------------------


def _etg_unasked(case: Case, kind: str) -> Ruling | None:
    """The verdict every ETG kind shares while the membership question cannot be asked."""
    if case.etg is EtgQuestion.STATUS_UNKNOWN:
        return Ruling(case.unknown(kind, (_unknown_status(case.deployment),)))
    if case.etg is EtgQuestion.NOT_COMPLETED:
        return Ruling(case.pending(kind, "provisioning has not completed"))
    if case.etg is EtgQuestion.NO_ETG:
        # Nothing to join: the policy-level etg_not_configured anomaly is the finding.
        return Ruling(
            case.not_applicable(kind, "the policy has no ETG"),
            "policy has no ETG (see etg_not_configured)",
        )
    if case.etg is EtgQuestion.BLOCKED:
        return Ruling(
            case.unknown(kind, case.blockers),
            "could not verify the ETG join: " + case.blockers[0].detail,
        )
    return None


def _timing_unasked(case: Case, kind: str) -> Ruling | None:
    """What etg_missing and etg_late share before the join's timing is weighed."""
    unasked = _etg_unasked(case, kind)
    if unasked is not None or case.deployment.status is not DeploymentStatus.FAILED:
        return unasked
    joined = case.joins.joined_at if case.joins else None
    return Ruling(
        case.not_applicable(kind, "the deployment failed"),
        "deployment failed; ETG join " + (f"at {joined.isoformat()}" if joined else "never seen"),
    )


def _open(case: Case) -> tuple[JoinAnalysis, datetime, datetime]:
    """The join analysis, completion time and audit horizon of an open ETG question."""
    completed, settled = case.deployment.completed_at, case.facts.audit_settled_until
    assert case.joins is not None and completed is not None and isinstance(settled, datetime)
    return case.joins, completed, settled


def join_timing(case: Case) -> JoinTiming:
    joins, completed, settled = _open(case)
    if joins.member_at_completion and joins.joined_at is not None:
        return JoinTiming.ON_TIME
    late = joins.late_join
    if late is not None and (late.exact or settled >= late.at):
        excused = case.previously_missing or not late.exact
        return JoinTiming.LATE_EXCUSED if excused else JoinTiming.LATE
    if settled < completed or (late is not None and settled < late.at):
        return _before_settled(case, joins, completed)
    member_now = case.facts.is_member_now
    if member_now is None:
        return JoinTiming.MEMBERSHIP_PENDING
    if isinstance(member_now, Unverified):
        return JoinTiming.MEMBERSHIP_UNREADABLE
    return JoinTiming.JOIN_UNSEEN if member_now else JoinTiming.NEVER


def early_due(facts: DeploymentFacts, now: datetime) -> bool:
    """Early conclusion is on and its grace after completion has passed: a live "not a
    member" now counts. The directory is eventually consistent, and app-only reads get no
    session consistency (entra-docs architecture/architecture.md, "Data consistency"), so a
    read soon after the join can still miss it."""
    completed, grace = facts.deployment.completed_at, facts.membership_grace
    return grace is not None and completed is not None and now >= completed + grace


def _before_settled(case: Case, joins: JoinAnalysis, completed: datetime) -> JoinTiming:
    """Before the audit log settles, only a device outside its ETG past the grace with no
    join seen at all (audit events, or change notifications and delta) is decided."""
    if joins.joined_at is not None or not early_due(case.facts, case.now):
        return JoinTiming.AUDIT_PENDING
    member_now = case.facts.is_member_now
    if isinstance(member_now, Unverified):
        return JoinTiming.MEMBERSHIP_UNREADABLE
    return JoinTiming.NOT_MEMBER_EARLY if member_now is False else JoinTiming.AUDIT_PENDING


def _timing_undecided(case: Case, kind: str, timing: JoinTiming) -> Ruling | None:
    """The verdict etg_missing and etg_late share while the timing cannot be decided."""
    if timing is JoinTiming.AUDIT_PENDING:
        return Ruling(
            case.pending(kind, "audit events for the completion time may still arrive"),
            "waiting for the audit log",
        )
    if timing is JoinTiming.MEMBERSHIP_PENDING:
        return Ruling(
            case.pending(kind, "current membership not checked yet"), "membership check pending"
        )
    member_now = case.facts.is_member_now
    if timing is JoinTiming.MEMBERSHIP_UNREADABLE and isinstance(member_now, Unverified):
        return Ruling(case.unknown(kind, (member_now,)), "could not check current membership")
    if timing is JoinTiming.JOIN_UNSEEN:
        return Ruling(
            case.unknown(kind, (_join_unseen(case.facts),)), "in the ETG, join time unknown"
        )
    return None


def _timing_why(case: Case, timing: JoinTiming) -> str:
    joins, completed, _ = _open(case)
    if timing is JoinTiming.ON_TIME and joins.joined_at is not None:
        return f"joined {_human(completed - joins.joined_at)} before provisioning completed"
    if timing is JoinTiming.NOT_MEMBER_EARLY:
        return "not in the ETG at the live check; audit log not settled yet"
    if joins.late_join is not None and timing in (JoinTiming.LATE, JoinTiming.LATE_EXCUSED):
        return f"joined {_human(joins.late_join.at - completed)} after provisioning completed"
    return "never joined the ETG"


def _late_reason(case: Case) -> str:
    joins, completed, _ = _open(case)
    assert joins.late_join is not None
    late = joins.late_join.at
    gap = _human(late - completed)
    return f"joined the ETG at {late.isoformat()}, {gap} after provisioning completed"


def _join_evidence(joins: JoinAnalysis) -> dict[str, JSON]:
    return {"join": _ev(joins.join_event), "late_join": _ev(joins.late_join)}


def _weigh_timing(
    case: Case,
    kind: str,
    not_on_time: Callable[[JoinTiming], Verdict],
    on_time: Callable[[], Verdict] | None = None,
) -> Ruling:
    """etg_missing and etg_late read the same join timing; they differ only in what a join that
    was not on time means for them, which ``not_on_time`` decides (and ``on_time``, when an
    on-time join has more to say than a Clear)."""
    unasked = _timing_unasked(case, kind)
    if unasked is not None:
        return unasked
    timing = join_timing(case)
    undecided = _timing_undecided(case, kind, timing)
    if undecided is not None:
        return undecided
    if timing is JoinTiming.ON_TIME:
        verdict: Verdict = on_time() if on_time else case.clear(kind, "joined before completion")
    else:
        verdict = not_on_time(timing)
    return Ruling(verdict, _timing_why(case, timing))


def _early_missing(case: Case) -> Finding:
    """etg_missing before the audit log settles: what the live check and the grace showed."""
    _, completed, settled = _open(case)
    early = case.facts.early_check or EarlyCheck(case.now, settled)
    grace = case.facts.membership_grace or timedelta(0)
    return case.found(
        ETG_MISSING.name,
        f"Provisioning of {case.name} completed at {completed.isoformat()}. At "
        f"{early.checked_at.isoformat()} the device was not a member of its ETG and no join had "
        "been seen; the audit log is not settled yet (searched until "
        f"{early.audit_searched_until.isoformat()}).",
        {
            "member_now": False,
            "checked_at": early.checked_at.isoformat(),
            "audit_settled": False,
            "audit_searched_until": early.audit_searched_until.isoformat(),
            "early": True,
            "grace_minutes": _seconds(grace) // 60,
        },
    )


def _never_joined(case: Case) -> Finding:
    joins, completed, settled = _open(case)
    early = case.facts.early_check
    evidence: dict[str, JSON] = {
        **_join_evidence(joins),
        "member_now": False,
        "audit_searched_until": settled.isoformat(),
        "audit_settled": True,
    }
    if early is not None:
        evidence["checked_at"] = early.checked_at.isoformat()
    return case.found(
        ETG_MISSING.name,
        f"Provisioning of {case.name} completed at {completed.isoformat()} and the device "
        "never joined its ETG: the user has no ETG apps or policies.",
        evidence,
        note="confirmed by the audit log: no join before provisioning completed"
        if early is not None
        else None,
    )


def _refined_removed(case: Case, early: EarlyCheck, removal: MembershipEvent) -> Finding:
    """An early etg_missing whose device, the audit log shows, joined and was removed: the
    anomaly on-call already has records it (no second alert as etg_removed)."""
    joins, completed, _ = _open(case)
    assert joins.joined_at is not None
    by = f" by {removal.actor}" if removal.actor else ""
    joined, removed = joins.joined_at.isoformat(), removal.at.isoformat()
    return case.found(
        ETG_MISSING.name,
        f"{case.name} joined its ETG at {joined} and was removed at {removed}{by}, before the "
        f"live check at {early.checked_at.isoformat()} found it outside the ETG (provisioning "
        f"completed at {completed.isoformat()}); Intune pulls the apps and policies assigned "
        "to it.",
        {
            **_join_evidence(joins),
            "removal": removal.to_json(),
            "member_now": False,
            "checked_at": early.checked_at.isoformat(),
            "audit_settled": True,
            "refined": ETG_REMOVED.name,
        },
        note=f"refined: joined at {joined}, removed at {removed}{by}",
    )


def _on_time_after_early(case: Case, early: EarlyCheck) -> Verdict:
    """An early etg_missing whose device the audit log shows joined before completion: removed
    since (the removal is recorded), re-added, or, a member now, replication lag after all."""
    kind, (joins, _, _) = ETG_MISSING.name, _open(case)
    if joins.removal is not None:
        return _refined_removed(case, early, joins.removal)
    if joins.readded_after_removal is not None:
        back = joins.readded_after_removal.at.isoformat()
        return case.clear(kind, f"re-added to its ETG at {back}")
    member_now = case.facts.is_member_now
    if isinstance(member_now, Unverified):
        return case.unknown(kind, (member_now,))
    if member_now is None:
        return case.pending(kind, "current membership not checked yet")
    if not member_now:
        # Audit events need not arrive in order: a removal may still be on its way.
        return case.pending(kind, "joined before completion, not a member: removal not seen yet")
    return Clear(
        ETG_MISSING.name,
        case.subject,
        "was a member at completion after all (the live check at "
        f"{early.checked_at.isoformat()} came before directory replication)",
        false_alarm=True,
    )


@device_rule(ETG_MISSING.name)
def etg_missing(case: Case) -> Ruling:
    kind, early = ETG_MISSING.name, case.facts.early_check

    def not_on_time(timing: JoinTiming) -> Verdict:
        if timing is JoinTiming.NOT_MEMBER_EARLY:
            return _early_missing(case)
        if timing is not JoinTiming.NEVER:
            return case.clear(kind, _late_reason(case))
        removal = case.joins.removal if case.joins else None
        if early is not None and removal is not None:
            return _refined_removed(case, early, removal)
        return _never_joined(case)

    def on_time() -> Verdict:
        if early is None:
            return case.clear(kind, "joined before completion")
        return _on_time_after_early(case, early)

    return _weigh_timing(case, kind, not_on_time, on_time)


@device_rule(ETG_LATE.name)
def etg_late(case: Case) -> Ruling:
    kind = ETG_LATE.name

    def not_on_time(timing: JoinTiming) -> Verdict:
        if timing is JoinTiming.NEVER:
            return case.clear(kind, "not joined at all (see etg_missing)")
        if timing is JoinTiming.NOT_MEMBER_EARLY:
            # A join may still appear in the audit log: late, or before completion after all.
            return case.pending(kind, "not a member yet; the audit log is not settled")
        if timing is JoinTiming.LATE_EXCUSED:
            # The join came after an etg_missing alert (usually the operator's own fix), or
            # only its upper bound is known: the history of etg_missing records it.
            return case.clear(kind, _late_reason(case))
        joins, completed, _ = _open(case)
        assert joins.late_join is not None
        gap = joins.late_join.at - completed
        return case.found(
            kind,
            f"{case.name} joined its ETG {_human(gap)} after provisioning completed: the user "
            "reached the desktop before the ETG's apps and policies installed.",
            {**_join_evidence(joins), "gap_seconds": _seconds(gap)},
        )

    return _weigh_timing(case, kind, not_on_time)


@device_rule(ETG_REMOVED.name)
def etg_removed(case: Case) -> Ruling:
    kind = ETG_REMOVED.name
    shared = _etg_unasked(case, kind)
    if shared is not None:
        return shared
    joins, _, _ = _open(case)
    removal = joins.removal
    if removal is not None and case.facts.early_check is not None:
        # The early etg_missing on-call was alerted to records the removal (see etg_missing).
        return Ruling(
            case.not_applicable(kind, "recorded on the etg_missing anomaly"),
            "removed from the ETG (recorded on the etg_missing anomaly)",
        )
    if removal is not None:
        removed = case.found(
            kind,
            f"{case.name} was removed from its ETG at {removal.at.isoformat()}"
            + (f" by {removal.actor}" if removal.actor else "")
            + "; Intune will pull the apps and policies assigned to it.",
            {"removal": removal.to_json(), **_join_evidence(joins)},
        )
        return Ruling(removed, "removed from the ETG")
    if joins.readded_after_removal is not None:
        return Ruling(case.clear(kind, f"re-added at {joins.readded_after_removal.at.isoformat()}"))
    return Ruling(case.clear(kind, "still in the ETG"))


# payload -----------------------------------------------------------------------------------


@device_rule(PAYLOAD_INCOMPLETE.name)
def payload_incomplete(case: Case) -> Ruling:
    kind, payload = PAYLOAD_INCOMPLETE.name, case.facts.payload
    if payload is None:
        return Ruling(case.not_applicable(kind, "detailed app and script reports are not enabled"))
    if isinstance(payload, Unverified):
        return Ruling(case.unknown(kind, (payload,)))
    if case.deployment.status is DeploymentStatus.IN_PROGRESS:
        return Ruling(case.pending(kind, "deployment in progress"))
    bad = [i for i in payload if i.status.lower() in BAD_PAYLOAD]
    if not bad:
        if all(i.status.lower() in DONE_PAYLOAD for i in payload):
            return Ruling(case.clear(kind, "every app and script installed"))
        return Ruling(case.pending(kind, "apps or scripts still installing"))
    # Every item is named: on-call fixes each one, and a list cut at five hides the rest.
    parts = [
        f"{label}: " + ", ".join(f"{i.name} ({i.status})" for i in items)
        for label, items in (
            ("apps", [i for i in bad if i.kind == "app"]),
            ("scripts", [i for i in bad if i.kind != "app"]),
        )
        if items
    ]
    incomplete = case.found(
        kind,
        f"{len(bad)} of {len(payload)} apps and scripts did not install on {case.name}: "
        + "; ".join(parts)
        + ".",
        {
            "items": [
                {"kind": i.kind, "id": i.id, "name": i.name, "status": i.status} for i in payload
            ]
        },
    )
    return Ruling(incomplete)


def needs_membership_check(facts: DeploymentFacts, now: datetime) -> bool:
    """True when only the current membership can decide between missing and unknown: once the
    audit log settled past completion, or before that, with early conclusion on, once its
    grace has passed. Never when a join was seen (audit events, notifications or delta)."""
    d = facts.deployment
    completed = d.completed_at
    if d.status is not DeploymentStatus.SUCCESS or completed is None:
        return False
    if _membership_blockers(facts) or facts.is_member_now is not None:
        return False
    if facts.early_check is not None:
        # An early etg_missing stands: only the device's membership now tells a join the
        # audit log shows from replication lag (a member) or a removal still on its way.
        return True
    assert isinstance(facts.audit_settled_until, datetime)
    if facts.audit_settled_until < completed and not early_due(facts, now):
        return False
    return not any(e.op is MembershipOp.ADD for e in _relevant(facts))


def opened_early(anomaly: Anomaly) -> bool:
    """An etg_missing opened from a live check before the audit log settled: every form of its
    evidence keeps the time of that check."""
    return anomaly.kind == ETG_MISSING.name and isinstance(anomaly.evidence.get("checked_at"), str)


def false_alarm_at(anomaly: Anomaly) -> datetime | None:
    """When an early etg_missing resolved as a false alarm (the audit log showed the device a
    member at completion after all), or None."""
    if anomaly.kind != ETG_MISSING.name:
        return None
    marked = [h.get("at") for h in anomaly.history if h.get("false_alarm") is True]
    last = marked[-1] if marked else None
    try:
        return datetime.fromisoformat(last) if isinstance(last, str) else None
    except ValueError:
        return None


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


# How a policy resolved only because it is the only one is named: remediation refuses to act on
# a guess by elimination.
RESOLVED_BY_ELIMINATION = "only device preparation policy"


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
        return _matched(policies[0], RESOLVED_BY_ELIMINATION)
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


def etg_outcome(j: Judgement) -> EtgOutcome:
    """One word per deployment for reports."""
    found = {v.kind for v in j.verdicts if isinstance(v, Finding)}
    d = j.deployment
    if d.status is DeploymentStatus.FAILED:
        return EtgOutcome.FAILED
    if ETG_MISSING.name in found:
        return EtgOutcome.MISSING
    if ETG_LATE.name in found:
        return EtgOutcome.LATE
    if d.status is DeploymentStatus.IN_PROGRESS:
        return EtgOutcome.IN_PROGRESS
    if j.state is JudgementState.UNVERIFIED:
        return EtgOutcome.UNVERIFIED
    if j.state is JudgementState.PENDING and j.joined_at is None:
        return EtgOutcome.PENDING
    if j.subject.policy_id and not j.subject.group_id:
        return EtgOutcome.NO_ETG
    if j.joined_at is not None and j.completed_at is not None:
        return EtgOutcome.ON_TIME if j.joined_at <= j.completed_at else EtgOutcome.LATE
    return EtgOutcome.PENDING
