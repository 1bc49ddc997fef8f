"""Each deployment's facts from what this run read, and its verdicts. Pure: no I/O here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitors.graph import audit, devices
from monitors.graph.policies import PolicyWithEtg
from monitors.models import (
    Anomaly,
    DeploymentFacts,
    EarlyCheck,
    InstallItem,
    MembershipEvent,
    MembershipOp,
    PolicyMatch,
    Status,
    Unverified,
    UnverifiedReason,
    UserPolicies,
)
from monitors.rules.enrollment import Judgement, ScanRules, judge, resolve_policy
from monitors.rules.kinds import ETG_MISSING
from monitors.rules.lifecycle import anomaly_key
from monitors.scan.coverage import Window, covered, marked_read, merged_events
from monitors.scan.reads import Membership, Payload, UserReads
from monitors.settings import Settings
from monitors.store.scan_state import DeploymentRecord

DEFAULT_TIMEOUT_MINUTES = 60


@dataclass(frozen=True, slots=True)
class Evidence:
    """What this run read, from which every deployment's facts are built."""

    policies: Sequence[PolicyWithEtg]
    window: Window
    settings: Settings
    device_problems: Mapping[str, Unverified]
    users: UserReads
    membership: Membership
    payload: Payload | Unverified | None
    # The stored device anomalies by key: an early etg_missing standing shapes the facts.
    anomalies: Mapping[str, Anomaly] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prepared:
    record: DeploymentRecord  # with this run's events, audit coverage and policy
    facts: DeploymentFacts  # current membership not asked yet


def scan_rules(settings: Settings, policy_list: Sequence[PolicyWithEtg]) -> ScanRules:
    known = [p.timeout_minutes for p, _ in policy_list if p.timeout_minutes]
    # A device whose policy is unknown gets the most patient timeout: no false "stuck".
    return ScanRules(
        stuck_grace=timedelta(minutes=settings.stuck_grace_minutes),
        default_timeout_minutes=max(known) if known else DEFAULT_TIMEOUT_MINUTES,
    )


def membership_grace(settings: Settings) -> timedelta | None:
    """How long after completion a live "not a member" counts; None: early conclusion off."""
    if not settings.early_conclusion:
        return None
    return timedelta(minutes=settings.membership_grace_minutes)


def early_check(anomaly: Anomaly | None) -> EarlyCheck | None:
    """The live check that opened this etg_missing early, while it stands (not resolved):
    read back from its evidence, so every later finding repeats the same time."""
    if anomaly is None or anomaly.status is Status.RESOLVED:
        return None
    checked, until = (anomaly.evidence.get(k) for k in ("checked_at", "audit_searched_until"))
    if not isinstance(checked, str):
        return None
    try:
        at = datetime.fromisoformat(checked)
        return EarlyCheck(at, datetime.fromisoformat(until) if isinstance(until, str) else at)
    except ValueError:
        return None


def _policy(
    key: str, record: DeploymentRecord, events: Sequence[MembershipEvent], ev: Evidence
) -> PolicyMatch | Unverified | None:
    joined = {e.group_id for e in events if e.op is MembershipOp.ADD}
    assigned: UserPolicies | Unverified | None = record.user_policies or ev.users.partial.get(key)
    if assigned is None and key in ev.users.problems:
        assigned = ev.users.problems[key]
    match = resolve_policy(record.enrollment_profile_name, ev.policies, joined, assigned)
    if match is None and key in ev.device_problems:
        match = ev.device_problems[key]  # the profile name could not be read
    return match


def _events(
    record: DeploymentRecord, match: PolicyMatch | Unverified | None, ev: Evidence
) -> tuple[MembershipEvent, ...] | Unverified:
    etgs = match.etg_group_ids if isinstance(match, PolicyMatch) else ()
    gaps = [ev.membership.gaps[g] for g in etgs if g in ev.membership.gaps]
    if gaps:
        return gaps[0]
    if record.object_id and not covered(record, etgs, ev.window.lookback_start):
        return audit.membership_events.unverified(
            UnverifiedReason.RETENTION,
            "audit events from before this device's enrollment were not read "
            f"(scan lookback {ev.settings.scan_lookback_hours} h)",
        )
    return tuple(record.events)


_NOT_FOUND = devices.entra_object_ids.unverified(
    UnverifiedReason.NOT_YET_VISIBLE, "no Entra device found for this deployment"
)


def prepare(key: str, record: DeploymentRecord, ev: Evidence) -> Prepared:
    """The record (of deployment ``key``) with what this run saw of its device, and the facts
    it is judged on."""
    events = merged_events(record.events, ev.membership.by_object.get(record.object_id or "", ()))
    audit_from = (
        marked_read(record.audit_from, ev.membership.read_from)
        if record.object_id
        else record.audit_from
    )
    match = _policy(key, record, events, ev)
    record = dataclasses.replace(
        record,
        events=events,
        audit_from=audit_from,
        policy=match if isinstance(match, PolicyMatch) else record.policy,
    )
    object_id: str | Unverified | None = record.object_id or ev.device_problems.get(key)
    if object_id is None:
        object_id = _NOT_FOUND
    items: tuple[InstallItem, ...] | Unverified | None = None
    if isinstance(ev.payload, Unverified):
        items = ev.payload
    elif ev.payload is not None:
        items = ev.payload.get(record.deployment.managed_device_id, ())
    facts = DeploymentFacts(
        deployment=record.deployment,
        policy=match,
        device_object_id=object_id,
        events=_events(record, match, ev),
        audit_settled_until=ev.window.now - timedelta(minutes=ev.settings.audit_latency_minutes),
        payload=items,
        audit_source=audit.membership_events.source,
        membership_grace=membership_grace(ev.settings),
        early_check=early_check(ev.anomalies.get(anomaly_key(ETG_MISSING.name, f"device:{key}"))),
    )
    return Prepared(record, facts)


def judge_all(
    prepared: Mapping[str, Prepared],
    members: Mapping[str, bool | Unverified],
    anomalies: Mapping[str, Anomaly],
    rules: ScanRules,
    now: datetime,
) -> dict[str, Judgement]:
    """Every deployment's verdicts, with its current membership where it was asked."""
    out: dict[str, Judgement] = {}
    for key, p in prepared.items():
        facts = p.facts
        if key in members:
            facts = dataclasses.replace(facts, is_member_now=members[key])
        previously = anomaly_key(ETG_MISSING.name, f"device:{key}") in anomalies
        out[key] = judge(
            facts, now, rules, previously_missing=previously or p.record.previously_missing
        )
    return out
